"""Plotly figures of the report, built from the result tables (pure functions, no I/O).

Every number drawn is a value of the tables, unchanged: bar lengths in the swimmer plot are
the patient table's days, the Kaplan-Meier steps are km.tsv, points on patient plots are
sample_states.tsv and each density plot is the precomputed plots.json bins. The only exception
is made visible: a value of exactly 0 cannot sit on a log axis, so it is drawn at the bottom of
the axis with a downward triangle and its hover text says 0. Hover texts carry the exact values.

Text that comes from files (ids, marker names, flags) is HTML-escaped before it goes into a
figure, because plotly renders a subset of HTML in titles, labels and hover texts.

This module holds what every figure shares (layout, colours, state and population names, text
escaping, number helpers); the figures are in cohort_figures (swimmer plot, Kaplan-Meier),
patient_figures (B cells over time, subsets, CD20 vs CD19, plasmablasts) and sample_figures
(density plots, QC timeline).
"""

from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go

# Okabe-Ito (colour-blind safe). Aplasia is the intended effect of CD19 CAR-T, so it is a calm
# blue, not a warning colour; a patient never depleted (the therapy did not act) is vermillion.
STATE_COLORS = {
    "baseline": "#7f7f7f",
    "aplasia": "#0072B2",
    "reconstituted": "#009E73",
    "not_depleted": "#D55E00",
    "unknown": "#BBBBBB",
    "not_evaluable": "#CC79A7",
}

FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size=12)

STATE_LABELS = {
    "baseline": "baseline (before infusion)",
    "aplasia": "B-cell aplasia",
    "reconstituted": "reconstituted",
    "not_depleted": "not depleted",
    "unknown": "state unknown",
    "not_evaluable": "not evaluable (too few events)",
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
    "b_cd27hi_cd38hi": "CD27hi CD38hi B cells",
    "plasmablasts": "Plasmablasts (CD27hi CD38hi CD20lo)",
    "b_naive": "Naive B (IgD+ CD27−)",
    "b_unswitched_memory": "Unswitched memory B (IgD+ CD27+)",
    "b_switched_memory": "Switched memory B (IgD− CD27+)",
    "b_double_negative": "Double-negative B (IgD− CD27−)",
    "b_transitional": "Transitional B (CD24hi CD38hi)",
    "car_t": "CAR+ T cells (CD3+ CAR+)",
    "t_cd4": "CD4+ T cells (CD4+ CD8−)",
    "t_cd8": "CD8+ T cells (CD8+ CD4−)",
    "car_t_cd4": "CD4+ CAR+ T cells",
    "car_t_cd8": "CD8+ CAR+ T cells",
}


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


def is_finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def json_number(value: Any) -> float | None:
    """A JSON-safe number (None for NaN/missing)."""
    return float(value) if is_finite(value) else None


def short_number(value: Any, digits: int = 4) -> str:
    if not is_finite(value):
        return "—"
    number = float(value)
    if number == int(number):
        return f"{int(number):,}"
    return f"{number:.{digits}g}"
