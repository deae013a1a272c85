"""A patient's page (patients/<patient_id>.html): the episode summary, B cells over time on
log axes with thresholds and age reference, subsets, CD20 vs CD19, plasmablasts, QC flags and
every sample (failed ones too, linked to their error).

The functions here gather each section's data; templates/patient.html lays the page out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from cytopipe.report.certainty import pct_text, per_ul_text
from cytopipe.report.context import Report, slug
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
from cytopipe.report.patient_figures import (
    FEW_B_CELLS,
    b_cell_figure,
    car_t_figure,
    cd20_figure,
    composition_figure,
    plasmablast_figure,
)
from cytopipe.report.patient_now import patient_now
from cytopipe.report.render import FigureCounter, Unavailable, render
from cytopipe.report.tables import Column, key_values, link, table
from cytopipe.results import TABLE_FILES


def patient_page(report: Report, pid: str) -> str:
    res = report.results
    root = "../"
    figs = FigureCounter()
    prow = patient_row(res.table("patients"), pid)
    states = rows_for(res.table("sample_states"), pid)
    links = {s: report.sample_href(s, root) for s in report.samples_of(pid)}
    data: dict[str, Any] = {
        "now": patient_now(states, report.limit_events[1] or FEW_B_CELLS),
        "summary_href": f"{slug(pid)}_summary.html",
        "summary": _patient_summary(prow, pid),
        "failed": failures_section(report, root, patient=pid),
        "timelines_unavailable": None,
        "plots": [],
    }
    defs = report.definitions or {}
    if states is None or not len(states):
        why = res.why_missing("sample_states") or "no sample of this patient has statistics"
        data["timelines_unavailable"] = Unavailable("B-cell timelines", why)
    else:
        bands = (defs.get("reference_ranges") or {}).get("bands") or []
        age = prow.get("age_at_infusion") if prow else None
        pct, per_ul = defs.get("aplasia_pct_lymphocytes"), defs.get("aplasia_cells_per_ul")
        counts = _population_rows(res.table("population_stats"), pid, "plasmablasts")
        plots = [
            ("bcells", "B cells over time", b_cell_figure, (states,),
             dict(threshold_pct=pct, threshold_per_ul=per_ul, bands=bands,
                  age_at_infusion=None if is_missing(age) else float(age), links=links),
             "Log axes. Dashed lines: aplasia thresholds; green band: age reference range of "
             "CD19+ B cells per µL (changes with age); ▼ a value of 0 drawn at the bottom of "
             "the axis. Click a point to open the sample."),
            ("subsets", "B-cell subsets over time", composition_figure, (states, links),
             dict(min_b_cells=report.limit_events[1] or FEW_B_CELLS,
                  memory_threshold=defs.get("memory_return_fraction")),
             "Fractions of CD19+ B cells. Naive / unswitched memory / switched memory / double "
             "negative are the IgD/CD27 quadrants of CD20+ B cells; transitional cells lie "
             "inside the naive quadrant and are drawn as a line. Timepoints with fewer B-cell "
             "events than the LLOQ get a hatched stub instead of fractions. Purple: switched "
             "memory + plasmablasts, the quantity of the memory-return flag, with its threshold "
             "and the baseline value."),
            ("cd20", "CD20+ vs CD19+ B cells", cd20_figure, (states, pct, links), {},
             "Both as % of lymphocytes (log axis). A gap between them shows CD19+ CD20− cells."),
            ("plasmablasts", "Plasmablasts", plasmablast_figure, (states, counts, links), {},
             "Marker colour: B-cell state at that timepoint."),
        ]  # fmt: skip
        car = _population_rows(res.table("population_stats"), pid, "car_t")
        if car is not None and len(car):
            plots.insert(1, (
                "cart", "CAR-T cells beside the B cells", car_t_figure, (car, states),
                dict(lod_events=report.limit_events[0], patient=prow, threshold_per_ul=per_ul),
                "CAR+ T cells per µL (gate car_t: CD3+ CAR+) above the B cells per µL, on one "
                "time axis (log). ▽: fewer CAR+ events than the LOD (not detected). Cmax/Tmax "
                "and the last detected day as in patients.tsv.",
            ))  # fmt: skip
        for sid, title, build, args, kw, caption in plots:
            fig = plot_or_unavailable(figs, title, build, *args, caption=caption, **kw)
            data["plots"].append((sid, title, fig))
    data["qc"] = _patient_qc(report, pid, states)
    data["samples"] = _patient_samples(report, pid, states)
    ids = report.patients
    i = ids.index(pid)
    pager = [
        ("‹ previous patient", report.patient_href(ids[i - 1], root) if i > 0 else None),
        ("next patient ›", report.patient_href(ids[i + 1], root) if i + 1 < len(ids) else None),
    ]
    toc = [
        *([("now", "Now")] if data["now"] else []),
        ("bcells", "B cells"),
        *([("cart", "CAR-T")] if any(p[0] == "cart" for p in data["plots"]) else []),
        ("subsets", "Subsets"),
        ("cd20", "CD20 vs CD19"),
        ("plasmablasts", "Plasmablasts"),
        ("qcflags", "QC flags"),
        ("samples", "Samples"),
    ]
    page = frame(
        report,
        title=f"Patient {pid} · cytopipe",
        heading=f"Patient {pid}",
        crumbs=[("Cohort", f"{root}index.html"), (f"Patient {pid}", None)],
        root=root,
        toc=toc,
        pager=pager,
    )
    return render("patient.html", frame=page, patient=data)


def rows_for(frame: pd.DataFrame | None, pid: str) -> pd.DataFrame | None:
    if frame is None or "patient_id" not in frame:
        return None
    return frame[frame["patient_id"].astype(str) == pid]


def patient_row(patients: pd.DataFrame | None, pid: str) -> dict | None:
    rows = rows_for(patients, pid)
    return records(rows)[0] if rows is not None and len(rows) else None


def _population_rows(pop: pd.DataFrame | None, pid: str, population: str) -> pd.DataFrame | None:
    """A patient's population_stats rows of one population (None: the table lacks them)."""
    rows = rows_for(pop, pid)
    if rows is None or "population" not in rows or "cells_per_ul" not in rows:
        return None
    return rows[rows["population"] == population]


def _patient_summary(row: Mapping | None, pid: str) -> dict:
    """The patients.tsv row in two columns of label -> value, and its flags."""
    if row is None:
        why = f"patient {pid} is not in {TABLE_FILES['patients']}"
        return {"unavailable": Unavailable("The patient summary", why)}
    pairs: list[tuple[str, Any]] = [("outcome", outcome_badge(row, days=True))]
    for key, label, kind, _ in PATIENT_COLUMNS:
        if key in ("flags", "outcome") or key not in row or key.startswith("car_t"):
            continue  # CAR-T values below, only when the panel had a CAR marker
        value = row.get(key)
        pairs.append((label, fmt_number(value) if kind in ("num", "int") else value))
    for key, label in (
        ("reconstituted", "reconstituted"),
        ("censored", "censored (follow-up ended in aplasia)"),
        ("flag_memory_return", "memory/plasmablast return flag"),
    ):
        if key in row:
            pairs.append((label, row.get(key) if isinstance(row.get(key), bool) else "—"))
    for key, label in (
        ("frac_naive_transitional_at_return", "naive/transitional at return"),
        ("frac_memory_at_return", "memory at return"),
        ("frac_plasmablast_at_return", "plasmablasts at return"),
    ):
        if key in row:
            pairs.append((f"{label} (fraction of B cells)", fmt_number(row.get(key))))
    for key, label in (
        ("car_t_cmax_per_ul", "CAR-T Cmax (cells/µL)"),
        ("car_t_tmax_day", "CAR-T Tmax (day)"),
        ("car_t_auc_0_28", "CAR-T AUC 0-28 (cells/µL × days)"),
        ("car_t_last_detected_day", "CAR-T last detected (day)"),
    ):
        if not is_missing(row.get(key)):
            pairs.append((label, fmt_number(row.get(key))))
    half = (len(pairs) + 1) // 2
    flags = [f.strip() for f in str(row.get("flags") or "").split(";") if f.strip()]
    return {
        "unavailable": None,
        "left": key_values(pairs[:half]),
        "right": key_values(pairs[half:]),
        "flags": flags,
    }


def _reference_text(row: Mapping) -> str:
    band = row.get("ref_source_band")
    if not band or is_missing(band):
        return "—"
    return f"{plain(band)}: {fmt_number(row.get('ref_low'))}–{fmt_number(row.get('ref_high'))}"


def _patient_qc(report: Report, pid: str, states: pd.DataFrame | None) -> dict:
    """Status, QC verdict and gate flags of every sample of the patient (a table)."""
    status = rows_for(report.results.table("sample_status"), pid)
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
        return {"unavailable": Unavailable("QC flags", "no samples for this patient")}
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
        Column("warnings", "file checks", "long"),
        Column("error", "error", "long"),
    ]
    rows = report.shown_rows(rows)
    return {"unavailable": None, "table": table(rows, columns, css="qcflags", row_class=row_class)}


def _patient_samples(report: Report, pid: str, states: pd.DataFrame | None) -> dict:
    """Every sample's B-cell numbers (sample_states.tsv), and links to those without any."""
    if states is None or not len(states):
        rows = [{"sample_id": s, "day": report.sample_day.get(s)} for s in report.samples_of(pid)]
        columns = [
            Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "../")),
            Column("day", "day", "num"),
        ]
        return {"table": table(rows, columns), "without_statistics": []}
    columns = [
        Column("sample_id", "sample", link=lambda r: report.sample_href(r["sample_id"], "../")),
        Column("day", "day", "num"),
        Column("age_years", "age (y)", "num"),
        Column("state", "state", "verdict"),
        Column("b_pct_lymphocytes", "B % lymph.", "num", "CD19+ B cells, % of lymphocytes"),
        Column(
            "b_pct_text",
            "B % lymph. (95% CI)",
            "long",
            "exact 95% interval on the B-cell events; '< LLOQ' below the lower limit of "
            "quantification of this acquisition",
        ),
        Column("b_cells_per_ul", "B cells/µL", "num"),
        Column("b_per_ul_text", "B cells/µL (95% CI)", "long"),
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
    computed = {"reference", "b_pct_text", "b_per_ul_text"}
    columns = [c for c in columns if c.key in states or c.key in computed]
    rows = [
        {
            **r,
            "reference": _reference_text(r),
            "b_pct_text": pct_text(r),
            "b_per_ul_text": per_ul_text(r),
        }
        for r in records(states.sort_values("day", kind="stable"))
    ]
    failed = [s for s in report.samples_of(pid) if s not in set(states["sample_id"])]
    return {
        "table": table(rows, columns, css="states"),
        "without_statistics": [link(report.sample_href(s, "../"), s) for s in failed],
    }
