"""Gating chunk by chunk of events into preallocated full-length masks, for files larger than
memory (cytopipe.gating.apply.apply_strategy_chunked reads them lazily, chunk by chunk).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.gates import Gate, dependency_order, evaluate, population_ids


def evaluate_chunked(
    gates: Sequence[Gate],
    chunks: Iterable[Mapping[str, np.ndarray]],
    n_events: int,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate chunk by chunk of events into preallocated full-length masks.

    Gating is per event, so masks of consecutive chunks concatenate to the masks of the whole
    file; peak memory is a few chunks of columns plus the boolean outputs (1 byte per event
    and population). Each chunk is a columns mapping (may be lazy) over the same dims.
    """
    order = dependency_order(gates)
    pids = [p for g in order for p in population_ids(g)]
    masks = dict(out) if out is not None else {p: np.zeros(n_events, dtype=bool) for p in pids}
    start = 0
    for chunk in chunks:
        part = evaluate(order, chunk)
        size = len(next(iter(part.values()))) if part else 0
        if start + size > n_events:
            raise GatingError(f"chunks hold more than the {n_events} events announced")
        for p in pids:
            masks[p][start : start + size] = part[p]
        start += size
    if start != n_events:
        raise GatingError(f"chunks held {start} events, expected {n_events}")
    return masks
