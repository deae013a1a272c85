"""A spillover matrix read the other way round: rows taken for columns.

$SPILLOVER puts the fluorochromes in rows and the detectors in columns; a matrix copied from
a CSV, an analysis program's dialog or another lab's export is easily read transposed. Applied
so, it removes each spill from the wrong detector: the Lyoplate file lost its B cells (F1
0.002), listed only as a gate to review. The data tell the two readings apart: spill is
asymmetric (into longer wavelengths), so the wrong reading over-compensates, and events bright
in one stain fall far below zero in another, where the right reading leaves the negatives
around zero. Measured on every file with a matrix here (the Lyoplate file, FlowIO's and
FlowKit's files with their matrices, 30 randomized generated files; the Lyoplate file's
exports of one lineage, B cells, CD19+ events or T cells, 18-200): the transposed reading
left 2.3-200 times more such events below zero than the file's own, and the other way round.
A matrix is turned only when its transpose leaves at most half as many (`BETTER`), and the
sample says so. (A check of data compensated already, the matrix kept, by how much of its
spill they show was measured and not taken: the Lyoplate file's CD19+ events alone, raw,
read as compensated, their subsets' own co-variation standing in for the spill.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cytopipe.preprocess.compensation import Spillover

EVENTS = 50_000  # a strided sample: the tails of 100 events per channel are stable
MIN_EVENTS = 1_000  # fewer: the tail quantile is a handful of events, no evidence
TAIL_Q = 0.002  # the over-compensated events: the lowest 0.2% of each channel
BETTER = 0.5  # the transpose must leave at most this share of the given one's tails
MIN_TAIL = 0.2  # ... and the given one leave this much at least (channels' 99th percentiles)


def overcompensation(raw: np.ndarray, matrix: np.ndarray) -> float:
    """How far below zero the lowest TAIL_Q of each compensated channel lies, in units of the
    channel's raw 99th percentile, summed over the channels."""
    compensated = raw @ np.linalg.inv(matrix)
    scale = np.maximum(np.quantile(raw, 0.99, axis=0), 1.0)
    low = np.quantile(compensated, TAIL_Q, axis=0)
    return float(np.sum(np.maximum(-low, 0.0) / scale))


def oriented(events: np.ndarray, pnn: list[str], spill: Spillover) -> tuple[Spillover, str | None]:
    """`spill` as given, or transposed when the data show it was read the other way round
    (see the module), with the note that says so (also among the matrix's warnings).
    `events`: the file's raw (uncompensated) events."""
    matrix = np.asarray(spill.matrix, dtype=np.float64)
    if len(events) < MIN_EVENTS or np.allclose(matrix, matrix.T):
        return spill, None
    columns = [pnn.index(c) for c in spill.channels]
    step = max(1, len(events) // EVENTS)
    raw = np.asarray(events[::step][:, columns], dtype=np.float64)
    raw = raw[np.isfinite(raw).all(axis=1)]
    try:
        given, turned = overcompensation(raw, matrix), overcompensation(raw, matrix.T)
    except np.linalg.LinAlgError:
        return spill, None  # singular: compensation_matrix says so with the file's name
    if given < MIN_TAIL or turned > BETTER * given:
        return spill, None
    note = (
        f"{spill.source}: read transposed (rows for columns): as given it over-compensates "
        f"(events far below zero: {given:.2f} vs {turned:.2f} transposed, in units of each "
        "channel's 99th percentile), so its transpose was applied; check the matrix's "
        "orientation (rows = fluorochromes, columns = detectors)"
    )
    turned_spill = dataclasses.replace(
        spill, matrix=np.ascontiguousarray(matrix.T), warnings=[*spill.warnings, note]
    )
    return turned_spill, note
