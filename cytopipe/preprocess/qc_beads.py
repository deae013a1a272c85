"""Counting beads (BD Trucount, Beckman Flow-Count, CountBright, ...) set apart before gating.

Why: a single-platform tube for absolute counts holds thousands of beads next to the cells.
They are brighter than cells in every fluorescence channel, and without a viability dye to
call them dead they pass the scatter/CD45 gates: added to the real Lyoplate file at 5% of its
events, 4,300 beads became lymphocytes and T cells (CD3-bright) and the B cells' share of the
lymphocytes fell from 22.2% to 20.7%, nothing said; that share decides B-cell aplasia.

What makes an event a bead and not a cell, on the sample's own data: it is bright in every
fluorescence channel at once (its weakest channel, `min` over the channels, is above 99% of
the other events' weakest), and beads are one particle made many times: a cluster far
tighter than any cell population (robust SD below MAX_SD in every channel on the 0-1
analysis scale; bead CVs of 2-30% give 0.004-0.025, cell populations 0.04 and more). Each
such cluster of the weakest-channel density is taken with its events within BOX_SD robust SDs
of its median in every channel. Beads of two intensities (AccuCheck) are two clusters.

QC looks for them among all events, before its margin rule: beads often sit at the top of a
detector whose voltage is set for dim cells, and as margin events they went uncounted.

Needs MIN_CHANNELS fluorescence channels: with two, a double-positive cell population (CD45+
CD19+ B cells) is bright in all of them. The count is the bead count of the single-platform
formula (cytopipe.clinical.counts) when the sample sheet does not give one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cytopipe.preprocess.robust import robust_sd

MIN_CHANNELS = 3
MIN_BEADS = 50  # fewer bead events cannot count anything
MAX_SD = 0.03  # per channel, analysis scale (see the module)
BOX_SD = 6.0  # a bead: within this many robust SDs of the cluster's median in every channel
BOX_MIN = 0.01  # ... and at least this far (discrete channel values: SD 0)
BRIGHTER_THAN = 0.99  # the cluster's weakest channel above this quantile of the other events'
BANDWIDTH = 0.01
MAX_CLUSTERS = 2
DECIDE_EVENTS = 200_000  # events the decision is made on (see find_beads)
MIN_DECIDE = 20  # ... of which at least this many beads
PEAKS_TRIED = 8  # the highest density peaks above the median weakest channel


@dataclass(frozen=True)
class Beads:
    mask: np.ndarray  # True: a counting bead
    levels: tuple[float, ...]  # each cluster's weakest-channel median
    note: str = ""


def find_beads(signals: Mapping[str, np.ndarray], candidates: np.ndarray) -> Beads:
    """The counting beads among the `candidates` events (see the module). Channel by channel,
    without a stacked copy of the events (10 M events x 12 channels); whether there are beads,
    and where, is decided on at most DECIDE_EVENTS of them (every k-th: deterministic)."""
    n = len(candidates)
    none = Beads(np.zeros(n, dtype=bool), ())
    channels = [np.asarray(v) for v in signals.values()]
    if len(channels) < MIN_CHANNELS:
        return none
    weakest = np.full(n, np.inf, dtype=np.float32)
    for v in channels:
        np.minimum(weakest, v, out=weakest)  # NaN propagates: such events are left out
    rows = np.flatnonzero(candidates & np.isfinite(weakest))
    if rows.size < MIN_BEADS:
        return none
    step = -(-rows.size // DECIDE_EVENTS)
    sub = rows[::step]
    w = weakest[sub]
    mask = np.zeros(n, dtype=bool)
    levels = []
    middle = float(np.median(w))
    for centre in [c for c in _peaks(w) if c > middle][:PEAKS_TRIED]:
        free = ~mask[sub]
        near = free & (np.abs(w - centre) <= 2 * BANDWIDTH)
        if near.sum() * step < MIN_BEADS or near.sum() < MIN_DECIDE:
            continue
        core = np.column_stack([v[sub[near]] for v in channels]).astype(np.float64)
        median = np.median(core, axis=0)
        sd = robust_sd(core, median, axis=0)
        if (sd > MAX_SD).any():
            continue
        level = float(np.median(w[near]))
        others = w[free & ~near]
        if others.size and level <= float(np.quantile(others, BRIGHTER_THAN)):
            continue
        box = np.maximum(BOX_SD * sd, BOX_MIN)
        inside = rows[~mask[rows] & (weakest[rows] >= float((median - box).min()))]
        for v, m, b in zip(channels, median, box, strict=True):
            inside = inside[np.abs(v[inside] - m) <= b]
        mask[inside] = True
        levels.append(round(level, 3))
        if len(levels) == MAX_CLUSTERS:
            break
    if not levels:
        return none
    note = (
        f"{int(mask.sum())} counting bead event(s) set apart before gating (a tight cluster "
        f"bright in all {len(channels)} fluorescence channels, weakest at "
        f"{', '.join(f'{v:.2f}' for v in levels)})"
    )
    return Beads(mask, tuple(levels), note)


def _peaks(values: np.ndarray) -> list[float]:
    """Local maxima of the smoothed density of `values`, highest first."""
    lo, hi = float(values.min()) - 4 * BANDWIDTH, float(values.max()) + 4 * BANDWIDTH
    bins = max(int(np.ceil((hi - lo) / (BANDWIDTH / 4))), 8)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    t = np.arange(-16, 17) / 4.0  # the kernel in bins: a Gaussian of SD BANDWIDTH
    smooth = np.convolve(counts, np.exp(-0.5 * t * t), mode="same")
    inner = smooth[1:-1]
    top = np.flatnonzero((inner > smooth[:-2]) & (inner >= smooth[2:])) + 1
    centres = (edges[:-1] + edges[1:]) / 2
    return [float(centres[i]) for i in top[np.argsort(-smooth[top])]]
