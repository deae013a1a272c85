"""Negatives clipped at a floor by the software that wrote the file, spread back below it.

Why: an export of compensated values with integer data, or a program that sets negative values
to zero, piles the lower half of every negative population on one value. On the logicle scale
that pile is a spike at zero's position with a dip above it, and the gates' density valleys
fall there instead of between the populations (the Lyoplate file with noise of SD 300 on every
stain and its negatives clipped at 0: CD27 cut at 0.22 in the negatives, double negative B
cells F1 0.03, unswitched memory 0.12). A negative population is about symmetric around its
centre near zero, so the clipped events are given the mirror image, about that centre, of as
many values beyond it (in a seeded random order), never of the positive populations above:
the population shows as one again. One mirror serves the whole channel, so a population whose
negatives sit elsewhere than the channel's largest one gets its clipped tail a little off
(a clipped export at fluorescence x2.5: the naive B cells' CD27 tail, mirrored from the T
cells' narrow CD27- population, made a hump). Only the gating scale's values change; the file
is not touched.
"""

from __future__ import annotations

import numpy as np

MIN_SHARE = 0.01  # of a channel's events on its lowest value: fewer are ties, not a clip


def clipped_floor(x: np.ndarray) -> tuple[float, int] | None:
    """(floor, events on it) where the channel's lowest value is not negative and holds at
    least MIN_SHARE of its events; None where the negatives were kept."""
    if x.size == 0 or np.isnan(floor := float(np.nanmin(x))) or floor < 0:
        return None  # kept negatives (compensated data): one pass, no copy
    n, total = int(np.count_nonzero(x == floor)), int(np.count_nonzero(np.isfinite(x)))
    if n < MIN_SHARE * total or n == total:
        return None
    return floor, n


def unclipped(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, tuple[float, int] | None]:
    """`x` with its clipped events (`clipped_floor`) spread below the floor as the mirror
    image, about the clipped population's centre, of the values beyond it, and (floor, events
    moved); `x` itself where none."""
    found = clipped_floor(x)
    if found is None:
        return x, None
    floor, n = found
    seen = np.sort(x[np.isfinite(x) & (x > floor)])  # once: the centre and the pool read it
    centre = _centre(seen, floor)
    # the clipped part, below the floor, mirrors the part above 2 x centre - floor
    edge = 2.0 * centre - floor
    above = seen[(seen >= edge) & (seen <= _end(seen, floor))][:n]
    if above.size == 0:
        return x, None
    out = np.array(x, copy=True)
    mirror = np.random.default_rng(seed).permutation(np.resize(above, n))
    out[x == floor] = 2.0 * centre - mirror
    return out, found


def _end(seen: np.ndarray, floor: float, bins: int = 40) -> float:
    """Where the clipped population's visible part ends: the first bin (of `bins` between the
    floor and the values' median, and on beyond it) whose count falls under 1% of the
    highest count near the floor. The mirror image is drawn from below it, never from the
    positive populations above (a population centred below the floor shows less than its
    clipped half: its mirror image then repeats what it shows)."""
    width = max((float(np.median(seen)) - floor) / bins, np.finfo(float).tiny)
    counts = np.bincount(((seen - floor) // width).astype(np.int64))
    top = counts[: bins + 1].max()
    low = np.flatnonzero(counts < 0.01 * top)
    return floor + width * float(low[0]) if low.size else float(seen.max())


def _centre(ordered: np.ndarray, floor: float, steps: int = 200) -> float:
    """The clipped population's centre (`ordered`: the values above the floor, sorted): where
    as many of them lie between it and the floor as between it and its mirror image of the
    floor (symmetry about the centre; counts, not a histogram's noisy peak). Where the counts
    do not fall clearly below that balance first (the population falls from the floor on:
    centred at or below it), the floor itself."""
    grid = np.linspace(floor, float(np.quantile(ordered, 0.5)), steps)[1:]
    below = np.searchsorted(ordered, grid)
    beyond = np.searchsorted(ordered, 2.0 * grid - floor) - below
    balance = below - beyond  # < 0 while the density still rises
    lowest = int(np.argmin(balance))
    if balance[lowest] > -3.0 * np.sqrt(max(below[lowest] + beyond[lowest], 1)):
        return floor
    after = np.flatnonzero(balance[lowest:] >= 0)
    return float(grid[lowest + after[0]]) if after.size else floor


def note(channel: str, floor: float, n: int, total: int) -> str:
    return (
        f"{channel}: {n:,} events ({n / total:.1%}) on {floor:g}, its lowest value (negatives "
        "clipped by the software that wrote the file): spread below it as the mirror image of "
        "the values above, so the negative population shows as one (transform.unclip)"
    )
