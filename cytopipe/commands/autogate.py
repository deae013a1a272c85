"""The `autogate` command: place the template's gates on one FCS file and write its event
membership (and statistics)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _write_outputs(args: argparse.Namespace, masks, columns, result, keep, rows, sample_id) -> None:
    from cytopipe.atomic import write_parquet, write_tsv
    from cytopipe.gating.sample import event_masks
    from cytopipe.gating.stats import population_stats

    write_parquet(args.out, event_masks(masks, keep, rows))
    if args.stats:
        n = len(next(iter(columns.values())))
        stats = population_stats(
            sample_id,
            masks,
            result.parents,
            columns,
            n,
            result.methods,
            result.shapes,
            result.cut_moves,
        )
        write_tsv(args.stats, stats)


def _ranges(masks, moves):
    """(population, count, low, high): the counts as its cuts move (cytopipe.gating.cut_moves),
    low = high = count where none does."""
    for pop, mask in masks.items():
        n = int(np.count_nonzero(mask))
        leave, join = moves.get(pop, (0, 0))
        yield pop, n, n - leave, n + join


def _counts(masks, moves) -> str:
    """Each population's count, and in brackets its range where its cuts move."""
    return ", ".join(f"{pop} {n}" + (f" ({low}-{high})" if (low, high) != (n, n) else "")
                     for pop, n, low, high in _ranges(masks, moves))  # fmt: skip


def run_autogate(args: argparse.Namespace) -> int:
    if args.model:
        return _autogate_with_model(args)
    from cytopipe.config import load_config
    from cytopipe.gating.saturated import placed, saturated_events, with_saturated
    from cytopipe.gating.stats import unsure_count
    from cytopipe.gating.template import load_template
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

    cfg = load_config(args.config)
    panel_map = load_panel(args.panel or cfg["panel"])
    specs = load_template(args.template or cfg["gating"])
    # one file by hand: any panel (a T-cell panel without CD19 gets its lymphocytes and T
    # cells; what its markers do not allow is listed as skipped, with the reason)
    pre = preprocess(args.fcs, panel_map, cfg, required=SCATTER_ONLY)
    keep = np.asarray(pre.qc_pass, dtype=bool)
    columns = {m: np.ascontiguousarray(np.asarray(v)[keep]) for m, v in pre.columns.items()}
    # events removed only for a stain's top: placed on where their values are known, counted
    # where they certainly belong
    rows, saturated = saturated_events(pre.columns, pre.at_top, pre.info)
    result = placed(specs, columns, pre.zeros, saturated)
    masks, counted = with_saturated(result, columns, saturated, specs)
    _write_outputs(args, masks, counted, result, keep, rows, Path(args.fcs).stem)
    if args.gatingml:
        from cytopipe.gating.export import strategy_from_info
        from cytopipe.gating.gatingml import write_gatingml

        write_gatingml(strategy_from_info(result, pre.info), args.gatingml)
    for warning in pre.info["provenance"]["warnings"]:  # e.g. no spillover matrix
        print(f"cytopipe autogate: {warning}", file=sys.stderr)
    for pop, why in result.skipped.items():
        print(f"cytopipe autogate: skipped {pop}: {why}", file=sys.stderr)
    if any(why.startswith("no ") and why.endswith(" channel") for why in result.skipped.values()):
        print("cytopipe autogate: if the file has a skipped marker under another name, give a "
              "panel file that maps it: --panel PANEL.yaml", file=sys.stderr)  # fmt: skip
    for pop, (method, conf, flag) in result.methods.items():
        if flag:
            print(f"cytopipe autogate: {pop} ({method}, {conf:.2f}): {flag}", file=sys.stderr)
    for pop, _n, low, high in _ranges(masks, result.cut_moves):
        if why := unsure_count(low, high):
            print(f"cytopipe autogate: {pop}: {why}", file=sys.stderr)
    print(f"{args.fcs}: {_counts(masks, result.cut_moves)}")
    return 0


def _autogate_with_model(args: argparse.Namespace) -> int:
    """The same outputs from a learned model (cytopipe learn-gates): one column per population
    of the expert's hierarchy (an event is in its population and every one above it), and with
    --gatingml the model's populations as polygons (cytopipe.learn.approximate)."""
    from cytopipe.atomic import write_parquet, write_tsv
    from cytopipe.commands.learn import gate_with_model, reviewed
    from cytopipe.config import load_config
    from cytopipe.learn.model import members, parents_first

    cfg = load_config(args.config)
    model, events, keep, info, labels, confidence, novel = gate_with_model(
        args.fcs, args.model, cfg, args.panel
    )
    masks = {pop: members(model, labels, pop) for pop, _ in parents_first(model)}
    write_parquet(args.out, pd.DataFrame(masks))
    found = reviewed(args.fcs, model, labels[keep], confidence[keep], novel[keep])
    if args.stats:
        seen = found["populations"]
        rows = [{"population": pop, "parent": model.parents.get(pop), "count": int(mask.sum()),
                 **{k: seen.get(pop, {}).get(k) for k in ("confidence", "unlike_share")}}
                for pop, mask in masks.items()]  # fmt: skip
        write_tsv(args.stats, pd.DataFrame(rows))
    if args.gatingml:
        from cytopipe.gating.export import gates_from_info
        from cytopipe.gating.gatingml import write_gatingml
        from cytopipe.learn.approximate import approximate

        gates, _ = approximate(model, events[keep], labels[keep])
        write_gatingml(gates_from_info(gates, info), args.gatingml)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "autogate",
        help="gate one FCS file with gates placed per sample; write event membership",
        description="Preprocess one FCS file (panel, compensation, transform, QC), place every "
        "gate of the template on this sample's own events and write one boolean column per "
        "population, one row per event in file order (events removed by QC are False).",
    )
    p.add_argument("fcs", help="FCS file")
    p.add_argument("--out", required=True, help="Parquet file of population membership")
    p.add_argument("--panel", default=None, help="panel YAML (default: the config's panel)")
    p.add_argument("--template", default=None, help="gating template (default: the config's)")
    p.add_argument("--stats", default=None, help="also write population statistics (TSV)")
    p.add_argument(
        "--gatingml",
        default=None,
        help="also write the placed gates as Gating-ML 2.0 on the file's channels (XML)",
    )
    p.add_argument(
        "--model", default=None,
        help="gate with a model learned from expert-gated files (learn-gates) instead of the "
        "template: its populations as columns, the review printed",
    )  # fmt: skip
    p.add_argument("--config", default=None, help="config YAML (default: built-in defaults)")
    p.set_defaults(func=run_autogate)
