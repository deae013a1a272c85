"""Negatives clipped at a floor by the writing software, spread back below it
(cytopipe/preprocess/clipped.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cytopipe.preprocess.clipped import clipped_floor, unclipped


def _negatives_and_positives(centre: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(centre, 300.0, 60_000), rng.normal(5000.0, 800.0, 20_000)])


@pytest.mark.parametrize("floor", [0.0, 1.0])
@pytest.mark.parametrize("centre", [0.0, 150.0, 300.0])
def test_a_clipped_negative_population_is_spread_back_as_it_was(centre, floor):
    """A negative population (SD 300) centred at zero or above it (autofluorescence), clipped
    at 0 or 1 (an integer export): no event stays piled on the floor, the values above it
    are untouched, and its lower decile and quintile come back within a fifth of its SD."""
    x = _negatives_and_positives(centre)
    clipped = np.maximum(x, floor)
    back, found = unclipped(clipped)
    assert found is not None and found[0] == floor
    assert np.count_nonzero(back == floor) <= 1
    assert np.array_equal(back[clipped > floor], clipped[clipped > floor])
    for q in (0.1, 0.2):
        assert abs(np.quantile(back, q) - np.quantile(x, q)) < 60.0, q


def test_a_population_centred_below_the_floor_takes_nothing_from_the_positives():
    """Centred at -300, two thirds of it clipped: what shows of it is less than what was
    clipped, and its mirror image repeats that (compressed), never the positive population
    at 5,000 (which would put thousands of events near -5,000)."""
    clipped = np.maximum(_negatives_and_positives(-300.0), 0.0)
    back, _ = unclipped(clipped)
    assert back.min() > -1000.0
    assert np.count_nonzero(back < 0) == np.count_nonzero(clipped == 0.0)


def test_kept_negatives_and_a_few_ties_are_left_alone():
    x = _negatives_and_positives(0.0)
    assert clipped_floor(x) is None  # its negatives are there
    ties = np.maximum(np.abs(x), 0.0)
    ties[:100] = 0.0  # 100 of 80,000 events on 0: ties, not a clip
    assert clipped_floor(ties) is None
    assert unclipped(np.zeros(1000))[1] is None  # an empty channel: nothing to mirror
