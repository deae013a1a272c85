"""Per-sample processing for the workflow: preprocess (ingest -> panel -> compensate ->
transform -> QC) and gate (template gates -> statistics -> density plots), plus `collect`,
which gathers every sample's outcome into cohort tables.

A bad file must fail only itself: both steps turn a CytopipeError (and any unexpected error,
reported as an internal error) into a `failed` record that flows through the workflow to the
report, and always write their declared outputs so the rest of the cohort carries on. A fault
of the machine (out of memory, disk full, permission denied) is not the sample's: it fails the
job, so Snakemake retries it or stops, and no permanent failed record is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__, compensation, panel, qc, ranges, sample_checks, transforms
from .atomic import write_json, write_parquet, write_tsv
from .autogate import autogate
from .config import add_settings_arguments, settings_from_args
from .errors import CytopipeError, is_environment_fault
from .fcs import public_keywords, read_fcs
from .gating import gate_outline
from .samplesheet import load_sample_sheet
from .stats import (
    STATS_COLUMNS,
    density_plot,
    display_range,
    gates_to_review,
    population_stats,
)
from .template import load_template

SCATTER = panel.SCATTER
REQUIRED = ("FSC-A", "SSC-A", "CD19")
QC_COLUMN = "qc_pass"


@dataclass
class Preprocessed:
    """One sample on the gating scale: canonical marker -> float32 values, in file event order."""

    columns: dict[str, np.ndarray]
    qc_pass: np.ndarray
    info: dict = field(default_factory=dict)


def scale_channel(
    marker: str, raw: np.ndarray, top: float, tcfg: Mapping
) -> tuple[np.ndarray, transforms.Scale]:
    """Scatter as a fraction of the channel's top; fluorescence on logicle (T from config,
    or the channel's top when config sets none) or arcsinh.

    top: the channel's range, from `ranges.channel_range` (its $PnR unless that is nominal).

    `transform.per_marker` overrides the scale or its parameters for one marker; `w: auto`
    estimates logicle W from the data's negative spread as FlowJo does. The default is one
    fixed W for all samples: the longitudinal comparison and the gate search limits assume the
    same scale at every timepoint.
    """
    top = top if top and top > 0 else ranges.DEFAULT_TOP
    if marker in SCATTER:
        scale = transforms.Scale("linear", t=float(top))
        return (raw / np.float32(top)).astype(np.float32), scale
    own = (tcfg.get("per_marker") or {}).get(marker) or {}
    if own.get("scale", tcfg.get("fluorescence", "logicle")) == "arcsinh":
        cof = float(own.get("cofactor", tcfg.get("arcsinh_cofactor", 150)))
        scale = transforms.Scale("arcsinh", cofactor=cof)
        return scale.apply(raw).astype(np.float32), scale
    lp = {"w": 0.5, "m": 4.5, "a": 0.0, **(tcfg.get("logicle") or {})}
    lp.update({k: own[k] for k in ("t", "w", "m", "a") if k in own})
    t, m, a = float(lp.get("t") or top), float(lp["m"]), float(lp["a"])
    w = transforms.estimate_logicle_w(raw, t, m) if lp["w"] == "auto" else float(lp["w"])
    scale = transforms.Scale("logicle", t=t, w=w, m=m, a=a)
    return scale.apply(raw).astype(np.float32), scale


def preprocess(
    path: str, panel_map: panel.Panel, cfg: Mapping, spill_csv: str | None = None
) -> Preprocessed:
    sample = read_fcs(path)
    idx = panel.match_channels(panel_map, sample.pnn, sample.pns)
    panel.require_markers(idx, REQUIRED, sample.pnn, sample.pns, path)

    spill = (
        compensation.read_spillover_csv(spill_csv, sample.pnn, sample.pns) if spill_csv else None
    )
    if spill is None and cfg["compensation"].get("default", "keyword") == "keyword":
        spill = compensation.spillover_from_keywords(sample)
    events = (
        compensation.compensate(sample.events, sample.pnn, spill)
        if spill is not None
        else sample.events
    )

    columns: dict[str, np.ndarray] = {}
    scales: dict[str, transforms.Scale] = {}
    scaled = {m: i for m, i in idx.items() if m != "Time"}
    tops = ranges.channel_ranges(
        sample.events,
        {i: ranges.declared_top(sample, i) for i in scaled.values()},
        sample.pnn,
        path,
    )
    nominal = {m: tops[i] for m, i in scaled.items() if tops[i].replaced}
    for marker, i in idx.items():
        if marker == "Time":
            columns[marker] = np.ascontiguousarray(events[:, i], dtype=np.float32)
            continue
        columns[marker], scales[marker] = scale_channel(
            marker, events[:, i], tops[i].top, cfg["transform"]
        )

    fluorescence = {m: columns[m] for m in idx if m not in SCATTER and m != "Time"}
    qc_result = qc.qc_sample(
        sample, idx, fluorescence, cfg["qc"], tops={idx[m]: r.top - 1 for m, r in nominal.items()}
    )
    range_notes = [r.note(f"{marker} ({sample.pnn[idx[marker]]})") for marker, r in nominal.items()]
    info = {
        "provenance": {
            **sample.provenance,
            "warnings": [
                *sample.provenance.get("warnings", []),
                *(spill.warnings if spill is not None else []),
                *range_notes,
            ],
            "ranges_replaced": {m: dataclasses.asdict(r) for m, r in nominal.items()},
            "spillover_source": spill.source if spill is not None else "none",
            "spillover_channels": spill.channels if spill is not None else [],
            "transform": {m: str(sc) for m, sc in scales.items()},
            "scales": {m: dataclasses.asdict(sc) for m, sc in scales.items()},
            "cytopipe_version": __version__,
        },
        "panel": {
            m: f"{sample.pnn[i]} ({sample.pns[i]})" if sample.pns[i] else sample.pnn[i]
            for m, i in idx.items()
        },
        "qc": _doubt_ranges(qc_result.record(), range_notes),
        "qc_timeline": qc_result.timeline(),
        "keywords": public_keywords(sample.keywords, cfg.get("keyword_allowlist") or ()),
    }
    return Preprocessed(columns, qc_result.keep, info)


def _doubt_ranges(record: dict, notes: list[str]) -> dict:
    """A sample whose declared ranges were wrong is at least a QC warning, with the reason: its
    B-cell numbers then say so wherever they are shown, never silently."""
    if not notes:
        return record
    verdict = "warn" if record["verdict"] == "pass" else record["verdict"]
    return {**record, "verdict": verdict, "notes": [*record["notes"], *notes]}


@dataclass
class Gated:
    masks: dict[str, np.ndarray]
    stats: pd.DataFrame
    plots: list[dict]
    skipped: dict[str, str]


def gate(sample_id: str, columns: Mapping[str, np.ndarray], specs) -> Gated:
    """Place the template's gates on this sample (events that passed QC) and summarise them."""
    res = autogate(specs, columns)
    order = [g.id for g in res.gates]
    masks = {p: res.masks[p] for p in order}
    n_root = len(next(iter(columns.values()))) if columns else 0
    stats = population_stats(sample_id, masks, res.parents, columns, n_root, res.methods)
    shown = {m for g in res.gates if g.id not in res.passed for m in res.plotted[g.id]}
    ranges = {m: (0.0, 1.0) if m in SCATTER else display_range(columns[m]) for m in shown}
    all_events = np.ones(n_root, dtype=bool)
    plots = []
    for g in res.gates:
        if g.id in res.passed:  # pass-through pre-gate (marker missing): nothing to draw
            continue
        x, y = res.plotted[g.id]
        parent_mask = masks[g.parent] if g.parent else all_events
        view = (ranges[x], ranges[y])
        extras = [  # `or:` parts, drawn where they share the plot's axes
            (label, gate_outline(e, view))
            for label, e in res.extras.get(g.id, ())
            if tuple(e.dims[:2]) == (x, y)
        ]
        count = int(masks[g.id].sum())
        plots.append(
            density_plot(
                g.id, g.parent, x, y, columns, parent_mask, count, gate_outline(g, view), ranges,
                extras,
            )
        )  # fmt: skip
    return Gated(masks, stats, plots, res.skipped)


# ---------------------------------------------------------------- workflow edges (I/O)


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
    except Exception as exc:  # noqa: BLE001 - every failure of the input becomes its record
        if is_environment_fault(exc):
            raise
        return _failed_record(sample_id, stage, exc)


def run_preprocess(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args)
    panel_map = panel.load_panel(args.panel or cfg["panel"])

    def work() -> dict:
        pre = preprocess(args.fcs, panel_map, cfg, args.spillover_csv)
        df = pd.DataFrame(pre.columns)
        df[QC_COLUMN] = pre.qc_pass
        write_parquet(args.out_events, df)
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
        df = pd.read_parquet(args.events)
        keep = df.pop(QC_COLUMN).to_numpy()
        columns = {c: np.ascontiguousarray(df[c].to_numpy()[keep]) for c in df.columns}
        gated = gate(sample_id, columns, specs)
        verdict = (info.get("qc") or {}).get("verdict")
        if verdict in ("warn", "fail"):  # statistics of a doubtful acquisition say so
            flags = gated.stats["flag"].fillna("")
            gated.stats["flag"] = (flags + ";").where(flags != "", "") + f"qc_{verdict}"
        write_parquet(out / "gates.parquet", event_masks(gated.masks, keep))
        write_tsv(out / "stats.tsv", gated.stats)
        write_json(out / "plots.json", {"sample_id": sample_id, "plots": gated.plots})
        return {**info, "skipped_populations": sorted(gated.skipped), "skip_reasons": gated.skipped}

    record = _guard(sample_id, "gate", work)
    if record["status"] != "ok":
        write_parquet(out / "gates.parquet", pd.DataFrame())
        write_tsv(out / "stats.tsv", pd.DataFrame(columns=STATS_COLUMNS))
        write_json(out / "plots.json", {"sample_id": sample_id, "plots": []})
    write_json(out / "sample.json", record)
    return 0


def event_masks(masks: Mapping[str, np.ndarray], kept: np.ndarray) -> pd.DataFrame:
    """One boolean column per population, one row per event in file order (QC-removed: False)."""
    out = {}
    for pop, m in masks.items():
        full = np.zeros(kept.shape[0], dtype=bool)
        full[kept] = m
        out[pop] = full
    return pd.DataFrame(out)


def collect(
    sheet: pd.DataFrame,
    results: Path,
    *,
    date_tolerance_days: float = sample_checks.DEFAULT_DATE_TOLERANCE_DAYS,
) -> dict[str, pd.DataFrame]:
    """Cohort tables from every sample's record and statistics.

    A file that cannot belong to its row (the same file on another row) fails the row here, at
    stage "sample sheet", with its statistics left out of sample_stats.tsv: every later step and
    the report then treat it as any failed sample. A doubtful acquisition date only warns
    (`warnings` column of sample_status.tsv)."""
    records = {sid: _read_record(results, sid) for sid in sheet["sample_id"].astype(str)}
    records = _fail_duplicate_files(sheet, records)
    warnings = sample_checks.combine_warnings(
        sample_checks.date_mismatches(sheet, records, date_tolerance_days)
    )
    status_rows, stats = [], []
    for row in sheet.itertuples(index=False):
        rec = records[str(row.sample_id)]
        st = _read_stats(results, row.sample_id) if rec["status"] == "ok" else None
        if st is not None:
            stats.append(st)
        status_rows.append(_status_row(row, rec, st, warnings.get(str(row.sample_id), "")))
    status = pd.DataFrame(status_rows).astype({"events_in": "Int64", "events_kept": "Int64"})
    failures = status.loc[
        status["status"] != "ok", ["sample_id", "patient_id", "path", "stage", "error"]
    ]
    sample_stats = (
        pd.concat(stats, ignore_index=True) if stats else pd.DataFrame(columns=STATS_COLUMNS)
    )
    return {
        "sample_status": status.drop(columns=["path"]),
        "failures": failures,
        "sample_stats": sample_stats,
    }


def _read_record(results: Path, sample_id: str) -> dict:
    return json.loads((results / "samples" / sample_id / "sample.json").read_text())


def _read_stats(results: Path, sample_id: str) -> pd.DataFrame:
    return pd.read_csv(results / "samples" / sample_id / "stats.tsv", sep="\t")


def _fail_duplicate_files(sheet: pd.DataFrame, records: dict[str, dict]) -> dict[str, dict]:
    """Records with every row that shares its file with another row failed (stage "sample
    sheet"); the per-sample files stay as they are, the cohort tables carry the failure."""
    errors = sample_checks.duplicate_files(sheet, records)
    return {
        sid: (
            {**rec, "status": "failed", "stage": sample_checks.SHEET_STAGE, "error": errors[sid]}
            if sid in errors
            else rec
        )
        for sid, rec in records.items()
    }


def _status_row(row: Any, rec: Mapping, st: pd.DataFrame | None, warnings: str) -> dict:
    """One line of sample_status.tsv (plus `path`, which only failures.tsv keeps)."""
    qc = rec.get("qc") or {}
    return {
        "sample_id": row.sample_id,
        "patient_id": row.patient_id,
        "day": row.day,
        "path": row.path,
        "status": rec["status"],
        "stage": rec.get("stage") or "",
        "error": rec.get("error") or "",
        "warnings": warnings,
        "qc_verdict": qc.get("verdict", ""),
        "events_in": qc.get("events_in"),
        "events_kept": qc.get("events_kept"),
        "pct_kept": qc.get("pct_kept"),
        "n_flagged_gates": int((st["flag"].fillna("") != "").sum()) if st is not None else 0,
        "n_gates_to_review": gates_to_review(st) if st is not None else 0,
    }


def run_collect(args: argparse.Namespace) -> int:
    sheet = load_sample_sheet(args.samples, check_files=False)
    tables = collect(sheet, Path(args.results), date_tolerance_days=args.date_tolerance_days)
    for name, df in tables.items():
        write_tsv(Path(args.out) / f"{name}.tsv", df)
    n_failed = len(tables["failures"])
    n_warned = int((tables["sample_status"]["warnings"] != "").sum())
    print(
        f"{len(sheet)} samples, {n_failed} failed"
        + (f": see {args.out}/failures.tsv" if n_failed else "")
        + (f"; {n_warned} with warnings in {args.out}/sample_status.tsv" if n_warned else "")
    )
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    """Standalone ingestion for a core facility: the file's events, channels and provenance."""
    cfg = settings_from_args(args)
    sample = read_fcs(args.fcs)
    panel_map = panel.load_panel(args.panel) if args.panel else None
    idx = panel.match_channels(panel_map, sample.pnn, sample.pns) if panel_map else {}
    marker_of = {i: m for m, i in idx.items()}
    out = Path(args.out)
    stem = Path(args.fcs).name.removesuffix(".fcs").removesuffix(".FCS")
    channels = pd.DataFrame(
        {
            "index": range(1, len(sample.pnn) + 1),
            "pnn": sample.pnn,
            "pns": sample.pns,
            "pnr": sample.pnr,
            "marker": [marker_of.get(i, "") for i in range(len(sample.pnn))],
        }
    )
    events = pd.DataFrame(sample.events, columns=sample.pnn)  # read_fcs refuses duplicate $PnN
    write_parquet(out / f"{stem}.events.parquet", events)
    write_tsv(out / f"{stem}.channels.tsv", channels)
    keywords = public_keywords(sample.keywords, cfg.get("keyword_allowlist") or ())
    write_json(out / f"{stem}.provenance.json", {**sample.provenance, "keywords": keywords})
    print(
        f"{args.fcs}: {sample.events.shape[0]} events x {len(sample.pnn)} channels -> {out}/{stem}.*"
    )
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser(
        "ingest", help="read one FCS file: events (Parquet), channel table, provenance (JSON)"
    )
    i.add_argument("fcs")
    i.add_argument("--out", required=True, help="output folder")
    i.add_argument(
        "--panel", default=None, help="panel YAML: adds the canonical marker of each channel"
    )
    add_settings_arguments(i)
    i.set_defaults(func=run_ingest)

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
