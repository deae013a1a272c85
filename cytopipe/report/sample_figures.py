"""Sample figures: every gate on its parent's density plot (from plots.json) and the QC
timeline of the acquisition (what the QC removed, and why)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cytopipe.report.figure_style import (
    FONT,
    base_layout,
    is_finite,
    json_number,
    styled,
    t,
)


def qc_timeline_figure(timeline: Mapping) -> go.Figure:
    """Event rate and signal per marker over acquisition time, removed bins shaded, so a
    scientist sees what the QC took out (a clog, a bubble, a drift) and judges it."""
    start = [float(v) for v in timeline["start"]]
    end = [float(v) for v in timeline["end"]]
    mid = [(a + b) / 2 for a, b in zip(start, end, strict=True)]
    unit = str(timeline.get("time_unit") or "s")
    # the median per bin is what scientists read; the QC itself may test the mean (robust for
    # channels split ~50/50 between two populations), both are in the timeline
    stat = "median" if timeline.get("median") else str(timeline.get("statistic") or "mean")
    signals = timeline.get(stat) or {}
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("event rate", f"{stat} signal per bin (logicle scale)"),
    )
    fig.add_scatter(
        name="events/s",
        x=mid,
        y=[json_number(v) for v in timeline["rate"]],
        mode="lines",
        line=dict(color="#1864ab", width=1.5),
        hovertemplate="%{y:.4g} events/s at %{x:.4g} " + unit + "<extra></extra>",
        row=1,
        col=1,
    )
    if timeline.get("rate_expected") is not None:
        fig.add_scatter(
            name="expected rate",
            x=mid,
            y=[json_number(v) for v in timeline["rate_expected"]],
            mode="lines",
            line=dict(color="#868e96", width=1, dash="dash"),
            hoverinfo="skip",
            row=1,
            col=1,
        )
    for marker, values in signals.items():
        fig.add_scatter(
            name=str(marker),
            x=mid,
            y=[json_number(v) for v in values],
            mode="lines",
            line=dict(width=1.2),
            hovertemplate=html.escape(str(marker)) + " %{y:.3f}<extra></extra>",
            row=2,
            col=1,
        )
    reasons = timeline.get("reason") or [""] * len(start)
    for a, b, flagged, why in zip(start, end, timeline["flagged"], reasons, strict=True):
        if flagged:
            fig.add_vrect(x0=a, x1=b, fillcolor="#fa5252", opacity=0.25, line_width=0,
                          annotation=None, layer="below", name=str(why))  # fmt: skip
    fig.update_xaxes(title=f"acquisition time ({unit})", row=2, col=1)
    fig.update_yaxes(title="events/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="signal", row=2, col=1)
    fig.update_layout(base_layout(height=460, margin=dict(l=70, r=20, t=40, b=50)))
    return styled(fig)


DENSITY_TICKS = [0, 1, 2, 3, 4, 5, 6]

# Turbo without its near-black ends (blue -> green -> yellow -> red, like the pseudo-colour plots
# cytometrists know; a bin with one event stays visibly blue); given explicitly because plotly.js
# has no built-in "Turbo".
_TURBO = ["#4145ab", "#4675ed", "#39a2fc", "#1bcfd4", "#24eca6", "#61fc6c", "#a4fc3b"]

_TURBO += ["#d1e834", "#f3c63a", "#fe9b2d", "#f36315", "#d93806", "#b11901"]

DENSITY_COLORS = [[i / (len(_TURBO) - 1), c] for i, c in enumerate(_TURBO)]

DENSITY_TEXT = ["1", "10", "100", "1k", "10k", "100k", "1M"]


def density_title(plot: Mapping, parent_count: Any = None) -> str:
    """ "population (count, % parent)" with the population's friendly name."""
    pop = str(plot.get("population", ""))
    parent = str(plot.get("parent") or "all events")
    count = plot.get("count")
    pct = plot.get("pct_parent")
    count_text = f"{int(count):,}" if is_finite(count) else "—"
    pct_text = f"{float(pct):.3g}%" if is_finite(pct) else "—"
    return f"<b>{t(pop)}</b> ({count_text}, {pct_text} of {t(parent)})"


def axis_label(marker: str, panel: Mapping[str, str] | None, width: int = 28) -> str:
    """ "CD19 · PE-Cy7-A (CD19)": the marker and the file's channel, cut to fit a small plot."""
    channel = str((panel or {}).get(marker) or "")
    if not channel or channel == marker:
        return t(marker)
    if len(channel) > width:
        channel = channel[: width - 1] + "…"
    return f"{t(marker)} · {t(channel)}"


EXPERT_COLOR = "#e8590c"  # the expert's population outlined beside our gate (expert_gates)


def _outline_traces(gate: Sequence, name: str, dash: str, line: str = "#000000") -> list[dict]:
    """A gate outline as a white halo under a black (or `color`) line: visible on every
    density colour."""
    pts = [list(p) for p in gate if isinstance(p, list | tuple) and len(p) >= 2]
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    xs, ys = [json_number(p[0]) for p in pts], [json_number(p[1]) for p in pts]
    hover = (
        {"hoverinfo": "skip"} if dash == "solid" else {"hovertemplate": f"{t(name)}<extra></extra>"}
    )
    return [
        {
            "type": "scatter",
            "x": xs,
            "y": ys,
            "mode": "lines",
            "line": {"color": color, "width": width, "dash": dash},
            "name": name,
            "showlegend": False,
            **hover,
        }
        for color, width in (("#ffffff", 4), (line, 1.8 if line == "#000000" else 2.6))
    ]


def density_figure(plot: Mapping, panel: Mapping[str, str] | None = None) -> dict:
    """One gate on its parent's 2-D histogram (log colour scale) with the gate outline.

    Built as a plain dict: a sample page holds a dozen 96x96 histograms and plotly's figure
    validation would cost more than the whole rest of the report; the tests validate the
    structure with go.Figure."""
    counts = np.asarray(plot.get("counts") or [[0]], dtype=float)
    with np.errstate(divide="ignore"):
        logc = np.where(counts > 0, np.round(np.log10(np.maximum(counts, 1)), 4), np.nan)
    empty = ~np.isfinite(logc)
    z_obj = logc.astype(object)
    z_obj[empty] = None  # empty bins stay transparent (null), not the lowest colour
    z = z_obj.tolist()
    top = float(np.nanmax(logc)) if np.isfinite(logc).any() else 1.0
    n_ticks = max(2, min(len(DENSITY_TICKS), math.ceil(top) + 1))
    x, y = str(plot.get("x", "")), str(plot.get("y", ""))
    gate = plot.get("gate") or []
    traces: list[dict] = [
        {
            "type": "heatmap",
            "x": list(plot.get("x_edges") or []),
            "y": list(plot.get("y_edges") or []),
            "z": z,
            "customdata": counts.astype(int).tolist(),
            "zmin": 0,
            "zmax": max(top, 1.0),
            "colorscale": DENSITY_COLORS,
            "colorbar": {
                "tickvals": DENSITY_TICKS[:n_ticks],
                "ticktext": DENSITY_TEXT[:n_ticks],
                "thickness": 8,
                "len": 0.8,
                "title": {"text": "events", "side": "right", "font": {"size": 10}},
                "tickfont": {"size": 10},
            },
            "hovertemplate": f"{t(x)} %{{x:.3f}}<br>{t(y)} %{{y:.3f}}<br>%{{customdata}} events<extra></extra>",
            "name": "events",
        }
    ]
    if gate:
        traces += _outline_traces(gate, "gate", "solid")
    notes = []
    expert = plot.get("expert_gate") or []
    if expert:  # the expert's population on the same events (expert_gates), beside ours
        traces += _outline_traces(expert, "the expert's population", "dot", line=EXPERT_COLOR)
    for extra in plot.get("extra_gates") or ():
        # an `or:` part of the gate (e.g. CD19-dim plasmablasts): its other dims are in its label,
        # written inside its outline so nobody reads the dashed box as "every event in here"
        label = f"also gated: {extra.get('label') or 'extra rectangle'}"
        outline = extra.get("gate") or []
        traces += _outline_traces(outline, label, "dash")
        pts = [p for p in outline if isinstance(p, list | tuple) and len(p) >= 2]
        if pts:
            notes.append(
                {
                    "x": json_number(min(p[0] for p in pts)),
                    "y": json_number(min(p[1] for p in pts)),
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "text": f"dashed: only if {t(extra.get('label') or 'its other markers')}",
                    "showarrow": False,
                    "font": {"size": 9},
                    "bgcolor": "rgba(255,255,255,0.8)",
                }
            )
    layout = {
        "title": {
            "text": density_title(plot)
            + (f" · <span style='color:{EXPERT_COLOR}'>dotted: expert</span>" if expert else ""),
            "x": 0.01,
            "xanchor": "left",
            "y": 0.985,
            "yanchor": "top",
            "font": {"size": 13},
        },
        "font": FONT,
        "height": 360,
        "margin": {"l": 60, "r": 10, "t": 36, "b": 46},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "xaxis": {
            "title": {"text": axis_label(x, panel), "font": {"size": 11}},
            "range": [json_number(v) for v in (plot.get("x_range") or [None, None])],
            "showgrid": False,
            "zeroline": False,
            "linecolor": "#adb5bd",
            "mirror": True,
            "ticks": "outside",
        },
        "yaxis": {
            "title": {"text": axis_label(y, panel), "font": {"size": 11}},
            "range": [json_number(v) for v in (plot.get("y_range") or [None, None])],
            "showgrid": False,
            "zeroline": False,
            "linecolor": "#adb5bd",
            "mirror": True,
            "ticks": "outside",
        },
        "showlegend": False,
        "annotations": notes,
    }
    return {"data": traces, "layout": layout}


def cut_figure(cut: Mapping, panel: Mapping[str, str] | None = None) -> dict:
    """One threshold on the 1-D density it was searched on (the events of its `on` population
    within its `where` cuts), the cut as a line: black where a valley or mixture found it,
    orange where there was none (a turn, a shoulder, a reference population's cut, the
    template's fallback), and how, in the title."""
    edges = np.asarray(cut.get("edges") or [0.0, 1.0], dtype=float)
    counts = [int(c) for c in cut.get("counts") or []]
    centers = (0.5 * (edges[:-1] + edges[1:])).round(5).tolist()
    value = cut.get("value")
    where = f" where {', '.join(t(w) for w in cut['where'])}" if cut.get("where") else ""
    how = str(cut.get("method") or "")
    flag = str(cut.get("flag") or "")
    title = (
        f"{t(cut.get('name', ''))}: {how} at {value:.3g}"
        if is_finite(value)
        else t(cut.get("name", ""))
    )
    lines = [
        f"<b>{title}</b>",
        f"{t(cut.get('dim', ''))} on {t(cut.get('on', ''))}{where} ({int(cut.get('events') or 0):,} events)",
    ]
    if flag:
        lines.append(t(flag if len(flag) <= 90 else flag[:89] + "…"))
    traces: list[dict] = [
        {
            "type": "scatter",
            "x": centers,
            "y": counts,
            "mode": "lines",
            "line": {"color": "#495057", "width": 1.2, "shape": "hvh"},
            "fill": "tozeroy",
            "fillcolor": "rgba(73,80,87,0.15)",
            "hovertemplate": f"{t(cut.get('dim', ''))} %{{x:.3f}}: %{{y}} events<extra></extra>",
            "name": "events",
        }
    ]
    shapes = []
    if is_finite(value):
        colour = "#000000" if how in ("valley", "mixture") else "#b35806"  # found in the data
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": value, "x1": value,
                       "y0": 0, "y1": 1, "line": {"color": colour, "width": 2, "dash": "dash"}})  # fmt: skip
    layout = {
        "title": {
            "text": "<br>".join(lines),
            "x": 0.01,
            "xanchor": "left",
            "y": 0.99,
            "pad": {"t": 8},
            "yanchor": "top",
            "font": {"size": 10},
        },  # fmt: skip
        "font": FONT,
        "height": 200 if flag else 180,
        "margin": {"l": 60, "r": 10, "t": 66 if flag else 52, "b": 34},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "xaxis": {
            "title": {"text": axis_label(str(cut.get("dim", "")), panel), "font": {"size": 10}},
            "range": [json_number(edges[0]), json_number(edges[-1])],
            "showgrid": False,
            "zeroline": False,
            "linecolor": "#adb5bd",
            "ticks": "outside",
        },  # fmt: skip
        "yaxis": {
            "type": "log",
            "title": {"text": "events", "font": {"size": 10}},
            "showgrid": False,
            "linecolor": "#adb5bd",
            "rangemode": "tozero",
        },  # fmt: skip
        "showlegend": False,
        "shapes": shapes,
    }
    return {"data": traces, "layout": layout}


QUADRANT_MIN = 3  # gates sharing parent and axes drawn on one plot (IgD/CD27 quadrants)


def shared_plots(plots: Sequence[Mapping]) -> list[list[Mapping]]:
    """The sample's plots in order, those of rectangles that share a parent and both axes
    (the IgD/CD27 quadrants) grouped: one plot with every outline and its percentage says more
    than four plots of the same density."""
    groups: dict[tuple, list[Mapping]] = {}
    order: list[tuple] = []
    for p in plots:
        key = (p.get("parent"), p.get("x"), p.get("y"))
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(p)
    out: list[list[Mapping]] = []
    for key in order:
        members = groups[key]
        if len(members) >= QUADRANT_MIN:
            out.append(members)
        else:
            out.extend([m] for m in members)
    return out


def quadrant_figure(plots: Sequence[Mapping], panel: Mapping[str, str] | None = None) -> dict:
    """Gates on one parent density (the IgD/CD27 quadrants): every outline, and each
    population's name and % of the parent in its outer corner, away from the cells."""
    fig = density_figure(plots[0], panel)
    fig["data"] = fig["data"][:1]
    x_range = [float(v) for v in plots[0].get("x_range") or [0.0, 1.0]]
    y_range = [float(v) for v in plots[0].get("y_range") or [0.0, 1.0]]
    outlines = [
        np.asarray([q for q in p.get("gate") or [] if len(q) >= 2], dtype=float) for p in plots
    ]
    centres = [o.mean(axis=0) for o in outlines if o.size]
    cross = np.mean(centres, axis=0) if centres else np.array([0.5, 0.5])
    notes = []
    for p, pts in zip(plots, outlines, strict=True):
        fig["data"] += _outline_traces(p.get("gate") or [], str(p.get("population")), "solid")
        if pts.size == 0:
            continue
        right, top = pts.mean(axis=0) > cross
        pct = p.get("pct_parent")
        name = t(p.get("population", ""))
        notes.append({
            "x": json_number(x_range[1] if right else x_range[0]),
            "y": json_number(y_range[1] if top else y_range[0]),
            "xanchor": "right" if right else "left", "yanchor": "top" if top else "bottom",
            "text": f"{name}<br><b>{float(pct):.3g}%</b>" if is_finite(pct) else name,
            "showarrow": False, "font": {"size": 10}, "bgcolor": "rgba(255,255,255,0.85)",
            "align": "right" if right else "left",
        })  # fmt: skip
    parent = str(plots[0].get("parent") or "all events")
    names = ", ".join(t(p.get("population", "")) for p in plots)
    fig["layout"]["title"]["text"] = f"<b>{t(parent)}</b>: {names}"
    fig["layout"]["annotations"] = notes
    return fig
