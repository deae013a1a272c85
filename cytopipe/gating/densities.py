"""1-D densities of one marker's events and the positions read from them: peaks, valleys
between two populations, a shoulder or density turn where a minority has no peak of its own,
the end of the events. Which of them is a threshold's cut without a valley, measured from an
always-present population, is cytopipe.gating.anchors' to decide.

Why a module of its own: every threshold of the template is placed from these (cytopipe.gating
.autogate), and they are tested on their own; positions are on the gating scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cytopipe.gating.placement import MIN_EVENTS, MIN_PEAK_EVENTS


@dataclass(frozen=True)
class _Density:
    centers: np.ndarray
    smooth: np.ndarray  # smoothed counts per bin
    below: np.ndarray  # events below each bin center
    n: int

    def at(self, x: float) -> float:
        return float(np.interp(x, self.centers, self.smooth))


_EFFECTIVE_BINS = 2.0 * np.sqrt(np.pi) * 4.0  # Gaussian kernel of SD 4 bins: Poisson variance / 14


def excess_z(high, low):
    """How many Poisson SDs smoothed counts `high` lie above `low` (numbers or arrays)."""
    return (high - low) / np.sqrt(np.maximum(high + low, 1e-9) / _EFFECTIVE_BINS)


def density(
    x: np.ndarray, bandwidth: float, lo: float, hi: float, unpiled: bool = False
) -> _Density:
    """Gaussian-smoothed histogram on [lo, hi] (bins of bandwidth / 4): O(n), no per-event KDE.

    `unpiled`: a pile of ties on the lowest value (`floor_pile`) stays out of the histogram and
    counts below the bins above it: events under the range (a log amplifier's channel 0, a
    display-scale export clipped at 0) are not a population there.
    """
    step = bandwidth / 4.0
    n_bins = max(int(np.ceil((hi - lo) / step)), 8)
    floor, piled = floor_pile(x, bandwidth) if unpiled else (0.0, 0)
    if piled:
        x = x[x > floor]
    counts, edges = np.histogram(x, bins=n_bins, range=(lo, hi))
    k = np.arange(-16, 17)
    kernel = np.exp(-0.5 * (k / 4.0) ** 2)
    # "full" then centred: equals mode="same", also when there are fewer bins than the kernel
    smooth = np.convolve(counts.astype(float), kernel / kernel.sum())[16 : 16 + n_bins]
    centers = 0.5 * (edges[:-1] + edges[1:])
    below = np.count_nonzero(x < lo) + np.cumsum(counts) - 0.5 * counts
    if piled:
        below = below + piled * (centers > floor)
    return _Density(centers, smooth, below, int(x.size) + piled)


def floor_pile(x: np.ndarray, bandwidth: float) -> tuple[float, int]:
    """(the lowest value, the events tied on it) where they are a pile (at least 10 events, not
    all of them, and more than the whole `bandwidth` above them holds), else (that value, 0).
    FACSCalibur-era log amplifiers put every event under their range on channel 0 (5-32% of
    each FlowCAP-I GvHD stain's events), and so does an export of display-scale values clipped
    at 0 (45 of a Lyoplate variant's 11,171 B cells, IgD-negative ones: a peak the IgD cut took
    for the IgD- population). Unlike `preprocess.clipped.clipped_floor` (raw values, a floor at
    0 or above, spread back by the mirror), this reads the gating scale and only keeps the pile
    out of a density."""
    if x.size == 0:
        return 0.0, 0
    floor = float(np.min(x))
    n = int(np.count_nonzero(x == floor))
    if not 10 <= n < x.size:  # a few ties, or nothing but them: no second pass
        return floor, 0
    above = int(np.count_nonzero((x > floor) & (x <= floor + bandwidth)))
    return floor, (n if n > above else 0)


def off_floor_piles(bandwidth: float, *dims: np.ndarray) -> tuple[np.ndarray, ...]:
    """`dims` (one array per dim, the same events) without the events on any dim's floor pile
    (`floor_pile`). A pile is no population, but a mixture gives it a component of its own: a
    display export clipped at 0 piled 5% of a Lyoplate variant's naive B cells on CD24 0, and
    the line from that pile to the naive B cells crossed CD38 below their peak, a cut that took
    the naive majority for transitional B cells (real_fuzz seed 294108511: 2,332 for openCyto's
    967)."""
    keep = np.ones(len(dims[0]), dtype=bool)
    for x in dims:
        lowest, piled = floor_pile(x, bandwidth)
        if piled:
            keep &= x > lowest
    return tuple(x[keep] for x in dims)


def density_range(x: np.ndarray, lo: float, hi: float, bandwidth: float) -> tuple[float, float]:
    """Histogram range: the data's, widened to the search limits, bounded against outliers."""
    span = max(hi - lo, 0.5)
    dlo, dhi = float(np.min(x)), float(np.max(x))
    return max(min(dlo, lo), lo - span) - 4 * bandwidth, min(
        max(dhi, hi), hi + span
    ) + 4 * bandwidth


LOWEST_PEAK_HEIGHT = 0.2  # find_peak(how="lowest"): a peak this high, relative to the highest


def find_peak(
    x: np.ndarray, window: Sequence[float], bandwidth: float, how: str = "mode"
) -> tuple[float, float] | None:
    """Centre of the peak of `x` inside `window` and a robust SD, or None without events there.

    `how="median"` (anchors: a broad negative population, noisy mode) takes the median of the
    window's events; "mode" the maximum of the smoothed density; "lowest" the lowest local
    maximum at least LOWEST_PEAK_HEIGHT of the highest (a viability dye's negative cells are
    the dimmest population, not always the largest: autofluorescent monocytes sit a little
    brighter and can outnumber the live lymphocytes, as in the Lyoplate file's myeloid-rich
    variant, and a thawed sample can be mostly dead). The SD comes from the events on the lower
    side only (scaled median distance): that side of a negative peak is never contaminated by
    the positive population.
    """
    a, b = float(window[0]), float(window[1])
    inside = x[(x >= a) & (x <= b)]
    if inside.size < MIN_EVENTS:
        return None
    if how == "median":
        peak = float(np.median(inside))
    else:
        d = density(inside, bandwidth, a - 4 * bandwidth, b + 4 * bandwidth)
        sel = (d.centers >= a) & (d.centers <= b)
        s, centers = d.smooth[sel], d.centers[sel]
        peak = float(centers[np.argmax(s)])
        if how == "lowest":
            tops = (
                (s[1:-1] >= s[:-2]) & (s[1:-1] > s[2:]) & (s[1:-1] >= LOWEST_PEAK_HEIGHT * s.max())
            )
            if tops.any():
                peak = float(centers[np.flatnonzero(tops)[0] + 1])
    low = inside[inside < peak]
    sd = 1.4826 * float(np.median(peak - low)) if low.size >= 10 else bandwidth
    return peak, max(sd, bandwidth / 2)


BALANCE_TIE = 0.1  # find_valley(balanced=True): minima this much shallower than the deepest compete


def find_valley(
    d: _Density,
    lo: float,
    hi: float,
    min_side: int,
    min_depth: float,
    min_z: float = 3.0,
    first: bool = False,
    balanced: bool = False,
    bright_minority: float | None = None,
) -> tuple[float, float] | None:
    """Deepest density minimum in [lo, hi] with a peak of at least `min_side` events on each
    side; (position, depth 0-1) or None. Depth = 1 - valley / lower of the two flanking peaks.

    A dip must also be `min_z` Poisson SDs deep, so a few hundred events of one population do
    not split at a noise wiggle (a smoothed bin holds about 14 bins' worth of events).
    `first`: take the lowest qualifying valley, not the deepest (CD19: the dip between NK cells
    and CD19-dim plasmablasts, not the one between plasmablasts and bright B cells).
    `bright_minority`: where the deepest valley has fewer events above it than this share of
    those above the deepest qualifying valley below it, that one: the deepest parts a bright
    few from the positives (a panel without CD20: its B cells hold the CD27++ plasmablasts, and
    the CD27 cut went above the memory B cells, switched memory 0 in three of 42 generated
    files). Unlike `first`, a shallow dip in the negatives' wide flank below a valley with most
    positives above it stays unused (CD20 x2.2 spilling into CD27 on the real Lyoplate file).
    `balanced`: where both sides are always many (T cells and NK/B cells, CD8+ and CD8- T
    cells), of the local minima within BALANCE_TIE of the deepest point, the one with the most
    events on its smaller side: a few dozen negatives below a spread of dim events are not the
    other population (FlowCAP-I GvHD file 9 at 679 lymphocytes: the dip under 50 CD3- events,
    depth 0.63, beat the one between 232 CD3-dim and 446 T cells, depth 0.58: T cells 0.84),
    nor is the window's edge on the slope up from a pile below it (file 2 with a tenth of its
    CD8 T cells: the edge at 0.16, depth 0.60, beat the CD8 valley at 0.51, depth 0.57, and
    1,208 T cells were called CD8+ for 79). Without a local minimum that near, the deepest
    point stands, the window's edge included: the nearest it comes to a dip just outside. So
    a balanced search reads a density `unpiled`: the dip above a log amplifier's floor pile
    parts no populations, and the edge on the slope up from it was the cut (file 5 with CD8
    +0.12 decades, 30% of its CD8 T cells: the CD4 T cells' CD8 spreads from their 200 events
    on the floor to 0.35, the window starts at 0.15, and 1,385 T cells were called CD8+ for
    93). Not for the other valleys: where a pile is much of the lower population's peak (CD8
    T cells' CD4) the valley above it went shallow (GvHD fuzz: CD4 T cells 0.81 -> 0.03).

    A flat empty stretch (all depths ~1) is cut in its middle, so a tiny positive population
    is not clipped and the negative tail is not touched."""
    left = np.maximum.accumulate(d.smooth)
    right = np.maximum.accumulate(d.smooth[::-1])[::-1]
    ref = np.minimum(left, right)
    depth = np.where(ref > 0, 1.0 - d.smooth / np.where(ref > 0, ref, 1.0), 0.0)
    above = d.n - d.below
    z = excess_z(ref, d.smooth)
    ok = (d.centers >= lo) & (d.centers <= hi) & (d.below >= min_side) & (above >= min_side)
    ok &= z >= min_z
    if not ok.any():
        return None
    if first:  # the valley nearest the low end: the first dip above the negative peak
        good = np.flatnonzero(ok & (depth >= min_depth))
        if good.size == 0:
            return None
        run = good[: int(np.argmax(np.diff(np.append(good, good[-1] + 2)) > 1)) + 1]
        ok = np.zeros_like(ok)
        ok[run] = True
    best = float(depth[ok].max())
    if best < min_depth:
        return None
    i = int(np.flatnonzero(ok & (depth == best))[0])
    if bright_minority is not None:
        good = ok & (depth >= min_depth)
        start = i  # where the deepest valley's run of qualifying bins begins
        while start > 0 and good[start - 1]:
            start -= 1
        lower = np.flatnonzero(good[:start])
        if lower.size:
            j = int(lower[np.argmax(depth[lower])])
            if above[j] and above[i] < bright_minority * above[j]:
                i, best = j, float(depth[j])
    if balanced:
        s = d.smooth
        minima = ok & (depth >= max(best - BALANCE_TIE, min_depth))
        minima[1:-1] &= (s[1:-1] <= s[:-2]) & (s[1:-1] <= s[2:])
        if minima.any():
            smaller = np.minimum(d.below, above)
            i = int(np.flatnonzero(minima)[np.argmax(smaller[minima])])
            best = float(depth[i])
    near = ok & (depth >= best - 0.02)
    j, k = i, i  # the contiguous run of near-best bins around the deepest one
    while j > 0 and near[j - 1]:
        j -= 1
    while k < len(near) - 1 and near[k + 1]:
        k += 1
    return float(0.5 * (d.centers[j] + d.centers[k])), best


# a valley this close to where 0 falls on a logicle scale, with the density's highest point
# below it further below 0 than this, parts one negative population's two halves
ZERO_BAND = 0.05
# ... whose upper half peaks near the lower one's mirror about 0: within ZERO_BAND of it, or
# within this share of the lower half's distance below 0 beyond it (photon noise, its variance
# growing with the signal, widens the upper half: real_fuzz seed 259807877, CD27 x1.93 with
# noise, the B cells' CD27- humps at -0.12 and 0.41 about 0 at 0.11, mirror 0.34; the dip at
# 0.17 was the cut, unswitched memory 1,274 for openCyto's 153)
MIRROR_SLACK = 0.5
# ... and a dip above 0 with fewer events between 0 and it than this share of those below 0
# lies below about the negatives' 90% quantile: a wiggle in their upper half (a PBMC file's
# 914 B cells, CD27 at gain 0.53 spread by spillover: the dip at 0.23 between their humps at
# -0.11 and 0.32 was the cut, not the valley at 0.45 above them; unswitched memory 0.49)
UPPER_HALF_SHARE = 0.8


def split_negatives(d: _Density, valley: float, zero: float | None) -> float | None:
    """Where the search for a real valley starts when `valley` parts the two humps a logicle
    scale makes of negatives wider than its linear region (the upper hump's peak, near the
    mirror of the lower one about 0); None where it does not. Compensated negatives centre
    on 0, so no population's peak lies below 0 unless the scale split it: a dip at 0 with a
    hump below it is that split, not the edge of a population. The channel's own test
    (`preprocess.sample.logicle_w`) widens W where the whole channel splits; a subset whose
    negatives are wider than the rest (spread by a bright stain's spillover) splits where the
    undispersed events (debris, CD45- events) fill the channel's dip at 0. A cut at a search
    window's edge on the slope up from that dip is read at the dip's bottom, downhill from it
    (the T cells' CD27 with noise of SD 211: the window starts at 0.20, the dip is at 0.15,
    0 at 0.11, and the edge took 1,700 of 3,360 T cells as CD27-)."""
    if zero is None:
        return None
    valley = _downhill(d, valley)
    at_zero = abs(valley - zero) <= ZERO_BAND
    if not at_zero and valley < zero:
        return None
    lower = d.centers <= min(valley, zero + ZERO_BAND)
    if not lower.any():
        return None
    hump = float(d.centers[lower][int(np.argmax(d.smooth[lower]))])
    if hump >= zero - ZERO_BAND:
        return None
    mirror = 2.0 * zero - hump + max(ZERO_BAND, MIRROR_SLACK * (zero - hump))
    upper = (d.centers > valley) & (d.centers <= mirror)
    if not upper.any():
        return None
    top = int(np.flatnonzero(upper)[int(np.argmax(d.smooth[upper]))])
    if not at_zero:  # a dip inside the upper half: fewer events between 0 and it than below
        # 0 (the negatives are symmetric about 0), under an upper hump that is a peak, not the
        # slope up to the positives
        below_zero = float(np.interp(zero, d.centers, d.below))
        between = float(np.interp(valley, d.centers, d.below)) - below_zero
        inside = between < UPPER_HALF_SHARE * below_zero
        if not inside or top + 1 >= d.smooth.size or d.smooth[top + 1] >= d.smooth[top]:
            return None
    return float(d.centers[top])


def split_note(dip: float, zero: float, beyond: float) -> str:
    return (f"the dip at {dip:.2f} lies in the negatives the scale split in two "
            f"(0 at {zero:.2f}): searched from {beyond:.2f}")  # fmt: skip


def valley_under(d: _Density, lo: float, cut: float, needs: tuple) -> tuple[float, float] | None:
    """A valley in [lo, cut] (`find_valley`'s `needs`) from which the density climbs without
    turning until beyond `cut`: the positives rise through a reference population's cut
    (`not_below`) from a valley just below it. Without CD3, the CD19- lymphocytes' own CD27
    valley (0.47) lay just above the B cells' (0.44); the search above it found none, and the
    last resort went through the memory B cells (unswitched memory 0.58; raised to 0.47:
    0.83). Not a dip with a hump of its own between it and `cut` (the upper half of
    over-compensated naive B cells: 0.21 below a hump at 0.34 and a cut at 0.35)."""
    found = find_valley(d, lo, cut, *needs)
    if found is None:
        return None
    i = int(np.clip(np.searchsorted(d.centers, found[0]), 0, d.centers.size - 1))
    while i < d.smooth.size - 1 and d.smooth[i + 1] >= d.smooth[i]:
        i += 1
    return found if d.centers[i] > cut else None


def valley_needs(params: Mapping, n: int) -> tuple[int, float, float]:
    """(min_side, min_depth, min_z) a threshold's valley search asks of a dip on `n` events
    (`find_valley`): its parameters or their defaults, in one place for the search and for
    `populations_shown`."""
    share = int(np.ceil(float(params.get("min_share", 0)) * n))
    min_side = max(int(params.get("min_side", 10)), share)
    return min_side, float(params.get("min_depth", 0.3)), float(params.get("min_z", 3.0))


def populations_shown(
    d: _Density, lo: float, hi: float, min_side: int, min_depth: float, min_z: float
) -> int:
    """How many populations a marker whose cut found a valley shows in [lo, hi]: 2, or 1 + its
    valleys where more than one stands out (a window's edge can be a cut), each as deep
    (`min_depth`) and as significant (`min_z`) as a cut's against the peak between it and the
    next, with `min_side` events beyond each. Why: a threshold the template expects to part
    two populations (`expect: 2`, CD4 on T cells) that finds a third says the sample is
    unlike it, whichever valley was cut. A gvhd_fuzz file with a third of its T cells (seed
    830809204, file 2) showed CD4- T cells, 35 CD4-dim events the experts did not call T
    cells, and 81 CD4 T cells, parted at 0.26 and 0.50; the cut at 0.26 counted the dim ones
    as CD4 T cells (F1 0.85), nothing said."""
    s, above = d.smooth, d.n - d.below
    inside = (d.centers >= lo) & (d.centers <= hi) & (d.below >= min_side) & (above >= min_side)
    minima = np.flatnonzero(inside[1:-1] & (s[1:-1] <= s[:-2]) & (s[1:-1] < s[2:])) + 1
    kept: list[int] = []  # dips parted from the previous one by a peak that stands out of both
    for i in minima:
        peaks = (s[: i + 1].max() if not kept else s[kept[-1] : i + 1].max(), s[i:].max())
        if 1 - s[i] / min(peaks) < min_depth or excess_z(min(peaks), s[i]) < min_z:
            continue
        k = kept[-1] if kept else None
        if k is not None and (1 - s[k] / peaks[0] < min_depth or excess_z(peaks[0], s[k]) < min_z):
            kept[-1] = i if s[i] < s[k] else k  # no peak between them: one valley, the deeper
        else:
            kept.append(int(i))
    return max(2, 1 + len(kept))


def _downhill(d: _Density, at: float) -> float:
    """The bottom of the dip `at` lies in or on the slope of: walked down the smoothed density."""
    i = int(np.clip(np.searchsorted(d.centers, at), 0, d.centers.size - 1))
    s = d.smooth
    while i > 0 and s[i - 1] < s[i]:
        i -= 1
    while i < s.size - 1 and s[i + 1] < s[i]:
        i += 1
    return float(d.centers[i])


# a negative minority's peak with most events above it (`anchors.negative_minority`): those
# events already say a second population lies above, so its dip needs fewer Poisson SDs (1,267
# B cells, IgD dip 2.8 SDs: naive 0.77 -> 0.92, tests/test_real_gating.py)
MINORITY_DIP_Z = 2.5


def significant_dip(
    d: _Density, lo: float, hi: float, min_side: int, min_z: float = 3.0
) -> tuple[float, float] | None:
    """A dip in [lo, hi] at least `min_z` Poisson SDs deep, however shallow, as `find_valley`'s
    (position, depth), else None: two modes where a second population is already expected,
    too shallow for a valley search's depth (`dip_before_turn`; a negative minority's IgD
    peak, `anchors.negative_minority`), or within the SD the search keeps off the majority
    peak, before a last resort k SDs out (a memory-rich file's IgD- hump at 0.43, 0.13 below
    the naive peak: the dip at 0.48, where naive - 2 SD cut through that hump)."""
    return find_valley(d, lo, hi, min_side, 0.0, min_z) if lo < hi else None


def dip_before_turn(
    d: _Density,
    x: np.ndarray,
    span: tuple[float, float],
    turn: float,
    peak: tuple[float, float],
    p: Mapping | None,
    min_side: int,
    floor: float,
) -> tuple[tuple[float, float] | None, str]:
    """(dip, astray): a `significant_dip` in `span` between the majority `peak` and a density
    `turn` beyond it, as (position, depth), else None. Where the majority's flank
    falls into a dip and rises again, a second population has its own hump there, and the
    turn beyond it lies in that population's far tail, not between the two: a memory-rich
    file (a tenth of its naive B cells) with IgD- B cells at 0.38 beside IgD+ ones at 0.56 had
    a dip at 0.46 (depth 0.16: too shallow for the valley search's 0.3) and its turn at 0.20,
    below the IgD- B cells (switched memory 0.20, double negative 0.15; at the dip 0.86, 0.84).
    Elsewhere (real_gating --stress, real_fuzz and random_accuracy draws) the subsets it moved
    changed by at most 0.011 F1.

    `astray`: why the majority is not the anchor population (`misplaced_majority`; `p`: the
    threshold's parameters, None where the scale split the negatives in two and the peak is
    one half's), where the turn, on that population's flank, lies beyond the majority: the
    dip is then searched between the majority and that population (from the peak to the
    end of the search window on its side). A file with 5% of its naive B cells had its IgD-
    B cells' peak (0.39) highest, 69% of the B cells above it, and the turn on the IgD+ ones'
    flank at 0.24, below the IgD- peak: every IgD- B cell counted IgD+ (switched memory 0.20,
    double negative 0.11); the dip between the two peaks is at 0.46 (0.84, 0.84; real_fuzz
    "session 54c" 666994415). That search starts no lower than `floor` (the threshold's own:
    its `not_below` population's valley): below the T cells' CD27 valley a dip lies among
    negatives, such as between two humps of naive B cells whose upper one is the highest
    (real_fuzz "session 56x" 696034395: a dip at 0.20 where the turn, 0.52, was right; naive
    0.85 -> 0.97, unswitched memory 0.29 -> 0.82)."""
    anchor = (p or {}).get("anchor") or {}
    below = anchor.get("side", "above") == "below"
    astray = misplaced_majority(x, peak, anchor) if (turn < peak[0]) == below else ""
    if astray:
        search = [float(v) for v in p["search"]]
        lo, hi = (peak[0], search[1]) if below else (max(search[0], floor), peak[0])
    else:
        a, b = sorted((turn, peak[0]))
        lo, hi = max(a, span[0]), min(b, span[1])
    return significant_dip(d, lo, hi, min_side), astray


OTHER_SIDE_SHARE = 0.05  # a valley beyond the majority peak parts two populations of >= 5%
OTHER_SIDE_DEPTH = 0.2  # ... dipping 20% below the lower of them (and z >= 3)


def far_side_valley(d: _Density, n: int, peak: float, search, p: Mapping, look_above: bool):
    """The valley on the far side of the sample's majority `peak`. The template expects the
    majority on one side of the cut (IgD+ naive B cells above the IgD cut, CD38-moderate
    naive B cells below the transitional cut), but in a memory-rich sample the majority is the
    IgD- B cells, and early after CAR-T the transitional ones: the cut is then on the other
    side of the majority peak. Searched from the peak on (the two overlap), each side >=
    OTHER_SIDE_SHARE of the `n` events, OTHER_SIDE_DEPTH deep, and as significant (min_z)."""
    lo, hi = (peak, search[1]) if look_above else (search[0], peak)
    if lo >= hi:
        return None
    min_side = max(int(p.get("min_side", 10)), int(np.ceil(OTHER_SIDE_SHARE * n)))
    return find_valley(d, lo, hi, min_side, OTHER_SIDE_DEPTH, float(p.get("min_z", 3.0)))


PEAK_FULL_EVENTS = 200  # below this a majority's density is smoothed wider


def widened(bandwidth: float, n: int, full: int) -> float:
    """`bandwidth` for `n` events where it suits `full`: wider as n^-1/5 below (a kernel
    density's rate), never narrower above."""
    return bandwidth * max(1.0, (full / n) ** 0.2)


def majority_peak(
    x: np.ndarray, bandwidth: float, full: int = PEAK_FULL_EVENTS, unpiled: bool = False
) -> tuple[float, float] | None:
    """The sample's own majority peak (the density mode) and its SD from the narrower of its two
    half-widths at half maximum: no search window to tune.

    On real files the minority often shows as a shoulder, not a second peak (IgD- memory B
    cells beside the IgD+ naive majority), which widens the side facing it; a negative
    population on the logicle scale is also wider below its peak (the linear region). The
    narrower side is the majority's own shape. Below `full` (PEAK_FULL_EVENTS) events the bandwidth
    widens (as n^-1/5, a kernel density's rate); None below MIN_PEAK_EVENTS events (then the
    caller's quantile rule applies).

    `unpiled`: a pile of ties on the lowest value (`floor_pile`) that holds fewer events than
    lie within 2 SDs of the peak above it is the clipped lower tail of that population, not
    the majority: a display export's 2,001 naive B cells on CD27's 0 (of 11,394, noise
    widening the rest) out-peaked the naive B cells at 0.31, and the CD27 search and its
    limits started from 0.01 (a 30% pile of that kind put the last resort at 0.07, every
    naive B cell CD27+). A pile larger than that is the population itself, under the range
    (a log amplifier's channel 0 under CD4- T cells), and stays the peak."""
    peak = _mode(x, bandwidth, full)
    floor, piled = floor_pile(x, bandwidth) if unpiled and peak is not None else (0.0, 0)
    if piled and peak[0] <= floor + bandwidth:  # the pile is the peak
        above = _mode(x[x > floor], bandwidth, full)
        if above is not None and np.count_nonzero(np.abs(x - above[0]) <= 2 * above[1]) > piled:
            return above
    return peak


def _mode(x: np.ndarray, bandwidth: float, full: int) -> tuple[float, float] | None:
    """`majority_peak` as the density shows it, a floor pile included."""
    if x.size < MIN_PEAK_EVENTS:
        return None
    bandwidth = widened(bandwidth, x.size, full)
    d = whole_density(x, bandwidth)
    i = int(np.argmax(d.smooth))
    widths = [w for w in (half_width(d, i, -1.0), half_width(d, i, 1.0)) if w is not None]
    if not widths:
        return None
    return float(d.centers[i]), max(min(widths) / HALF_WIDTH_PER_SD, bandwidth / 2)


HALF_WIDTH_PER_SD = 1.1774  # a Gaussian's half-width at half maximum, in SDs: sqrt(2 ln 2)


def whole_density(x: np.ndarray, bandwidth: float) -> _Density:
    """The density over the events' 0.1-99.9% range and 4 bandwidths beyond: a peak's whole
    shape, its flanks included."""
    lo, hi = np.quantile(x, [0.001, 0.999])
    return density(x, bandwidth, float(lo) - 4 * bandwidth, float(hi) + 4 * bandwidth)


def half_width(d: _Density, i: int, sign: float, at: float | None = None) -> float | None:
    """How far from `at` (default: bin `i`'s centre) the density first falls below half its
    height at bin `i`, on the `sign` side; None where it does not within the density."""
    below = d.smooth < d.smooth[i] / 2
    side = np.flatnonzero(below[i:] if sign > 0 else below[:i])
    if not side.size:
        return None
    at = d.centers[i] if at is None else at
    return float(d.centers[i + side[0]] - at if sign > 0 else at - d.centers[side[-1]])


MISPLACED_SHARE = 0.6  # of the events beyond the majority peak, on the side the cut keeps


def valley_below_start(
    d: _Density, x: np.ndarray, bandwidth: float, floor: float, start: float, needs, zero
) -> tuple[float, float] | None:
    """A valley (`find_valley`'s `needs`) between the sample's majority peak and a search start
    that an anchor window's quantile set, where none lies above that start: positives of a dim
    stain fill the window and lift its reach to their own peak (CD19 x0.33 with noise in a
    panel without CD3: the start 0.45 at the B cells' peak, 0.47, and the cut where the events
    run out took 12 of 11,028). Not between the negatives' two halves (`split_negatives`)."""
    peak = majority_peak(x, bandwidth)
    if peak is None or max(peak[0], floor) >= start:
        return None
    found = find_valley(d, max(peak[0], floor), start, *needs)
    return None if found is None or split_negatives(d, found[0], zero) is not None else found


def misplaced_majority(x: np.ndarray, peak: tuple[float, float] | None, anchor: Mapping) -> str:
    """Why the sample's majority peak is not the population a last-resort cut assumes, or
    '': that cut lies k SDs beyond the peak (IgD: below the IgD+ naive B cells' peak), so the
    peak must be the majority's; where more than MISPLACED_SHARE of the events lie on its
    other side, it is a minority's narrow peak at the edge of a broader majority. A
    memory-rich file at a dim fluorescence (5% of its naive B cells, 784 B cells): the IgD-
    memory B cells' peak (0.32) was the highest, 68% of the B cells lay above it, and its
    - 2 SD (0.21) called every IgD- B cell IgD+ (switched memory 0.20, double negative 0.11,
    nothing said). Two populations by BIC then place the cut. Without an anchor (CD38 among
    naive and transitional B cells) the last resort goes k SDs below such a peak instead: the
    positives' (a small file early in reconstitution, 60 transitional B cells in a narrow
    CD38 peak above 59 naive ones spread below it: its + 2 SD cut above them all, F1 0.06)."""
    if peak is None or "fallback_sd" not in anchor:
        return ""
    below = anchor.get("side", "above") == "below"
    kept = float(np.mean(x > peak[0])) if below else float(np.mean(x < peak[0]))
    if kept <= MISPLACED_SHARE:
        return ""
    side = "above" if below else "below"
    return (f"{kept:.0%} of its events lie {side} its majority peak {peak[0]:.2f}: a "
            f"minority's peak, not the majority's the template expects")  # fmt: skip


def support_end(x: np.ndarray, bandwidth: float, start: float) -> float:
    """Where the events above `start` run out: the first point beyond which the smoothed
    density holds less than one event per bandwidth.

    The cut without a valley or shoulder, when a positive population may be absent: in
    aplasia a handful of B cells sit well above the NK cells, whose CD19 tail a spillover of
    CD38 (bright on NK cells) can spread far above their quantiles."""
    top = float(np.max(x))
    if start >= top:  # no event above the start (the anchor's level beyond them all)
        return start
    d = density(x, bandwidth, start, top + 4 * bandwidth)
    per_bandwidth = d.smooth * 4  # bins are a quarter bandwidth wide
    empty = np.flatnonzero((d.centers >= start) & (per_bandwidth < 1.0))
    return float(d.centers[empty[0]]) if empty.size else float(np.max(x))


SHOULDER_Z = 3.0  # the log density's turn must be this many Poisson SDs (conservative: the
# smoothed points compared are correlated, which this SD ignores)


def _log_turn(x: np.ndarray, bandwidth: float):
    """The smoothed log density's second difference one bandwidth apart, in Poisson SDs: < 0
    where it falls ever faster (one population's tail), > 0 where its fall slows (another
    population begins). Returns (points, z, density there, events above, peak position)."""
    d = density(x, bandwidth, float(np.min(x)) - 4 * bandwidth, float(np.max(x)) + 4 * bandwidth)
    step = 4  # one bandwidth between the points compared
    c = d.smooth[::step]
    centers = d.centers[::step]
    logd = np.log(np.maximum(c, 1e-9))
    var = 1.0 / (np.maximum(c, 1e-9) * _EFFECTIVE_BINS)  # Poisson variance of a log density
    turn = logd[2:] - 2 * logd[1:-1] + logd[:-2]
    z = turn / np.sqrt(var[2:] + 4 * var[1:-1] + var[:-2])
    mid = centers[1:-1]
    above = d.n - np.interp(mid, d.centers, d.below)
    return mid, z, c[1:-1], above, centers[int(np.argmax(c))]


def find_shoulder(x: np.ndarray, bandwidth: float, start: float) -> float | None:
    """A minority population showing as a shoulder on the majority's upper flank, no valley
    between: where the log density, falling from the majority peak, turns convex (its fall
    slows because another population begins), the most significant such turn above `start`
    with at least MIN_EVENTS events beyond it; None when the flank falls like one population.

    A tail of one population (a Gaussian, or spillover spread) has a log density that falls
    ever faster: concave. Dim CD19 B cells beside the NK cells (100715.fcs) do not."""
    mid, z, c, above, peak = _log_turn(x, bandwidth)
    ok = (mid > max(start, peak)) & (z >= SHOULDER_Z) & (above >= MIN_EVENTS) & (c >= 5)
    if not ok.any():
        return None
    return float(mid[np.flatnonzero(ok)[np.argmax(z[ok])]])


WEAK_TURN_Z = 1.0  # summed z of the convex stretch: weaker than a shoulder, more than a wiggle
TURN_SMOOTHING = 1.5  # x the threshold's bandwidth: a weak turn is read on a smoother density
# ... and on fewer events than this smoother still, as n^-1/5 (Scott's rule): with a tenth of
# the Lyoplate file (1,200 B cells) the CD27 turn was lost in the noise (unswitched 0.75 -> 0.82)
TURN_FULL_EVENTS = 10_000


def find_turn(x: np.ndarray, bandwidth: float, start: float) -> float | None:
    """Where the majority's upper flank stops falling like one population, too weakly for a
    shoulder: the centre (z-weighted) of the convex stretch of the log density above `start`
    with the largest summed z (>= WEAK_TURN_Z), None without one.

    The log density of two overlapping populations is most convex where both are equally
    likely (the slope changes from one's to the other's there), so the stretch's centre is
    the equal-posterior cut without fitting a shape to either. On the real Lyoplate file it
    sits within 0.01-0.03 of openCyto's density cuts on IgD and CD27 at every detector gain,
    where the majority peak + 2.5 SD was 0.01-0.07 off."""
    turns = majority_turn(x, bandwidth, start)
    return None if turns is None else turns[1]


def majority_turn(x: np.ndarray, bandwidth: float, start: float) -> tuple[float, float] | None:
    """(the majority's density turn, the strongest: `find_turn`), None without a turn. Of the
    convex stretches above `start`, the majority's is the one past which the density falls
    least over the next two bandwidths: where another population begins its body holds the
    density up, past a bend in the majority's own tail it keeps falling. Real_fuzz "session
    52b" seed 294401008 (6% of its B cells CD27+, every stain at 0.45): the strongest
    stretch (z 2.3) lay at 0.26 in the naive B cells' long tail, the log density falling 0.52
    over the next two bandwidths; past the next (z 2.2, 0.40) it stayed level; unswitched
    memory 0.41 -> 0.75. "Session 51" seed 409296085 (noise SD 278): the strongest IgD stretch
    at 0.17 where the IgD- B cells' lower flank meets the noise (falling 0.52), the majority's
    at 0.44 (0.09): switched memory 0.17 -> 0.84. The strongest is kept beside it: a dip
    before it is still the cut where there is one (`dip_before_turn`: "session 43" seed
    818495628, a dip at 0.46 below the majority's stretch, 0.48). Of the 5 CD27/IgD turns with
    two stretches in 600 real_fuzz files, the least-falling was the nearer to the best cut
    (from openCyto's labels) in each, the strongest in 3, the first in 1."""
    mid, z, c, above, peak = _log_turn(x, bandwidth)
    ok = (mid > max(start, peak)) & (z > 0) & (above >= MIN_EVENTS) & (c >= 5)
    idx = np.flatnonzero(ok)
    runs = [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)  # convex stretches
            if r.size and z[r].sum() >= WEAK_TURN_Z]  # fmt: skip
    if not runs:
        return None
    logc = np.log(np.maximum(c, 1e-9))
    fall = [logc[r[-1]] - logc[min(r[-1] + 2, c.size - 1)] for r in runs]  # points 1 bw apart
    majority, best = runs[int(np.argmin(fall))], max(runs, key=lambda r: z[r].sum())
    return tuple(float(np.average(mid[r], weights=z[r])) for r in (majority, best))
