"""Per-event truth labels as the pipeline's populations: what every gate should find.

Cells are everything but debris; doublets and dead events belong to no population below them, so
a dead B cell is never a B cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError
from cytopipe.synth.model import B_SUBSETS, LYMPHOCYTES, POPULATION_CODE, POPULATIONS

_TRUTH_GROUPS: dict[str, tuple[str, ...]] = {
    "lymphocytes": LYMPHOCYTES,
    "t_cells": ("t_cell", "car_t"),
    "car_t": ("car_t",),
    "b_cells": B_SUBSETS,
    "b_cd20pos": tuple(s for s in B_SUBSETS if s != "plasmablast"),
    "b_cd20neg": ("plasmablast",),
    "plasmablasts": ("plasmablast",),
    "b_naive": ("b_naive",),
    "b_unswitched_memory": ("b_unswitched_memory",),
    "b_switched_memory": ("b_switched_memory",),
    "b_double_negative": ("b_double_negative",),
    "b_transitional": ("b_transitional",),
}


def truth_masks(labels: Sequence[str] | pd.Categorical | np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks per pipeline population id (DESIGN.md) from per-event truth labels.

    Cells are everything but debris; doublets and dead events belong to no population below
    them, so a dead B cell is never a B cell.
    """
    cat = pd.Categorical(labels, categories=list(POPULATIONS))
    codes = np.asarray(cat.codes)
    if (codes < 0).any():
        bad = sorted(set(pd.Series(np.asarray(labels, dtype=object)[codes < 0]).astype(str)))
        raise ConfigError(f"unknown truth label(s): {', '.join(bad[:5])}")

    def isin(pops: Sequence[str]) -> np.ndarray:
        return np.isin(codes, [POPULATION_CODE[p] for p in pops])

    masks = {"cells": codes != POPULATION_CODE["debris"]}
    masks["singlets"] = masks["cells"] & (codes != POPULATION_CODE["doublet"])
    masks["live"] = masks["singlets"] & (codes != POPULATION_CODE["dead"])
    masks["leukocytes"] = masks["live"] & (codes != POPULATION_CODE["cd45_negative"])
    masks.update({pid: isin(pops) for pid, pops in _TRUTH_GROUPS.items()})
    return masks


def gate_truth(labels: Sequence[str] | pd.Categorical | np.ndarray) -> dict[str, np.ndarray]:
    """truth_masks as the template's gates cut them: b_naive is the IgD+ CD27- quadrant, which
    holds the transitional B cells too (b_transitional is a gate inside it)."""
    masks = truth_masks(labels)
    masks["b_naive"] = masks["b_naive"] | masks["b_transitional"]
    return masks
