"""The debris cut among cells (cytopipe.gating.debris): moved below the lineage+ events only
where the events below it carry them about as often as those above."""

from __future__ import annotations

import numpy as np

from cytopipe.gating.debris import below_cells


def _sample(lineage_below: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    debris = rng.uniform(0.0, 0.1, 2000)
    cells = rng.normal(0.3, 0.05, 8000)
    x = np.concatenate([debris, cells])
    bright = np.concatenate([rng.random(2000) < lineage_below, rng.random(8000) < 0.3])
    return x, bright


def test_a_cut_over_lineage_negative_debris_stays():
    x, bright = _sample(0.01)
    assert below_cells(x, bright, 0.12) is None


def test_a_cut_among_lineage_positive_events_moves_below_them():
    x, bright = _sample(0.3)
    moved = below_cells(x, bright, 0.12)
    assert moved is not None and moved[0] < 0.02 and "lineage+" in moved[1]
    assert below_cells(x, None, 0.12) is None  # no lineage marker shows two populations
