"""Gate one preprocessed sample with the template: masks, statistics and density plots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cytopipe.gating.autogate import AutogateResult, autogate, threshold_events
from cytopipe.gating.gates import gate_outline
from cytopipe.gating.stats import (
    cut_density,
    density_plot,
    display_range,
    population_stats,
)
from cytopipe.preprocess.sample import SCATTER


@dataclass
class Gated:
    masks: dict[str, np.ndarray]
    stats: pd.DataFrame
    plots: list[dict]
    skipped: dict[str, str]
    result: AutogateResult | None = None  # the placed gates (cytopipe.gating.export)


def gate(
    sample_id: str,
    columns: Mapping[str, np.ndarray],
    specs,
    zeros: Mapping[str, float] | None = None,
) -> Gated:
    """Place the template's gates on this sample (events that passed QC) and summarise them.
    `zeros`: `Preprocessed.zeros` (see `autogate`)."""
    res = autogate(specs, columns, zeros=zeros)
    order = [g.id for g in res.gates]
    masks = {p: res.masks[p] for p in order}
    n_root = len(next(iter(columns.values()))) if columns else 0
    stats = population_stats(
        sample_id, masks, res.parents, columns, n_root, res.methods, res.shapes
    )
    shown = {m for g in res.gates if g.id not in res.passed for m in res.plotted[g.id]}
    ranges = {m: (0.0, 1.0) if m in SCATTER else display_range(columns[m]) for m in shown}
    all_events = np.ones(n_root, dtype=bool)
    variants = {s.id: s.variant_for(set(columns)) for s in specs}
    plots = []
    for g in res.gates:
        if g.id in res.passed:  # pass-through pre-gate (marker missing): nothing to draw
            continue
        x, y = res.plotted[g.id]
        parent_mask = masks[g.parent] if g.parent else all_events
        view = (ranges[x], ranges[y])
        extras = [  # `or:` parts, drawn where they share the plot's axes
            (label, gate_outline(e, view))
            for label, e in res.extras.get(g.id, ())
            if tuple(e.dims[:2]) == (x, y)
        ]
        count = int(masks[g.id].sum())
        plot = density_plot(
            g.id, g.parent, x, y, columns, parent_mask, count, gate_outline(g, view), ranges,
            extras,
        )  # fmt: skip
        plot["cuts"] = _cuts(variants.get(g.id), columns, masks, res.thresholds)
        plots.append(plot)
    return Gated(masks, stats, plots, res.skipped, res)


def _cuts(spec, columns, masks, placed) -> list[dict]:
    """Each threshold of the gate as placed in this sample, on the density it was searched on."""
    out = []
    for t in spec.thresholds() if spec is not None else ():
        if t.name not in placed or placed[t.name].value is None:
            continue
        values = threshold_events(t, columns, masks, placed)
        if values is None:
            continue
        view = (0.0, 1.0) if t.dim in SCATTER else display_range(values)
        out.append(cut_density(t, values, placed[t.name], view))
    return out


def event_masks(masks: Mapping[str, np.ndarray], kept: np.ndarray) -> pd.DataFrame:
    """One boolean column per population, one row per event in file order (QC-removed: False)."""
    out = {}
    for pop, m in masks.items():
        full = np.zeros(kept.shape[0], dtype=bool)
        full[kept] = m
        out[pop] = full
    return pd.DataFrame(out)
