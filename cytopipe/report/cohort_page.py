"""The cohort page (index.html): summary cards, failed samples, swimmer plot, Kaplan-Meier,
the patient table, samples by QC verdict, the definitions used and links to the tables.

It is the page a core facility opens first, so failed samples come right after the numbers.
The functions here gather each section's data; templates/cohort.html lays the page out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cytopipe.gating.stats import passed_pregates, review_rows, unlike_mask
from cytopipe.report.cohort_figures import km_figure, patient_order, swimmer_figure
from cytopipe.report.context import Report
from cytopipe.report.data import records
from cytopipe.report.formatting import fmt_number, is_missing, plain
from cytopipe.report.page_parts import (
    PATIENT_COLUMNS,
    failures_section,
    frame,
    outcome_badge,
    plot_or_unavailable,
    row_class,
)
from cytopipe.report.render import Figure, FigureCounter, Unavailable, render
from cytopipe.report.tables import Column, table
from cytopipe.results import (
    COHORT_SUMMARY,
    TABLE_FILES,
    tables_folder,
)

VERDICT_ORDER = ["failed", "fail", "warn", "pass", ""]


def cohort_page(report: Report) -> str:
    res = report.results
    figs = FigureCounter()
    patients = res.table("patients")
    states = res.table("sample_states")
    summary = res.summary or {}
    data = {
        "cards": _summary_cards(report),
        "failed": failures_section(report, root=""),
        "swimmer": _swimmer_section(report, patients, states, figs),
        "km": _km_section(report, summary, figs),
        "patients": _patients_section(report, patients),
        "qc": _qc_section(report),
        "definitions": _definitions_section(report),
        "downloads": _downloads_section(report),
        "galleries": report.galleries,
    }
    toc = [
        ("failed", "Failed samples"),
        ("swimmer", "Swimmer plot"),
        ("km", "Kaplan-Meier"),
        ("patients", "Patients"),
        ("qc", "Samples by QC verdict"),
        ("definitions", "Definitions"),
        *([("gallery", "Gates")] if report.galleries else []),
        ("downloads", "Tables"),
    ]
    page = frame(
        report,
        title="cytopipe cohort report",
        heading="B-cell aplasia and reconstitution after CD19 CAR-T: cohort",
        crumbs=[("Cohort", None)],
        root="",
        toc=toc,
    )
    return render("cohort.html", frame=page, cohort=data)


def _card(value: Any, label: str, css: str = "") -> dict:
    """One number of the cards row (macros.html `cards`)."""
    return {"value": plain(value), "label": label, "css": css}


def _summary_cards(report: Report) -> list[dict]:
    s = report.results.summary or {}
    status = report.results.table("sample_status")
    n_failed = int((status["status"] == "failed").sum()) if status is not None else None
    n_samples = len(status) if status is not None else None
    median = s.get("median_days_to_reconstitution")
    return [
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


def _swimmer_section(report, patients, states, figs) -> Figure | Unavailable:
    if patients is None or not len(patients):
        why = report.results.why_missing("patients") or "no patients"
        return Unavailable("The swimmer plot", why)
    links = {p: report.patient_href(p, "") for p in patients["patient_id"].astype(str)}
    return plot_or_unavailable(
        figs,
        "The swimmer plot",
        swimmer_figure,
        patients,
        states,
        links,
        caption=(
            "One row per patient over days since infusion. Grey: follow-up from the first "
            "sample; blue: B-cell aplasia; green: reconstituted. Dots are the sampling days "
            "coloured by B-cell state (open circle: baseline), ◆ reconstitution, ▶ follow-up "
            "ended in aplasia (censored), ★ memory/plasmablast return flag. Click a row to open "
            "the patient."
        ),
    )


def _km_section(report: Report, summary: Mapping, figs: FigureCounter) -> dict:
    """The curve, the patients left out of it and km.tsv itself."""
    km = report.results.table("km")
    if km is None or not len(km):
        why = report.results.why_missing("km") or f"{TABLE_FILES['km']} is empty"
        return {"plot": Unavailable("The Kaplan-Meier curve", why), "table": None}
    excluded = summary.get("excluded_from_km") or []
    plot = plot_or_unavailable(
        figs,
        "The Kaplan-Meier curve",
        km_figure,
        km,
        summary.get("median_days_to_reconstitution"),
        len(excluded),
        summary.get("median_days_to_reconstitution_ci"),
        caption=(
            "Fraction of patients still in B-cell aplasia over days since infusion; an event is a "
            "confirmed reconstitution, ticks mark patients censored at their last follow-up."
        ),
    )
    excluded_table = None
    if excluded:
        rows = [
            {"patient_id": e.get("patient_id", ""), "reason": e.get("reason", "")}
            for e in excluded
            if isinstance(e, Mapping)
        ]
        excluded_table = table(
            rows,
            [
                Column(
                    "patient_id", "patient", link=lambda r: report.patient_href(r["patient_id"], "")
                ),
                Column("reason", "reason"),
            ],
        )
    km_table = table(
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
    return {"plot": plot, "excluded": excluded_table, "table": km_table}


def _patients_section(report: Report, patients: pd.DataFrame | None) -> dict:
    """patients.tsv in swimmer order, or why it is missing."""
    if patients is None:
        why = report.results.why_missing("patients")
        return {"unavailable": Unavailable("The patient table", why)}
    order = patient_order(patients) if len(patients) else []
    rows = {str(r["patient_id"]): {**r, "outcome": outcome_badge(r)} for r in records(patients)}
    ordered = [rows[p] for p in order if p in rows]
    columns = [
        Column(
            "patient_id", "patient", link=lambda r: report.patient_href(str(r["patient_id"]), "")
        )
    ]
    columns += [
        Column(k, label, kind, tip)
        for k, label, kind, tip in PATIENT_COLUMNS
        if k == "outcome"
        or (k in patients and (not k.startswith("car_t") or patients[k].notna().any()))
    ]  # CAR-T columns only when some patient has CAR-T data
    return {
        "unavailable": None,
        "table": table(ordered, columns, css="patients", empty="no patients"),
    }


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
    (
        "bead_events_found",
        "beads",
        "int",
        "counting bead events set apart by QC: the bead count of single-platform counts where "
        "the sample sheet gives none",
    ),
    (
        "n_flagged_gates",
        "flagged gates",
        "int",
        "gates with a note: low confidence, a fallback, or a cut placed without a valley",
    ),
    (
        "n_gates_to_review",
        "gates to review",
        "int",
        "gates placed with confidence < 0.5 on a parent of >= 50 events: where the gate's "
        "position can change the counts",
    ),
    (
        "unlike_template",
        "unlike the template",
        "long",
        "gates whose sample did not look as the template expects: fewer populations than "
        "expected, populations that overlap (Ashman's D < 2), a cluster out of its limits",
    ),
    (
        "warnings",
        "file checks",
        "long",
        "the file's acquisition date ($DATE) far from the row's collection_date (the row may "
        "name another visit's file), its stains gated uncompensated (no spillover matrix), "
        "or its matrix applied transposed (read the other way round, as its data showed)",
    ),
    (
        "disagreements",
        "gates vs clustering",
        "long",
        "populations where the gates and the clustering annotation, two independent methods, "
        "disagree (F1 below clustering.yaml's min_f1): a gate or a metacluster deserves a look",
    ),
    ("error", "error", "long", ""),
]


def _qc_section(report: Report) -> dict:
    """Counts per QC verdict, the samples worth a look, and every sample."""
    status = report.results.table("sample_status")
    if status is None:
        why = report.results.why_missing("sample_status")
        return {"unavailable": Unavailable("The sample status table", why)}
    frame = status.copy()
    frame["disagreements"] = [
        "; ".join(report.disagreements.get(str(sid), [])) for sid in frame["sample_id"]
    ]
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
    cards = [
        _card(
            fmt_number(int(counts.get(v, 0))), labels[v], css.get(v, "") if counts.get(v, 0) else ""
        )
        for v in VERDICT_ORDER
        if v in counts or v in ("failed", "fail", "warn", "pass")
    ]
    n_warned = int(_has_warnings(frame).sum())
    if n_warned:
        cards.append(_card(fmt_number(n_warned), "file/date warnings", "warn"))
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
    shown = [k for k in frame if k != "bead_events_found" or frame[k].fillna(0).gt(0).any()]
    columns += [Column(k, label, kind, tip) for k, label, kind, tip in QC_COLUMNS if k in shown]
    rows = report.shown_rows(records(frame))
    attention = [r for r in rows if _needs_a_look(r)]
    gates = _gates_to_review(report)
    return {
        "unavailable": None,
        "cards": cards,
        "n_attention": len(attention),
        "attention": table(attention, columns, css="attention", row_class=row_class),
        "n_gates": len(gates["rows"]),
        "gates": table(gates["rows"], gates["columns"], css="gates"),
        "passed": _passed_pregates(report, len(rows)),
        "n_samples": len(rows),
        "samples": table(rows, columns, css="qc", row_class=row_class),
    }


def _passed_pregates(report: Report, n_samples: int) -> list[str]:
    """Pre-gates the panel could not apply, once for the cohort ('singlets: not gated: no FSC-H
    channel, 3 of 3 samples'), not as a gate to review on every sample."""
    stats = report.results.table("sample_stats")
    if stats is None or not len(stats):
        return []
    return [
        f"{population}: {why}, {n} of {n_samples} samples"
        for (population, why), n in passed_pregates(stats).items()
    ]


def _gates_to_review(report: Report) -> dict:
    """One row per gate to look at (low confidence on a parent that matters, or a sample unlike
    the template), each linking to that gate's plot, framed on its sample page."""
    stats = report.results.table("sample_stats")
    rows: list[dict] = []
    if stats is not None and len(stats):
        for sid, own in stats.groupby("sample_id", sort=False):
            doubtful = own.index.isin(review_rows(own).index)
            for r in records(own[doubtful | unlike_mask(own)]):
                rows.append({
                    "sample_id": str(sid), "population": str(r["population"]),
                    "confidence": r.get("confidence"),
                    "reason": report.shown(review_reason(r), str(sid), ()),
                })  # fmt: skip
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "")),
        Column(
            "population",
            "gate",
            link=lambda r: report.sample_href(r["sample_id"], "") + _gate_anchor(report, r),
        ),
        Column("confidence", "confidence", "num"),
        Column("reason", "why", "long"),
    ]
    return {"rows": rows, "columns": columns}


def review_reason(row: Mapping) -> str:
    """Why a gate is to look at: its flag and how it was unlike the template, each once (a
    failed-stain check writes the same note in both)."""
    why = [str(row.get(k)) for k in ("flag", "as_template")
           if not is_missing(row.get(k)) and str(row.get(k)) not in ("", "yes")]  # fmt: skip
    if len(why) == 2 and why[1].removeprefix("no: ") in why[0]:
        return why[0]
    return " · ".join(why)


def _gate_anchor(report: Report, row: Mapping) -> str:
    """The gate's box on the sample page; a gate with nothing drawn (a pass-through pre-gate of
    a panel without its marker) links to the sample's statistics."""
    drawn = (str(row["sample_id"]), str(row["population"])) in report.drawn_gates
    return f"#gate-{row['population']}" if drawn else "#stats"


def _needs_a_look(row: Mapping) -> bool:
    # tables written before gates_to_review existed: every flagged gate counts
    doubtful = row.get("n_gates_to_review", row.get("n_flagged_gates"))
    warned = row.get("warnings")
    return (
        row.get("_verdict") in ("failed", "fail", "warn")
        or (not is_missing(warned) and bool(warned))
        or bool(row.get("disagreements"))
        or (not is_missing(row.get("unlike_template")) and bool(row.get("unlike_template")))
        or (not is_missing(doubtful) and float(doubtful) > 0)
    )


def _has_warnings(status: pd.DataFrame) -> pd.Series:
    """Rows of sample_status with a sheet-check warning (tables from before the checks: none)."""
    if "warnings" not in status:
        return pd.Series(False, index=status.index)
    return status["warnings"].fillna("").astype(str) != ""


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


def _definitions_section(report: Report) -> dict:
    """The definitions every number used (from cohort_summary.json, else the config)."""
    defs = report.definitions
    if not defs:
        why = report.results.why_missing("cohort_summary") or f"{COHORT_SUMMARY} has no definitions"
        return {"unavailable": Unavailable("The definitions", why)}
    entries = []
    for key, value in defs.items():
        if key == "reference_ranges":
            continue
        label = DEFINITION_LABELS.get(key, key.replace("_", " "))
        text = (
            fmt_number(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else (("yes" if value else "no") if isinstance(value, bool) else plain(value))
        )
        entries.append((label, text))
    data: dict[str, Any] = {"unavailable": None, "entries": entries, "ranges": None}
    ranges = defs.get("reference_ranges")
    if isinstance(ranges, Mapping):
        bands = [b for b in ranges.get("bands") or [] if isinstance(b, Mapping)]
        data["ranges"] = {
            "source": ranges.get("source", "not stated"),
            "unit": ranges.get("unit", ""),
            "rule": ranges.get("rule", ""),
            "bands": table(
                bands,
                [
                    Column("label", "age band"),
                    Column("min_age", "from age (y)", "num"),
                    Column("max_age", "to age (y)", "num"),
                    Column("low", "low (cells/µL)", "num"),
                    Column("high", "high (cells/µL)", "num"),
                ],
                css="bands",
            ),
        }
    data["note"] = (
        f"Stated by {report.definitions_source}; every patient and cohort number in this report "
        "used these definitions."
    )
    return data


def _downloads_section(report: Report) -> dict:
    """Links to the tables, copied into the report folder (cytopipe.report.shipped_tables)."""
    if not report.downloads:
        where = tables_folder(report.results.root)
        return {"links": [], "unavailable": Unavailable("The tables", f"no tables in {where}")}
    return {"links": report.downloads, "unavailable": None}
