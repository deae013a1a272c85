"""Where a threshold's valley search starts and where its cut falls without a valley, measured
from an always-present population of the sample (the anchor: the negatives below a positive
gate, the IgD+ naive B cells above the IgD cut): a shoulder, a density turn (kept within reach
of the majority), a population risen above the negatives, or where the events run out.

Why a module of its own: the densities (cytopipe.gating.densities) read positions from one
marker's events; this decides which of them is the cut when the sample shows no valley.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from cytopipe.gating.densities import (
    HALF_WIDTH_PER_SD,
    PEAK_FULL_EVENTS,
    ZERO_BAND,
    _Density,
    density,
    excess_z,
    find_peak,
    find_shoulder,
    half_width,
    majority_peak,
    split_negatives,
    support_end,
    whole_density,
    widened,
)
from cytopipe.gating.mixture import two_means
from cytopipe.gating.placement import LAST_RESORT_SPREAD, MIN_EVENTS, MIN_PEAK_EVENTS, Placement
from cytopipe.gating.template import ThresholdSpec
from cytopipe.gating.turns import (
    LIMIT_MAX_HEIGHT,
    LIMIT_MINORITY,
    read_turn,
    relative_height,
    turn_limit,
    unpiled,
)
from cytopipe.preprocess.robust import robust_sd


def _level(x: np.ndarray, q: float, below: bool, bandwidth: float, robust: bool) -> float:
    """How far a negative population reaches: its q quantile (1 - q below). `robust`: no
    further than its majority peak + the normal q quantile of its SD (narrower half-width),
    so a minority of other cells in it (B-T doublets among the T cells of a B-rich, T-poor
    sample: 6% of them CD19+ lifted the T cells' 95% quantile from 0.33 to 0.59, above the
    B cells) cannot raise it; for a population without them both are about equal. Never
    nearer than its median, which a minority cannot move either: a population flat rather than
    normal (negatives clipped at 0 and spread back, noise of SD 227) has its majority peak at
    one end and a narrow half-width there; the T cells' CD19 reach fell to 0.06, under their
    median 0.14, the dim B cells' own peak (0.42) was not looked for above that level, and 14
    B cells were found for 9,762. Too few events for a majority peak (under MIN_PEAK_EVENTS),
    the median and the MAD's SD stand in for them: a lymphopenic, T-poor file's 190 T cells,
    6.8% of them CD19+ (0.56-0.67), reached 0.60 and the B cells' cut went where the events run
    out, above 560 of 564 B cells. A pile on the lowest value smaller than the population above
    it is that population's clipped tail, not its peak (`majority_peak(unpiled=True)`): a
    display export's T cells, a fifth of them on CD19's 0, reached only their median (0.22),
    the search started among the CD19-dim NK cells and took 4,188 of them as B cells."""
    level = float(np.quantile(x, 1 - q if below else q))
    if not robust:
        return level
    middle = float(np.median(x))
    peak = majority_peak(x, bandwidth, unpiled=True) or (middle, float(robust_sd(x, middle)))
    reach = peak[0] + (-1.0 if below else 1.0) * NormalDist().inv_cdf(q) * peak[1]
    return max(level, min(reach, middle)) if below else min(level, max(reach, middle))


LAST_RESORT = "majority peak"  # how anchor_limits names a cut with no valley, shoulder or turn
# The last resort reads the majority peak on a density smoothed as for this many events (wider
# below, `widened`; `_steady_peak`): the mode of a few hundred flat-topped naive B cells
# wandered with the draw, and the cut with it. Over 40 draws each of 3%, 6%, 15% and 30% of
# the real Lyoplate file's B cells, agreement with openCyto's IgD gate 0.932 / 0.935 / 0.949 /
# 0.960 -> 0.957 / 0.951 / 0.959 / 0.960 on average (at 3% worst 0.80 -> 0.92), with its CD27
# gate 0.971 / 0.977 / 0.983 / 0.983 -> 0.985 / 0.986 / 0.985 / 0.984.
LAST_RESORT_FULL_EVENTS = 5000


def _steady_peak(x: np.ndarray, bandwidth: float) -> tuple[float, float] | None:
    """The majority peak on a density smoothed as for LAST_RESORT_FULL_EVENTS, its SD without
    the extra kernel variance that smoothing adds (a half-width of a smoothed density is the
    population's SD and the kernel's together): at 163 B cells the wider kernel alone moved
    the IgD cut from 0.51 to 0.41, below the double-negative B cells."""
    wide = majority_peak(x, bandwidth, LAST_RESORT_FULL_EVENTS, unpiled=True)
    if wide is None:
        return None
    return wide[0], _unsmoothed_sd(wide[1], bandwidth, x.size)


def _unsmoothed_sd(sd: float, bandwidth: float, n: int) -> float:
    """`sd` read on a density smoothed as for LAST_RESORT_FULL_EVENTS, without the kernel
    variance that adds beyond `majority_peak`'s own."""
    extra = (
        widened(bandwidth, n, LAST_RESORT_FULL_EVENTS) ** 2
        - widened(bandwidth, n, PEAK_FULL_EVENTS) ** 2
    )
    return float(np.sqrt(max(sd**2 - extra, (bandwidth / 2) ** 2)))


def _flank_sd(x: np.ndarray, bandwidth: float, peak: float, sign: float) -> float | None:
    """The SD from the majority peak's half-width at half maximum on its `sign` side (where a
    last resort's cut lies), as `_steady_peak` reads the peak. The last resort takes the
    narrower side's, the majority's own shape where a minority widens the other; but photon
    noise, its variance growing with the signal, also widens a bright peak's lower side on a
    logicle scale, and then the cut lies too close to the peak (real_fuzz seeds 259807910 and
    259807944: IgD SD about 0.06 above the naive peak, 0.085 below; double negative 1,356
    and 599 for openCyto's 765 and 220). Its count's range reaches this side's cut too."""
    d = whole_density(x, widened(bandwidth, x.size, LAST_RESORT_FULL_EVENTS))
    width = half_width(d, int(np.argmin(np.abs(d.centers - peak))), sign, at=peak)
    return None if width is None else _unsmoothed_sd(width / HALF_WIDTH_PER_SD, bandwidth, x.size)


# the upper half of a majority the scale split holds at least this share of the events below 0
# (negatives centre on 0: both halves hold half of them, photon noise or not)
SPLIT_HALF_SHARE = 0.5


def split_majority(
    x: np.ndarray, bandwidth: float, d: _Density, peak: tuple[float, float], zero: float | None
) -> tuple[float, float, float] | None:
    """(dip, peak, SD): where the sample's majority peak is the lower of the two humps a logicle
    scale makes of negatives wider than its linear region (`split_negatives`), the dip between
    the humps and the upper hump's peak and SD (its upper flank's); None where it is not. A last
    resort k SDs above the lower hump lies at 0 (the middle of the negatives): real_fuzz
    "session 68 pd" seed 728542288 (CD27 x2.03 with photon noise, 10% of the memory B cells
    kept), the B cells' CD27- humps at -0.10 and 0.35 about 0 at 0.11, no valley or turn above
    them: -0.10 + 3 SD (0.11) was raised to the T cells' valley 0.35, the upper hump's peak,
    and 394 naive B cells were unswitched memory (naive 0.862, best quadrant 0.983). The upper
    hump must be a peak holding its half of the negatives (SPLIT_HALF_SHARE), not the slope up
    to positives above over-compensated negatives."""
    if zero is None or peak[0] >= zero - ZERO_BAND:
        return None
    span = (d.centers > peak[0]) & (d.centers < 2.0 * zero - peak[0])
    if not span.any():
        return None
    dip = float(d.centers[span][int(np.argmin(d.smooth[span]))])
    top = split_negatives(d, dip, zero)
    if top is None:
        return None
    i = int(np.argmin(np.abs(d.centers - top)))
    if i + 1 >= d.smooth.size or d.smooth[i + 1] >= d.smooth[i]:
        return None
    below_zero = float(np.interp(zero, d.centers, d.below))
    upper = float(np.interp(2.0 * top - zero, d.centers, d.below)) - below_zero
    sd = _flank_sd(x, bandwidth, top, 1.0)
    if upper < SPLIT_HALF_SHARE * below_zero or sd is None:
        return None
    return dip, top, sd


def _half_normal_half_height() -> float:
    """Where a half-normal's density on log x falls to half its peak (at its SD), in its SDs:
    the root above 1 of u exp((1 - u^2) / 2) = 1/2 (1.92)."""
    u = np.linspace(1.0, 4.0, 3001)
    return float(u[int(np.argmin(np.abs(u * np.exp((1.0 - u**2) / 2.0) - 0.5)))])


HALF_NORMAL_HALF_HEIGHT = _half_normal_half_height()


def upper_half_sd(k: float) -> float:
    """How many SDs of the upper half's flank (`split_majority`) leave as few of its events
    beyond as `k` SDs leave beyond a Gaussian peak. The events above 0 of negatives centred on
    0 are a half-normal, and on a log-like scale a half-normal peaks at its SD and falls off
    fast above: its density on log x halves at 1.92 SDs (0.65 natural-log units above the
    peak), and the share k = 3 leaves (0.13%) lies 3.2 SDs out (1.16 units): 2.1 flank SDs, not
    3. At 3 the cut went into the memory B cells' shoulder (real_fuzz "session 46 no CD3" seed
    699468038: 0.64 for openCyto's 0.54, unswitched memory 0.78 -> 0.62)."""
    unit = NormalDist()
    far = unit.inv_cdf(1.0 - unit.cdf(-k) / 2.0)  # the half-normal's quantile, in its SDs
    return round(float(np.log(far) / np.log(HALF_NORMAL_HALF_HEIGHT) * HALF_WIDTH_PER_SD), 1)


class Limits(NamedTuple):
    """Where a valley may start, where the cut falls without one, and how; `unlike`: why the
    sample did not look as the template expects ('' when it did); `method`: the kind of that
    cut, measured on the sample like a valley (shoulder, turn, support: where the events run
    out, peak_sd, edge: the negatives' quantile + a margin), so a gate on a continuum (memory
    B cells) does not read as fallen back to the template."""

    start: float
    cut: float
    how: str
    unlike: str = ""
    method: str = "edge"
    unlike_if_cut: str = ""  # unlike the template only where `cut` is used (no valley found)
    near: float | None = None  # searched from when no valley lies beyond `start` (`near_sd`)
    far: float | None = None  # a turn: where a dip before it is the cut (`dip_before_turn`)
    other: float | None = None  # the turn a limit kept the cut from: as measured, as plausible
    # (a last resort: its cut by the SD of the peak's side it lies on, `_flank_sd`)
    spread: float | None = None  # a last resort's: how far its cut may move (LAST_RESORT_SPREAD)
    instead: Limits | None = None  # a turn with a population before it: the cut, unless the
    # negatives are split in two (`split_negatives`: then the lower half's peak is no majority)

    def placed(self, how: str, value: float, unlike: str) -> Placement:
        """The Placement of this cut, at `value` (held in the search window). A cut the window
        held (`within_window`) is the template's edge, not the sample's: its count's range
        reaches where the valley search started (random_accuracy "session 58b" seed 952069028,
        CD27 dim and spread: majority peak + 3 SD at 0.71 held at 0.60, above every B cell,
        read "0 unswitched memory B cells, 0-0" for 162)."""
        held = value != self.cut and (self.other is None or self.method == "peak_sd")
        other = self.start if held else self.other
        return Placement(
            self.method, 0.5, how, value, unlike=unlike, other=other, spread=self.spread
        )


# a peak above the search start, this many times the density there, is a population; so is
# one RISE_MIN times and RISE_Z Poisson SDs above it: 1,109 B cells at CD19 x0.3 with noise
# rose 1.95x (9.5 SDs) from the T cells' level, and the cut went above them all (real_fuzz
# "session 45b", seed 275632680: B cells 0.005 -> 0.887, said)
RISE, RISE_MIN, RISE_Z = 2.0, 1.5, 4.0


def risen_population(
    x: np.ndarray, bandwidth: float, start: float, negatives: float, level: float
) -> tuple[float, float] | None:
    """(cut, peak) when the positives are a population with its own peak above `start` (a
    margin above the negatives' `level`), rather than a handful beyond their tail: the cut is
    the density minimum between the negatives' centre and that peak where it is a dip, else
    `start` (the density only rises from the negatives to it, or stays flat). None: no such
    peak.

    Why: with the positives this dim (CD19 at half the gain in B-cell-rich lymphoid tissue)
    the B cells' own tail reaches below the T cells' 95% level, the only valley lies below the
    search start, and where the events run out is above every B cell (B cells 0.03).
    The rise is read from the lower density of `start` and `level`, since the margin between
    them can lie on the positives' own near flank (real_fuzz "73b pd" seed 820015561, CD19 x0.36 and noise: the peak 1.48x the density
    at the start, 3.9x that at the T cells' level; B cells 0.001 -> 0.954). Not from the least
    density below the start: in aplasia the NK cells' CD19-dim hump just above the T cells'
    level rises 3x from the dip between the two (random "session 69" seed 758120575: 805 B
    cells for 11), but not from that level."""
    top = float(np.max(x))
    if start >= top or negatives >= start or np.count_nonzero(x >= start) < MIN_PEAK_EVENTS:
        return None
    # from 4 bandwidths below the negatives' centre: smoothed from the centre, the first bins
    # held half the events they should, and that edge was the least density below the peak
    d = density(x, bandwidth, negatives - 4 * bandwidth, top + 4 * bandwidth)
    above = d.centers >= start
    at_start = float(d.smooth[np.argmax(above)])
    below = min(at_start, d.at(level))
    i = int(np.argmax(np.where(above, d.smooth, -1.0)))
    peak_d, start_d = float(d.smooth[i]), max(below, 1e-9)  # densities at the peak, below it
    rise = peak_d / start_d
    risen = rise >= RISE or (rise >= RISE_MIN and excess_z(peak_d, start_d) >= RISE_Z)
    if d.centers[i] < start + 2 * bandwidth or not risen:
        return None
    inside = d.centers >= negatives
    low = int(np.argmin(np.where(inside, d.smooth, np.inf)[: i + 1]))
    # a dip, RISE_Z Poisson SDs under the density before it: on a plateau of noise-spread
    # negatives the least density lies anywhere, and the cut stays at their level
    high = float(np.max(np.where(inside, d.smooth, 0.0)[: low + 1]))
    dip = excess_z(high, d.smooth[low]) >= RISE_Z and d.centers[low] > negatives + 2 * bandwidth
    return (float(d.centers[low]) if dip else start), float(d.centers[i])


def _risen_limits(start: float, cut: float, top: float, unlike: str, level: float) -> Limits:
    """The Limits of a positive population with its own peak (`risen_population`): unlike the
    template only where the positives reach below the negatives' level (no dip above it).
    Without any dip the cut is that `level` itself, not the margin above it the valley search
    starts from: B cells' CD19 spread by noise (SD 281, a display export) reached below the T
    cells' 95% (0.41), and the cut at 0.45 left 700 CD20+ B cells out (0.948; at 0.41, 0.974)."""
    if cut > start:  # a dip above the negatives' level, too shallow for a valley
        return Limits(start, cut, f"least density {cut:.2f} below the peak at {top:.2f}", unlike,
                      "valley")  # fmt: skip
    how = f"the positives' peak at {top:.2f} is above the negatives' level {level:.2f} with no "
    how += (f"valley beyond it: cut at {cut:.2f}, the least density below that peak"
            if cut < start else "dip below it: cut at that level")  # fmt: skip
    overlap = f"its positives reach below the negatives' level {level:.2f}: a dim stain?"
    method = "valley" if cut < start else "edge"
    return Limits(start, cut if cut < start else level, how, unlike, method, overlap)


# without events in the anchor's window, its population is taken as the sample's own majority
# peak +- this many of its SDs (the window's events: where the negatives reach, see below)
RECENTRED_SD = 2.5
MIN_WINDOW_SHARE = 0.01  # of the events cut: fewer in the anchor's window are no population


# a majority peak this many of its SDs above a reference valley is positive, as is a minority's
# peak above it with the density at the valley at most this share of its own (positive_peak);
# a positive majority leaves at least this share of the events below the valley
POSITIVE_MAJORITY_SD, MINORITY_DIP, NEGATIVE_MIN_SHARE = 2.0, 0.8, 0.15


def positive_peak(
    x: np.ndarray, peak: tuple[float, float], valley: float, minority: bool, bandwidth: float
) -> str:
    """Whether a sample's highest peak is a positive population's, by a reference population's
    valley on the same marker (the T cells' CD27 for the B cells'): "majority", "minority" or
    "" (not positive).

    A majority peak must lie clearly above that valley, and most events above it too (a
    pre-gated export whose memory B cells are the CD27 peak, the naive ones spread flat
    below); the CD27 peak of 151 B cells, nearly all naive (median 0.17), sat at 0.30 by
    chance (random_accuracy "44b" seed 140309917: naive 0.80 when taken). The CD27- B cells
    (naive, transitional, double negative) are never nearly all gone: with fewer than
    NEGATIVE_MIN_SHARE of the events below the valley, the whole population sits higher than
    the reference's negatives (a B-cell stain's spill: real_fuzz "session 50c" seed 459695844,
    CD24 x1.9, the naive B cells' CD27 peak 0.38 above the T cells' valley 0.26 with 5.7% of
    the B cells below it; called positive, naive 0.12). `minority`: most
    events lie below the peak (`misplaced_majority`); a peak that rises above the valley is
    then the positive minority's (memory-rich blood, its CD27- B cells flat below the memory
    B cells' peak, 0.47; the valley 0.37, its density 0.71 of the peak's: real_fuzz "session
    47" seed 792451951, unswitched memory 0.15 when cut above it), not a few naive B cells'
    chance peak (above: 0.86) or one at the valley (0.99, "session 46b" seed 752565872).
    `bandwidth`: the one the peak was found with."""
    if min(peak[0] - POSITIVE_MAJORITY_SD * peak[1], float(np.median(x))) > valley:
        return "majority" if np.mean(x < valley) >= NEGATIVE_MIN_SHARE else ""
    if not minority or peak[0] <= valley:
        return ""
    return "minority" if relative_height(x, bandwidth, peak[0], valley) <= MINORITY_DIP else ""


def positive_majority(
    t: ThresholdSpec,
    x: np.ndarray,
    peak: tuple[float, float] | None,
    why: str,
    minority: bool,
    place: Callable[[ThresholdSpec], Placement],
) -> Placement | None:
    """No valley, shoulder or turn, and the sample's highest peak lies above the valley its
    `not_below` population showed (CD27 on T cells) as a positive population's (a positive
    majority, or a minority's: `positive_peak`): the last resort beyond it would call them
    all negative. The cut is `fallback_sd` SDs below that peak, no lower than the reference
    valley, and the sample is unlike the template. None otherwise. `place`: threshold -> its
    placement on this sample."""
    anchor, below = t.params.get("anchor") or {}, t.params.get("not_below")
    if below is None or anchor.get("side", "above") == "below":
        return None
    ref = place(below)
    if ref.method != "valley" or peak is None:
        return None
    kind = positive_peak(x, peak, ref.value, minority, t.bandwidth)
    if not kind:
        return None
    k = float(anchor.get("fallback_sd", 3.0))
    lo, hi = (float(v) for v in t.params["search"])
    value = min(max(peak[0] - k * peak[1], ref.value, lo), hi)
    how = (f"{kind} peak {peak[0]:.2f} above {below.name}'s valley {ref.value:.2f} on "
           f"{below.on}: the {kind} is positive, cut {k:g} SD below it")  # fmt: skip
    return Placement("peak_sd", 0.5, f"{how} ({why})", value, unlike=how)


def negative_minority(
    peak: tuple[float, float],
    k: float,
    reference: float | None,
    search: tuple[float, float],
    dip: tuple[float, float] | None = None,
) -> tuple[float, str, str] | None:
    """(cut, how, method) above a sample's highest peak where that peak, below a cut the
    template expects under its majority (IgD: the IgD+ naive B cells), has most events above
    it (`misplaced_majority`): a negative minority's peak (the IgD- memory B cells of a
    memory-rich file). A significant `dip` above it (two modes, however shallow) is the cut;
    else `k` of its SDs above it, no higher than the `reference` level measured on the sample
    (the T cells' IgD reach); None without either, or where the peak is not below it.
    Real_fuzz "session 51c" seed 268194849 (5% of the naive B cells, CD20 pinned): the IgD- B
    cells' peak 0.47 under the T cells' reach 0.60, the last resort below that peak called
    nearly every IgD- B cell IgD+ (switched memory 0.12, double negative 0.05); two
    populations by BIC are tried after the dip, where they part the two. "Session 52 no cd3" seed
    836038794 (no T cells to measure the reach, noise SD 260): the IgD- peak 0.45 beside the
    IgD+ one at 0.58, a dip between them of depth 0.16 (3 Poisson SDs; valleys need 0.3):
    switched memory 0.27 -> 0.84, double negative 0.22 -> 0.83."""
    said = f"the highest peak {peak[0]:.2f}, most events above it, is a negative minority's"
    if dip is not None:
        return dip[0], f"{said}: cut at the dip above it (depth {dip[1]:.2f})", "valley"
    if reference is None or peak[0] >= reference:
        return None
    value = min(max(peak[0] + k * peak[1], search[0]), reference, search[1])
    return (
        value,
        f"{said} (below the negatives' reach {reference:.2f}): cut {k:g} SD above it",
        "peak_sd",
    )


def last_resort(peak: tuple[float, float], k: float, sign: float) -> tuple[float, str, float]:
    """(cut, how, spread): `k` SDs beyond (`sign`) the majority peak, and how far the cut may
    move either way in its count's range (LAST_RESORT_SPREAD SDs): a convention, not a
    position the sample showed."""
    how = f"{LAST_RESORT} {peak[0]:.2f} {'-' if sign < 0 else '+'} {k:g} SD"
    return peak[0] + sign * k * peak[1], how, LAST_RESORT_SPREAD * peak[1]


# `spared_cut` moves a cut only across the majority's own tail: the other events between the
# two cuts at most this many times what the majority's Gaussian puts there, + a few
TAIL_EXCESS, TAIL_SLACK = 2.0, 5


def spared_cut(
    x: np.ndarray,
    theirs: np.ndarray,
    cut: float,
    majority: tuple[float, float],
    sign: float,
    k: float,
    bandwidth: float,
) -> tuple[float, str] | None:
    """A last resort (`majority` peak and SD, +- `k` SDs on the `sign` side) moved past the
    population `theirs` (a mask of `x`) forms, where it cut through it: their peak lies on the
    majority's side of `cut` and their own edge (peak -+ `k` SDs) beyond it, they are one
    population no wider than the majority (SD), and the other events between `cut` and that
    edge are the majority's tail, not another population (TAIL_EXCESS). None where it does not
    apply.

    IgM+ IgD+ CD27+ unswitched memory B cells carry less IgD than naive ones. Where the IgD-
    B cells are too few for a valley (memory-poor blood after CAR-T), the IgD cut is the naive
    majority's peak - 2 SD, and that went through the unswitched memory B cells (random_accuracy
    "62b" seeds 838599579 and 838599607: 47 of 64, 67 of 130 found, the rest called switched
    memory); moved, 62 and 108 (F1 0.85 -> 0.98, 0.68 -> 0.91). A few dozen CD27+ B cells,
    IgD+ and IgD- ones alike, show as one population wider than the naive one (SD 0.11-0.12
    for 0.07-0.08; the unswitched memory ones above, 0.043-0.045 for 0.051-0.055): the real
    file's lymphopenic and plasmablast-rich variants at fluorescence x0.33 (real_gating
    --stress) lost every switched memory and double-negative B cell. Under photon noise the
    IgD- B cells merge into the IgD+ ones: between the cuts 1,756 CD27- B cells where the naive
    peak's tail puts 232 (real_fuzz "62 photon" seed 198440612, whose CD27+ B cells are also
    wider, SD 0.114 for 0.068: the move would take double-negative B cells as naive, 0.42 ->
    0.33); in the two files above 2 and 18 for 5 and 33. Where the CD27+ B cells are two
    populations by BIC (`mixture.two_means`), their peak must be the one nearer the majority:
    the IgD-dim unswitched memory B cells beside a few IgD- ones (random "62b" seed 838599607:
    130 and 39, unswitched memory 0.68 -> 0.91), not the IgD- switched memory B cells with the
    unswitched ones above them (real_fuzz "session 65" seed 421294472: 113 and 102, the IgD-
    peak at the cut, which moved below every IgD- B cell: switched memory 0.05, double
    negative 0.04, nothing said; not moved, 0.62 and 0.34, and its count range said)."""
    own = x[theirs]
    if own.size < MIN_EVENTS:
        return None
    middle = float(np.median(own))
    peak = majority_peak(own, bandwidth) or (middle, float(robust_sd(own, middle)))
    edge = peak[0] + sign * k * peak[1]
    if sign * (peak[0] - cut) >= 0 or sign * (edge - cut) <= 0 or peak[1] > majority[1]:
        return None  # their peak on the minority's side, their edge past the cut, or a mix
    two = two_means(own)  # two populations: spare only the one nearer the majority
    if two is not None:
        far, near = two if sign < 0 else two[::-1]
        if abs(peak[0] - far) < abs(peak[0] - near):
            return None  # their peak is the minority's own (IgD- memory B cells)
    between = (x - cut) * (x - edge) < 0
    tail = NormalDist(*majority)
    expected = np.count_nonzero(~theirs) * abs(tail.cdf(cut) - tail.cdf(edge))
    if np.count_nonzero(between & ~theirs) > TAIL_EXCESS * expected + TAIL_SLACK:
        return None  # another population of the others' lies there, not their majority's tail
    return edge, f"the peak {peak[0]:.2f} {'-' if sign < 0 else '+'} {k:g} SD"


# `_last_resort` stops at the reference peak only where at least this share of the events lies
# beyond it: a minority at the reference level puts about half of itself there. Memory-rich
# samples with a dim CD27 put 17-21% there (random seeds 35257542, 309542397, 952069028); in
# memory-poor blood after CAR-T the naive and transitional B cells' CD27 tail alone put 5.5%
# and 6.4% (598707843: 67 'unswitched memory' B cells for 9 at the peak; 35257543: 27 for 1).
REFERENCE_MINORITY = 0.10


def _last_resort(
    x: np.ndarray,
    bandwidth: float,
    peak: tuple[float, float],
    anchor: Mapping,
    sign: float,
    start: float,
    unlike: str,
    toward: float | None = None,
) -> Limits:
    """No valley, shoulder or turn to cut at: the anchor's `last_resort` from the majority
    peak as `_steady_peak` reads it, no further out than the peak of the reference population
    that carries the minority's level of the marker (`toward`: T cells' CD27 for the CD27+
    memory B cells): past it, most of the minority would lie on the majority's side, where a
    minority shows there at all (REFERENCE_MINORITY). Random "session 70b" seed 35257542
    (myeloid tissue, CD27 at 0.66 of its gain, the naive B cells' CD27 a wide plateau): the
    naive 'peak' + 3 SD lay at 0.77, past every B cell, and none of the 110 unswitched and 117
    switched memory B cells was found; at the CD27+ T cells' peak (0.34) 84 and 82. Halfway
    there, as `turn_limit` keeps a turn, took 193 transitional B cells as unswitched memory
    in seed 35257543 (1 true). A majority spread that far is unlike the template's, and said
    so (before, the window clamping the cut said it: random "44c" seed 309542397)."""
    steady = _steady_peak(x, bandwidth) or peak
    k = anchor["fallback_sd"]
    cut, how, spread = last_resort(steady, k, sign)
    if (
        toward is not None
        and sign * (toward - steady[0]) > 0
        and sign * (cut - toward) > 0
        and np.mean(sign * (x - toward) > 0) >= REFERENCE_MINORITY
    ):
        unlike = unlike or (
            f"{how} ({cut:.2f}) lies past the reference peak {toward:.2f}: the majority "
            "spreads to the minority's level"
        )
        cut, how = toward, f"{how}, kept at the reference peak {toward:.2f}"
    flank = _flank_sd(x, bandwidth, steady[0], sign)
    other = None if flank is None else steady[0] + sign * k * flank
    return Limits(start, cut, how, unlike, "peak_sd", other=other, spread=spread)


def anchor_limits(
    x: np.ndarray,
    anchor: Mapping,
    bandwidth: float,
    ref: np.ndarray | None = None,
    toward: float | None = None,
    floor: float | None = None,
) -> Limits | None:
    """Where a valley may start and where the cut falls without one, from the always-present
    population whose events lie in `anchor["peak"]` (the negative peak for a positive gate).

    Two ways to measure how far that population reaches:
    - `q`, `gap`, `fallback_q`, `fallback_gap`: its own upper quantiles plus a margin. For
      negatives on the logicle scale: their linear-region spread is wide below the peak and
      compressed above it, so an SD does not describe the upper tail (NK cells on CD19).
      With `fallback_sd` as well, the cut without a valley is the sample's own majority peak
      + k SDs (`majority_peak`): on real files the minority is often a shoulder, not a peak.
    - `min_sd`, `fallback_sd`: peak (median) + k robust SDs, for ratio-like dims.
    `ref`: the anchor population's own events (`anchor.population`, e.g. T cells for CD19:
    always present, never CD19+), measured instead of the events in the `peak` window, which
    on a sample rich in dim B cells holds the B cells themselves. `start: lowest` measures
    both and takes the nearer level: each reference can run high in its own way (CD20-dim T
    cells on the Lyoplate file; a window holding B cells in lymphoid tissue). `fallback: support`: the
    cut without a valley is where the events above the search start run out (support_end).
    An empty window where the anchor follows the sample's majority peak (`fallback_sd`,
    `min_sd`) is re-centred on that peak (+- RECENTRED_SD of its SDs) rather than giving up:
    the negatives of an under-compensated or high-background stain can sit above any window
    (the Lyoplate file without its spillover matrix: naive B cells at CD27 0.50, the window
    ends at 0.35, and the T cells' CD27 cut, the reference, called all of them memory). The
    sample is then unlike the template (`Limits.unlike`), whatever the cut.
    `floor`: a cut searched upward (a shoulder or turn beyond a negative majority) starts no
    lower than this (a reference population's own valley, `not_below`).
    Returns None without events in the window (and no majority peak to re-centre on).
    """
    below = anchor.get("side", "above") == "below"
    sign = -1.0 if below else 1.0
    if "q" in anchor:
        a, b = (float(v) for v in anchor["peak"])
        window = x[(x >= a) & (x <= b)]
        unlike = ""
        follows_peak = "fallback_sd" in anchor or "min_sd" in anchor
        peak = majority_peak(x, bandwidth, unpiled=True) if follows_peak else None
        # a population, not a handful: a CD19+ export's 36 CD19-dim events (0.3%) in the
        # negatives' window made its B cells the "majority above the negatives" and the cut
        # went where they run out (B cells 0.18)
        populated = window.size >= max(MIN_EVENTS, MIN_WINDOW_SHARE * x.size)
        if not populated and ref is None and peak is not None:
            window = x[np.abs(x - peak[0]) <= RECENTRED_SD * peak[1]]
            unlike = (
                f"its anchor population was not in [{a:g}, {b:g}] "
                f"({x.size} events, majority peak at {peak[0]:.2f} used)"
            )
            populated = True
        refs = [r for r in (ref, window if populated else None)
                if r is not None and r.size >= MIN_EVENTS]  # fmt: skip
        if not refs:
            return None
        if anchor.get("start") != "lowest":  # the anchor population, else the window
            refs = refs[:1]
        q, fq = float(anchor["q"]), float(anchor.get("fallback_q", anchor["q"]))
        pick = max if below else min  # `start: lowest`: the nearer of both negative levels
        robust = bool(anchor.get("robust"))  # the anchor population's level, not the window's
        start = pick(_level(r, q, below, bandwidth, robust and r is ref) for r in refs)
        edge = pick(_level(r, fq, below, bandwidth, robust and r is ref) for r in refs)
        gap, fgap = float(anchor.get("gap", 0.0)), float(anchor.get("fallback_gap", 0.0))
        how = f"{fq:g} quantile {edge:.2f} {'-' if below else '+'} {fgap:g}"
        if peak is not None:  # the window may hold the minority's near side: start no
            # further out than min_sd SDs of the sample's own majority peak, or of the window's
            # where the majority lies above it (memory-rich B cells: CD27+ is the majority, and
            # the CD27 search started above them; below, IgD- memory B cells as the majority,
            # the IgD+ window's own peak moved a low-confidence IgD valley 0.015 the wrong way)
            own = peak
            if not below and peak[0] > b and window.size >= MIN_PEAK_EVENTS:
                own = majority_peak(window, bandwidth) or peak
            near = own[0] + sign * float(anchor.get("min_sd", 2.0)) * own[1]
            start = min(start, near - gap) if not below else max(start, near + gap)
        if anchor.get("fallback") == "support" and not below:
            start = start + gap
            shoulder = find_shoulder(x, bandwidth, start)
            if shoulder is not None:
                return Limits(start, shoulder, f"shoulder at {shoulder:.2f}", unlike, "shoulder")
            level = start - gap
            risen = risen_population(x, bandwidth, start, float(np.median(refs[0])), level)
            if risen is not None:
                return _risen_limits(start, *risen, unlike, level)
            return Limits(
                start,
                max(support_end(x, bandwidth, start), edge + fgap),
                "end of the events",
                unlike,
                "support",
            )
        if "fallback_sd" in anchor:  # no valley: a shoulder, else the majority peak + k SD
            beyond = start + sign * gap  # searched upward: a shoulder or turn above `floor`
            if floor is not None and sign > 0:
                beyond = max(beyond, floor)
            shaped = unpiled(x, bandwidth)
            shoulder = find_shoulder(sign * shaped, bandwidth, sign * beyond)
            if shoulder is not None:
                return Limits(
                    start + sign * gap,
                    sign * shoulder,
                    f"shoulder at {sign * shoulder:.2f}",
                    unlike,
                    "shoulder",
                )
            resort = None
            if peak is not None:  # the cut without valley, shoulder or turn
                resort = _last_resort(
                    x, bandwidth, peak, anchor, sign, start + sign * gap, unlike, toward
                )
            past = None if resort is None else sign * resort.cut  # a finer turn: only past it
            turns = read_turn(sign * shaped, x.size, bandwidth, sign * beyond, past)
            if turns is not None:
                cut, how = sign * turns[0], f"density turn at {sign * turns[0]:.2f}"
                if turns[0] != turns[1]:
                    how += (
                        f" (the density falls least past it; the strongest, {sign * turns[1]:.2f})"
                    )
                most, other, instead = anchor.get("turn_max_sd"), None, None
                if most is not None and peak is not None:
                    # the turn is where both populations are equally likely: a small
                    # minority's lies far out, and it keeps no further than `most` SDs,
                    # or halfway to the reference population (`turn_limit`), unless that
                    # would cut the majority's body (LIMIT_MINORITY, LIMIT_MAX_HEIGHT)
                    limit, why = turn_limit(peak, sign, float(most), toward)
                    beyond = float(np.mean(sign * (x - cut) > 0))
                    if sign * (cut - limit) > 0 and beyond < LIMIT_MINORITY:
                        height = relative_height(x, bandwidth, peak[0], limit)
                        if height <= LIMIT_MAX_HEIGHT:
                            cut, how, other = limit, f"{how}, kept at {why}", cut
                        else:  # a population between: the last resort, the turn its range
                            between = (
                                f"a population lies between its majority peak and its density "
                                f"turn {cut:.2f}: at {why} ({limit:.2f}) the density is still "
                                f"{height:.0%} of the peak's"
                            )
                            instead = resort._replace(other=cut, unlike_if_cut=between)
                far = sign * turns[1] if turns[0] != turns[1] else cut  # a dip before it: the cut
                return Limits(
                    start + sign * gap, cut, how, unlike, "turn", far=far, other=other,
                    instead=instead,
                )  # fmt: skip
            if resort is not None:
                return resort
        return Limits(start + sign * gap, edge + sign * fgap, how, unlike)
    peak = find_peak(x, anchor["peak"], bandwidth, how=anchor.get("peak_at", "median"))
    if peak is None:
        return None
    k, fk = float(anchor.get("min_sd", 3.0)), float(anchor.get("fallback_sd", 5.0))
    how = f"peak {peak[0]:.2f} {'-' if below else '+'} {fk:g} SD"
    near = None if below or "near_sd" not in anchor else peak[0] + anchor["near_sd"] * peak[1]
    start, cut = peak[0] + sign * k * peak[1], peak[0] + sign * fk * peak[1]
    return Limits(start, cut, how, method="peak_sd", near=near)
