"""A printable one-page summary per patient (patients/<id>_summary.html), like a clinical flow
report: where the patient stands with intervals and the age band, the course (aplasia,
reconstitution, phenotype), a small B-cell trend, the definitions and versions it was made
with, gate fallbacks folded into one line per sample, and space for a comment and sign-off.
The print stylesheet keeps it on one A4 page with no chart cut at the edge."""

from __future__ import annotations

from datetime import date

import pandas as pd

from cytopipe import __version__
from cytopipe.report.context import Report, slug
from cytopipe.report.data import records
from cytopipe.report.formatting import fmt_number, is_missing, plain
from cytopipe.report.page_parts import frame, outcome_badge
from cytopipe.report.patient_figures import FEW_B_CELLS, b_cell_figure
from cytopipe.report.patient_now import patient_now
from cytopipe.report.patient_page import patient_row, rows_for
from cytopipe.report.render import FigureCounter, render
from cytopipe.report.tables import key_values


def summary_href(pid: str, root: str) -> str:
    return f"{root}patients/{slug(pid)}_summary.html"


def patient_summary_page(report: Report, pid: str) -> str:
    root = "../"
    patients, all_states = report.results.table("patients"), report.results.table("sample_states")
    prow = patient_row(patients, pid)
    states = rows_for(all_states, pid)
    age = (prow or {}).get("age_at_infusion")
    defs = report.definitions or {}
    figs = FigureCounter()
    trend = None
    if states is not None and len(states) and "b_cells_per_ul" in states:
        fig = b_cell_figure(
            states,
            threshold_pct=defs.get("aplasia_pct_lymphocytes"),
            threshold_per_ul=defs.get("aplasia_cells_per_ul"),
            bands=(defs.get("reference_ranges") or {}).get("bands") or [],
            age_at_infusion=None if is_missing(age) else float(age),
        )
        fig.update_layout(height=360, margin=dict(l=60, r=10, t=50, b=40))
        trend = figs.embed(fig, css="plot print-trend")
    course = [("outcome", outcome_badge(prow, days=True) if prow else "—")]
    for key, label in (
        ("disease", "disease"),
        ("age_at_infusion", "age at infusion (y)"),
        ("aplasia_start_day", "aplasia from day"),
        ("reconstitution_day", "reconstitution day"),
        ("phenotype_at_return", "phenotype at return"),
        ("last_followup_day", "last follow-up day"),
    ):
        value = (prow or {}).get(key)
        course.append((label, "—" if is_missing(value) else fmt_number(value)))
    limits = defs.get("limits") or {}
    data = {
        "date": date.today().isoformat(),
        "version": defs.get("cytopipe_version", __version__),
        "template": plain(defs.get("gating_template", "as configured")),
        "aplasia": plain(defs.get("aplasia", "")),
        "limits": f"{limits.get('lod_events', '—')}/{limits.get('lloq_events', '—')} events",
        "now": patient_now(states, report.limit_events[1] or FEW_B_CELLS),
        "course": key_values(course),
        "trend": trend,
        "flags": [f.strip() for f in str((prow or {}).get("flags") or "").split(";") if f.strip()],
        "gate_notes": _gate_notes(states),
    }
    page = frame(
        report,
        title=f"Patient {pid} summary · cytopipe",
        heading=f"B-cell monitoring after CD19 CAR-T: patient {pid}",
        crumbs=[
            ("Cohort", f"{root}index.html"),
            (f"Patient {pid}", report.patient_href(pid, root)),
            ("one-page summary", None),
        ],  # fmt: skip
        root=root,
    )
    return render("patient_summary.html", frame=page, s=data)


def _gate_notes(states: pd.DataFrame | None) -> list[str]:
    """One line per sample whose gates were flagged: 'day 28: 3 gates by fallback'."""
    if states is None or "gate_flags" not in states:
        return []
    out = []
    for row in records(states.sort_values("day", kind="stable")):
        flags = [f for f in str(row.get("gate_flags") or "").split(",") if f.strip()]
        if flags:
            fallback = sum("fallback" in f for f in flags)
            out.append(f"day {fmt_number(row.get('day'))}: {len(flags)} gate(s) flagged"
                       + (f", {fallback} by fallback" if fallback else ""))  # fmt: skip
    return out
