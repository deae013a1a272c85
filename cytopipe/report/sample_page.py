"""A sample's page (samples/<sample_id>.html): why it failed (if it did), checks against the
sample sheet, QC, every gate on its density plot, statistics, panel, provenance and the
clustering seen from this sample. Text about the sample's file goes through `Report.shown`.

The functions here gather each section's data; templates/sample.html lays the page out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cytopipe.clinical.sample_checks import WARNING_SEPARATOR
from cytopipe.gating.placement import LOW_CONFIDENCE, PASS
from cytopipe.report.certainty import events_text, limits_text, pct_text, per_ul_text
from cytopipe.report.context import Report
from cytopipe.report.data import SampleFiles, records
from cytopipe.report.figure_style import population_name
from cytopipe.report.formatting import fmt_number, has_text, plain
from cytopipe.report.page_parts import frame
from cytopipe.report.render import FigureCounter, Unavailable, render
from cytopipe.report.sample_figures import (
    cut_figure,
    density_figure,
    qc_timeline_figure,
    quadrant_figure,
    shared_plots,
)
from cytopipe.report.tables import Column, badge, key_values, link, table
from cytopipe.results import SAMPLE_PLOTS, SAMPLE_RECORD, SAMPLE_STATS


def sample_page(report: Report, sample: SampleFiles) -> str:
    root = "../"
    sid = sample.sample_id
    rec = sample.record
    pid = report.sample_patient.get(sid)
    figs = FigureCounter()
    files = _own_files(rec)
    # nothing was measured: one line instead of five empty sections
    measured = not (sample.failed and not sample.plots and sample.stats is None)
    data: dict[str, Any] = {
        "summary": _sample_header(report, sample, pid),
        "error": _error_section(report, sample, files),
        "checks": _checks_section(report, sid, files),
        "problems": sample.problems,
        "measured": measured,
    }
    if measured:
        data["qc"] = _qc_record(rec, figs)
        data["gates"] = _gates_section(report, sample, figs)
        data["stats"] = _stats_section(report, sample)
        data["skipped"] = _skipped_section(rec)
        data["panel"] = _panel_section(rec)
    if measured or rec.get("provenance") or rec.get("keywords"):
        data["provenance"] = _provenance_section(report, sid, rec)
    else:
        data["provenance"] = None
    data["clustering"] = _clustering(sample)
    data["learned"] = _learned(sample, report.privacy.show_file_names)
    data["expert"] = _expert(sample)
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
    if not measured:
        toc = [("error", "Error"), ("clustering", "Clustering")]
    if data["learned"] is not None:
        toc.append(("learned", "Learned gating"))
    if data["expert"] is not None:
        toc.append(("expert", "Expert gating"))
    page = frame(
        report,
        title=f"Sample {sid} · cytopipe",
        heading=f"Sample {sid}",
        crumbs=crumbs,
        root=root,
        toc=toc,
        pager=pager,
    )
    return render("sample.html", frame=page, sample=data)


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


def _error_section(report: Report, sample: SampleFiles, files: list[str]) -> dict | None:
    """Stage, error and what it means for the report, when the sample failed."""
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
        return None
    error = report.shown(error, sid, files) or "no error message recorded"
    return {"stage": stage or "unknown", "message": error, "outcome": outcome}


def _checks_section(report: Report, sid: str, files: list[str]) -> list[str]:
    """Warnings of collect's checks of the file against its sheet row (sample_status.tsv)."""
    text = report.status.get(sid, {}).get("warnings")
    items = [w.strip() for w in str(text or "").split(WARNING_SEPARATOR) if w.strip()]
    return [report.shown(w, sid, files) for w in items]


def _sample_header(report: Report, sample: SampleFiles, pid: str | None) -> Any:
    sid = sample.sample_id
    status = _sample_status(report, sample)
    pairs: list[tuple[str, Any]] = [
        ("patient", link(report.patient_href(pid, "../"), pid) if pid else "unknown"),
        ("day since infusion", fmt_number(report.sample_day.get(sid))),
        (
            "status",
            badge(
                "ok" if status == "ok" else "failed" if status == "failed" else "neutral",
                status,
            ),
        ),
    ]
    states = report.results.table("sample_states")
    if states is not None and "sample_id" in states:
        match = states[states["sample_id"] == sid]
        if len(match):
            row = records(match)[0]
            pairs += [
                ("B-cell state", badge(str(row.get("state", "")), str(row.get("state", "")))),
                *([("note", plain(row["note"]))] if has_text(row.get("note")) else []),
                ("CD19+ B cells", events_text(row)),
                ("CD19+ B cells, % of lymphocytes", pct_text(row)),
                *_ungated_lymphocytes(sample.stats),
                (
                    "CD19+ B cells per µL",
                    per_ul_text(row) + f" ({plain(row.get('abs_method', ''))})",
                ),
                ("limits of this acquisition", limits_text(row, *report.limit_events)),
                (
                    "age reference",
                    f"{plain(row.get('ref_source_band', ''))}: {fmt_number(row.get('ref_low'))}–"
                    f"{fmt_number(row.get('ref_high'))} cells/µL, value "
                    f"{plain(row.get('ref_position', ''))}",
                ),
            ]
    return key_values(pairs)


def _ungated_lymphocytes(stats: pd.DataFrame | None) -> list[tuple[str, Any]]:
    """A file without scatter (mass cytometry) has no lymphocyte gate: the counts above are
    of its parent's events, which the summary says beside them (the sample's own stats)."""
    if stats is None or "gate_method" not in stats:
        return []
    row = stats[stats["population"] == "lymphocytes"]
    if not len(row) or row["gate_method"].iloc[0] != "pass":
        return []
    why = f"{row['flag'].iloc[0]}: the lymphocytes above are every event of their parent"
    return [("lymphocytes", plain(why))]


def _qc_record(rec: Mapping, figs: FigureCounter | None = None) -> dict:
    """The QC verdict and counts, and the QC timeline when the record has one."""
    qc = rec.get("qc")
    if not isinstance(qc, Mapping) or not qc:
        return {"unavailable": Unavailable("The QC record", f"{SAMPLE_RECORD} has no qc record")}
    verdict = str(qc.get("verdict", ""))
    pairs = [
        ("verdict", badge(verdict)),
        ("events in file", fmt_number(qc.get("events_in"))),
        ("events kept", fmt_number(qc.get("events_kept"))),
        ("% kept", fmt_number(qc.get("pct_kept"))),
        ("removed, by rule", qc.get("removed") or {}),
    ]
    pairs += [
        (k, v)
        for k, v in qc.items()
        if k not in ("verdict", "events_in", "events_kept", "pct_kept", "removed")
    ]
    timeline = rec.get("qc_timeline")
    plot = None
    if figs is not None and isinstance(timeline, Mapping) and timeline.get("start"):
        plot = figs.embed(
            qc_timeline_figure(timeline),
            caption="Event rate and per-bin signal over the acquisition; red bands: time "
            "bins whose events the QC removed (flow-rate or signal anomaly).",
        )
    return {"unavailable": None, "record": key_values(pairs), "timeline": plot}


def _gates_section(report: Report, sample: SampleFiles, figs: FigureCounter) -> dict:
    if not sample.plots:
        why = "the sample failed" if sample.failed else f"{SAMPLE_PLOTS} is missing or has no plots"
        return {"unavailable": Unavailable("Density plots", why)}
    panel = sample.record.get("panel") if isinstance(sample.record.get("panel"), Mapping) else {}
    boxes = []  # one box per plot; the cohort page links to gate-<population>
    for group in shared_plots(sample.plots):
        pops = [str(p.get("population", "")) for p in group]
        main = density_figure(group[0], panel) if len(group) == 1 else quadrant_figure(group, panel)
        seen, cuts = set(), []
        for p in group:
            for c in p.get("cuts") or ():
                if c.get("name") not in seen:
                    seen.add(c.get("name"))
                    cuts.append(figs.embed(cut_figure(c, panel), css="plot cut"))
        boxes.append({"populations": pops, "figure": figs.embed(main), "cuts": cuts})
        report.drawn_gates.update((sample.sample_id, p) for p in pops)
    return {"unavailable": None, "boxes": boxes, "hierarchy": _hierarchy(sample.plots)}


def _hierarchy(plots) -> list[dict]:
    """The gating hierarchy as an indented list (population, depth, count, % of parent), in
    the template's order: a sidebar to jump to any gate."""
    parents = {str(p.get("population")): str(p.get("parent") or "") for p in plots}

    def depth(pop: str) -> int:
        d, seen = 0, set()
        while parents.get(pop) and pop not in seen:
            seen.add(pop)
            pop, d = parents[pop], d + 1
        return d

    return [
        {"population": str(p.get("population")), "depth": depth(str(p.get("population"))),
         "count": p.get("count"), "pct": p.get("pct_parent")}
        for p in plots
    ]  # fmt: skip


STATS_COLUMNS = [
    Column("population", "population"),
    Column("name", "description"),
    Column("parent", "parent"),
    Column("count", "count", "int"),
    Column(
        "count_cut",
        "count as its cuts move",
        "text",
        "the count with every cut of this gate moved one bandwidth inward and outward: narrow "
        "where the cuts sit in deep valleys, wide where the populations form a continuum",
    ),
    Column("pct_parent", "% of parent", "num"),
    Column("pct_lymphocytes", "% of lymphocytes", "num"),
    Column("cells_per_ul", "cells/µL", "num"),
    Column("gate_method", "gate method"),
    Column("confidence", "confidence", "num"),
    Column("flag", "flag", "long"),
    Column("parent_count", "events in parent", "int"),
    Column(
        "populations_found",
        "populations found",
        "int",
        "populations found where the cut was searched: 2 when a valley parted them, 1 when "
        "none did; lymphocytes: clusters of the mixture after joining",
    ),
    Column(
        "separation",
        "separation",
        "num",
        "Ashman's D between the populations on both sides of the cut (lymphocytes: to the "
        "nearest other cluster); below 2 they overlap",
    ),
    Column(
        "as_template",
        "looks as expected",
        "long",
        "whether the sample looked as the template expects where this gate was placed "
        "(judged from 500 events in the parent)",
    ),
]


def _range_text(low, high) -> str:
    """'low-high', 'unchanged' where no event lies within a bandwidth of the cuts, '' where
    no cut of the gate moves (a mixture's outline, a pass-through)."""
    if pd.isna(low) or pd.isna(high):
        return ""
    return "unchanged" if low == high else f"{int(low):,}-{int(high):,}"


def _stats_section(report: Report, sample: SampleFiles) -> dict:
    stats = sample.stats
    if stats is None:
        why = "the sample failed" if sample.failed else f"{SAMPLE_STATS} is missing or empty"
        return {"unavailable": Unavailable("Statistics", why)}
    stats = stats.copy()
    stats["name"] = [population_name(p) for p in stats["population"]]
    if {"count_cut_low", "count_cut_high"} <= set(stats):
        stats["count_cut"] = [_range_text(lo, hi) for lo, hi in
                              zip(stats["count_cut_low"], stats["count_cut_high"], strict=True)]  # fmt: skip
    pop = report.results.table("population_stats")
    if pop is not None and "cells_per_ul" in pop:
        mine = pop[pop["sample_id"] == sample.sample_id].set_index("population")
        stats["cells_per_ul"] = (
            stats["population"].map(mine["cells_per_ul"]) if len(mine) else np.nan
        )
    columns = [c for c in STATS_COLUMNS if c.key in stats]
    stats_table = table(records(stats), columns, css="stats", row_class=_doubtful_row)
    medians = [c for c in stats.columns if c.startswith("median_")]
    median_table = None
    if medians:
        mcols = [Column("population", "population")] + [
            Column(m, m.removeprefix("median_"), "num") for m in medians
        ]
        median_table = table(records(stats), mcols, css="medians")
    return {"unavailable": None, "table": stats_table, "medians": median_table}


def _skipped_section(rec: Mapping) -> list[tuple[str, str]]:
    """(population, reason) of the gates this file's panel could not serve."""
    skipped = rec.get("skipped_populations") or []
    reasons = rec.get("skip_reasons") if isinstance(rec.get("skip_reasons"), Mapping) else {}
    return [(p, reasons.get(p) or "") for p in skipped]


def _panel_section(rec: Mapping) -> dict:
    panel = rec.get("panel")
    if not isinstance(panel, Mapping) or not panel:
        return {"unavailable": Unavailable("The panel", f"{SAMPLE_RECORD} has no panel")}
    rows = [{"marker": k, "channel": v} for k, v in panel.items()]
    return {
        "unavailable": None,
        "table": table(
            rows,
            [
                Column("marker", "canonical marker"),
                Column("channel", "channel in the file ($PnN ($PnS))"),
            ],
            css="panel",
        ),
    }


HIDDEN_NOTE = "hidden (config report.{key}: false)"


def _provenance_section(report: Report, sid: str, rec: Mapping) -> dict:
    """Provenance warnings and entries, and the sample's public FCS keywords (file names and
    times as the config allows them)."""
    prov = rec.get("provenance")
    files = _own_files(rec)
    data: dict[str, Any] = {"warnings": [], "record": None, "unavailable": None, "keywords": None}
    if isinstance(prov, Mapping) and prov:
        data["warnings"] = [report.shown(w, sid, files) for w in prov.get("warnings") or []]
        data["record"] = key_values(
            [(k, _provenance_value(report, sid, k, v, files)) for k, v in prov.items()
             if k != "warnings"]
        )  # fmt: skip
    else:
        data["unavailable"] = Unavailable("Provenance", f"{SAMPLE_RECORD} has no provenance record")
    keywords = rec.get("keywords")
    if isinstance(keywords, Mapping):
        keywords = {
            k: report.shown(v, sid, files)
            for k, v in keywords.items()
            if report.privacy.keyword_shown(str(k))
        }
    if isinstance(keywords, Mapping) and keywords:
        data["n_keywords"] = len(keywords)
        data["keywords"] = table(
            [{"keyword": k, "value": v} for k, v in keywords.items()],
            [Column("keyword", "keyword"), Column("value", "value")],
            css="keywords",
        )
    return data


def _provenance_value(report: Report, sid: str, key: str, value: Any, files: list[str]) -> Any:
    """A provenance entry as the page may show it: the file named by its sample, acquisition
    date and time only when the config allows them."""
    privacy = report.privacy
    if key == "file" and not privacy.show_file_names:
        return f"the file of sample {sid}"
    if key in ("acquisition_date", "acquisition_time") and not privacy.show_acquisition_times:
        return HIDDEN_NOTE.format(key="show_acquisition_times") if value else value
    return report.shown(value, sid, files)


def clustering_section(sample: SampleFiles) -> str:
    """The clustering section of `sample`'s page on its own (templates/clustering.html)."""
    return render("clustering.html", clustering=_clustering(sample))


def _clustering(sample: SampleFiles) -> dict:
    """The cohort clustering seen from this sample: its metaclusters and whether they agree
    with the gates (a disagreement says a gate or a metacluster deserves a look)."""
    if sample.clusters is None:
        return {"found": False}
    tables = {"agreement": "Agreement with the gates (F1)", "clusters": "Metaclusters"}
    return {"found": True, **_opinion(sample.clusters, "clusters", tables)}


def _opinion(data: Any, name: str, tables: Mapping[str, str]) -> dict:
    """A second opinion's record (clusters.json, learned.json, expert.json) as a page section
    shows it: its disagreements and its tables (record key -> heading) when it is ok, else the
    record as it stands (why it is not available)."""
    if not isinstance(data, Mapping) or data.get("status") != "ok":
        items = data.items() if isinstance(data, Mapping) else [(name, data)]
        return {"ok": False, "record": key_values(items)}
    shown = []
    for key, heading in tables.items():
        rows = data.get(key)
        if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
            shown.append((heading, _records_table(rows, key)))
    return {
        "ok": True,
        "disagreements": [plain(d) for d in data.get("disagreements") or []],
        "tables": shown,
    }


def _doubtful_row(row: Mapping) -> str:
    """A statistics row to look at: a gate that fell back or is not confident. Other flags
    are notes (plasmablasts joined by phenotype, the lymphocyte view used) and stay plain, as
    does a pre-gate the panel cannot apply (method 'pass': it placed nothing to look at)."""
    if str(row.get("gate_method")) == PASS:
        return ""
    confidence = pd.to_numeric(row.get("confidence"), errors="coerce")
    doubtful = (not pd.isna(confidence) and confidence < LOW_CONFIDENCE) or (
        "fallback" in str(row.get("flag") or "")
    )
    return "warn" if doubtful else ""


def _learned(sample: SampleFiles, show_file_names: bool = False) -> dict | None:
    """The lab's learned gating seen from this sample (None: the workflow has no model): its
    populations, where it is unsure or outside its references, and its agreement with the
    template's gates. The reference files are named only where file names may be shown
    (archives often name files after patients)."""
    data = sample.learned
    if data is None:
        return None
    tables = {
        "agreement": "Agreement with the template's gates (F1)",
        "populations": "The model's populations",
    }
    section = _opinion(data, "learned", tables)
    if section["ok"]:
        files = [plain(n) for n in data.get("learned_from") or []]
        shown = ", ".join(files) if show_file_names else f"{len(files)} reference files"
        section.update(learned_from=shown, model=plain(data.get("model", "")))
    return section


def _expert(sample: SampleFiles) -> dict | None:
    """The expert's gating of this sample's file against the template's (None: no expert
    gating for it): agreement per compared population and what to review; the expert's
    populations are outlined on the density plots above."""
    data = sample.expert
    if data is None:
        return None
    section = _opinion(data, "expert", {"agreement": "Agreement with the expert (F1)"})
    if section["ok"]:
        outlines = data.get("outlines") or {}
        section["outlined"] = sorted(str(k) for k, v in outlines.items() if v)
    return section


def _records_table(rows: list[Mapping], css: str) -> dict:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = [
        Column(k, k, "num" if all(_is_number(r.get(k)) for r in rows) else "text") for k in keys
    ]
    return table(rows, columns, css=css)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
