"""A gallery page per gate: that gate on every sample, small multiples sorted by confidence
(lowest first), so a reviewer checks one gate across a cohort on one page instead of opening
fifty sample pages. Built from each sample's plots.json and stats.tsv as the sample pages are
written; only the GALLERY_MAX least confident samples of a gate are drawn (a cohort of
thousands stays a page), the page says how many more there are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cytopipe.report.context import Report, slug
from cytopipe.report.data import SampleFiles
from cytopipe.report.figure_style import population_name
from cytopipe.report.formatting import fmt_number, is_missing, plain
from cytopipe.report.page_parts import frame
from cytopipe.report.render import FigureCounter, render
from cytopipe.report.sample_figures import density_figure

GALLERY_MAX = 120


@dataclass
class Gallery:
    """Per gate: (confidence, sample id, its plot, its stats row), filled sample by sample."""

    entries: dict[str, list[tuple[float, str, Mapping, Mapping]]] = field(default_factory=dict)
    panels: dict[str, Mapping] = field(default_factory=dict)

    def add(self, sample: SampleFiles) -> None:
        if not sample.plots:
            return
        rows = {}
        if sample.stats is not None and "population" in sample.stats:
            rows = {str(r["population"]): r for r in sample.stats.to_dict("records")}
        panel = sample.record.get("panel")
        self.panels[sample.sample_id] = panel if isinstance(panel, Mapping) else {}
        for plot in sample.plots:
            gate = str(plot.get("population", ""))
            row = rows.get(gate, {})
            conf = row.get("confidence")
            key = 1.0 if is_missing(conf) else float(conf)
            self.entries.setdefault(gate, []).append((key, sample.sample_id, plot, row))

    def gates(self) -> list[str]:
        return list(self.entries)


def gallery_href(gate: str, root: str) -> str:
    return f"{root}gates/{slug(gate)}.html"


def gallery_page(report: Report, gallery: Gallery, gate: str) -> str:
    root = "../"
    figs = FigureCounter()
    entries = sorted(gallery.entries.get(gate, []), key=lambda e: (e[0], e[1]))
    shown = entries[:GALLERY_MAX]
    tiles: list[dict[str, Any]] = []
    for conf, sid, plot, row in shown:
        fig = density_figure(plot, gallery.panels.get(sid))
        fig["layout"]["height"] = 260
        flag = plain(row.get("flag", "")) if not is_missing(row.get("flag")) else ""
        look = row.get("as_template")
        caption = f"confidence {fmt_number(conf, 2)}" + (f" · {flag}" if flag else "")
        if isinstance(look, str) and look.startswith("no"):
            caption += f" · {look}"
        tiles.append({
            "figure": figs.embed(fig, css="plot small", caption=caption),
            "sample": sid,
            "href": report.sample_href(sid, root) + "#gates",
        })  # fmt: skip
    name = population_name(gate)
    page = frame(
        report,
        title=f"Gate {gate} on every sample · cytopipe",
        heading=f"Gate {name} ({gate}) on every sample",
        crumbs=[("Cohort", f"{root}index.html"), (f"Gate {gate}", None)],
        root=root,
    )
    more = len(entries) - len(shown)
    return render("gallery.html", frame=page, tiles=tiles, more=more, n=len(entries))


def gallery_links(report: Report, gallery: Gallery) -> list[dict]:
    """The cohort page's list: each gate, how many samples, how many below 0.5 confidence."""
    out = []
    for gate in gallery.gates():
        confs = [c for c, *_ in gallery.entries[gate]]
        out.append({
            "href": gallery_href(gate, ""), "name": f"{population_name(gate)} ({gate})",
            "n": len(confs), "low": sum(c < 0.5 for c in confs),
        })  # fmt: skip
    return out
