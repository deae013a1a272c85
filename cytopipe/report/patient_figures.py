"""Patient figures: one patient's timepoints over days since infusion (B cells against the
aplasia thresholds and the age reference band, B-cell subsets, CD20 vs CD19, plasmablasts).

Log axes cannot show 0: such values are drawn at `log_floor` with a downward triangle."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cytopipe.report.figure_style import (
    STATE_COLORS,
    STATE_LABELS,
    base_layout,
    is_finite,
    json_number,
    short_number,
    styled,
    t,
)
from cytopipe.report.formatting import sig

DAYS_PER_YEAR = 365.25

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


def reference_segments(
    day_min: float, day_max: float, age_at_infusion: float, bands: Sequence[Mapping]
) -> list[tuple[float, float, float, float, str]]:
    """(day_from, day_to, low, high, label) of the age reference band over follow-up.

    Ages cross band limits during follow-up in children (a 5.9-year-old is in the 6-12 y band
    a month later), so the band is cut exactly where the age crosses a band's limit."""
    if not (is_finite(day_min) and is_finite(day_max) and is_finite(age_at_infusion)):
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


THRESHOLD_COLOR = "#495057"  # thresholds are rules, not states: neutral
INTERVALS = {  # plotted column -> its 95% interval, LLOQ and the hover's words
    "b_cells_per_ul": ("b_per_ul_low", "b_per_ul_high", "lloq_per_ul"),
    "b_pct_lymphocytes": ("b_pct_low", "b_pct_high", "lloq_pct"),
}


def _point_text(row: Mapping, column: str, unit: str) -> str:
    """Hover body: the value (2 significant figures) or 'not detected', its interval, '< LLOQ',
    and the events behind it."""
    low, high, lloq = INTERVALS.get(column, ("", "", ""))
    value = row.get(column)
    zero = is_finite(value) and float(value) <= 0
    parts = ["not detected (0 events)" if zero else f"{sig(value)} {unit}"]
    if is_finite(row.get(low)) and is_finite(row.get(high)):
        parts.append(f"95% CI {sig(row[low])}–{sig(row[high])}")
    below = row.get("below_lloq")
    if isinstance(below, bool | np.bool_) and below and is_finite(row.get(lloq)):
        parts.append(f"< LLOQ ({sig(row[lloq])} {unit})")
    if is_finite(row.get("b_cells")) and is_finite(row.get("lymphocytes")):
        parts.append(
            f"{short_number(row['b_cells'])} B-cell events of "
            f"{short_number(row['lymphocytes'])} lymphocytes"
        )
    return "<br>".join(t(p) for p in parts)


def _limits(
    fig: go.Figure,
    frame: pd.DataFrame,
    column: str,
    floor: float,
    row: int,
    legend: bool,
    span: tuple[float, float],
) -> None:
    """Each sample's LLOQ as a short grey bar (values below it read '< LLOQ'), and the floor
    where zeros are drawn labelled 'not detected'."""
    if column in frame:
        lloq = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        days = pd.to_numeric(frame["day"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(lloq) & np.isfinite(days) & (lloq > 0)
        if ok.any():
            fig.add_scatter(
                name="LLOQ of each sample (below: '< LLOQ')",
                legendgroup="lloq",
                showlegend=legend,
                x=days[ok].tolist(),
                y=lloq[ok].tolist(),
                mode="markers",
                marker=dict(symbol="line-ew", size=16, line=dict(color="#868e96", width=2)),
                hovertemplate="LLOQ of this sample: %{y:.2g}<extra></extra>",
                row=row,
                col=1,
            )
    fig.add_scatter(  # a trace, not add_hline: its label lands right on a log axis
        x=list(span), y=[floor, floor], mode="lines+text", text=["", "not detected"],
        textposition="top left", textfont=dict(size=10, color="#868e96"),
        line=dict(color="#ced4da", dash="dot", width=1), hoverinfo="skip", showlegend=False,
        row=row, col=1,
    )  # fmt: skip


def _state_points(
    fig: go.Figure,
    frame: pd.DataFrame,
    column: str,
    floor: float,
    row: int,
    unit: str,
    legend: bool,
) -> None:
    """Points coloured by state with their 95% interval as whiskers; zeros at `floor` ("not
    detected") with a down-triangle (log axis)."""
    low_col, high_col, _ = INTERVALS.get(column, (None, None, None))
    for state, group in frame.groupby("state", sort=False):
        values = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values)
        if not ok.any():
            continue
        group, values = group[ok], values[ok]
        zero = values <= 0
        drawn = np.where(zero, floor, values)
        error = None
        if low_col in group and high_col in group:
            low = pd.to_numeric(group[low_col], errors="coerce").to_numpy(dtype=float)
            high = pd.to_numeric(group[high_col], errors="coerce").to_numpy(dtype=float)
            up = np.where(np.isfinite(high), np.maximum(high - drawn, 0), 0)
            down = np.where(np.isfinite(low), drawn - np.maximum(low, floor), 0)
            error = dict(type="data", symmetric=False, array=up.tolist(),
                         arrayminus=np.maximum(down, 0).tolist(), thickness=1.2, width=3,
                         color=STATE_COLORS.get(state, "#495057"))  # fmt: skip
        fig.add_scatter(
            name=STATE_LABELS.get(state, state),
            legendgroup=state,
            showlegend=legend,
            x=[float(d) for d in pd.to_numeric(group["day"], errors="coerce")],
            y=[float(v) for v in drawn],
            error_y=error,
            mode="markers",
            marker=dict(
                color=STATE_COLORS.get(state, "#495057"),
                size=10,
                symbol=["triangle-down" if z else "circle" for z in zero],
                line=dict(color="#ffffff", width=1),
            ),
            customdata=[
                [str(s), float(v), _point_text(r, column, unit), _ref_text(r)]
                for s, v, r in zip(
                    group["sample_id"], values, group.to_dict("records"), strict=True
                )
            ],
            hovertemplate=(
                "<b>%{customdata[0]}</b> day %{x}<br>%{customdata[2]}<br>"
                + t(STATE_LABELS.get(state, state))
                + "%{customdata[3]}<extra></extra>"
            ),
            row=row,
            col=1,
        )


def _ref_text(row: Mapping) -> str:
    parts = []
    if row.get("ref_source_band"):
        parts.append(
            f"<br>age band {t(row['ref_source_band'])}: {short_number(row.get('ref_low'))}-"
            f"{short_number(row.get('ref_high'))} cells/µL ({t(row.get('ref_position', ''))})"
        )
    if row.get("abs_method"):
        parts.append(f"<br>count: {t(row['abs_method'])}")
    if row.get("qc_verdict"):
        parts.append(f"<br>QC: {t(row['qc_verdict'])}")
    return "".join(parts)


def log_floor(values: Sequence[float], thresholds: Sequence[float] = ()) -> float:
    """Where zeros are drawn on a log axis: a decade below the smallest positive value."""
    arr = np.asarray(
        [v for v in [*values, *thresholds] if is_finite(v) and float(v) > 0], dtype=float
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
            text += [f"{label}: {short_number(lo)}-{short_number(hi)} cells/µL"] * 5 + [""]
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
        if is_finite(value) and float(value) > 0:
            fig.add_scatter(
                name=f"aplasia threshold ({short_number(value)} {unit})",
                legendgroup="threshold",
                x=[x0, x1],
                y=[float(value)] * 2,
                mode="lines",
                line=dict(color=THRESHOLD_COLOR, dash="dash", width=1.5),
                hovertemplate=f"aplasia threshold {short_number(value)} {unit}<extra></extra>",
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
    for row, column, floor in ((1, "lloq_per_ul", floor_ul), (2, "lloq_pct", floor_pct)):
        fig.add_vline(x=0, line=dict(color="#495057", dash="dot", width=1), row=row, col=1)
        _limits(fig, frame, column, floor, row, legend=row == 2, span=(x0, x1))
    # plain numbers on the log axes ("0.001", never "1m" or "100µ")
    log_axis = dict(type="log", dtick=1, exponentformat="none", tickformat="~g")
    fig.update_yaxes(title="cells/µL", row=1, col=1, **log_axis)
    fig.update_yaxes(title="% of lymphocytes", row=2, col=1, **log_axis)
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
    if bands and is_finite(age_at_infusion):
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
    labels = [f"day {short_number(d)}" for d in pd.to_numeric(frame["day"], errors="coerce")]
    seen: dict[str, int] = {}
    out = []
    for label, sid in zip(labels, frame["sample_id"], strict=True):
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({t(sid)})")
    return out


def composition_figure(
    states: pd.DataFrame,
    links: Mapping[str, str] | None = None,
    min_b_cells: float = FEW_B_CELLS,
    memory_threshold: float | None = None,
) -> go.Figure:
    """Stacked B-cell subset fractions per timepoint (fractions of CD19+ B cells).

    A timepoint with fewer than `min_b_cells` B-cell events (the LLOQ) gets a grey "too few
    B cells (n)" stub, not a 100% bar built from 2 events. The quantity the memory-return flag
    tests, switched memory + plasmablasts, is drawn as a line with its threshold and the
    baseline value."""
    frame = states.sort_values("day", kind="stable").reset_index(drop=True)
    labels = _day_labels(frame)
    n_b = pd.to_numeric(frame["b_cells"], errors="coerce").to_numpy(dtype=float)
    enough = np.isfinite(n_b) & (n_b >= min_b_cells)
    fig = go.Figure(layout={"template": "none"})

    def fractions(column: str) -> np.ndarray:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        return np.where(enough, values, np.nan)

    stacked = np.zeros(len(frame))
    for column, name, color in COMPOSITION:
        if column not in frame:
            continue
        values = fractions(column)
        stacked += np.nan_to_num(values)
        fig.add_bar(
            name=name,
            x=labels,
            y=[json_number(v) for v in values],
            marker_color=color,
            customdata=[
                [str(s), json_number(n)] for s, n in zip(frame["sample_id"], n_b, strict=True)
            ],
            hovertemplate=f"{t(name)}: %{{y:.3f}}<br>%{{customdata[0]}} (%{{customdata[1]}} B-cell events)<extra></extra>",
        )
    other = np.where(enough & (n_b > 0), np.clip(1.0 - stacked, 0.0, 1.0), np.nan)
    fig.add_bar(
        name="other CD19+ (CD20− non-plasmablast)",
        x=labels,
        y=[json_number(v) for v in other],
        marker_color="#dee2e6",
        customdata=[[str(s)] for s in frame["sample_id"]],
        hovertemplate="other CD19+: %{y:.3f}<br>%{customdata[0]}<extra></extra>",
    )
    few = np.isfinite(n_b) & ~enough
    if few.any():
        fig.add_bar(
            name=f"too few B cells (< {short_number(min_b_cells)} events): not shown",
            x=[lab for lab, f in zip(labels, few, strict=True) if f],
            y=[1.0] * int(few.sum()),
            marker=dict(color="rgba(0,0,0,0)", line=dict(color="#adb5bd", width=1.5)),
            marker_pattern=dict(shape="/", fgcolor="#ced4da"),
            customdata=[[str(s), json_number(n)] for s, n in zip(frame["sample_id"][few], n_b[few], strict=True)],
            hovertemplate="too few B cells (%{customdata[1]} events): fractions not shown<br>%{customdata[0]}<extra></extra>",
        )  # fmt: skip
    if "frac_transitional" in frame:
        trans = fractions("frac_transitional")
        if np.isfinite(trans).any():
            fig.add_scatter(
                name="transitional (CD24hi CD38hi, within naive)",
                x=labels,
                y=[json_number(v) for v in trans],
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
            text=(f"n={short_number(n)}" if is_finite(n) else "n=—")
            + (" ⚠" if is_finite(n) and n < min_b_cells else ""),
            font=dict(size=10, color="#c92a2a" if is_finite(n) and n < min_b_cells else "#495057"),
        )
        for lab, n in zip(labels, n_b, strict=True)
    ]
    fig.update_layout(
        base_layout(
            barmode="stack",
            height=440,
            annotations=notes,
            meta=dict(links=dict(links or {})),
            margin=dict(l=70, r=120, t=130, b=60),
            legend=dict(orientation="h", yanchor="bottom", y=1.1, x=0),
        )
    )
    _memory_line(fig, frame, labels, enough, memory_threshold)  # after: adds annotations
    fig.update_yaxes(title="fraction of CD19+ B cells", range=[0, 1.0], tickformat=".0%")
    fig.update_xaxes(
        type="category",
        title=f"n = B-cell events; ⚠ fewer than {short_number(min_b_cells)} (LLOQ): fractions not shown",
    )
    return styled(fig)


def _memory_line(fig, frame, labels, enough, threshold: float | None) -> None:
    """Switched memory + plasmablasts (what the memory-return flag tests), its threshold and
    the baseline value (the last pre-infusion sample with enough B cells)."""
    if not {"frac_switched_memory", "frac_plasmablast"} <= set(frame):
        return
    memory = pd.to_numeric(frame["frac_switched_memory"], errors="coerce").fillna(
        0
    ) + pd.to_numeric(frame["frac_plasmablast"], errors="coerce").fillna(0)
    values = np.where(enough, memory.to_numpy(dtype=float), np.nan)
    if not np.isfinite(values).any():
        return
    fig.add_scatter(
        name="switched memory + plasmablasts (memory-return flag)",
        x=labels,
        y=[json_number(v) for v in values],
        mode="lines+markers",
        line=dict(color="#862e9c", width=2),
        marker=dict(size=7),
        customdata=[[str(s)] for s in frame["sample_id"]],
        hovertemplate="switched memory + plasmablasts: %{y:.1%}<br>%{customdata[0]}<extra></extra>",
    )
    day = pd.to_numeric(frame["day"], errors="coerce").to_numpy(dtype=float)
    base = np.flatnonzero((day < 0) & np.isfinite(values))
    lines = [] if threshold is None else [(threshold, f"flag threshold {threshold:.0%}", "dot")]
    if base.size:
        lines.append((float(values[base[-1]]), f"baseline {values[base[-1]]:.0%}", "dashdot"))
    for y, text, dash in lines:
        fig.add_hline(
            y=y, line=dict(color="#862e9c", dash=dash, width=1),
            annotation_text=text, annotation_position="right", annotation_font_size=10,
        )  # fmt: skip


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
            y=[(float(v) if v > 0 else floor) if is_finite(v) else None for v in values],
            mode="lines+markers",
            line=dict(color=color, width=2, dash=dash),
            marker=dict(
                symbol=[
                    symbol if not (is_finite(v) and v <= 0) else "triangle-down" for v in values
                ],
                size=size,
            ),
            customdata=[
                [str(s), json_number(v)] for s, v in zip(frame["sample_id"], values, strict=True)
            ],
            hovertemplate=f"{t(name)}: %{{customdata[1]:.4g}} %<br>%{{customdata[0]}}, day %{{x}}<extra></extra>",
        )
    if is_finite(threshold_pct) and threshold_pct > 0:
        fig.add_hline(
            y=float(threshold_pct),
            line=dict(color=THRESHOLD_COLOR, dash="dash", width=1.5),
            annotation_text=f"aplasia threshold {short_number(threshold_pct)} %",
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
        y=[json_number(v) for v in values],
        mode="lines+markers",
        line=dict(color="#c92a2a", width=2),
        marker=dict(
            size=9,
            color=[STATE_COLORS.get(s, "#495057") for s in frame["state"]],
            line=dict(color="#c92a2a", width=1.5),
        ),
        customdata=[[str(s), json_number(n)] for s, n in zip(frame["sample_id"], n_b, strict=True)],
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
            y=[(float(v) if v > 0 else floor) if is_finite(v) else None for v in counts],
            mode="lines+markers",
            line=dict(color="#862e9c", width=2),
            marker=dict(
                size=9,
                symbol=["triangle-down" if is_finite(v) and v <= 0 else "circle" for v in counts],
            ),
            customdata=[
                [str(s), json_number(v)] for s, v in zip(pb["sample_id"], counts, strict=True)
            ],
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


CAR_COLOR = "#D55E00"  # Okabe-Ito vermillion: the infused cells, apart from the B-cell states


def car_t_figure(
    car: pd.DataFrame,
    states: pd.DataFrame,
    *,
    lod_events: float | None = None,
    patient: Mapping | None = None,
    threshold_per_ul: float | None = None,
) -> go.Figure:
    """CAR+ T cells per µL (top) over the B cells per µL (bottom), one time axis: expansion,
    contraction and persistence read beside aplasia and reconstitution. Samples with fewer CAR+
    events than the LOD are drawn as "not detected" at the bottom of the axis; Cmax/Tmax and
    the last detected day from patients.tsv are marked."""
    car = car.sort_values("day", kind="stable")
    frame = states.sort_values("day", kind="stable")
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
        subplot_titles=("CAR+ T cells per µL", "CD19+ B cells per µL"),
    )  # fmt: skip
    day = pd.to_numeric(car["day"], errors="coerce").to_numpy(dtype=float)
    per_ul = pd.to_numeric(car["cells_per_ul"], errors="coerce").to_numpy(dtype=float)
    events = pd.to_numeric(car["count"], errors="coerce").to_numpy(dtype=float)
    below = events < (lod_events or 0)
    floor = log_floor(per_ul[~below & (per_ul > 0)]) if (~below & (per_ul > 0)).any() else 0.01
    shown = np.where(below | ~(per_ul > 0), floor, per_ul)
    fig.add_scatter(
        name="CAR+ T cells/µL", x=[float(d) for d in day], y=[json_number(v) for v in shown],
        mode="lines+markers", line=dict(color=CAR_COLOR, width=2),
        marker=dict(size=9, color=[("#ffffff" if b else CAR_COLOR) for b in below],
                    symbol=["triangle-down" if b else "circle" for b in below],
                    line=dict(color=CAR_COLOR, width=2)),
        customdata=[[str(s), int(e) if np.isfinite(e) else None, sig(v, 2) if np.isfinite(v) else "—",
                     "not detected (< LOD)" if b else ""]
                    for s, e, v, b in zip(car["sample_id"], events, per_ul, below, strict=True)],
        hovertemplate="%{customdata[0]}, day %{x}<br>%{customdata[2]} cells/µL "
        "(%{customdata[1]} events) %{customdata[3]}<extra></extra>",
        row=1, col=1,
    )  # fmt: skip
    notes = []
    row = patient or {}
    if is_finite(row.get("car_t_cmax_per_ul")) and is_finite(row.get("car_t_tmax_day")):
        notes.append(dict(
            x=float(row["car_t_tmax_day"]), y=math.log10(max(float(row["car_t_cmax_per_ul"]), 1e-3)),
            xref="x", yref="y", text=f"Cmax {sig(row['car_t_cmax_per_ul'], 3)}/µL, day {short_number(row['car_t_tmax_day'])}",
            showarrow=True, arrowhead=2, ax=40, ay=-25, font=dict(size=11),
        ))  # fmt: skip
    if is_finite(row.get("car_t_last_detected_day")):
        fig.add_vline(x=float(row["car_t_last_detected_day"]), line=dict(color=CAR_COLOR, dash="dot", width=1),
                      annotation_text="last detected", annotation_position="top right", row=1, col=1)  # fmt: skip
    b_day = pd.to_numeric(frame["day"], errors="coerce").to_numpy(dtype=float)
    b_ul = pd.to_numeric(frame["b_cells_per_ul"], errors="coerce").to_numpy(dtype=float)
    b_floor = log_floor(b_ul, [threshold_per_ul] if threshold_per_ul else [])
    fig.add_scatter(
        name="B cells/µL", x=[float(d) for d in b_day],
        y=[json_number(v if v > 0 else b_floor) if np.isfinite(v) else None for v in b_ul],
        mode="lines+markers", line=dict(color="#adb5bd", width=1.5),
        marker=dict(size=8, color=[STATE_COLORS.get(s, "#495057") for s in frame["state"]]),
        customdata=[[str(s), STATE_LABELS.get(st, st)] for s, st in zip(frame["sample_id"], frame["state"], strict=True)],
        hovertemplate="%{customdata[0]}, day %{x}: %{y:.3g} B cells/µL<br>%{customdata[1]}<extra></extra>",
        row=2, col=1,
    )  # fmt: skip
    if threshold_per_ul:
        fig.add_hline(
            y=float(threshold_per_ul),
            line=dict(color="#495057", dash="dash", width=1),
            row=2,
            col=1,
        )
    fig.update_yaxes(type="log", dtick=1, title="cells/µL", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, title="cells/µL", row=2, col=1)
    fig.update_xaxes(title="days since CAR-T infusion", row=2, col=1)
    fig.add_vline(x=0, line=dict(color="#495057", dash="dot", width=1))
    fig.update_layout(base_layout(height=520, showlegend=False, margin=dict(l=70, r=20, t=40, b=50)),
                      annotations=[*fig.layout.annotations, *notes])  # fmt: skip
    return fig
