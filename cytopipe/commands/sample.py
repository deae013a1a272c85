"""Commands of the per-sample workflow steps: `preprocess`, `gate` and `collect`.

A bad file must fail only itself: both per-sample steps turn a CytopipeError (and any
unexpected error, reported as an internal error) into a `failed` record that flows through the
workflow to the report, and always write their declared outputs so the rest of the cohort
carries on. A fault of the machine (out of memory, disk full, permission denied) is not the
sample's: it fails the job, so Snakemake retries it or stops, and no permanent failed record
is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cytopipe.atomic import write_json, write_parquet, write_tsv
from cytopipe.clinical import sample_checks
from cytopipe.clinical.collect import collect
from cytopipe.clinical.samplesheet import load_sample_sheet
from cytopipe.config import add_settings_arguments, settings_from_args
from cytopipe.errors import ENVIRONMENT_FAULTS, CytopipeError
from cytopipe.gating.export import strategy_from_info
from cytopipe.gating.gatingml import write_gatingml
from cytopipe.gating.sample import gate_events
from cytopipe.gating.stats import (
    STATS_COLUMNS,
)
from cytopipe.gating.strategy import Strategy
from cytopipe.gating.template import load_template
from cytopipe.ingest import panel
from cytopipe.preprocess.sample import (
    QC_COLUMN,
    event_table,
    preprocess,
    split_event_table,
)
from cytopipe.results import (
    NAN_REP,
    TABLE_FILES,
    sample_gates_path,
    sample_gatingml_path,
    sample_plots_path,
    sample_record_path,
    sample_stats_path,
)


def _failed_record(sample_id: str, stage: str, exc: BaseException) -> dict:
    if isinstance(exc, CytopipeError):
        error = str(exc)
    else:  # a bug in cytopipe: keep the batch going, keep the evidence in the log
        traceback.print_exc()
        error = f"internal error in cytopipe ({type(exc).__name__}: {exc}); please report it with the log"
    print(f"cytopipe: error: {error}", file=sys.stderr)
    return {"sample_id": sample_id, "status": "failed", "stage": stage, "error": error}


def _guard(sample_id: str, stage: str, work: Callable[[], dict]) -> dict:
    try:
        return work()
    except ENVIRONMENT_FAULTS:
        raise  # the machine's fault, not the sample's: fail the job (cytopipe.errors)
    except Exception as exc:  # noqa: BLE001 - every failure of the input becomes its record
        return _failed_record(sample_id, stage, exc)


def run_preprocess(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args)
    panel_map = panel.load_panel(args.panel or cfg["panel"])

    def work() -> dict:
        pre = preprocess(args.fcs, panel_map, cfg, args.spillover_csv)
        write_parquet(args.out_events, event_table(pre))
        return {
            "sample_id": args.sample_id,
            "status": "ok",
            "stage": None,
            "error": None,
            **pre.info,
        }

    record = _guard(args.sample_id, "ingest", work)
    # Was the file there? An archive that goes offline later must not wipe this result.
    record["input_found"] = Path(args.fcs).is_file()
    if record["status"] != "ok":
        write_parquet(args.out_events, pd.DataFrame({QC_COLUMN: pd.Series([], dtype=bool)}))
    write_json(args.out_info, record)
    return 0


def run_gate(args: argparse.Namespace) -> int:
    info = json.loads(Path(args.info).read_text())
    sample_id = info["sample_id"]
    out = Path(args.out_dir)
    specs = load_template(args.template)

    def work() -> dict:
        if info["status"] != "ok":
            return info
        columns, keep, at_top = split_event_table(pd.read_parquet(args.events))
        gated, masks = gate_events(sample_id, columns, keep, specs, info, at_top)
        verdict = (info.get("qc") or {}).get("verdict")
        if verdict in ("warn", "fail"):  # statistics of a doubtful acquisition say so
            flags = gated.stats["flag"].fillna("")
            gated.stats["flag"] = (flags + ";").where(flags != "", "") + f"qc_{verdict}"
        write_parquet(sample_gates_path(out), masks)
        write_tsv(sample_stats_path(out), gated.stats, na_rep=NAN_REP)
        write_json(sample_plots_path(out), {"sample_id": sample_id, "plots": gated.plots})
        exported = _write_gatingml(out, gated, info)
        return {**info, "skipped_populations": sorted(gated.skipped), "skip_reasons": gated.skipped,
                "gatingml": exported}  # fmt: skip

    record = _guard(sample_id, "gate", work)
    if record["status"] != "ok":
        write_gatingml(Strategy([]), sample_gatingml_path(out))
        write_parquet(sample_gates_path(out), pd.DataFrame())
        write_tsv(sample_stats_path(out), pd.DataFrame(columns=STATS_COLUMNS), na_rep=NAN_REP)
        write_json(sample_plots_path(out), {"sample_id": sample_id, "plots": []})
    write_json(sample_record_path(out), record)
    return 0


def _write_gatingml(out: Path, gated, info: dict) -> str:
    """The placed gates as Gating-ML 2.0 on the file's channels (samples/<id>/gates.xml), so the
    lab reviews them in FlowJo or any Gating-ML tool; a sample whose gates cannot be expressed
    (e.g. an arcsinh scale) gets an empty strategy and the reason in its record."""
    try:
        strategy = strategy_from_info(gated.result, info)
    except CytopipeError as exc:
        write_gatingml(Strategy([]), sample_gatingml_path(out))
        return f"not exported: {exc.what if hasattr(exc, 'what') else exc}"
    write_gatingml(strategy, sample_gatingml_path(out))
    return f"{len(strategy.gates)} gates"


def run_collect(args: argparse.Namespace) -> int:
    sheet = load_sample_sheet(args.samples, check_files=False)
    tables = collect(sheet, Path(args.results), date_tolerance_days=args.date_tolerance_days)
    for name, df in tables.items():
        write_tsv(Path(args.out) / TABLE_FILES[name], df, na_rep=NAN_REP)
    n_failed = len(tables["failures"])
    n_warned = int((tables["sample_status"]["warnings"] != "").sum())
    print(
        f"{len(sheet)} samples, {n_failed} failed"
        + (f": see {args.out}/failures.tsv" if n_failed else "")
        + (f"; {n_warned} with warnings in {args.out}/sample_status.tsv" if n_warned else "")
    )
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="ingest, harmonize panel, compensate, transform and QC one FCS file"
    )
    p.add_argument("fcs")
    p.add_argument("--sample-id", required=True)
    p.add_argument("--out-events", required=True, help="Parquet of events on the gating scale")
    p.add_argument("--out-info", required=True, help="JSON record: status, provenance, QC, panel")
    add_settings_arguments(p)
    p.add_argument("--panel", default=None)
    p.add_argument(
        "--spillover-csv", default=None, help="FlowJo-style spillover CSV for this sample's batch"
    )
    p.set_defaults(func=run_preprocess)

    g = sub.add_parser(
        "gate", help="gate one preprocessed sample with the template; write stats and plots"
    )
    g.add_argument("events")
    g.add_argument("--info", required=True)
    g.add_argument("--template", default="config/gating.yaml")
    g.add_argument("--out-dir", required=True)
    g.set_defaults(func=run_gate)

    c = sub.add_parser("collect", help="gather per-sample records and stats into cohort tables")
    c.add_argument("--samples", required=True)
    c.add_argument("--results", required=True)
    c.add_argument("--out", required=True)
    c.add_argument(
        "--date-tolerance-days",
        type=float,
        default=sample_checks.DEFAULT_DATE_TOLERANCE_DAYS,
        help="warn when a file's acquisition date ($DATE) is further than this from the "
        "sheet's collection_date (default: %(default)g)",
    )
    c.set_defaults(func=run_collect)
