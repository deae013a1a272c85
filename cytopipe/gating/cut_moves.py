"""How far each population's count depends on where its cuts fall: the events that would leave
it, and those that would join it, if every side of its rectangle that a threshold placed moved
one bandwidth (the resolution its density was read at) inward or outward.

Why: a count's Poisson interval says how sure the count is given the gate, not how sure the
gate is. A cut in a deep valley moves few events whichever way it goes; a cut on a continuum
(memory B cells in IgD and CD27: no valley, a density turn) moves many. On the real Lyoplate
file, one bandwidth (0.02) either way takes double-negative B cells from 629 to 393-926 and B
cells from 11,433 only to 11,392-11,468; on the noisy real-file variants where subsets missed
openCyto's by the most, double-negative counts spanned 2-3x. Centres pooling subset counts can
weigh them by this, and a reviewer sees which numbers hinge on a cut.

Fixed sides (template numbers) and open sides do not move; `or:` parts and events joined beside
the gate stay as counted; polygons (lymphocytes) have no cut to move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.gating.gates import RectangleGate
from cytopipe.gating.geometry import _in_ranges
from cytopipe.gating.template import PopulationSpec, ThresholdSpec


def _step(bound) -> float:
    """How far a rectangle side moves: its threshold's bandwidth; 0 for a fixed or open side."""
    return bound.bandwidth if isinstance(bound, ThresholdSpec) else 0.0


def _box(gate: RectangleGate, lo_steps, hi_steps, inward: float) -> list:
    """The gate's (min, max) per dim with its placed sides moved `inward` steps (< 0: out)."""
    lows = [None if v is None else v + inward * s for v, s in zip(gate.mins, lo_steps, strict=True)]
    highs = [
        None if v is None else v - inward * s for v, s in zip(gate.maxs, hi_steps, strict=True)
    ]
    return list(zip(lows, highs, strict=True))


def cut_moves(
    gates: Sequence,
    specs: Sequence[PopulationSpec],
    available: set[str],
    masks: Mapping[str, np.ndarray],
    columns: Mapping[str, np.ndarray],
) -> dict[str, tuple[int, int]]:
    """Population -> (events that leave it, events that join it) when its threshold-placed
    rectangle sides move one bandwidth inward, resp. outward, among its parent's events.
    The template variant the panel's markers (`available`) gave each rectangle says which of
    its sides are thresholds; populations without such a side are not listed."""
    variants = {s.id: s.variant_for(available) for s in specs}
    out: dict[str, tuple[int, int]] = {}
    for gate in gates:
        spec = variants.get(gate.id)
        if not isinstance(gate, RectangleGate) or spec is None or gate.id not in masks:
            continue
        if not spec.place or "min" not in spec.place:
            continue
        lo_steps = [_step(b) for b in spec.place["min"]]
        hi_steps = [_step(b) for b in spec.place["max"]]
        if not any(lo_steps) and not any(hi_steps):
            continue
        parent = masks[gate.parent] if gate.parent else None  # gated before its children
        rows = np.flatnonzero(parent) if parent is not None else slice(None)
        cols = [np.asarray(columns[d])[rows] for d in gate.dims]
        mask = np.asarray(masks[gate.id])[rows]
        inside, inner, outer = (
            _in_ranges(cols, _box(gate, lo_steps, hi_steps, inward)) for inward in (0, 1, -1)
        )
        leave = int(np.count_nonzero(mask & inside & ~inner))
        join = int(np.count_nonzero(outer & ~mask))
        out[gate.id] = (leave, join)
    return out
