"""Page parts shown by more than one page: the frame around every page (title, breadcrumbs,
footer), a figure or why it is missing, the failed-samples section (cohort and patient
pages), a patient's outcome badge and columns (cohort table and patient summary), and how a
sample row is highlighted.

They prepare data; templates/base.html and templates/page_parts.html draw it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cytopipe import __version__
from cytopipe.report.context import Report
from cytopipe.report.data import records
from cytopipe.report.formatting import fmt_number, is_missing
from cytopipe.report.render import Figure, FigureCounter, Unavailable
from cytopipe.report.tables import Badge, Column, badge, table


def frame(
    report: Report,
    *,
    title: str,
    heading: str,
    crumbs: Sequence[tuple[str, str | None]],
    root: str,
    toc: Sequence[tuple[str, str]] = (),
    pager: Sequence[tuple[str, str | None]] = (),
) -> dict:
    """What templates/base.html needs around a page's sections: title, breadcrumbs (text,
    href or None for the current page), previous/next links, table of contents (section id,
    text) and the footer. `root` is the relative path to the report folder ("" or "../")."""
    version = (report.definitions or {}).get("cytopipe_version", __version__)
    return {
        "title": title,
        "heading": heading,
        "crumbs": list(crumbs),
        "root": root,
        "toc": list(toc),
        "pager": list(pager),
        "footer": {
            "version": version,
            "results": report.results.root.resolve().name,
            "report_version": __version__,
        },
    }


def plot_or_unavailable(
    figs: FigureCounter, what: str, build: Any, *args: Any, caption: str = "", **kw: Any
) -> Figure | Unavailable:
    """A figure, or "not available" naming the missing column when a table is from another
    version (a KeyError there must not cost the whole report)."""
    try:
        fig = build(*args, **kw)
    except KeyError as exc:
        return Unavailable(what, f"the table lacks column {exc}")
    return figs.embed(fig, caption=caption)


def failures_section(report: Report, root: str, patient: str | None = None) -> dict | None:
    """The failed samples (of one patient, or of the cohort) for page_parts.html
    `failed_samples`; None on a patient page when none of its samples failed."""
    failures = report.results.table("failures")
    if failures is None:
        why = report.results.why_missing("failures")
        return {"unavailable": Unavailable("The list of failed samples", why)}
    if patient is not None:
        failures = failures[failures["patient_id"].astype(str) == patient]
    if not len(failures):
        if patient is not None:
            return None
        return {"unavailable": None, "table": None}
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
    return {"unavailable": None, "n": len(rows), "table": table(rows, columns, css="failures")}


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
    ("car_t_cmax_per_ul", "CAR-T Cmax /µL", "num", "highest CAR+ T cells per µL after infusion"),
    ("car_t_tmax_day", "CAR-T Tmax", "num", "day of the CAR-T peak"),
    (
        "car_t_last_detected_day",
        "CAR-T last detected",
        "num",
        "last day with at least the LOD in CAR+ T-cell events (persistence)",
    ),
    ("flags", "flags", "long", ""),
]


def outcome_badge(row: Mapping, *, days: bool = False) -> Badge:
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


def row_class(row: Mapping) -> str:
    if row.get("status") == "failed" or row.get("qc_verdict") == "fail":
        return "failed"
    return "warn" if row.get("qc_verdict") == "warn" else ""
