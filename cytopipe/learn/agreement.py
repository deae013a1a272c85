"""Second opinions of one sample beside the template's gates: a learned model's (what it found,
where it is unsure or outside its references) and an expert's own gating of the same file; and
where each agrees with the template.

Two independent gatings that agree on a population make its number more credible; where they
disagree, or the sample is unlike every file the model learned from, the sample is listed to
review rather than one of them silently trusted. Where an expert gated the file, the expert's
population is outlined on the template gate's own density plot, so the reviewer sees where
they differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.gating.stats import f1_score
from cytopipe.learn.model import Model, members, parents_first, review

MIN_COMPARED = 20  # fewer events on both sides: F1 says nothing, no disagreement is raised


def learned_summary(
    model: Model,
    labels: np.ndarray,
    confidence: np.ndarray,
    novel: np.ndarray,
    gates: Mapping[str, np.ndarray],
    compare: Mapping[str, str],
    min_f1: float,
) -> dict:
    """learned.json of one sample: the model's populations (events, mean confidence, share
    unlike the references, review), the agreement of each `compare` pair (template population
    -> model population, F1 over the same events) and the disagreements to review. `labels`,
    `confidence`, `novel` and each gate mask are over the same events (QC-kept)."""
    found = review(model, labels, confidence, novel)
    populations = [
        {
            "population": p,
            "events": info["events"],
            "mean confidence": info["confidence"],
            "unlike the references (%)": round(100 * info["unlike_share"], 1),
            "to review": "yes" if info["review"] else "",
        }
        for p, info in found["populations"].items()
    ]
    known = {p for p, _ in parents_first(model)}
    theirs = {p: members(model, labels, p) for p in set(compare.values()) & known}
    agreement, disagreements = _agreement(
        gates, theirs, compare, min_f1, ("model", "the model", "the learned")
    )
    unlike = [p for p, info in found["populations"].items() if info["review"]]
    if unlike:
        disagreements.append(f"unlike the files the model learned from: {', '.join(unlike)}")
    elif found["review"]:
        disagreements.append(
            f"{100 * found['unlike_share']:.0f}% of the events unlike the files the model "
            "learned from"
        )
    return {
        "status": "ok",
        "learned_from": [r.get("name") for r in model.references],
        "markers": list(model.markers),
        "populations": populations,
        "agreement": agreement,
        "disagreements": disagreements,
    }


def _agreement(
    ours: Mapping[str, np.ndarray],
    theirs: Mapping[str, np.ndarray],
    compare: Mapping[str, str],
    min_f1: float,
    who: tuple[str, str, str],
) -> tuple[list[dict], list[str]]:
    """One row per `compare` pair (template population -> the other gating's population): the
    events of each and their F1 over the same events, or why the pair is missing; and the
    pairs below `min_f1` to review. `who`: the other gating's column word, its name where a
    population is missing, and its possessive in a disagreement."""
    column, source, whose = who
    rows, disagreements = [], []
    for gate, other in compare.items():
        row = {"gate": gate, f"{column} population": other}
        if gate not in ours or other not in theirs:
            missing = "the sample's gates" if gate not in ours else source
            rows.append({**row, "f1": None, "note": f"not in {missing}"})
            continue
        mine, their = np.asarray(ours[gate], dtype=bool), np.asarray(theirs[other], dtype=bool)
        f1 = round(f1_score(mine, their), 3)
        rows.append({**row, "gate events": int(mine.sum()), f"{column} events": int(their.sum()),
                     "f1": f1})  # fmt: skip
        if mine.sum() + their.sum() >= MIN_COMPARED and f1 < min_f1:
            disagreements.append(f"{gate} vs {whose} {other}: F1 {f1:.2f} < {min_f1:g}")
    return rows, disagreements


OUTLINE_Q = (
    0.99  # an outline holds this share of the population's events: outliers do not stretch it
)


def population_outline(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """A population's events as one outline on a density plot: the convex hull of the events
    within the OUTLINE_Q quantile of Mahalanobis distance from their centre ([] when fewer
    than 3 distinct events). An outline of events, not a gate: it shows where the expert's
    population lies against ours, whatever gate type drew it."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.column_stack([x, y]).astype(np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 3:
        return []
    centred = pts - pts.mean(axis=0)
    cov = np.cov(centred, rowvar=False) + 1e-9 * np.eye(2)
    dist = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(cov), centred)
    pts = pts[dist <= np.quantile(dist, OUTLINE_Q)]
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):
        return []
    return np.round(pts[hull.vertices], 4).tolist()


def expert_summary(
    ours: Mapping[str, np.ndarray],
    theirs: Mapping[str, np.ndarray],
    compare: Mapping[str, str],
    min_f1: float,
    plots: Sequence[Mapping],
    columns: Mapping[str, np.ndarray],
) -> dict:
    """expert.json of one sample with expert gating: for each `compare` pair (template
    population -> expert population) the F1 over the same events, the disagreements below
    `min_f1`, and the expert population's outline on the density plot of our gate (its events
    among our gate's parent). All masks and columns over the same (QC-kept) events."""
    agreement, disagreements = _agreement(
        ours, theirs, compare, min_f1, ("expert", "the expert's gating", "the expert's")
    )
    plot_of = {str(p.get("population")): p for p in plots}
    outlines = {}
    for gate, expert in compare.items():
        plot = plot_of.get(gate)
        if gate not in ours or expert not in theirs or plot is None:
            continue
        if plot.get("x") in columns and plot.get("y") in columns:
            inside = np.asarray(theirs[expert], dtype=bool)
            parent = ours.get(str(plot.get("parent") or ""))
            if parent is not None:
                inside = inside & np.asarray(parent, dtype=bool)
            outlines[gate] = population_outline(
                columns[plot["x"]][inside], columns[plot["y"]][inside]
            )
    return {
        "status": "ok",
        "agreement": agreement,
        "disagreements": disagreements,
        "outlines": outlines,
    }
