"""Cohort figures: the swimmer plot (one row per patient: aplasia, reconstitution, follow-up,
every sampling day) and the Kaplan-Meier curve of time to B-cell reconstitution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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


def is_yes(value: Any) -> bool:
    """A boolean cell that is True, Python or NumPy (`x is True` is False for np.True_: the
    swimmer hover said "no aplasia episode" for every patient); missing counts as False."""
    return isinstance(value, bool | np.bool_) and bool(value)


def is_true(series: pd.Series) -> np.ndarray:
    """True where a boolean column is True; missing (None/NaN) counts as False."""
    return np.array([is_yes(v) for v in series], dtype=bool)


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
    flag_day = pd.to_numeric(
        rows.get("flag_memory_return_day", pd.Series(np.nan, index=rows.index)), errors="coerce"
    ).to_numpy(dtype=float)  # tables written before the day was recorded: the reconstitution
    _markers(
        fig,
        ids,
        np.where(np.isfinite(flag_day), flag_day, np.where(np.isfinite(r_day), r_day, last)),
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
    return {p: float(first[p]) for p in ids if p in first and is_finite(first[p])}


def _patient_hover(pid: str, row: pd.Series) -> str:
    status = (
        "reconstituted"
        if is_yes(row.get("reconstituted"))
        else "censored in aplasia"
        if is_yes(row.get("censored"))
        else "in aplasia"
        if is_finite(row.get("aplasia_start_day"))
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
        x=[json_number(d) for d in pd.to_numeric(frame["day"], errors="coerce")],
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


def _day_text(value: Any) -> str:
    return short_number(value) if is_finite(value) else "—"


def km_figure(
    km: pd.DataFrame,
    median: float | None = None,
    n_excluded: int = 0,
    median_ci: Sequence[float | None] | None = None,
) -> go.Figure:
    """Kaplan-Meier step curve of the fraction still in aplasia, its 95% band (log-log), the
    median with its interval, censoring ticks and the numbers at risk."""
    day = pd.to_numeric(km["day"], errors="coerce").to_numpy(dtype=float)
    surv = pd.to_numeric(km["still_aplastic"], errors="coerce").to_numpy(dtype=float)
    at_risk = km["at_risk"].tolist()
    events = km["events"].tolist()
    cens = pd.to_numeric(km["censored"], errors="coerce").fillna(0).to_numpy()
    fig = go.Figure(layout={"template": "none"})
    if {"still_aplastic_low", "still_aplastic_high"} <= set(km):
        low = pd.to_numeric(km["still_aplastic_low"], errors="coerce").to_numpy(dtype=float)
        high = pd.to_numeric(km["still_aplastic_high"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            hx, hy = steps(day[ok], high[ok])
            lx, ly = steps(day[ok], low[ok])
            fig.add_scatter(  # the band: the high steps out, the low steps back
                name="95% confidence band",
                x=hx + lx[::-1],
                y=hy + ly[::-1],
                mode="lines",
                line=dict(width=0),
                fill="toself",
                fillcolor="rgba(0,114,178,0.15)",
                hoverinfo="skip",
            )
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
        f"median time to reconstitution: {short_number(median)} days"
        if median is not None
        else "median time to reconstitution: not reached"
    )
    if median is not None and median_ci:
        lo, hi = (short_number(v) if v is not None else "not reached" for v in median_ci)
        text += f" (95% CI {lo}–{hi})"
    if n_excluded:
        text += f" · {n_excluded} patient(s) not in the curve (see below)"
    fig.add_hline(y=0.5, line=dict(color="#adb5bd", dash="dot", width=1))
    risk = _numbers_at_risk(day, np.asarray(at_risk, dtype=float))
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
                ),
                *risk,
            ],
        )
    )
    fig.update_layout(margin=dict(b=115))
    fig.update_yaxes(title="fraction still in B-cell aplasia", range=[-0.02, 1.05])
    fig.update_xaxes(title="days since CAR-T infusion", rangemode="tozero")
    return styled(fig)


def steps(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """A right-continuous step function as explicit corners (each value held to the next x)."""
    xs, ys = [], []
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        nxt = x[i + 1] if i + 1 < len(x) else xi
        xs += [float(xi), float(nxt)]
        ys += [float(yi), float(yi)]
    return xs, ys


def _numbers_at_risk(day: np.ndarray, at_risk: np.ndarray, n_ticks: int = 5) -> list[dict]:
    """A 'number at risk' row under the curve at round days (the KM convention)."""
    if not len(day) or not np.isfinite(day).any():
        return []
    end = float(np.nanmax(day))
    raw = max(end / n_ticks, 1.0)
    power = 10 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = np.arange(0.0, end + 1e-9, step)
    order = np.argsort(day)
    notes = [dict(text="at risk", x=-0.03, xref="paper", xanchor="right", y=-0.33, yref="paper",
                  showarrow=False, font=dict(size=11, color="#495057"))]  # fmt: skip
    for tick in ticks:
        i = np.searchsorted(day[order], tick, side="left")  # patients still followed at tick
        n = int(at_risk[order][i]) if i < len(order) else 0
        notes.append(
            dict(
                text=str(n),
                x=float(tick),
                xref="x",
                y=-0.33,
                yref="paper",
                showarrow=False,
                font=dict(size=11, color="#495057"),
            )  # fmt: skip
        )
    return notes
