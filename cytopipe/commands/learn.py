"""`cytopipe learn-gates` (learn a lab's gating from expert-gated files, and how close it gets)
and `cytopipe apply-model` (gate new files with it, flagging what is unlike the references)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.commands.progress import progress, progress_done
from cytopipe.config import add_settings_arguments, merge, settings_from_args, thaw, validated
from cytopipe.errors import ConfigError


def run_learn(args: argparse.Namespace) -> int:
    from cytopipe.atomic import write_tsv
    from cytopipe.ingest.panel import load_panel
    from cytopipe.learn.evaluate import leave_one_file_out
    from cytopipe.learn.model import fit, save
    from cytopipe.learn.references import load_reference

    if len(args.fcs) != len(args.labels):
        raise ConfigError(
            f"{len(args.fcs)} FCS files but {len(args.labels)} label files",
            hint="give one --labels CSV per --fcs file, in the same order",
        )
    cfg = settings_from_args(args)
    panel = load_panel(args.panel or cfg["panel"])
    refs = []
    for i, (fcs, labels) in enumerate(zip(args.fcs, args.labels, strict=True), start=1):
        refs.append(load_reference(fcs, labels, panel, cfg, args.markers))
        progress(f"read {i}/{len(args.fcs)} reference files")
    progress_done()
    fit_args = {
        "seed": args.seed,
        **({"per_class": args.per_class, "budget": 0} if args.per_class is not None else {}),
    }
    model = fit(refs, args.markers, settings={"transform": dict(cfg["transform"])}, **fit_args)
    save(model, args.out)
    learned = ", ".join(f"{p} {n:,}" for p, n in model.learned.items())
    print(f"{args.out}: {len(model.populations)} populations from {len(refs)} files "
          f"(events learned from: {learned})")  # fmt: skip
    if args.evaluate:
        table = leave_one_file_out(refs, args.markers, args.unscored, **fit_args)
        write_tsv(args.evaluate, table)
        if len(table):
            summary = table.groupby("population")["f1"].agg(["min", "median"]).round(3)
            print(f"leave-one-file-out F1 ({args.evaluate}):\n{summary.to_string()}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from cytopipe.atomic import write_tsv

    model, events, keep, info, labels, confidence, novel = gate_with_model(
        args.fcs, args.model, settings_from_args(args), args.panel
    )
    write_tsv(
        args.out,
        pd.DataFrame(
            {"label": labels, "confidence": confidence.round(3), "unlike_references": novel}
        ),
    )
    found = reviewed(args.fcs, model, labels[keep], confidence[keep], novel[keep])
    if args.review:
        Path(args.review).write_text(json.dumps(found, indent=1))
    if args.gatingml or args.flowjo or args.gate_counts:
        _export_learned(args, model, events[keep], labels[keep], info)
    return 0


def gate_with_model(fcs: str, model_path: str, base_cfg, panel_path=None):
    """One FCS file labelled by a learned model: (model, events, QC mask, preprocessing record,
    labels, confidence, unlike the references), per event in file order ('' / NaN where QC
    removed the event); the file is put on the transform the model was learned with."""
    from cytopipe.ingest.panel import load_panel
    from cytopipe.learn.model import load, predict
    from cytopipe.learn.references import sample_events

    model = load(model_path)
    cfg = validated(merge(base_cfg, model.settings), "config", source=f"{model_path} settings")
    panel = load_panel(panel_path or cfg["panel"])
    events, keep, info = sample_events(fcs, panel, cfg, model.markers)
    labels = np.full(len(keep), "", dtype=object)
    confidence = np.full(len(keep), np.nan)
    novel = np.zeros(len(keep), dtype=bool)
    labels[keep], confidence[keep], novel[keep] = predict(model, events[keep])
    return model, events, keep, info, labels, confidence, novel


def reviewed(fcs: str, model, labels, confidence, novel) -> dict:
    """The per-population review of a file the model gated, printed (stdout; stderr when the
    file is unlike the references)."""
    from cytopipe.learn.model import review

    found = review(model, labels, confidence, novel)
    found["file"] = Path(fcs).name
    found["learned_from"] = [r.get("name") for r in model.references]
    for pop, seen in found["populations"].items():
        mark = "  <- unlike the references: review" if seen["review"] else ""
        print(f"{pop}: {seen['events']} events, confidence {seen['confidence']}, "
              f"{100 * seen['unlike_share']:.1f}% unlike the references{mark}")  # fmt: skip
    if found["review"]:
        print(f"{fcs}: unlike the files the model learned from; review before use",
              file=sys.stderr)  # fmt: skip
    return found


def _export_learned(args: argparse.Namespace, model, events, labels, info) -> None:
    """The model's decision as polygon gates (cytopipe.learn.approximate) in Gating-ML and a
    FlowJo workspace, with the model's and the gates' counts side by side."""
    from cytopipe.atomic import write_tsv
    from cytopipe.gating.export import gates_from_info
    from cytopipe.learn.approximate import approximate

    gates, rows = approximate(model, events, labels)
    strategy = gates_from_info(gates, info)
    if args.gatingml:
        from cytopipe.gating.gatingml import write_gatingml

        write_gatingml(strategy, args.gatingml)
    if args.flowjo:
        from cytopipe.gating.flowjo_export import write_workspace

        for fcs, why in write_workspace([(strategy, args.fcs)], args.flowjo):
            raise ConfigError(f"cannot write a FlowJo workspace for this file: {why}", path=fcs)
    if args.gate_counts:
        write_tsv(args.gate_counts, pd.DataFrame(rows))
    for row in rows:
        print(f"gate {row['population']} ({row['dims'] or 'none'}): {row['gate_events']} events, "
              f"model {row['model_events']}, F1 {row['f1']}")  # fmt: skip


def run_map(args: argparse.Namespace) -> int:
    """The workflow's step: the model's labels and its agreement with the template's gates on
    the preprocessed events (learned.json), or "not available" with the reason."""
    from cytopipe.learn.agreement import learned_summary
    from cytopipe.learn.model import load, predict

    cfg = settings_from_args(args)
    settings = cfg["gating_model"]
    sid = args.sample_id or Path(args.events).stem
    model = load(args.model)
    doc = {"sample_id": sid, "model": Path(args.model).name}
    why = _unusable(model, cfg, args.events)
    if why:
        return _opinion(args.out, doc, {"status": "not available", "reason": why}, "learned")
    events = pd.read_parquet(args.events, columns=[*model.markers, "qc_pass"])
    keep = events["qc_pass"].to_numpy(dtype=bool)
    data = events[list(model.markers)].to_numpy(dtype=np.float64)[keep]
    finite = np.isfinite(data).all(axis=1)
    labels = np.full(len(data), "", dtype=object)
    confidence, novel = np.zeros(len(data)), np.zeros(len(data), dtype=bool)
    labels[finite], confidence[finite], novel[finite] = predict(model, data[finite])
    gates = pd.read_parquet(args.gates)
    masks = {g: gates[g].to_numpy(dtype=bool)[keep] for g in settings["compare"] if g in gates}
    summary = learned_summary(
        model, labels, confidence, novel, masks, settings["compare"], settings["min_f1"]
    )
    return _opinion(args.out, doc, summary, "learned")


def run_expert(args: argparse.Namespace) -> int:
    """The workflow's step for a sample an expert gated too: expert.json (agreement per
    compared population, disagreements, the expert's outlines), or "not available" with the
    reason (an unreadable expert file must not cost the run)."""
    from cytopipe.errors import GatingError
    from cytopipe.learn.agreement import expert_summary
    from cytopipe.learn.references import expert_masks
    from cytopipe.preprocess.sample import split_event_table

    settings = settings_from_args(args)["expert_gates"]
    sid = args.sample_id or Path(args.events).stem
    doc = {"sample_id": sid, "expert": Path(args.expert).name}
    try:
        events = pd.read_parquet(args.events)
        gates = pd.read_parquet(args.gates)
        plots = json.loads(Path(args.plots).read_text()).get("plots") or []
        if not len(events) or not len(gates.columns):
            raise ConfigError("no events or no gates (the sample failed upstream)")
        theirs = expert_masks(args.expert, args.fcs, len(events))
    except Exception as exc:  # a third party's file: any failure is its sample's record, not
        # a failed job (the report waits for every sample's expert.json)
        reason = (
            str(exc)
            if isinstance(exc, ConfigError | GatingError)
            else f"{type(exc).__name__}: {exc}"
        )
        return _opinion(args.out, doc, {"status": "not available", "reason": reason}, "expert")
    keep = events["qc_pass"].to_numpy(dtype=bool)
    ours = {p: gates[p].to_numpy(dtype=bool)[keep] for p in gates.columns}
    columns = {m: v[keep] for m, v in split_event_table(events)[0].items()}
    summary = expert_summary(
        ours,
        {p: m[keep] for p, m in theirs.items()},
        settings["compare"],
        settings["min_f1"],
        plots,
        columns,
    )
    return _opinion(args.out, doc, summary, "expert")


def _opinion(out: str, doc: dict, summary: dict, who: str) -> int:
    """Write a second opinion's record (learned.json, expert.json) and say on stderr what to
    review, or why it is not available; 0 either way: a sample's record, never a failed job."""
    from cytopipe.atomic import write_json

    write_json(out, {**doc, **summary})
    if summary["status"] != "ok":
        print(f"{doc['sample_id']}: {who} gating not available: {summary['reason']}",
              file=sys.stderr)  # fmt: skip
    for text in summary.get("disagreements", ()):
        print(f"{doc['sample_id']}: review: {text}", file=sys.stderr)
    return 0


def _unusable(model, cfg, events_path) -> str:
    """Why the model cannot gate this sample ('' when it can): other markers, another scale."""
    same = json.dumps(thaw(model.settings.get("transform")), sort_keys=True) == json.dumps(
        thaw(cfg["transform"]), sort_keys=True
    )
    if "transform" in model.settings and not same:
        return (
            "the model was learned on another transform than this workflow's "
            "(config transform); learn it again with this config"
        )
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(events_path)
        columns = set(meta.schema.names)
    except (OSError, ValueError) as exc:
        return f"cannot read the preprocessed events ({exc})"
    if meta.num_rows == 0:
        return "no events (the sample failed upstream)"
    missing = [m for m in (*model.markers, "qc_pass") if m not in columns]
    return f"the sample lacks the model's marker(s) {', '.join(missing)}" if missing else ""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "learn-gates",
        help="learn a lab's own gating from expert-gated files",
        description="Learn the expert's populations from reference FCS files and, per file, "
        "its expert gating: a label CSV (a `label` column, or one 0/1 column per population, "
        "one row per event in file order), a Gating-ML 2.0 file (.xml) or a FlowJo workspace "
        "(.wsp, samples matched by file name); on cytopipe's own transform. Writes a versioned "
        "JSON model. With --evaluate, leave one file out to measure per-population F1 and "
        "count error.",
    )
    p.add_argument("--fcs", nargs="+", required=True, help="reference FCS files")
    p.add_argument(
        "--labels", nargs="+", required=True, help="per file: label CSV, Gating-ML .xml or .wsp"
    )
    p.add_argument("--markers", nargs="+", required=True, help="canonical markers to learn on")
    p.add_argument("--out", required=True, help="model JSON")
    p.add_argument("--evaluate", default=None, help="also write leave-one-file-out scores (TSV)")
    p.add_argument(
        "--unscored",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="expert labels meaning 'not gated' (e.g. unassigned): --evaluate leaves their events "
        "out of the F1 (FlowCAP-I's scoring) and also reports the F1 counting them as negatives",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="reference events learned per population (default: at least 10,000, more of the "
        "larger populations while all together stay within 60,000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--panel", default=None, help="panel YAML (default: the config's panel)")
    add_settings_arguments(p)
    p.set_defaults(func=run_learn)

    a = subparsers.add_parser(
        "apply-model",
        help="gate a file with a learned model; flag populations unlike the references",
        description="Label every event of an FCS file with the model's populations (file order; "
        "events removed by QC get no label), with a confidence per event and whether it lies "
        "beyond what the reference files covered.",
    )
    a.add_argument("fcs", help="FCS file")
    a.add_argument("--model", required=True, help="model JSON from learn-gates")
    a.add_argument("--out", required=True, help="per-event labels (TSV)")
    a.add_argument("--review", default=None, help="also write the per-population review (JSON)")
    a.add_argument(
        "--gatingml", default=None,
        help="also write the model's populations as polygon gates (Gating-ML 2.0)",
    )  # fmt: skip
    a.add_argument("--flowjo", default=None, help="... and as a FlowJo 10 workspace (.wsp)")
    a.add_argument(
        "--gate-counts", default=None,
        help="... and a TSV: population, markers, model and gate counts, F1",
    )  # fmt: skip
    a.add_argument("--panel", default=None, help="panel YAML (default: the config's panel)")
    add_settings_arguments(a)
    a.set_defaults(func=run_apply)

    m = subparsers.add_parser(
        "model-map",
        help="the learned model's opinion of a preprocessed sample beside the template's gates",
        description="Label the QC-kept events of a preprocessed sample with the model "
        "(gating_model.path), compare the model's populations with the template's gates "
        "(gating_model.compare) and write learned.json: populations, agreement (F1), and what "
        "to review (disagreements, events unlike the references).",
    )
    m.add_argument("events", help="preprocessed/{sample}.parquet")
    m.add_argument("--gates", required=True, help="samples/{sample}/gates.parquet")
    m.add_argument("--model", required=True, help="model JSON from learn-gates")
    m.add_argument("--sample-id", default=None, help="default: the events file name")
    m.add_argument("--out", required=True, help="learned.json")
    add_settings_arguments(m)
    m.set_defaults(func=run_map)

    e = subparsers.add_parser(
        "expert-map",
        help="compare a sample's automated gates with an expert's gating of the same file",
        description="Apply the expert's gating of the FCS file (FlowJo .wsp, Gating-ML .xml or "
        "a per-event label CSV), compare each population of expert_gates.compare with the "
        "template's gate on the QC-kept events (F1), outline the expert's population on the "
        "gate's density plot and write expert.json.",
    )
    e.add_argument("events", help="preprocessed/{sample}.parquet")
    e.add_argument("--gates", required=True, help="samples/{sample}/gates.parquet")
    e.add_argument("--plots", required=True, help="samples/{sample}/plots.json")
    e.add_argument("--fcs", required=True, help="the sample's FCS file")
    e.add_argument("--expert", required=True, help="the expert's gating: .wsp, .xml or .csv")
    e.add_argument("--sample-id", default=None, help="default: the events file name")
    e.add_argument("--out", required=True, help="expert.json")
    add_settings_arguments(e)
    e.set_defaults(func=run_expert)
