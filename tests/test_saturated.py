"""Events removed only for a stain's top, counted where they certainly belong
(cytopipe.gating.saturated): the intervals from the sample's matrix, and the gates' test on them."""

from __future__ import annotations

import numpy as np

from cytopipe.gating.gates import RectangleGate
from cytopipe.gating.result import AutogateResult
from cytopipe.gating.saturated import certain_masks, corners
from cytopipe.preprocess.transforms import Scale

TOP = 1000.0
SCALE = Scale.linear(TOP)


def info(matrix) -> dict:
    """A sample record: CD20 (detector A) spills 10% into CD27's detector B."""
    return {
        "channels": {"CD20": "A", "CD27": "B", "CD3": "C"},
        "provenance": {
            "scales": {m: SCALE.to_record() for m in ("CD20", "CD27", "CD3")},
            "spillover_channels": ["A", "B", "C"] if matrix else [],
            "spillover_matrix": [[1, 0.1, 0], [0, 1, 0], [0, 0, 1]] if matrix else [],
        },
    }


def test_a_pinned_stain_is_open_above_and_its_spill_may_have_been_under_compensated():
    shown = {"CD20": np.array([0.99, 0.99, 0.5]), "CD27": np.array([0.2, 0.35, 0.35]),
             "CD3": np.array([0.1, 0.1, 0.1])}  # fmt: skip
    at_top = {"CD20": np.array([True, True, False])}
    low, high = corners(shown, at_top, info(matrix=True))
    # the true CD20 up to twice the top: 1000 more, 10% of it (the inverse's -0.1) less CD27
    assert np.allclose(high["CD20"], [1.99, 1.99, 0.5]) and np.allclose(low["CD20"], shown["CD20"])
    assert np.allclose(low["CD27"], [0.1, 0.25, 0.35]) and np.allclose(high["CD27"], shown["CD27"])
    assert np.allclose(low["CD3"], shown["CD3"]) and np.allclose(high["CD3"], shown["CD3"])
    # compensated on export (no matrix): only the pinned stain's own interval
    low, high = corners(shown, at_top, info(matrix=False))
    assert np.allclose(low["CD27"], shown["CD27"]) and np.allclose(high["CD20"][0], 1.99)


def test_only_populations_the_whole_interval_lies_in_count_the_event():
    gates = [
        RectangleGate("b", None, ("CD20",), (0.5,), (None,)),
        RectangleGate("cd20neg", None, ("CD20",), (None,), (0.5,)),
        RectangleGate("naive", "b", ("CD27",), (None,), (0.3,)),
        RectangleGate("memory", "b", ("CD27",), (0.3,), (None,)),
    ]
    result = AutogateResult(gates, {g.id: np.zeros(0, dtype=bool) for g in gates}, {}, {}, {}, {})
    shown = {"CD20": np.full(3, 0.99), "CD27": np.array([0.2, 0.35, 0.5]),
             "CD3": np.zeros(3)}  # fmt: skip
    low, high = corners(shown, {"CD20": np.ones(3, dtype=bool)}, info(matrix=True))
    masks = certain_masks(result, low, high)
    assert masks["b"].tolist() == [True, True, True]  # CD20 above the top: B cells
    assert not masks["cd20neg"].any()
    # CD27 0.2 is negative whatever the spill; 0.35 may be 0.25 (no subset); 0.5 at least 0.4
    assert masks["naive"].tolist() == [True, False, False]
    assert masks["memory"].tolist() == [False, False, True]


def test_the_box_must_lie_inside_one_part_of_a_population_not_across_two():
    """A population of two rectangles (a gate and its `or:` extra): an event whose interval is
    half in each is not certainly in either."""
    gate = RectangleGate("memory", None, ("CD27",), (0.3,), (0.6,))
    extra = RectangleGate("memory", None, ("CD27",), (0.0,), (0.32,))
    result = AutogateResult([gate], {"memory": np.zeros(0, dtype=bool)}, {}, {}, {}, {},
                            extras={"memory": [("low CD27", extra)]})  # fmt: skip
    low = {"CD27": np.array([0.25, 0.35, 0.1])}
    high = {"CD27": np.array([0.35, 0.45, 0.2])}
    assert certain_masks(result, low, high)["memory"].tolist() == [False, True, True]


def test_a_large_spill_bounds_how_far_above_the_top_the_pinned_signal_lies():
    """CD20 spills half its signal into CD27's detector: an event reading CD27 300 above the
    sample's lowest CD27 can hold at most 600 more CD20 than the top (else its true CD27 would
    lie below every event's), so its CD20 reaches 1.6, not 2, tops and its CD3 (10% spill)
    loses at most 60, not 100."""
    record = info(matrix=True)
    record["provenance"]["spillover_matrix"] = [[1, 0.5, 0.1], [0, 1, 0], [0, 0, 1]]
    shown = {"CD20": np.array([0.99]), "CD27": np.array([0.3]), "CD3": np.array([0.5])}
    at_top = {"CD20": np.array([True])}
    loose = corners(shown, at_top, record)
    bounded = corners(shown, at_top, record, floors={"CD27": 0.0, "CD3": 0.0, "CD20": 0.0})
    assert np.allclose(loose[1]["CD20"], 1.99) and np.allclose(loose[0]["CD3"], 0.4)
    assert np.allclose(bounded[1]["CD20"], 1.59) and np.allclose(bounded[0]["CD3"], 0.44)
    assert np.allclose(bounded[0]["CD27"], 0.0)


def test_the_events_below_the_top_tell_how_far_above_it_a_pinned_signal_lies():
    """A pinned event reads CD27 0.35, its CD20 spill under-compensated by up to 0.1 (CD20 up
    to twice the top). The events just below CD20's top read CD27 0.25 (SD 0.03): an excess
    that leaves the event's CD27 above 0.31 fits them more than 2 SD worse than the best, so
    its CD27 lies in [0.25, 0.31], not [0.25, 0.35]. An event unlike them in a stain the spill
    does not reach (CD3 0.9 where theirs is 0.1) is not of their population and keeps the
    whole interval."""
    shown = {"CD20": np.full(2, 0.99), "CD27": np.full(2, 0.35), "CD3": np.array([0.1, 0.9])}
    at_top = {"CD20": np.ones(2, dtype=bool)}
    near = {"CD20": {"CD27": (0.25, 0.03), "CD3": (0.1, 0.03)}}
    low, high = corners(shown, at_top, info(matrix=True), below=near)
    assert np.allclose(low["CD27"], 0.25)
    assert np.allclose(high["CD27"], [0.3125, 0.35])
    assert np.allclose(low["CD20"], [1.365, 0.99]) and np.allclose(high["CD20"], 1.99)
