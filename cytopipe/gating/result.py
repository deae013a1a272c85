"""What automated gating decided for one sample (cytopipe.gating.autogate), in its own module
so the passes beyond the gates (cytopipe.gating.beyond_gate) can fill it without importing the
placement."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cytopipe.gating.gates import Gate
from cytopipe.gating.placement import Placement


@dataclass
class AutogateResult:
    """Per-sample gates: `masks` has the contract of cytopipe.gating.gates.evaluate on `gates` (full
    length, ancestry included, only gated populations), with the events of a population's
    `extras` joined; `methods` is what population_stats takes."""

    gates: list[Gate]
    masks: dict[str, np.ndarray]
    methods: dict[str, tuple[str, float, str]]  # population -> (method, confidence, flag)
    thresholds: dict[str, Placement]  # threshold name -> where it was placed and how
    plotted: dict[str, tuple[str, str]]  # population -> density plot axes
    skipped: dict[str, str]  # population -> why it is absent
    parents: dict[str, str | None] = field(default_factory=dict)
    passed: set[str] = field(default_factory=set)  # pass-through pre-gates (nothing to draw)
    # population -> its `or:` rectangles as placed, (label, gate): their events are in the mask
    extras: dict[str, list[tuple[str, Gate]]] = field(default_factory=dict)
    # population -> what its sample looked like (cytopipe.gating.placement.judged)
    shapes: dict[str, dict] = field(default_factory=dict)
    # population -> (events that leave, events that join) as its cuts move a bandwidth
    # (cytopipe.gating.cut_moves)
    cut_moves: dict[str, tuple[int, int]] = field(default_factory=dict)
