"""The pooled page of several centres' cohort exports (`cytopipe pool`): Kaplan-Meier of time
to reconstitution per centre and pooled, the log-rank test of the centres' curves, medians with
their 95% intervals, the shared definitions, and a swimmer of every patient coloured by centre,
disease or age group. Built from the pooled export only (cytopipe.clinical.pooling), so it
holds nothing the centres' exports did not."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cytopipe import __version__
from cytopipe.report.cohort_figures import steps
from cytopipe.report.figure_style import base_layout, short_number
from cytopipe.report.render import FigureCounter, render
from cytopipe.report.tables import Column, key_values, table

# Okabe-Ito, colour-blind safe (as the report's states)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
AGE_GROUPS = [(0, 12, "< 12 y"), (12, 18, "12-17 y"), (18, 200, ">= 18 y")]


def km_by_centre_figure(curves: Mapping[str, pd.DataFrame], test: Mapping) -> go.Figure:
    """One step curve per centre and the pooled one (black), each with its 95% band."""
    fig = go.Figure(layout={"template": "none"})
    names = [n for n in curves if n != "all centres"] + ["all centres"]
    for i, name in enumerate(names):
        km = curves[name]
        colour = "#212529" if name == "all centres" else PALETTE[i % len(PALETTE)]
        day = [0.0, *km["day"].astype(float)]
        surv = [1.0, *km["still_aplastic"].astype(float)]
        x, y = steps(np.asarray(day), np.asarray(surv))
        fig.add_scatter(
            name=f"{name} (n={int(km['at_risk'].iloc[0]) if len(km) else 0})", x=x, y=y,
            mode="lines", line=dict(color=colour, width=3 if name == "all centres" else 2),
            hovertemplate=f"{name}<br>day %{{x}}: %{{y:.2f}} still in aplasia<extra></extra>",
        )  # fmt: skip
    p = test.get("p")
    text = (
        f"log-rank test of the centres' curves: chi2 {test['chi2']:.2f}, df {test['df']}, "
        f"p = {p:.3g}"
        if p == p
        else "log-rank test: needs two centres with reconstitutions"
    )
    fig.update_layout(
        base_layout(
            height=440,
            showlegend=True,
            margin=dict(l=70, r=20, t=40, b=50),
            legend=dict(
                orientation="v",
                x=1.0,
                xanchor="right",
                y=0.98,
                yanchor="top",
                bgcolor="rgba(255,255,255,0.85)",
            ),
        ),  # fmt: skip
        xaxis=dict(title="days since CAR-T infusion", rangemode="tozero"),
        yaxis=dict(title="fraction still in B-cell aplasia", range=[0, 1.05]),
        annotations=[
            dict(
                text=text,
                x=0,
                xref="paper",
                y=1.0,
                yref="paper",
                yanchor="bottom",
                xanchor="left",
                showarrow=False,
                font=dict(size=13),
            )
        ],  # fmt: skip
    )
    return fig


def age_group(age) -> str:
    age = pd.to_numeric(age, errors="coerce")
    for lo, hi, name in AGE_GROUPS:
        if lo <= age < hi:
            return name
    return "age unknown"


def pooled_swimmer(pooled: pd.DataFrame, by: str) -> go.Figure:
    """A bar per patient from infusion to reconstitution or censoring, coloured by `by`
    (centre, disease or age group); a dot where B cells returned."""
    frame = pooled.assign(
        age_group=[age_group(a) for a in pooled.get("age_at_infusion", [])],
        time=pd.to_numeric(pooled["days_to_reconstitution_or_censoring"], errors="coerce"),
        row=pooled["centre"].astype(str) + " · " + pooled["patient_id"].astype(str),
    ).dropna(subset=["time"])
    frame = frame.sort_values(["time"])
    fig = go.Figure(layout={"template": "none"})
    for i, (value, part) in enumerate(frame.groupby(by, sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_bar(
            name=str(value), y=part["row"], x=part["time"], orientation="h",
            marker_color=colour, hovertemplate="%{y}: day %{x}<extra>" + str(value) + "</extra>",
        )  # fmt: skip
        done = part[part["reconstituted"].astype(bool)]
        fig.add_scatter(
            name=f"{value}: reconstituted", y=done["row"], x=done["time"], mode="markers",
            marker=dict(color="#ffffff", size=8, line=dict(color=colour, width=2)),
            showlegend=False, hovertemplate="%{y}: reconstituted day %{x}<extra></extra>",
        )  # fmt: skip
    fig.update_layout(
        base_layout(
            height=max(300, 22 * len(frame) + 120),
            showlegend=True,
            margin=dict(l=140, r=20, t=30, b=50),
        ),  # fmt: skip
        barmode="overlay",
        xaxis=dict(
            title="days since CAR-T infusion (bar: in aplasia until reconstitution or last follow-up)"
        ),
        yaxis=dict(categoryorder="array", categoryarray=list(frame["row"]), automargin=True),
    )
    return fig


MEDIAN_COLUMNS = [
    Column("centre", "centre"),
    Column("patients", "patients in the curve", "int"),
    Column("reconstituted", "reconstituted", "int"),
    Column("median_days", "median days to reconstitution", "num"),
    Column("median_low", "95% CI low", "num"),
    Column("median_high", "95% CI high", "num"),
]


def pooled_page(
    pooled: pd.DataFrame,
    curves: Mapping[str, pd.DataFrame],
    medians: pd.DataFrame,
    test: Mapping,
    shared: Mapping[str, str],
    sources: Mapping[str, str],
) -> str:
    figs = FigureCounter()
    rows = medians.to_dict("records")
    for r in rows:
        for key in ("median_days", "median_low", "median_high"):
            r[key] = None if r[key] is None or r[key] != r[key] else r[key]
    summary = [
        ("centres", ", ".join(sorted(pooled["centre"].astype(str).unique()))),
        ("patients", f"{len(pooled)}"),
        ("exports pooled", "; ".join(f"{c}: {s}" for c, s in sources.items())),
        (
            "log-rank test",
            f"chi2 {test['chi2']:.2f}, df {test['df']}, p = {test['p']:.3g}"
            if test["p"] == test["p"]
            else "not computed (one centre, or no reconstitution)",
        ),  # fmt: skip
        (
            "pooled median days",
            short_number(medians.iloc[-1]["median_days"])
            if medians.iloc[-1]["median_days"] is not None
            else "not reached",
        ),  # fmt: skip
    ]
    frame = {
        "title": "Pooled centres · cytopipe",
        "heading": "Time to B-cell reconstitution, pooled across centres",
        "crumbs": [("Pooled centres", None)],
        "root": "",
        "toc": [
            ("summary", "Summary"),
            ("km", "Kaplan-Meier"),
            ("medians", "Medians"),
            ("swimmer", "Patients"),
            ("definitions", "Definitions"),
        ],  # fmt: skip
        "pager": [],
        "footer": {
            "version": shared.get("cytopipe_version", ""),
            "results": "pooled exports",
            "report_version": __version__,
        },  # fmt: skip
    }
    return render(
        "pooled.html",
        frame=frame,
        summary=key_values(summary),
        km=figs.embed(km_by_centre_figure(curves, test)),
        medians=table(rows, MEDIAN_COLUMNS),
        swimmers=[
            (by, figs.embed(pooled_swimmer(pooled, by)))
            for by in ("centre", "disease", "age_group")
        ],
        definitions=key_values(sorted(shared.items())),
    )
