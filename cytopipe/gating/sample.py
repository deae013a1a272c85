"""Gate one preprocessed sample with the template: masks, statistics and density plots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cytopipe.gating.autogate import AutogateResult
from cytopipe.gating.gates import gate_outline
from cytopipe.gating.placer import threshold_events
from cytopipe.gating.saturated import Saturated, placed, saturated_events, with_saturated
from cytopipe.gating.stats import (
    cut_density,
    density_plot,
    display_range,
    population_stats,
)
from cytopipe.preprocess.sample import SCATTER, scale_zeros


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
    saturated: Saturated | None = None,
) -> Gated:
    """Place the template's gates on this sample (events that passed QC) and summarise them.
    `zeros`: `Preprocessed.zeros` (see `autogate`). `saturated`: (as read, low, high) of the
    events removed only for a stain's top (cytopipe.gating.saturated), counted after the
    others where they certainly belong: masks and statistics hold the QC-passed events, then
    these."""
    res = placed(specs, columns, zeros, saturated)
    masks, columns = with_saturated(res, columns, saturated, specs)
    n_root = len(next(iter(columns.values()))) if columns else 0
    stats = population_stats(
        sample_id, masks, res.parents, columns, n_root, res.methods, res.shapes, res.cut_moves
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


def event_masks(
    masks: Mapping[str, np.ndarray], kept: np.ndarray, saturated: np.ndarray | None = None
) -> pd.DataFrame:
    """One boolean column per population, one row per event in file order (QC-removed: False);
    `saturated`: the events `gate` counted after the QC-passed ones (`gate_events`)."""
    n_kept = int(np.count_nonzero(kept))
    out = {}
    for pop, m in masks.items():
        full = np.zeros(kept.shape[0], dtype=bool)
        full[kept] = m[:n_kept]
        if saturated is not None and len(m) > n_kept:
            full[saturated] = m[n_kept:]
        out[pop] = full
    return pd.DataFrame(out)


def gate_events(
    sample_id: str,
    columns: Mapping[str, np.ndarray],
    qc_pass: np.ndarray,
    specs,
    info: Mapping,
    at_top: Mapping[str, np.ndarray] | None = None,
) -> tuple[Gated, pd.DataFrame]:
    """`gate` on a preprocessed sample's events in file order (`Preprocessed.columns`,
    `qc_pass`, `info`, `at_top`), and its masks in file order: as the workflow's gate step and
    the benchmarks gate a file (the `autogate` command does the same steps without plots)."""
    keep = np.asarray(qc_pass, dtype=bool)
    kept = {m: np.ascontiguousarray(np.asarray(v)[keep]) for m, v in columns.items()}
    rows, saturated = saturated_events(columns, at_top, info)
    gated = gate(sample_id, kept, specs, scale_zeros(info), saturated)
    return gated, event_masks(gated.masks, keep, rows)
