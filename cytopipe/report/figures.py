"""Plotly figures of the report, built from the result tables (pure functions, no I/O).

Every number drawn is a value of the tables, unchanged: bar lengths in the swimmer plot are
the patient table's days, the Kaplan-Meier steps are km.tsv, points on patient plots are
sample_states.tsv and each density plot is the precomputed plots.json bins. The only exception
is made visible: a value of exactly 0 cannot sit on a log axis, so it is drawn at the bottom of
the axis with a downward triangle and its hover text says 0. Hover texts carry the exact values.

Text that comes from files (ids, marker names, flags) is HTML-escaped before it goes into a
figure, because plotly renders a subset of HTML in titles, labels and hover texts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cytopipe.report.html import STATE_COLORS

DAYS_PER_YEAR = 365.25
FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size=12)
STATE_LABELS = {
    "baseline": "baseline (before infusion)",
    "aplasia": "B-cell aplasia",
    "reconstituted": "reconstituted",
    "not_depleted": "not depleted",
    "unknown": "state unknown",
}
POPULATION_NAMES = {
    "cells": "Cells",
    "singlets": "Singlets",
    "live": "Live cells",
    "leukocytes": "CD45+ leukocytes",
    "lymphocytes": "Lymphocytes",
    "t_cells": "T cells (CD3+)",
    "b_cells": "B cells (CD3− CD19+)",
    "b_cd20pos": "CD20+ B cells",
    "b_cd20neg": "CD19+ CD20− cells",
    "plasmablasts": "Plasmablasts (CD27hi CD38hi)",
    "b_naive": "Naive B (IgD+ CD27−)",
    "b_unswitched_memory": "Unswitched memory B (IgD+ CD27+)",
    "b_switched_memory": "Switched memory B (IgD− CD27+)",
    "b_double_negative": "Double-negative B (IgD− CD27−)",
    "b_transitional": "Transitional B (CD24hi CD38hi)",
}
# Mutually exclusive parts of the B-cell compartment, stacked; transitional cells lie inside
# the naive quadrant and are drawn as a line over the bars instead of being stacked twice.
COMPOSITION = [
    ("frac_naive", "naive (IgD+ CD27−)", "#74c0fc"),
    ("frac_unswitched_memory", "unswitched memory (IgD+ CD27+)", "#b197fc"),
    ("frac_switched_memory", "switched memory (IgD− CD27+)", "#e64980"),
    ("frac_double_negative", "double negative (IgD− CD27−)", "#ffa94d"),
    ("frac_plasmablast", "plasmablasts", "#c92a2a"),
]
FEW_B_CELLS = 50  # fewer B-cell events than this: subset fractions are too noisy to trust


def t(text: Any) -> str:
    """Text for a plotly label/hover: HTML-escaped (plotly shows &lt; as <)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return html.escape(str(text), quote=False)


def population_name(pop: str) -> str:
    return POPULATION_NAMES.get(pop, pop)


def base_layout(**extra: Any) -> dict:
    layout = dict(
        # no plotly.py template: copying one costs ~30 ms per figure and ~7 kB of JSON, and
        # plotly.js's own defaults are the same white style
        template="none",
        plot_bgcolor="#ffffff",
        paper_bgcolor="#ffffff",
        font=FONT,
        margin=dict(l=70, r=20, t=50, b=50),
        hoverlabel=dict(align="left"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
    )
    layout.update(extra)
    return layout


def styled(fig: go.Figure) -> go.Figure:
    """The report's axis style on every subplot (light grid, no zero line: day 0 and the
    thresholds have their own lines)."""
    axis = dict(zeroline=False, gridcolor="#e9ecef", linecolor="#adb5bd", showline=True)
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    return fig


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any) -> float | None:
    """A JSON-safe number (None for NaN/missing)."""
    return float(value) if _finite(value) else None


def _fmt(value: Any, digits: int = 4) -> str:
    if not _finite(value):
        return "—"
    number = float(value)
    if number == int(number):
        return f"{int(number):,}"
    return f"{number:.{digits}g}"


def _day_text(value: Any) -> str:
    return _fmt(value) if _finite(value) else "—"


# ----------------------------------------------------------------------------- cohort


def is_true(series: pd.Series) -> np.ndarray:
    """True where a boolean column is True; missing (None/NaN) counts as False."""
    return np.array([isinstance(v, bool | np.bool_) and bool(v) for v in series], dtype=bool)


def patient_order(patients: pd.DataFrame) -> list[str]:
    """Swimmer order, top to bottom: reconstituted by day of reconstitution, then censored
    (still in aplasia) by follow-up, then everyone else; ties by patient id."""
    rank = np.where(
        is_true(patients["reconstituted"]), 0, np.where(is_true(patients["censored"]), 1, 2)
    )
    key = np.where(
        rank == 0,
        pd.to_numeric(patients["reconstitution_day"], errors="coerce"),
        pd.to_numeric(patients["last_followup_day"], errors="coerce"),
    )
    frame = pd.DataFrame({"id": patients["patient_id"].astype(str), "rank": rank, "key": key})
    frame = frame.sort_values(["rank", "key", "id"], na_position="last", kind="stable")
    return frame["id"].tolist()


def swimmer_figure(
    patients: pd.DataFrame,
    states: pd.DataFrame | None = None,
    links: Mapping[str, str] | None = None,
) -> go.Figure:
    """One row per patient over days since infusion: follow-up, aplasia episode, reconstituted
    period, baseline sample, reconstitution and censoring markers, every sampling day."""
    order = patient_order(patients)
    rows = patients.assign(patient_id=patients["patient_id"].astype(str)).set_index("patient_id")
    rows = rows.loc[order]
    first_day = _first_days(states, order)
    fig = go.Figure(layout={"template": "none"})
    ids = list(rows.index)
    start = [first_day.get(p, rows.at[p, "aplasia_start_day"]) for p in ids]
    last = pd.to_numeric(rows["last_followup_day"], errors="coerce").to_numpy(dtype=float)
    hover = [_patient_hover(p, rows.loc[p]) for p in ids]

    def bar(name, base, length, color, width, keep, legend=True):
        keep = np.asarray(keep, dtype=bool) & np.isfinite(base) & np.isfinite(length)
        if not keep.any():
            return
        fig.add_bar(
            name=name,
            orientation="h",
            y=[ids[i] for i in np.flatnonzero(keep)],
            base=[float(base[i]) for i in np.flatnonzero(keep)],
            x=[float(length[i]) for i in np.flatnonzero(keep)],
            width=width,
            marker=dict(color=color, line=dict(width=0)),
            customdata=[[ids[i]] for i in np.flatnonzero(keep)],
            hovertext=[hover[i] for i in np.flatnonzero(keep)],
            hovertemplate="%{hovertext}<extra>" + t(name) + "</extra>",
            showlegend=legend,
        )

    start_arr = np.asarray(start, dtype=float)
    bar("follow-up", start_arr, last - start_arr, "#ced4da", 0.28, np.ones(len(ids)))
    a_start = pd.to_numeric(rows["aplasia_start_day"], errors="coerce").to_numpy(dtype=float)
    a_len = pd.to_numeric(rows["aplasia_duration_days"], errors="coerce").to_numpy(dtype=float)
    bar("B-cell aplasia", a_start, a_len, STATE_COLORS["aplasia"], 0.6, np.ones(len(ids)))
    r_day = pd.to_numeric(rows["reconstitution_day"], errors="coerce").to_numpy(dtype=float)
    recon = is_true(rows["reconstituted"])
    bar("reconstituted", r_day, last - r_day, STATE_COLORS["reconstituted"], 0.6, recon)

    if states is not None and len(states):
        _sample_ticks(fig, states, ids)
    _markers(
        fig, ids, r_day, recon, "reconstitution", "diamond", STATE_COLORS["reconstituted"], hover
    )
    censored = is_true(rows["censored"])
    _markers(
        fig,
        ids,
        last,
        censored,
        "censored (follow-up ended in aplasia)",
        "triangle-right",
        "#212529",
        hover,
    )
    flag = is_true(rows.get("flag_memory_return", pd.Series(False, index=rows.index)))
    _markers(
        fig,
        ids,
        np.where(np.isfinite(r_day), r_day, last),
        flag,
        "memory/plasmablast return flag",
        "star",
        "#c2255c",
        hover,
        size=13,
    )
    fig.add_vline(x=0, line=dict(color="#495057", dash="dash", width=1))
    fig.add_annotation(
        x=0,
        y=1,
        yref="paper",
        text="CAR-T infusion",
        showarrow=False,
        yanchor="bottom",
        xanchor="left",
        font=dict(size=11, color="#495057"),
    )
    fig.update_layout(
        base_layout(
            barmode="overlay",
            height=max(320, 90 + 38 * len(ids)),
            margin=dict(l=90, r=20, t=30, b=50),
            legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.01),
            meta=dict(links=dict(links or {})),
        )
    )
    fig.update_yaxes(
        type="category", autorange="reversed", title=None, categoryorder="array", categoryarray=ids
    )
    fig.update_xaxes(title="days since CAR-T infusion", zeroline=False)
    return styled(fig)


def _first_days(states: pd.DataFrame | None, ids: Sequence[str]) -> dict[str, float]:
    if states is None or not len(states):
        return {}
    day = pd.to_numeric(states["day"], errors="coerce")
    first = day.groupby(states["patient_id"].astype(str)).min()
    return {p: float(first[p]) for p in ids if p in first and _finite(first[p])}


def _patient_hover(pid: str, row: pd.Series) -> str:
    status = (
        "reconstituted"
        if row.get("reconstituted") is True
        else "censored in aplasia"
        if row.get("censored") is True
        else "no aplasia episode"
    )
    lines = [
        f"<b>{t(pid)}</b> {t(row.get('disease', ''))}",
        f"status: {status}",
        f"aplasia from day {_day_text(row.get('aplasia_start_day'))}, "
        f"{_day_text(row.get('aplasia_duration_days'))} days",
        f"reconstitution day: {_day_text(row.get('reconstitution_day'))}",
        f"last follow-up day: {_day_text(row.get('last_followup_day'))}",
    ]
    if row.get("phenotype_at_return"):
        lines.append(f"phenotype at return: {t(row.get('phenotype_at_return'))}")
    return "<br>".join(lines)


def _sample_ticks(fig: go.Figure, states: pd.DataFrame, ids: Sequence[str]) -> None:
    """Each sampling day as a small mark coloured by the B-cell state at that timepoint (one
    legend entry: the colours are the states of the bars)."""
    frame = states[states["patient_id"].astype(str).isin(ids)]
    if not len(frame):
        return
    state = frame["state"].astype(str).tolist()
    baseline = [s == "baseline" for s in state]
    fig.add_scatter(
        name="sampling day (colour: B-cell state)",
        x=[_num(d) for d in pd.to_numeric(frame["day"], errors="coerce")],
        y=frame["patient_id"].astype(str).tolist(),
        mode="markers",
        marker=dict(
            symbol=["circle-open" if b else "circle" for b in baseline],
            size=[9 if b else 7 for b in baseline],
            color=[STATE_COLORS.get(s, "#495057") for s in state],
            line=dict(
                color=["#6c757d" if b else "#ffffff" for b in baseline],
                width=[2 if b else 1.2 for b in baseline],
            ),
        ),
        customdata=[
            [str(p), t(sid), t(STATE_LABELS.get(s, s))]
            for p, sid, s in zip(frame["patient_id"], frame["sample_id"], state, strict=True)
        ],
        hovertemplate="%{customdata[1]}, day %{x}<br>%{customdata[2]}<extra></extra>",
    )


def _markers(fig, ids, x, keep, name, symbol, color, hover, size=12):
    keep = np.asarray(keep, dtype=bool) & np.isfinite(np.asarray(x, dtype=float))
    idx = np.flatnonzero(keep)
    if not len(idx):
        return
    fig.add_scatter(
        name=name,
        x=[float(x[i]) for i in idx],
        y=[ids[i] for i in idx],
        mode="markers",
        marker=dict(symbol=symbol, size=size, color=color, line=dict(color="#ffffff", width=1)),
        customdata=[[ids[i]] for i in idx],
        hovertext=[hover[i] for i in idx],
        hovertemplate="%{hovertext}<extra>" + t(name) + "</extra>",
    )


def km_figure(km: pd.DataFrame, median: float | None = None, n_excluded: int = 0) -> go.Figure:
    """Kaplan-Meier step curve of the fraction still in aplasia, with censoring ticks."""
    day = pd.to_numeric(km["day"], errors="coerce").to_numpy(dtype=float)
    surv = pd.to_numeric(km["still_aplastic"], errors="coerce").to_numpy(dtype=float)
    at_risk = km["at_risk"].tolist()
    events = km["events"].tolist()
    cens = pd.to_numeric(km["censored"], errors="coerce").fillna(0).to_numpy()
    fig = go.Figure(layout={"template": "none"})
    fig.add_scatter(
        name="still in aplasia (Kaplan-Meier)",
        x=[float(d) for d in day],
        y=[float(s) for s in surv],
        mode="lines",
        line=dict(shape="hv", color=STATE_COLORS["aplasia"], width=2.5),
        customdata=[
            [int(a), int(e), int(c)] for a, e, c in zip(at_risk, events, cens, strict=True)
        ],
        hovertemplate=(
            "day %{x}<br>still in aplasia: %{y:.3f}<br>at risk %{customdata[0]}, "
            "reconstituted %{customdata[1]}, censored %{customdata[2]}<extra></extra>"
        ),
    )
    ticks = cens > 0
    if ticks.any():
        fig.add_scatter(
            name="censored",
            x=[float(d) for d in day[ticks]],
            y=[float(s) for s in surv[ticks]],
            mode="markers",
            marker=dict(symbol="line-ns-open", size=14, color="#212529", line=dict(width=2)),
            customdata=[[int(c)] for c in cens[ticks]],
            hovertemplate="censored at day %{x} (n=%{customdata[0]})<extra></extra>",
        )
    text = (
        f"median time to reconstitution: {_fmt(median)} days"
        if median is not None
        else "median time to reconstitution: not reached"
    )
    if n_excluded:
        text += f" · {n_excluded} patient(s) not in the curve (see below)"
    fig.add_hline(y=0.5, line=dict(color="#adb5bd", dash="dot", width=1))
    fig.update_layout(
        base_layout(
            height=400,
            showlegend=True,
            margin=dict(l=70, r=20, t=40, b=50),
            legend=dict(
                orientation="v",
                yanchor="top",
                y=0.98,
                xanchor="right",
                x=0.99,
                bgcolor="rgba(255,255,255,0.85)",
            ),
            annotations=[
                dict(
                    text=t(text),
                    x=0,
                    xref="paper",
                    xanchor="left",
                    y=1.0,
                    yref="paper",
                    yanchor="bottom",
                    showarrow=False,
                    font=dict(size=13),
                )
            ],
        )
    )
    fig.update_yaxes(title="fraction still in B-cell aplasia", range=[-0.02, 1.05])
    fig.update_xaxes(title="days since CAR-T infusion", rangemode="tozero")
    return styled(fig)


# ----------------------------------------------------------------------------- patient


def reference_segments(
    day_min: float, day_max: float, age_at_infusion: float, bands: Sequence[Mapping]
) -> list[tuple[float, float, float, float, str]]:
    """(day_from, day_to, low, high, label) of the age reference band over follow-up.

    Ages cross band limits during follow-up in children (a 5.9-year-old is in the 6-12 y band
    a month later), so the band is cut exactly where the age crosses a band's limit."""
    if not (_finite(day_min) and _finite(day_max) and _finite(age_at_infusion)):
        return []
    out = []
    for band in bands:
        d0 = (float(band["min_age"]) - age_at_infusion) * DAYS_PER_YEAR
        d1 = (float(band["max_age"]) - age_at_infusion) * DAYS_PER_YEAR
        lo, hi = max(d0, day_min), min(d1, day_max)
        if lo < hi:
            label = band.get("label") or f"{band['min_age']:g}-{band['max_age']:g} y"
            out.append((lo, hi, float(band["low"]), float(band["high"]), str(label)))
    return out


def _state_points(
    fig: go.Figure,
    frame: pd.DataFrame,
    column: str,
    floor: float,
    row: int,
    unit: str,
    legend: bool,
) -> None:
    """Points coloured by state; zeros at `floor` with a down-triangle (log axis)."""
    for state, group in frame.groupby("state", sort=False):
        values = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values)
        if not ok.any():
            continue
        group, values = group[ok], values[ok]
        zero = values <= 0
        fig.add_scatter(
            name=STATE_LABELS.get(state, state),
            legendgroup=state,
            showlegend=legend,
            x=[float(d) for d in pd.to_numeric(group["day"], errors="coerce")],
            y=[float(v) if v > 0 else floor for v in values],
            mode="markers",
            marker=dict(
                color=STATE_COLORS.get(state, "#495057"),
                size=10,
                symbol=["triangle-down" if z else "circle" for z in zero],
                line=dict(color="#ffffff", width=1),
            ),
            customdata=[
                [str(s), float(v), _ref_text(r)]
                for s, v, r in zip(
                    group["sample_id"], values, group.to_dict("records"), strict=True
                )
            ],
            hovertemplate=(
                "<b>%{customdata[0]}</b> day %{x}<br>%{customdata[1]:.4g} "
                + t(unit)
                + "<br>"
                + t(STATE_LABELS.get(state, state))
                + "%{customdata[2]}<extra></extra>"
            ),
            row=row,
            col=1,
        )


def _ref_text(row: Mapping) -> str:
    parts = []
    if row.get("ref_source_band"):
        parts.append(
            f"<br>age band {t(row['ref_source_band'])}: {_fmt(row.get('ref_low'))}-"
            f"{_fmt(row.get('ref_high'))} cells/µL ({t(row.get('ref_position', ''))})"
        )
    if row.get("abs_method"):
        parts.append(f"<br>count: {t(row['abs_method'])}")
    if row.get("qc_verdict"):
        parts.append(f"<br>QC: {t(row['qc_verdict'])}")
    return "".join(parts)


def log_floor(values: Sequence[float], thresholds: Sequence[float] = ()) -> float:
    """Where zeros are drawn on a log axis: a decade below the smallest positive value."""
    arr = np.asarray(
        [v for v in [*values, *thresholds] if _finite(v) and float(v) > 0], dtype=float
    )
    if not len(arr):
        return 0.01
    return float(10 ** (math.floor(math.log10(arr.min())) - 1))


def b_cell_figure(
    states: pd.DataFrame,
    *,
    threshold_pct: float | None,
    threshold_per_ul: float | None,
    bands: Sequence[Mapping] = (),
    age_at_infusion: float | None = None,
    links: Mapping[str, str] | None = None,
) -> go.Figure:
    """B cells per µL (top) and % of lymphocytes (bottom) over time, log axes, with aplasia
    thresholds, the age reference band and points coloured by state."""
    frame = states.sort_values("day", kind="stable")
    days = pd.to_numeric(frame["day"], errors="coerce").to_numpy(dtype=float)
    per_ul = pd.to_numeric(frame["b_cells_per_ul"], errors="coerce").to_numpy(dtype=float)
    pct = pd.to_numeric(frame["b_pct_lymphocytes"], errors="coerce").to_numpy(dtype=float)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=("CD19+ B cells per µL", "CD19+ B cells, % of lymphocytes"),
    )
    span = (np.nanmin(days), np.nanmax(days)) if np.isfinite(days).any() else (0.0, 1.0)
    pad = max(3.0, 0.03 * (span[1] - span[0]))
    x0, x1 = span[0] - pad, span[1] + pad
    segments = _reference(frame, bands, age_at_infusion, x0, x1)
    if segments:
        xs, ys, text = [], [], []
        for d0, d1, lo, hi, label in segments:
            xs += [d0, d1, d1, d0, d0, None]
            ys += [lo, lo, hi, hi, lo, None]
            text += [f"{label}: {_fmt(lo)}-{_fmt(hi)} cells/µL"] * 5 + [""]
        fig.add_scatter(
            name="age reference range",
            x=xs,
            y=ys,
            fill="toself",
            mode="lines",
            line=dict(color="rgba(43,138,62,0.35)", width=1),
            fillcolor="rgba(43,138,62,0.12)",
            text=text,
            hoverinfo="text",
            hoveron="fills+points",
            row=1,
            col=1,
        )
    has_count = np.isfinite(per_ul).any()
    floor_ul = log_floor(per_ul, [threshold_per_ul] if threshold_per_ul else [])
    floor_pct = log_floor(pct, [threshold_pct] if threshold_pct else [])
    line = dict(color="#adb5bd", width=1)
    for row, values, floor in ((1, per_ul, floor_ul), (2, pct, floor_pct)):
        ok = np.isfinite(values)
        fig.add_scatter(
            x=[float(d) for d in days[ok]],
            y=[float(v) if v > 0 else floor for v in values[ok]],
            mode="lines",
            line=line,
            hoverinfo="skip",
            showlegend=False,
            row=row,
            col=1,
        )
    _state_points(fig, frame, "b_cells_per_ul", floor_ul, 1, "cells/µL", legend=False)
    _state_points(fig, frame, "b_pct_lymphocytes", floor_pct, 2, "% of lymphocytes", legend=True)
    for row, value, unit in ((1, threshold_per_ul, "cells/µL"), (2, threshold_pct, "%")):
        if _finite(value) and float(value) > 0:
            fig.add_scatter(
                name=f"aplasia threshold ({_fmt(value)} {unit})",
                legendgroup="threshold",
                x=[x0, x1],
                y=[float(value)] * 2,
                mode="lines",
                line=dict(color=STATE_COLORS["aplasia"], dash="dash", width=1.5),
                hovertemplate=f"aplasia threshold {_fmt(value)} {unit}<extra></extra>",
                row=row,
                col=1,
            )
    if not has_count:
        fig.add_annotation(
            text="no absolute count for this patient (no bead data or lymphocyte count)",
            xref="x domain",
            yref="y domain",
            x=0.5,
            y=0.5,
            showarrow=False,
            row=1,
            col=1,
        )
    for row in (1, 2):
        fig.add_vline(x=0, line=dict(color="#495057", dash="dot", width=1), row=row, col=1)
    fig.update_yaxes(type="log", dtick=1, title="cells/µL", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title="% of lymphocytes", row=2, col=1)
    fig.update_xaxes(range=[x0, x1])
    fig.update_xaxes(title="days since CAR-T infusion (dotted line: infusion)", row=2, col=1)
    fig.update_layout(
        base_layout(
            height=640,
            meta=dict(links=dict(links or {})),
            margin=dict(l=70, r=20, t=90, b=50),
            legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0),
        )
    )
    return styled(fig)


def _reference(frame, bands, age_at_infusion, x0, x1):
    """Exact band segments from the definitions; else the per-sample ref columns as steps."""
    if bands and _finite(age_at_infusion):
        return reference_segments(x0, x1, float(age_at_infusion), bands)
    if "ref_low" not in frame:
        return []
    out = []
    rows = frame[np.isfinite(pd.to_numeric(frame["ref_low"], errors="coerce"))]
    days = pd.to_numeric(rows["day"], errors="coerce").tolist()
    for i, (_, row) in enumerate(rows.iterrows()):
        d0 = x0 if i == 0 else (days[i - 1] + days[i]) / 2
        d1 = x1 if i == len(days) - 1 else (days[i] + days[i + 1]) / 2
        out.append(
            (
                d0,
                d1,
                float(row["ref_low"]),
                float(row["ref_high"]),
                str(row.get("ref_source_band", "")),
            )
        )
    return out


def _day_labels(frame: pd.DataFrame) -> list[str]:
    labels = [f"day {_fmt(d)}" for d in pd.to_numeric(frame["day"], errors="coerce")]
    seen: dict[str, int] = {}
    out = []
    for label, sid in zip(labels, frame["sample_id"], strict=True):
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({t(sid)})")
    return out


def composition_figure(states: pd.DataFrame, links: Mapping[str, str] | None = None) -> go.Figure:
    """Stacked B-cell subset fractions per timepoint (fractions of CD19+ B cells)."""
    frame = states.sort_values("day", kind="stable").reset_index(drop=True)
    labels = _day_labels(frame)
    n_b = pd.to_numeric(frame["b_cells"], errors="coerce").to_numpy(dtype=float)
    fig = go.Figure(layout={"template": "none"})
    stacked = np.zeros(len(frame))
    for column, name, color in COMPOSITION:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        stacked += np.nan_to_num(values)
        fig.add_bar(
            name=name,
            x=labels,
            y=[_num(v) for v in values],
            marker_color=color,
            customdata=[[str(s), _num(n)] for s, n in zip(frame["sample_id"], n_b, strict=True)],
            hovertemplate=f"{t(name)}: %{{y:.3f}}<br>%{{customdata[0]}} (%{{customdata[1]}} B-cell events)<extra></extra>",
        )
    other = np.where(np.isfinite(n_b) & (n_b > 0), np.clip(1.0 - stacked, 0.0, 1.0), np.nan)
    fig.add_bar(
        name="other CD19+ (CD20− non-plasmablast)",
        x=labels,
        y=[_num(v) for v in other],
        marker_color="#dee2e6",
        customdata=[[str(s)] for s in frame["sample_id"]],
        hovertemplate="other CD19+: %{y:.3f}<br>%{customdata[0]}<extra></extra>",
    )
    if "frac_transitional" in frame:
        trans = pd.to_numeric(frame["frac_transitional"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(trans).any():
            fig.add_scatter(
                name="transitional (CD24hi CD38hi, within naive)",
                x=labels,
                y=[_num(v) for v in trans],
                mode="lines+markers",
                line=dict(color="#1864ab", dash="dash", width=2),
                marker=dict(size=8, symbol="diamond"),
                customdata=[[str(s)] for s in frame["sample_id"]],
                hovertemplate="transitional: %{y:.3f}<br>%{customdata[0]}<extra></extra>",
            )
    notes = [
        dict(
            x=lab,
            y=1.0,
            yanchor="bottom",
            showarrow=False,
            text=(f"n={_fmt(n)}" if _finite(n) else "n=—")
            + (" ⚠" if _finite(n) and n < FEW_B_CELLS else ""),
            font=dict(size=10, color="#c92a2a" if _finite(n) and n < FEW_B_CELLS else "#495057"),
        )
        for lab, n in zip(labels, n_b, strict=True)
    ]
    fig.update_layout(
        base_layout(
            barmode="stack",
            height=420,
            annotations=notes,
            meta=dict(links=dict(links or {})),
            margin=dict(l=70, r=20, t=110, b=60),
            legend=dict(orientation="h", yanchor="bottom", y=1.1, x=0),
        )
    )
    fig.update_yaxes(title="fraction of CD19+ B cells", range=[0, 1.0], tickformat=".0%")
    fig.update_xaxes(
        type="category",
        title=f"n = B-cell events; ⚠ fewer than {FEW_B_CELLS}: fractions unreliable",
    )
    return styled(fig)


def cd20_figure(
    states: pd.DataFrame, threshold_pct: float | None = None, links: Mapping[str, str] | None = None
) -> go.Figure:
    """CD19+ B cells vs CD20+ B cells (% of lymphocytes) over time, log axis."""
    frame = states.sort_values("day", kind="stable")
    days = [float(d) for d in pd.to_numeric(frame["day"], errors="coerce")]
    # CD19 drawn larger underneath so it stays visible where both are equal (no CD19+CD20-)
    series = [
        ("b_pct_lymphocytes", "CD19+ B cells", "#1c7ed6", "circle", 12, "solid"),
        ("cd20_pct_lymphocytes", "CD20+ B cells", "#f08c00", "square", 7, "dash"),
    ]
    all_values = [
        v for col, *_ in series if col in frame for v in pd.to_numeric(frame[col], errors="coerce")
    ]
    floor = log_floor(all_values, [threshold_pct] if threshold_pct else [])
    fig = go.Figure(layout={"template": "none"})
    for column, name, color, symbol, size, dash in series:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        fig.add_scatter(
            name=name,
            x=days,
            y=[(float(v) if v > 0 else floor) if _finite(v) else None for v in values],
            mode="lines+markers",
            line=dict(color=color, width=2, dash=dash),
            marker=dict(
                symbol=[symbol if not (_finite(v) and v <= 0) else "triangle-down" for v in values],
                size=size,
            ),
            customdata=[[str(s), _num(v)] for s, v in zip(frame["sample_id"], values, strict=True)],
            hovertemplate=f"{t(name)}: %{{customdata[1]:.4g}} %<br>%{{customdata[0]}}, day %{{x}}<extra></extra>",
        )
    if _finite(threshold_pct) and threshold_pct > 0:
        fig.add_hline(
            y=float(threshold_pct),
            line=dict(color=STATE_COLORS["aplasia"], dash="dash", width=1.5),
            annotation_text=f"aplasia threshold {_fmt(threshold_pct)} %",
            annotation_position="bottom right",
        )
    fig.add_vline(x=0, line=dict(color="#495057", dash="dot", width=1))
    fig.update_layout(base_layout(height=380, meta=dict(links=dict(links or {}))))
    fig.update_yaxes(type="log", dtick=1, title="% of lymphocytes")
    fig.update_xaxes(title="days since CAR-T infusion")
    return styled(fig)


def plasmablast_figure(
    states: pd.DataFrame,
    per_ul: pd.DataFrame | None = None,
    links: Mapping[str, str] | None = None,
) -> go.Figure:
    """Plasmablasts over time: % of B cells (left) and cells/µL when counts exist (right)."""
    frame = states.sort_values("day", kind="stable")
    has_count = (
        per_ul is not None
        and len(per_ul)
        and np.isfinite(pd.to_numeric(per_ul["cells_per_ul"], errors="coerce")).any()
    )
    cols = 2 if has_count else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        horizontal_spacing=0.12,
        subplot_titles=("plasmablasts, % of B cells", "plasmablasts per µL")[:cols],
    )
    values = pd.to_numeric(frame["plasmablast_pct_b"], errors="coerce").to_numpy(dtype=float)
    n_b = pd.to_numeric(frame["b_cells"], errors="coerce").to_numpy(dtype=float)
    fig.add_scatter(
        name="% of B cells",
        x=[float(d) for d in pd.to_numeric(frame["day"], errors="coerce")],
        y=[_num(v) for v in values],
        mode="lines+markers",
        line=dict(color="#c92a2a", width=2),
        marker=dict(
            size=9,
            color=[STATE_COLORS.get(s, "#495057") for s in frame["state"]],
            line=dict(color="#c92a2a", width=1.5),
        ),
        customdata=[[str(s), _num(n)] for s, n in zip(frame["sample_id"], n_b, strict=True)],
        hovertemplate="%{y:.3g} % of B cells<br>%{customdata[0]}, day %{x}<br>"
        "(%{customdata[1]} B-cell events)<extra></extra>",
        row=1,
        col=1,
    )
    if has_count:
        pb = per_ul.sort_values("day", kind="stable")
        counts = pd.to_numeric(pb["cells_per_ul"], errors="coerce").to_numpy(dtype=float)
        floor = log_floor(counts)
        fig.add_scatter(
            name="cells/µL",
            x=[float(d) for d in pd.to_numeric(pb["day"], errors="coerce")],
            y=[(float(v) if v > 0 else floor) if _finite(v) else None for v in counts],
            mode="lines+markers",
            line=dict(color="#862e9c", width=2),
            marker=dict(
                size=9,
                symbol=["triangle-down" if _finite(v) and v <= 0 else "circle" for v in counts],
            ),
            customdata=[[str(s), _num(v)] for s, v in zip(pb["sample_id"], counts, strict=True)],
            hovertemplate="%{customdata[1]:.4g} cells/µL<br>%{customdata[0]}, day %{x}<extra></extra>",
            row=1,
            col=2,
        )
        fig.update_yaxes(type="log", dtick=1, title="cells/µL", row=1, col=2)
    fig.update_yaxes(title="% of B cells", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title="days since CAR-T infusion")
    fig.update_layout(
        base_layout(
            height=360,
            showlegend=False,
            meta=dict(links=dict(links or {})),
            margin=dict(l=70, r=20, t=40, b=50),
        )
    )
    return styled(fig)


# ----------------------------------------------------------------------------- QC


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
        y=[_num(v) for v in timeline["rate"]],
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
            y=[_num(v) for v in timeline["rate_expected"]],
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
            y=[_num(v) for v in values],
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


# ----------------------------------------------------------------------------- sample

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
    count_text = f"{int(count):,}" if _finite(count) else "—"
    pct_text = f"{float(pct):.3g}%" if _finite(pct) else "—"
    return f"<b>{t(pop)}</b> ({count_text}, {pct_text} of {t(parent)})"


def axis_label(marker: str, panel: Mapping[str, str] | None, width: int = 28) -> str:
    """ "CD19 · PE-Cy7-A (CD19)": the marker and the file's channel, cut to fit a small plot."""
    channel = str((panel or {}).get(marker) or "")
    if not channel or channel == marker:
        return t(marker)
    if len(channel) > width:
        channel = channel[: width - 1] + "…"
    return f"{t(marker)} · {t(channel)}"


def _outline_traces(gate: Sequence, name: str, dash: str) -> list[dict]:
    """A gate outline as a white halo under a black line: visible on every density colour."""
    pts = [list(p) for p in gate if isinstance(p, list | tuple) and len(p) >= 2]
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    xs, ys = [_num(p[0]) for p in pts], [_num(p[1]) for p in pts]
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
        for color, width in (("#ffffff", 4), ("#000000", 1.8))
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
                    "x": _num(min(p[0] for p in pts)),
                    "y": _num(min(p[1] for p in pts)),
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
            "text": density_title(plot),
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
            "range": [_num(v) for v in (plot.get("x_range") or [None, None])],
            "showgrid": False,
            "zeroline": False,
            "linecolor": "#adb5bd",
            "mirror": True,
            "ticks": "outside",
        },
        "yaxis": {
            "title": {"text": axis_label(y, panel), "font": {"size": 11}},
            "range": [_num(v) for v in (plot.get("y_range") or [None, None])],
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
