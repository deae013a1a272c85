"""The interactive HTML report: cohort, patient and sample pages (`cytopipe report`).

Layout of the report folder (default results/report/):
  index.html                 cohort: swimmer plot, Kaplan-Meier, patients, failed samples,
                             samples by QC verdict, definitions
  patients/<patient_id>.html B cells over time (log), subsets, CD20 vs CD19, plasmablasts, QC
  samples/<sample_id>.html   every gate on its density plot, statistics, QC, provenance
  assets/plotly.min.js       plotly.js, written once, loaded by every page (works offline)

The report only reads the small per-sample and cohort outputs (never events), tolerates a
partial results folder (a missing table makes its section say "not available"), and shows the
numbers of the tables unchanged. Failed samples are listed on the cohort page with their error
line: that is how a core facility learns that a file in a batch was broken.

Pages name samples, never their files: file names and paths (archives name files after patients)
and exact acquisition dates and times appear only when config `report:` allows them
(`show_file_names`, `show_acquisition_times`; see `Privacy`). The tables under tables/ are the
lab's and keep them.

`write_report_figures` writes the main cohort plots as standalone HTML files (plotly.js inlined)
for Snakemake's own `--report`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cytopipe import __version__
from cytopipe.atomic import atomic_path
from cytopipe.clinical.sample_checks import WARNING_SEPARATOR
from cytopipe.errors import CytopipeError
from cytopipe.report.data import ResultsFolder, SampleFiles, load_results, load_sample, records
from cytopipe.report.figures import (
    b_cell_figure,
    cd20_figure,
    composition_figure,
    density_figure,
    km_figure,
    patient_order,
    plasmablast_figure,
    population_name,
    qc_timeline_figure,
    swimmer_figure,
)
from cytopipe.report.html import (
    Column,
    FigureCounter,
    Markup,
    Privacy,
    badge,
    esc,
    fmt_number,
    is_missing,
    key_values,
    link,
    not_available,
    page,
    section,
    slug,
    table,
)

ASSET = "assets/plotly.min.js"
VERDICT_ORDER = ["failed", "fail", "warn", "pass", ""]
SCRUBBED = ("error", "warnings")  # table columns that may quote a file's name or dates


@dataclass
class Report:
    """What every page needs to know about the cohort: ids, file names and cross-links."""

    results: ResultsFolder
    out: Path
    definitions: dict | None
    definitions_source: str
    sample_patient: dict[str, str] = field(default_factory=dict)
    sample_day: dict[str, float] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    privacy: Privacy = field(default_factory=Privacy)
    status: dict[str, dict] = field(default_factory=dict)  # sample_status.tsv rows by sample
    files: dict[str, list[str]] = field(default_factory=dict)  # failures.tsv paths by sample

    def patient_href(self, pid: str, root: str) -> str:
        return f"{root}patients/{slug(pid)}.html"

    def sample_href(self, sid: str, root: str) -> str:
        return f"{root}samples/{slug(sid)}.html"

    def samples_of(self, pid: str) -> list[str]:
        own = [s for s in self.samples if self.sample_patient.get(s) == pid]
        return sorted(own, key=lambda s: (self.sample_day.get(s, np.inf), s))

    def shown(self, value: Any, sid: str, files: Any = ()) -> Any:
        """Text about sample `sid` as its pages may show it (file names, times; `Privacy`)."""
        return self.privacy.text(value, sid, [*self.files.get(sid, []), *files])

    def shown_rows(self, rows: list[dict]) -> list[dict]:
        """Table rows with their error and warning text as pages may show it."""
        return [
            {**r, **{k: self.shown(r[k], str(r.get("sample_id", ""))) for k in SCRUBBED if k in r}}
            for r in rows
        ]


# ----------------------------------------------------------------------------- entry points


def write_report(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> Path:
    """Write every page of the report for `results_dir` into `out_dir`; returns index.html.

    `config` (config/config.yaml) is only used when tables/cohort_summary.json is missing, to
    still state the definitions (thresholds, reference ranges) the pages draw. `options` is the
    config's `report:` section (what the pages may show of file names and acquisition times)."""
    results = load_results(results_dir)
    if not results.root.is_dir():
        raise CytopipeError(
            "results folder not found", path=results_dir, hint="run the workflow first"
        )
    out = Path(out_dir)
    report = _context(results, out, config)
    report.privacy = Privacy.from_config(options)
    write_plotly_asset(out)
    written = {out / "index.html"}
    for pid in report.patients:
        path = out / "patients" / f"{slug(pid)}.html"
        _write(path, patient_page(report, pid))
        written.add(path)
    for sid in report.samples:
        sample = load_sample(sid, results.sample_dirs.get(sid))
        path = out / "samples" / f"{slug(sid)}.html"
        _write(path, sample_page(report, sample))
        written.add(path)
    _remove_stale(out, written)
    index = out / "index.html"
    _write(index, cohort_page(report))  # last: its presence means the report is complete
    return index


def write_report_figures(
    results_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Standalone swimmer.html and km.html (plotly.js inlined) in `out_dir`, for Snakemake's
    `--report` (it embeds files marked report(...), which cannot load a shared asset).

    Both files are always written (a short "not available" page when a table is missing or
    empty) so a workflow rule declaring them as outputs never fails on a partial cohort."""
    import plotly.io as pio

    results = load_results(results_dir)
    out = Path(out_dir)
    summary = results.summary or {}
    titles = {
        "swimmer": "Swimmer plot: B-cell aplasia and reconstitution per patient",
        "km": "Time to B-cell reconstitution (Kaplan-Meier)",
    }
    builders = {
        "swimmer": ("patients", lambda t: swimmer_figure(t, results.table("sample_states"))),
        "km": (
            "km",
            lambda t: km_figure(
                t,
                summary.get("median_days_to_reconstitution"),
                len(summary.get("excluded_from_km") or []),
            ),
        ),
    }
    paths = {}
    for name, (table_name, build) in builders.items():
        frame = results.table(table_name)
        paths[name] = out / f"{name}.html"
        if frame is None or not len(frame):
            why = results.why_missing(table_name) or f"{table_name}.tsv has no rows"
            text = (
                f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(titles[name])}"
                f"</title></head><body><h1>{esc(titles[name])}</h1>"
                f"{not_available(titles[name], why)}</body></html>"
            )
        else:
            fig = build(frame)
            fig.update_layout(title=dict(text=esc(titles[name]), x=0))
            fig.update_layout(height=(fig.layout.height or 400) + 60, margin=dict(t=90))
            text = pio.to_html(
                fig, include_plotlyjs=True, full_html=True, config={"displaylogo": False}
            )
        _write(paths[name], text)
    return paths


def write_plotly_asset(out: Path) -> Path:
    """plotly.js once per report folder (rewritten only when the installed version differs)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    path = out / ASSET
    if path.exists() and path.stat().st_size == len(js.encode("utf-8")):
        return path
    _write(path, js)
    return path


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _remove_stale(out: Path, keep: set[Path]) -> None:
    """Pages of samples/patients no longer in the results would otherwise linger with old data."""
    for sub in ("patients", "samples"):
        folder = out / sub
        if folder.is_dir():
            for page_file in folder.glob("*.html"):
                if page_file not in keep:
                    page_file.unlink()


def _context(results: ResultsFolder, out: Path, config: str | os.PathLike | None) -> Report:
    definitions, source = _definitions(results, config)
    report = Report(results, out, definitions, source)
    sample_patient: dict[str, str] = {}
    sample_day: dict[str, float] = {}
    for name in ("failures", "sample_status", "population_stats", "sample_states"):
        frame = results.table(name)
        if frame is None or "sample_id" not in frame or "patient_id" not in frame:
            continue
        for sid, pid in zip(frame["sample_id"], frame["patient_id"], strict=True):
            if pid:
                sample_patient[str(sid)] = str(pid)
        if "day" in frame:
            days = pd.to_numeric(frame["day"], errors="coerce")
            for sid, day in zip(frame["sample_id"], days, strict=True):
                if np.isfinite(day):
                    sample_day[str(sid)] = float(day)
    report.sample_patient, report.sample_day = sample_patient, sample_day
    report.status = _rows_by_sample(results.table("sample_status"))
    report.files = _files_by_sample(results.table("failures"))
    samples = set(results.sample_dirs)
    status = results.table("sample_status")
    if status is not None and "sample_id" in status:
        samples |= set(status["sample_id"].astype(str))
    report.samples = sorted(samples)
    patients = set(sample_patient.values())
    table_p = results.table("patients")
    if table_p is not None and "patient_id" in table_p:
        patients |= set(table_p["patient_id"].astype(str))
    report.patients = sorted(p for p in patients if p)
    return report


def _rows_by_sample(frame: pd.DataFrame | None) -> dict[str, dict]:
    if frame is None or "sample_id" not in frame:
        return {}
    return {str(r["sample_id"]): r for r in records(frame)}


def _files_by_sample(failures: pd.DataFrame | None) -> dict[str, list[str]]:
    """The file path each failed sample's row named: its error message quotes it."""
    if failures is None or "path" not in failures or "sample_id" not in failures:
        return {}
    return {
        str(sid): [str(path)]
        for sid, path in zip(failures["sample_id"], failures["path"], strict=True)
        if not is_missing(path) and str(path)
    }


def _definitions(
    results: ResultsFolder, config: str | os.PathLike | None
) -> tuple[dict | None, str]:
    summary = results.summary or {}
    if isinstance(summary.get("definitions"), dict):
        return summary["definitions"], "tables/cohort_summary.json"
    if config is not None:
        from cytopipe.clinical.longitudinal import definitions, longitudinal_settings
        from cytopipe.config import load_config

        cfg = load_config(config)
        return definitions(
            longitudinal_settings(cfg, config)
        ), f"{config} (cohort_summary.json missing)"
    return None, ""


def _plot(
    figs: FigureCounter, what: str, build: Any, *args: Any, caption: str = "", **kw: Any
) -> str:
    """A figure, or "not available" naming the missing column when a table is from another
    version (a KeyError there must not cost the whole report)."""
    try:
        fig = build(*args, **kw)
    except KeyError as exc:
        return not_available(what, f"the table lacks column {exc}")
    return figs.embed(fig, caption=caption)


# ----------------------------------------------------------------------------- cohort page


def cohort_page(report: Report) -> str:
    res = report.results
    figs = FigureCounter()
    patients = res.table("patients")
    states = res.table("sample_states")
    summary = res.summary or {}
    body = [
        _summary_cards(report),
        _failures_section(report, root=""),
        _swimmer_section(report, patients, states, figs),
        _km_section(report, summary, figs),
        _patients_section(report, patients),
        _qc_section(report),
        _definitions_section(report),
        _downloads_section(report),
    ]
    toc = [
        ("failed", "Failed samples"),
        ("swimmer", "Swimmer plot"),
        ("km", "Kaplan-Meier"),
        ("patients", "Patients"),
        ("qc", "Samples by QC verdict"),
        ("definitions", "Definitions"),
        ("downloads", "Tables"),
    ]
    return page(
        title="cytopipe cohort report",
        heading="B-cell aplasia and reconstitution after CD19 CAR-T: cohort",
        breadcrumbs=[("Cohort", None)],
        body="".join(body),
        root="",
        toc=toc,
        footer=_footer(report),
    )


def _footer(report: Report) -> str:
    version = (report.definitions or {}).get("cytopipe_version", __version__)
    return (
        f"cytopipe {esc(version)} · results folder {esc(report.results.root.resolve().name)} · "
        f"report written by cytopipe {esc(__version__)}"
    )


def _card(value: Any, label: str, css: str = "") -> str:
    text = value if isinstance(value, Markup) else esc(value)
    return f'<div class="card {esc(css)}"><div class="v">{text}</div><div class="k">{esc(label)}</div></div>'


def _summary_cards(report: Report) -> str:
    s = report.results.summary or {}
    status = report.results.table("sample_status")
    n_failed = int((status["status"] == "failed").sum()) if status is not None else None
    n_samples = len(status) if status is not None else None
    median = s.get("median_days_to_reconstitution")
    cards = [
        _card(fmt_number(s.get("n_patients", len(report.patients))), "patients"),
        _card(fmt_number(s.get("n_reconstituted")), "reconstituted"),
        _card(fmt_number(s.get("n_censored")), "censored in aplasia"),
        _card(
            "not reached" if median is None and s else fmt_number(median),
            "median days to reconstitution (KM)",
        ),
        _card(fmt_number(n_samples), "samples"),
        _card(fmt_number(n_failed), "failed samples", "bad" if n_failed else ""),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _failures_section(report: Report, root: str, patient: str | None = None) -> str:
    failures = report.results.table("failures")
    title = "Failed samples"
    if failures is None:
        return section(
            title,
            not_available("The list of failed samples", report.results.why_missing("failures")),
            sid="failed",
        )
    if patient is not None:
        failures = failures[failures["patient_id"].astype(str) == patient]
    if not len(failures):
        if patient is not None:
            return ""
        return (
            '<section id="failed" class="alert okbox"><h2>Failed samples</h2>'
            "<p>No sample failed: every file in the batch was read and gated.</p></section>"
        )
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], root)),
        Column(
            "patient_id",
            "patient",
            link=lambda r: (
                report.patient_href(r["patient_id"], root) if r.get("patient_id") else None
            ),
        ),
        Column("stage", "failed at", title="workflow stage where the sample failed"),
        Column("error", "error (what is wrong and what to do)", "long"),
        Column("path", "file"),
    ]
    shown = set(failures.columns) - (set() if report.privacy.show_file_names else {"path"})
    columns = [c for c in columns if c.key in shown]
    rows = report.shown_rows(records(failures))
    n = len(rows)
    return (
        f'<section id="failed" class="alert"><h2>Failed samples ({n})</h2>'
        "<p>These samples are missing from every statistic, plot and table of this report: "
        "their file could not be processed, or (failed at the sample sheet) cannot belong to "
        "their row. Fix the file (or the sample sheet) and rerun the workflow.</p>"
        + table(rows, columns, css="failures")
        + "</section>"
    )


def _swimmer_section(report, patients, states, figs) -> str:
    title = "Swimmer plot"
    if patients is None or not len(patients):
        return section(
            title,
            not_available(
                "The swimmer plot", report.results.why_missing("patients") or "no patients"
            ),
            sid="swimmer",
        )
    links = {p: report.patient_href(p, "") for p in patients["patient_id"].astype(str)}
    return section(
        title,
        _plot(
            figs,
            "The swimmer plot",
            swimmer_figure,
            patients,
            states,
            links,
            caption=(
                "One row per patient over days since infusion. Grey: follow-up from the first "
                "sample; orange: B-cell aplasia; green: reconstituted. Dots are the sampling days "
                "coloured by B-cell state (open circle: baseline), ◆ reconstitution, ▶ follow-up "
                "ended in aplasia (censored), ★ memory/plasmablast return flag. Click a row to open "
                "the patient."
            ),
        ),
        sid="swimmer",
    )


def _km_section(report: Report, summary: Mapping, figs: FigureCounter) -> str:
    title = "Time to B-cell reconstitution (Kaplan-Meier)"
    km = report.results.table("km")
    if km is None or not len(km):
        return section(
            title,
            not_available(
                "The Kaplan-Meier curve", report.results.why_missing("km") or "km.tsv is empty"
            ),
            sid="km",
        )
    excluded = summary.get("excluded_from_km") or []
    body = _plot(
        figs,
        "The Kaplan-Meier curve",
        km_figure,
        km,
        summary.get("median_days_to_reconstitution"),
        len(excluded),
        caption=(
            "Fraction of patients still in B-cell aplasia over days since infusion; an event is a "
            "confirmed reconstitution, ticks mark patients censored at their last follow-up."
        ),
    )
    if excluded:
        rows = [
            {"patient_id": e.get("patient_id", ""), "reason": e.get("reason", "")}
            for e in excluded
            if isinstance(e, Mapping)
        ]
        body += "<h3>Patients not in the curve</h3>" + table(
            rows,
            [
                Column(
                    "patient_id", "patient", link=lambda r: report.patient_href(r["patient_id"], "")
                ),
                Column("reason", "reason"),
            ],
        )
    body += (
        "<details><summary>Kaplan-Meier table (km.tsv)</summary>"
        + table(
            records(km),
            [
                Column("day", "day", "num"),
                Column("at_risk", "at risk", "int"),
                Column("events", "reconstituted", "int"),
                Column("censored", "censored", "int"),
                Column("still_aplastic", "still in aplasia", "num"),
            ],
            css="km",
        )
        + "</details>"
    )
    return section(title, body, sid="km")


PATIENT_COLUMNS = [
    ("outcome", "outcome", "html", "reconstituted, censored in aplasia, or never depleted"),
    ("disease", "disease", "text", ""),
    ("age_at_infusion", "age at infusion (y)", "num", ""),
    ("n_samples", "samples", "int", "samples with statistics"),
    (
        "baseline_b_pct",
        "baseline B % lymph.",
        "num",
        "CD19+ B cells, % of lymphocytes, last pre-infusion sample",
    ),
    (
        "baseline_b_per_ul",
        "baseline B /µL",
        "num",
        "CD19+ B cells per µL, last pre-infusion sample",
    ),
    (
        "aplasia_start_day",
        "aplasia from day",
        "num",
        "first post-infusion timepoint below threshold",
    ),
    (
        "reconstitution_day",
        "reconstitution day",
        "num",
        "first confirmed timepoint at or above threshold after aplasia",
    ),
    (
        "aplasia_duration_days",
        "aplasia days",
        "num",
        "reconstitution (or last follow-up when censored) minus aplasia start",
    ),
    ("last_followup_day", "last follow-up day", "num", ""),
    (
        "phenotype_at_return",
        "phenotype at return",
        "text",
        "dominant B-cell class at reconstitution; not evaluable when every subset fraction is "
        "missing or 0",
    ),
    ("flags", "flags", "long", ""),
]


def _patients_section(report: Report, patients: pd.DataFrame | None) -> str:
    title = "Patients"
    if patients is None:
        return section(
            title,
            not_available("The patient table", report.results.why_missing("patients")),
            sid="patients",
        )
    order = patient_order(patients) if len(patients) else []
    rows = {
        str(r["patient_id"]): {**r, "outcome": Markup(outcome_badge(r))} for r in records(patients)
    }
    ordered = [rows[p] for p in order if p in rows]
    columns = [
        Column(
            "patient_id", "patient", link=lambda r: report.patient_href(str(r["patient_id"]), "")
        )
    ]
    columns += [
        Column(k, label, kind, tip)
        for k, label, kind, tip in PATIENT_COLUMNS
        if k in patients or k == "outcome"
    ]
    return section(
        title,
        table(ordered, columns, css="patients", empty="no patients"),
        sid="patients",
        note="Ordered as in the swimmer plot; click a column header to sort.",
    )


QC_COLUMNS = [
    ("status", "status", "verdict", ""),
    ("stage", "failed at", "text", ""),
    (
        "qc_verdict",
        "QC verdict",
        "verdict",
        "pass / warn / fail from the share of events kept by QC",
    ),
    ("events_in", "events", "int", "events in the file"),
    ("events_kept", "kept", "int", "events kept by QC"),
    ("pct_kept", "% kept", "num", ""),
    ("n_flagged_gates", "flagged gates", "int", "gates with a low confidence or fallback flag"),
    (
        "n_gates_to_review",
        "gates to review",
        "int",
        "gates placed with confidence < 0.5 on a parent of >= 50 events: where the gate's "
        "position can change the counts",
    ),
    (
        "warnings",
        "sheet checks",
        "long",
        "the file's acquisition date ($DATE) far from the row's collection_date: the row may "
        "name another visit's file",
    ),
    ("error", "error", "long", ""),
]


def _qc_section(report: Report) -> str:
    title = "Samples by QC verdict"
    status = report.results.table("sample_status")
    if status is None:
        return section(
            title,
            not_available("The sample status table", report.results.why_missing("sample_status")),
            sid="qc",
        )
    frame = status.copy()
    verdict = np.where(
        frame["status"] == "failed",
        "failed",
        frame.get("qc_verdict", "").astype(str) if "qc_verdict" in frame else "",
    )
    frame["_verdict"] = verdict
    counts = pd.Series(verdict).value_counts()
    labels = {
        "failed": "failed (not processed)",
        "fail": "QC fail",
        "warn": "QC warn",
        "pass": "QC pass",
        "": "no verdict",
    }
    css = {"failed": "bad", "fail": "bad", "warn": "warn"}
    cards = "".join(
        _card(
            fmt_number(int(counts.get(v, 0))), labels[v], css.get(v, "") if counts.get(v, 0) else ""
        )
        for v in VERDICT_ORDER
        if v in counts or v in ("failed", "fail", "warn", "pass")
    )
    n_warned = int(_has_warnings(frame).sum())
    if n_warned:
        cards += _card(fmt_number(n_warned), "file/date warnings", "warn")
    frame["_rank"] = (
        frame["_verdict"]
        .map({v: i for i, v in enumerate(VERDICT_ORDER)})
        .fillna(len(VERDICT_ORDER))
    )
    frame = frame.sort_values(["_rank", "patient_id", "sample_id"], kind="stable")
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "")),
        Column(
            "patient_id",
            "patient",
            link=lambda r: (
                report.patient_href(r["patient_id"], "") if r.get("patient_id") else None
            ),
        ),
    ]
    columns += [Column(k, label, kind, tip) for k, label, kind, tip in QC_COLUMNS if k in frame]
    rows = report.shown_rows(records(frame))
    body = f'<div class="cards">{cards}</div>'
    attention = [r for r in rows if _needs_a_look(r)]
    if attention:
        body += f"<h3>Samples to look at ({len(attention)})</h3>"
        body += (
            '<p class="note">Failed, QC fail or warn, a file whose acquisition date does not '
            "match the sheet's collection date (sheet checks), or with gates to review "
            "(confidence below 0.5 on a parent of at least 50 events). Fallback gates on a few "
            "events, as in B-cell aplasia, are flagged on the sample page but not listed here.</p>"
        )
        body += table(attention, columns, css="attention", row_class=_row_class)
    else:
        body += "<p>Every sample passed QC and no gate was flagged.</p>"
    tbl = table(rows, columns, css="qc", row_class=_row_class)
    body += (
        f"<details {'open' if len(rows) <= 20 else ''}><summary>All {len(rows)} samples</summary>"
        f"{tbl}</details>"
    )
    return section(title, body, sid="qc")


def _needs_a_look(row: Mapping) -> bool:
    # tables written before gates_to_review existed: every flagged gate counts
    doubtful = row.get("n_gates_to_review", row.get("n_flagged_gates"))
    warned = row.get("warnings")
    return (
        row.get("_verdict") in ("failed", "fail", "warn")
        or (not is_missing(warned) and bool(warned))
        or (not is_missing(doubtful) and float(doubtful) > 0)
    )


def _has_warnings(status: pd.DataFrame) -> pd.Series:
    """Rows of sample_status with a sheet-check warning (tables from before the checks: none)."""
    if "warnings" not in status:
        return pd.Series(False, index=status.index)
    return status["warnings"].fillna("").astype(str) != ""


def _row_class(row: Mapping) -> str:
    if row.get("status") == "failed" or row.get("qc_verdict") == "fail":
        return "failed"
    return "warn" if row.get("qc_verdict") == "warn" else ""


DEFINITION_LABELS = {
    "aplasia": "B-cell aplasia",
    "aplasia_pct_lymphocytes": "threshold, % of lymphocytes",
    "aplasia_cells_per_ul": "threshold, cells/µL",
    "baseline": "baseline",
    "reconstitution": "reconstitution (confirmation rule)",
    "confirm_with_next": "confirm with next timepoint",
    "unconfirmed_blip": "unconfirmed rise",
    "aplasia_duration": "aplasia duration",
    "phenotype_at_return": "phenotype at return",
    "memory_return_fraction": "memory return fraction",
    "memory_return_rule": "memory return flag",
    "absolute_counts": "absolute counts",
    "kaplan_meier": "Kaplan-Meier",
    "skip_failed_qc": "samples failing QC excluded",
    "cytopipe_version": "cytopipe version",
}


def _definitions_section(report: Report) -> str:
    title = "Definitions"
    defs = report.definitions
    if not defs:
        why = (
            report.results.why_missing("cohort_summary") or "cohort_summary.json has no definitions"
        )
        return section(title, not_available("The definitions", why), sid="definitions")
    items = []
    for key, value in defs.items():
        if key == "reference_ranges":
            continue
        label = DEFINITION_LABELS.get(key, key.replace("_", " "))
        text = (
            fmt_number(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else (("yes" if value else "no") if isinstance(value, bool) else esc(value))
        )
        items.append(f"<dt>{esc(label)}</dt><dd>{text}</dd>")
    body = f'<dl class="defs">{"".join(items)}</dl>'
    ranges = defs.get("reference_ranges")
    if isinstance(ranges, Mapping):
        bands = [b for b in ranges.get("bands") or [] if isinstance(b, Mapping)]
        body += "<h3>Age reference ranges for CD19+ B cells</h3>"
        body += f'<p class="note">Source: {esc(ranges.get("source", "not stated"))} · unit: {esc(ranges.get("unit", ""))} · {esc(ranges.get("rule", ""))}</p>'
        body += table(
            bands,
            [
                Column("label", "age band"),
                Column("min_age", "from age (y)", "num"),
                Column("max_age", "to age (y)", "num"),
                Column("low", "low (cells/µL)", "num"),
                Column("high", "high (cells/µL)", "num"),
            ],
            css="bands",
        )
    note = f"Stated by {report.definitions_source}; every patient and cohort number in this report used these definitions."
    return section(title, body, sid="definitions", note=note)


def _downloads_section(report: Report) -> str:
    tables = report.results.root / "tables"
    names = [
        (
            "cohort_export.csv",
            "one row per patient with the definitions, for pooling across centres",
        ),
        ("patients.tsv", "per-patient summary"),
        ("sample_states.tsv", "B-cell state per timepoint"),
        ("population_stats.tsv", "every population of every sample, with cells/µL"),
        ("km.tsv", "Kaplan-Meier table"),
        ("cohort_summary.json", "cohort numbers and definitions"),
        ("sample_status.tsv", "status and QC verdict per sample"),
        ("failures.tsv", "failed samples"),
    ]
    items = []
    for name, what in names:
        path = tables / name
        if path.exists():
            href = os.path.relpath(path, report.out).replace(os.sep, "/")
            items.append(f'<li><a href="{esc(href)}">{esc(name)}</a>: {esc(what)}</li>')
    body = (
        f"<ul>{''.join(items)}</ul>"
        if items
        else not_available("The tables", f"no tables in {tables}")
    )
    return section("Tables", body, sid="downloads")


# ----------------------------------------------------------------------------- patient page


def patient_page(report: Report, pid: str) -> str:
    res = report.results
    root = "../"
    figs = FigureCounter()
    prow = _patient_row(res.table("patients"), pid)
    states = _rows_for(res.table("sample_states"), pid)
    links = {s: report.sample_href(s, root) for s in report.samples_of(pid)}
    body = [_patient_summary(prow, pid)]
    body.append(_failures_section(report, root, patient=pid))
    defs = report.definitions or {}
    if states is None or not len(states):
        why = res.why_missing("sample_states") or "no sample of this patient has statistics"
        body.append(
            section("B cells over time", not_available("B-cell timelines", why), sid="bcells")
        )
    else:
        bands = (defs.get("reference_ranges") or {}).get("bands") or []
        age = prow.get("age_at_infusion") if prow else None
        pct, per_ul = defs.get("aplasia_pct_lymphocytes"), defs.get("aplasia_cells_per_ul")
        counts = _plasmablast_counts(res.table("population_stats"), pid)
        plots = [
            ("bcells", "B cells over time", b_cell_figure, (states,),
             dict(threshold_pct=pct, threshold_per_ul=per_ul, bands=bands,
                  age_at_infusion=None if is_missing(age) else float(age), links=links),
             "Log axes. Dashed lines: aplasia thresholds; green band: age reference range of "
             "CD19+ B cells per µL (changes with age); ▼ a value of 0 drawn at the bottom of "
             "the axis. Click a point to open the sample."),
            ("subsets", "B-cell subsets over time", composition_figure, (states, links), {},
             "Fractions of CD19+ B cells. Naive / unswitched memory / switched memory / double "
             "negative are the IgD/CD27 quadrants of CD20+ B cells; transitional cells lie "
             "inside the naive quadrant and are drawn as a line."),
            ("cd20", "CD20+ vs CD19+ B cells", cd20_figure, (states, pct, links), {},
             "Both as % of lymphocytes (log axis). A gap between them shows CD19+ CD20− cells."),
            ("plasmablasts", "Plasmablasts", plasmablast_figure, (states, counts, links), {},
             "Marker colour: B-cell state at that timepoint."),
        ]  # fmt: skip
        for sid, title, build, args, kw, caption in plots:
            fig = _plot(figs, title, build, *args, caption=caption, **kw)
            body.append(section(title, fig, sid=sid))
    body.append(_patient_qc(report, pid, states))
    body.append(_patient_samples(report, pid, states))
    ids = report.patients
    i = ids.index(pid)
    pager = [
        ("‹ previous patient", report.patient_href(ids[i - 1], root) if i > 0 else None),
        ("next patient ›", report.patient_href(ids[i + 1], root) if i + 1 < len(ids) else None),
    ]
    toc = [
        ("bcells", "B cells"),
        ("subsets", "Subsets"),
        ("cd20", "CD20 vs CD19"),
        ("plasmablasts", "Plasmablasts"),
        ("qcflags", "QC flags"),
        ("samples", "Samples"),
    ]
    return page(
        title=f"Patient {pid} · cytopipe",
        heading=f"Patient {pid}",
        breadcrumbs=[("Cohort", f"{root}index.html"), (f"Patient {pid}", None)],
        body="".join(body),
        root=root,
        toc=toc,
        pager=pager,
        footer=_footer(report),
    )


def _rows_for(frame: pd.DataFrame | None, pid: str) -> pd.DataFrame | None:
    if frame is None or "patient_id" not in frame:
        return None
    return frame[frame["patient_id"].astype(str) == pid]


def _patient_row(patients: pd.DataFrame | None, pid: str) -> dict | None:
    rows = _rows_for(patients, pid)
    return records(rows)[0] if rows is not None and len(rows) else None


def _plasmablast_counts(pop: pd.DataFrame | None, pid: str) -> pd.DataFrame | None:
    rows = _rows_for(pop, pid)
    if rows is None or "population" not in rows or "cells_per_ul" not in rows:
        return None
    return rows[rows["population"] == "plasmablasts"]


def outcome_badge(row: Mapping, *, days: bool = False) -> str:
    """The patient's episode in one badge (what the swimmer row shows); `days` adds the day."""
    if row.get("reconstituted") is True:
        day = f" day {fmt_number(row.get('reconstitution_day'))}" if days else ""
        return badge("reconstituted", f"reconstituted{day}")
    if row.get("censored") is True:
        day = f" day {fmt_number(row.get('last_followup_day'))}" if days else ""
        return badge("aplasia", f"in aplasia, censored{day}")
    if not is_missing(row.get("aplasia_start_day")):
        return badge("aplasia", "aplasia")
    if is_missing(row.get("last_followup_day")):
        return badge("unknown", "no post-infusion data")
    return badge("not_depleted", "never depleted")


def _patient_summary(row: Mapping | None, pid: str) -> str:
    if row is None:
        return section(
            "Summary",
            not_available("The patient summary", f"patient {pid} is not in patients.tsv"),
            sid="summary",
        )
    pairs: list[tuple[str, Any]] = [("outcome", Markup(outcome_badge(row, days=True)))]
    for key, label, kind, _ in PATIENT_COLUMNS:
        if key in ("flags", "outcome") or key not in row:
            continue
        value = row.get(key)
        pairs.append((label, Markup(fmt_number(value)) if kind in ("num", "int") else value))
    for key, label in (
        ("reconstituted", "reconstituted"),
        ("censored", "censored (follow-up ended in aplasia)"),
        ("flag_memory_return", "memory/plasmablast return flag"),
    ):
        if key in row:
            pairs.append((label, row.get(key) if isinstance(row.get(key), bool) else Markup("—")))
    for key, label in (
        ("frac_naive_transitional_at_return", "naive/transitional at return"),
        ("frac_memory_at_return", "memory at return"),
        ("frac_plasmablast_at_return", "plasmablasts at return"),
    ):
        if key in row:
            pairs.append((f"{label} (fraction of B cells)", Markup(fmt_number(row.get(key)))))
    half = (len(pairs) + 1) // 2
    body = f'<div class="two">{key_values(pairs[:half])}{key_values(pairs[half:])}</div>'
    flags = [f.strip() for f in str(row.get("flags") or "").split(";") if f.strip()]
    if flags:
        items = "".join(f"<li>{esc(f)}</li>" for f in flags)
        body += f'<div class="alert warnbox"><strong>Flags</strong><ul>{items}</ul></div>'
    return section("Summary", body, sid="summary")


def _reference_text(row: Mapping) -> str:
    band = row.get("ref_source_band")
    if not band or is_missing(band):
        return "—"
    return f"{esc(band)}: {fmt_number(row.get('ref_low'))}–{fmt_number(row.get('ref_high'))}"


def _patient_qc(report: Report, pid: str, states: pd.DataFrame | None) -> str:
    title = "QC flags per sample"
    status = _rows_for(report.results.table("sample_status"), pid)
    rows = []
    for sid in report.samples_of(pid):
        row: dict[str, Any] = {"sample_id": sid, "day": report.sample_day.get(sid)}
        if status is not None:
            match = status[status["sample_id"] == sid]
            if len(match):
                row.update(records(match)[0])
        if states is not None:
            match = states[states["sample_id"] == sid]
            if len(match):
                st = records(match)[0]
                row["gate_flags"] = st.get("gate_flags", "")
                row["note"] = st.get("note", "")
        rows.append(row)
    if not rows:
        return section(
            title, not_available("QC flags", "no samples for this patient"), sid="qcflags"
        )
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "../")),
        Column("day", "day", "num"),
        Column("status", "status", "verdict"),
        Column("qc_verdict", "QC verdict", "verdict"),
        Column("pct_kept", "% events kept", "num"),
        Column("n_flagged_gates", "flagged gates", "int"),
        Column(
            "gate_flags",
            "gate flags",
            title="population:reason for gates placed with low confidence or by fallback",
        ),
        Column("note", "state note"),
        Column("warnings", "sheet checks", "long"),
        Column("error", "error", "long"),
    ]
    rows = report.shown_rows(rows)
    return section(title, table(rows, columns, css="qcflags", row_class=_row_class), sid="qcflags")


def _patient_samples(report: Report, pid: str, states: pd.DataFrame | None) -> str:
    title = "Samples"
    if states is None or not len(states):
        rows = [{"sample_id": s, "day": report.sample_day.get(s)} for s in report.samples_of(pid)]
        columns = [
            Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "../")),
            Column("day", "day", "num"),
        ]
        return section(title, table(rows, columns), sid="samples")
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "../")),
        Column("day", "day", "num"),
        Column("age_years", "age (y)", "num"),
        Column("state", "state", "verdict"),
        Column("b_pct_lymphocytes", "B % lymph.", "num", "CD19+ B cells, % of lymphocytes"),
        Column("b_cells_per_ul", "B cells/µL", "num"),
        Column("abs_method", "count method"),
        Column("b_cells", "B events", "int"),
        Column("cd20_pct_lymphocytes", "CD20+ B % lymph.", "num"),
        Column("plasmablast_pct_b", "plasmablasts % B", "num"),
        Column(
            "reference",
            "age reference /µL",
            "html",
            "10th-90th percentile of CD19+ B cells/µL for the age at sampling",
        ),
        Column("ref_position", "vs reference"),
        Column("qc_verdict", "QC", "verdict"),
    ]
    columns = [c for c in columns if c.key in states or c.key == "reference"]
    rows = [
        {**r, "reference": Markup(_reference_text(r))}
        for r in records(states.sort_values("day", kind="stable"))
    ]
    body = table(rows, columns, css="states")
    failed = [s for s in report.samples_of(pid) if s not in set(states["sample_id"])]
    if failed:
        body += (
            "<p>Samples without statistics (failed or excluded): "
            + ", ".join(str(link(report.sample_href(s, "../"), s)) for s in failed)
            + "</p>"
        )
    return section(title, body, sid="samples")


# ----------------------------------------------------------------------------- sample page


def sample_page(report: Report, sample: SampleFiles) -> str:
    root = "../"
    sid = sample.sample_id
    rec = sample.record
    pid = report.sample_patient.get(sid)
    figs = FigureCounter()
    files = _own_files(rec)
    body = [_sample_header(report, sample, pid)]
    body.append(_error_section(report, sample, files))
    body.append(_checks_section(report, sid, files))
    if sample.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in sample.problems)
        body.append(
            f'<section class="alert"><h2>Problems reading this sample\'s files</h2><ul>{items}</ul></section>'
        )
    if sample.failed and not sample.plots and sample.stats is None:
        # nothing was measured: one line instead of five empty sections
        body.append(
            section(
                "Results",
                '<p class="unavailable">No QC record, density plots or '
                "statistics: the sample failed before they were computed.</p>",
                sid="gates",
            )
        )
        body.append(
            _provenance_section(report, sid, rec)
            if rec.get("provenance") or rec.get("keywords")
            else ""
        )
    else:
        body.append(_qc_record(rec, figs))
        body.append(_gates_section(sample, figs))
        body.append(_stats_section(report, sample))
        body.append(_skipped_section(rec))
        body.append(_panel_section(rec))
        body.append(_provenance_section(report, sid, rec))
    body.append(_clustering_section(sample))
    own = report.samples_of(pid) if pid else []
    i = own.index(sid) if sid in own else -1
    pager = [
        ("‹ previous sample", report.sample_href(own[i - 1], root) if i > 0 else None),
        ("next sample ›", report.sample_href(own[i + 1], root) if 0 <= i < len(own) - 1 else None),
    ]
    crumbs = [("Cohort", f"{root}index.html")]
    crumbs.append(
        (f"Patient {pid}", report.patient_href(pid, root)) if pid else ("patient unknown", None)
    )
    crumbs.append((f"Sample {sid}", None))
    toc = [
        ("qcrecord", "QC"),
        ("gates", "Gates"),
        ("stats", "Statistics"),
        ("panel", "Panel"),
        ("provenance", "Provenance"),
        ("clustering", "Clustering"),
    ]
    if sample.failed and not sample.plots and sample.stats is None:
        toc = [("error", "Error"), ("clustering", "Clustering")]
    return page(
        title=f"Sample {sid} · cytopipe",
        heading=f"Sample {sid}",
        breadcrumbs=crumbs,
        body="".join(body),
        root=root,
        toc=toc,
        pager=pager,
        footer=_footer(report),
    )


def _own_files(rec: Mapping) -> list[str]:
    """The sample's file name as ingestion recorded it (provenance `file`)."""
    prov = rec.get("provenance")
    name = prov.get("file") if isinstance(prov, Mapping) else None
    return [name] if isinstance(name, str) and name else []


def _sample_status(report: Report, sample: SampleFiles) -> str:
    """failed when the sample's own step failed, or when collect failed it (e.g. its file is
    another row's file): both leave it out of every cohort number."""
    collected = str(report.status.get(sample.sample_id, {}).get("status") or "")
    if collected == "failed":
        return "failed"
    return str(sample.record.get("status", "unknown"))


def _error_section(report: Report, sample: SampleFiles, files: list[str]) -> str:
    rec, sid = sample.record, sample.sample_id
    row = report.status.get(sid, {})
    if sample.failed or rec.get("error"):
        stage, error = rec.get("stage"), rec.get("error")
        outcome = "This sample is missing from every statistic and plot of the report."
    elif row.get("status") == "failed":
        stage, error = row.get("stage"), row.get("error")
        outcome = (
            "Its file was read and gated (below), but the sample is left out of every cohort "
            "statistic, table and plot of the report."
        )
    else:
        return ""
    error = report.shown(error, sid, files) or "no error message recorded"
    return (
        '<section class="alert" id="error"><h2>Sample failed</h2>'
        f"<p>Stage: <strong>{esc(stage or 'unknown')}</strong></p>"
        f'<p class="error">{esc(error)}</p><p>{esc(outcome)}</p></section>'
    )


def _checks_section(report: Report, sid: str, files: list[str]) -> str:
    """Warnings of collect's checks of the file against its sheet row (sample_status.tsv)."""
    text = report.status.get(sid, {}).get("warnings")
    items = [w.strip() for w in str(text or "").split(WARNING_SEPARATOR) if w.strip()]
    if not items:
        return ""
    lis = "".join(f"<li>{esc(report.shown(w, sid, files))}</li>" for w in items)
    return (
        '<section class="alert warnbox" id="checks"><h2>Checks against the sample sheet</h2>'
        f"<ul>{lis}</ul><p>The sample is analysed as usual; confirm that the row names the "
        "right file and date.</p></section>"
    )


def _sample_header(report: Report, sample: SampleFiles, pid: str | None) -> str:
    sid = sample.sample_id
    status = _sample_status(report, sample)
    pairs: list[tuple[str, Any]] = [
        ("patient", link(report.patient_href(pid, "../"), pid) if pid else "unknown"),
        ("day since infusion", Markup(fmt_number(report.sample_day.get(sid)))),
        (
            "status",
            Markup(
                badge(
                    "ok" if status == "ok" else "failed" if status == "failed" else "neutral",
                    status,
                )
            ),
        ),
    ]
    states = report.results.table("sample_states")
    if states is not None and "sample_id" in states:
        match = states[states["sample_id"] == sid]
        if len(match):
            row = records(match)[0]
            pairs += [
                (
                    "B-cell state",
                    Markup(badge(str(row.get("state", "")), str(row.get("state", "")))),
                ),
                (
                    "CD19+ B cells, % of lymphocytes",
                    Markup(fmt_number(row.get("b_pct_lymphocytes"))),
                ),
                (
                    "CD19+ B cells per µL",
                    Markup(
                        fmt_number(row.get("b_cells_per_ul"))
                        + f" ({esc(row.get('abs_method', ''))})"
                    ),
                ),
                (
                    "age reference",
                    Markup(
                        f"{esc(row.get('ref_source_band', ''))}: {fmt_number(row.get('ref_low'))}–"
                        f"{fmt_number(row.get('ref_high'))} cells/µL, value {esc(row.get('ref_position', ''))}"
                    ),
                ),
            ]
    return section("Summary", key_values(pairs), sid="summary")


def _qc_record(rec: Mapping, figs: FigureCounter | None = None) -> str:
    qc = rec.get("qc")
    if not isinstance(qc, Mapping) or not qc:
        return section(
            "QC", not_available("The QC record", "sample.json has no qc record"), sid="qcrecord"
        )
    verdict = str(qc.get("verdict", ""))
    pairs = [
        ("verdict", Markup(badge(verdict))),
        ("events in file", Markup(fmt_number(qc.get("events_in")))),
        ("events kept", Markup(fmt_number(qc.get("events_kept")))),
        ("% kept", Markup(fmt_number(qc.get("pct_kept")))),
        ("removed, by rule", qc.get("removed") or {}),
    ]
    pairs += [
        (k, v)
        for k, v in qc.items()
        if k not in ("verdict", "events_in", "events_kept", "pct_kept", "removed")
    ]
    timeline = rec.get("qc_timeline")
    plot = ""
    if figs is not None and isinstance(timeline, Mapping) and timeline.get("start"):
        plot = str(
            figs.embed(
                qc_timeline_figure(timeline),
                caption="Event rate and per-bin signal over the acquisition; red bands: time "
                "bins whose events the QC removed (flow-rate or signal anomaly).",
            )
        )
    return section("QC", key_values(pairs) + plot, sid="qcrecord")


def _gates_section(sample: SampleFiles, figs: FigureCounter) -> str:
    title = "Gates"
    if not sample.plots:
        why = "the sample failed" if sample.failed else "plots.json is missing or has no plots"
        return section(title, not_available("Density plots", why), sid="gates")
    panel = sample.record.get("panel") if isinstance(sample.record.get("panel"), Mapping) else {}
    items = "".join(str(figs.embed(density_figure(p, panel))) for p in sample.plots)
    return section(
        title,
        f'<div class="grid">{items}</div>',
        sid="gates",
        note=(
            "Each plot shows the events of the PARENT population binned on the gate's two "
            "markers (colour: events per bin, log scale) and the gate as a black outline. "
            "Fluorescence on the logicle scale (0-1), scatter as a fraction of the channel range."
        ),
    )


STATS_COLUMNS = [
    Column("population", "population"),
    Column("name", "description"),
    Column("parent", "parent"),
    Column("count", "count", "int"),
    Column("pct_parent", "% of parent", "num"),
    Column("pct_lymphocytes", "% of lymphocytes", "num"),
    Column("cells_per_ul", "cells/µL", "num"),
    Column("gate_method", "gate method"),
    Column("confidence", "confidence", "num"),
    Column("flag", "flag"),
]


def _stats_section(report: Report, sample: SampleFiles) -> str:
    title = "Statistics"
    stats = sample.stats
    if stats is None:
        why = "the sample failed" if sample.failed else "stats.tsv is missing or empty"
        return section(title, not_available("Statistics", why), sid="stats")
    stats = stats.copy()
    stats["name"] = [population_name(p) for p in stats["population"]]
    pop = report.results.table("population_stats")
    if pop is not None and "cells_per_ul" in pop:
        mine = pop[pop["sample_id"] == sample.sample_id].set_index("population")
        stats["cells_per_ul"] = (
            stats["population"].map(mine["cells_per_ul"]) if len(mine) else np.nan
        )
    columns = [c for c in STATS_COLUMNS if c.key in stats]
    body = table(
        records(stats), columns, css="stats", row_class=lambda r: "warn" if r.get("flag") else ""
    )
    medians = [c for c in stats.columns if c.startswith("median_")]
    if medians:
        mcols = [Column("population", "population")] + [
            Column(m, m.removeprefix("median_"), "num") for m in medians
        ]
        body += (
            "<details><summary>Median fluorescence per population (transformed scale)</summary>"
            + table(records(stats), mcols, css="medians")
            + "</details>"
        )
    return section(
        title,
        body,
        sid="stats",
        note="stats.tsv of this sample; cells/µL from population_stats.tsv.",
    )


def _skipped_section(rec: Mapping) -> str:
    skipped = rec.get("skipped_populations") or []
    if not skipped:
        return ""
    reasons = rec.get("skip_reasons") if isinstance(rec.get("skip_reasons"), Mapping) else {}
    items = "".join(
        f"<li><strong>{esc(p)}</strong>{': ' + esc(reasons.get(p)) if reasons.get(p) else ''}</li>"
        for p in skipped
    )
    return section(
        "Populations not analysed",
        f"<ul>{items}</ul>",
        sid="skipped",
        note="The panel of this file lacks markers these gates need; they are absent from its tables.",
    )


def _panel_section(rec: Mapping) -> str:
    panel = rec.get("panel")
    if not isinstance(panel, Mapping) or not panel:
        return section("Panel", not_available("The panel", "sample.json has no panel"), sid="panel")
    rows = [{"marker": k, "channel": v} for k, v in panel.items()]
    return section(
        "Panel",
        table(
            rows,
            [
                Column("marker", "canonical marker"),
                Column("channel", "channel in the file ($PnN ($PnS))"),
            ],
            css="panel",
        ),
        sid="panel",
    )


HIDDEN_NOTE = "hidden (config report.{key}: false)"


def _provenance_section(report: Report, sid: str, rec: Mapping) -> str:
    prov = rec.get("provenance")
    files = _own_files(rec)
    body = ""
    if isinstance(prov, Mapping) and prov:
        warnings = prov.get("warnings") or []
        if warnings:
            body += (
                '<div class="alert warnbox"><strong>Warnings</strong><ul>'
                + "".join(f"<li>{esc(report.shown(w, sid, files))}</li>" for w in warnings)
                + "</ul></div>"
            )
        body += key_values(
            [(k, _provenance_value(report, sid, k, v, files)) for k, v in prov.items()
             if k != "warnings"]
        )  # fmt: skip
    else:
        body += not_available("Provenance", "sample.json has no provenance record")
    keywords = rec.get("keywords")
    if isinstance(keywords, Mapping):
        keywords = {
            k: report.shown(v, sid, files)
            for k, v in keywords.items()
            if report.privacy.keyword_shown(str(k))
        }
    if isinstance(keywords, Mapping) and keywords:
        body += f"<details><summary>FCS keywords ({len(keywords)}, public only)</summary>"
        body += (
            table(
                [{"keyword": k, "value": v} for k, v in keywords.items()],
                [Column("keyword", "keyword"), Column("value", "value")],
                css="keywords",
            )
            + "</details>"
        )
    return section("Provenance", body, sid="provenance")


def _provenance_value(report: Report, sid: str, key: str, value: Any, files: list[str]) -> Any:
    """A provenance entry as the page may show it: the file named by its sample, acquisition
    date and time only when the config allows them."""
    privacy = report.privacy
    if key == "file" and not privacy.show_file_names:
        return f"the file of sample {sid}"
    if key in ("acquisition_date", "acquisition_time") and not privacy.show_acquisition_times:
        return HIDDEN_NOTE.format(key="show_acquisition_times") if value else value
    return report.shown(value, sid, files)


def _clustering_section(sample: SampleFiles) -> str:
    """The cohort clustering seen from this sample: its metaclusters and whether they agree
    with the gates (a disagreement says a gate or a metacluster deserves a look)."""
    title = "Clustering"
    data = sample.clusters
    if data is None:
        return section(
            title, '<p class="muted">No clustering results for this sample.</p>', sid="clustering"
        )
    if not isinstance(data, Mapping) or data.get("status") != "ok":
        items = data.items() if isinstance(data, Mapping) else [("clusters", data)]
        return section(title, key_values(items), sid="clustering")
    parts = []
    if data.get("disagreements"):
        items = "".join(f"<li>{esc(d)}</li>" for d in data["disagreements"])
        parts.append(f'<div class="alert"><b>Clusters and gates disagree</b><ul>{items}</ul></div>')
    for key, heading in (
        ("agreement", "Agreement with the gates (F1)"),
        ("clusters", "Metaclusters"),
    ):
        rows = data.get(key)
        if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
            parts.append(f"<h3>{esc(heading)}</h3>{_records_table(rows, key)}")
    return section(title, "".join(parts), sid="clustering")


def _records_table(rows: list[Mapping], css: str) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = [
        Column(k, k, "num" if all(_is_number(r.get(k)) for r in rows) else "text") for k in keys
    ]
    return table(rows, columns, css=css)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- CLI
