"""Where a majority's density turns (another population beginning on its flank, no valley
between) and how far out such a turn is kept.

Why a module of its own: a turn is read on a smoother density than a valley, and whether it is
the cut depends on how far it lies from the majority (`turn_limit`) and on how many events show
it (`read_turn`); cytopipe.gating.anchors (and the placer, for `flank_turn`) decides when a
turn is wanted at all.
"""

from __future__ import annotations

import numpy as np

from cytopipe.gating.densities import (
    TURN_FULL_EVENTS,
    TURN_SMOOTHING,
    find_turn,
    floor_pile,
    majority_peak,
    majority_turn,
    whole_density,
    widened,
)

# `toward`: the share of the way from the majority peak to the reference population's peak where
# a density turn is kept at most; the reference must lie at least TOWARD_MIN_SD majority SDs out
TOWARD_SHARE = 0.5
TOWARD_MIN_SD = 4.0


# `turn_limit` pulls a density turn in only where the minority beyond it is small (under
# LIMIT_MINORITY of the events: a small minority's equal-posterior point lies far out; where the
# limit was needed, the real file's memory-poor variants of `real_gating.py --stress`, 2.2-4.4%
# lay beyond) and the limit leaves the majority's body (its density there at most
# LIMIT_MAX_HEIGHT of its peak's; 0.04-0.22 where it was needed). An over-compensated file
# breaks both: spill taken out of CD27 in proportion to the B cells' own bright stains left
# the naive B cells a skewed population whose upper tail reaches the memory B cells, while the
# T cells' CD27 peak (they carry none of those stains) stayed put, and halfway to it lay in
# the naive B cells, at 26-67% of their peak height, with 9.6-10.7% of the events beyond the
# turn: the matrix at x1.15-1.25 read unswitched memory 0.54-0.58, 'as the template'.
LIMIT_MINORITY = 0.065
LIMIT_MAX_HEIGHT = 0.4
# A small minority beyond a far turn while the limit lies in a body (denser than
# LIMIT_MAX_HEIGHT) is the third case: a population between the majority peak and the turn,
# which the turn leaves with the majority. Real_fuzz "57c" seed 882698777 (a third of the
# naive B cells, noise SD 265): the IgD- memory B cells a shoulder at 0.40-0.47 on the naive
# peak's (0.60) lower flank, the turn at 0.25 below them (2.6% beyond), the limit 0.44 at 53%
# of the peak's height; 1,098 unswitched memory B cells for openCyto's 454, switched memory
# 86 for 590, nothing said. The cut is then the last resort (the majority peak -+ k SD), the
# turn bounds its count range, and the sample is unlike the template.


def relative_height(x: np.ndarray, bandwidth: float, peak: float, at: float) -> float:
    """The density at `at` over the density at `peak` (smoothed as `majority_peak` does)."""
    d = whole_density(x, bandwidth)
    return d.at(at) / max(d.at(peak), 1e-12)


def unpiled(x: np.ndarray, bandwidth: float) -> np.ndarray:
    """`x` without a pile of ties at its lowest value (a display export clipped at 0): a pile is
    no shape, and its edge read as a density turn in the IgD- B cells' lower tail (0.10 for
    0.36)."""
    lowest, piled = floor_pile(x, bandwidth)
    return x[x > lowest] if piled else x


def turn_smoothing(bandwidth: float, n: int) -> float:
    """The bandwidth a weak density turn is read at, for `n` events (`find_turn`)."""
    return widened(TURN_SMOOTHING * bandwidth, n, TURN_FULL_EVENTS)


def read_turn(
    x: np.ndarray, n: int, bandwidth: float, start: float, resort: float | None
) -> tuple[float, float] | None:
    """`majority_turn` of `x` (its majority peak below `start`, the flank searched upward)
    at `turn_smoothing` for `n` events, else, on fewer than TURN_FULL_EVENTS, at the unwidened
    TURN_SMOOTHING where that turn lies past `resort` (the last resort's cut, as `x` is
    oriented). The widening keeps a few thousand events' noise from making a turn, and also
    flattens a real shoulder: real_fuzz "session 72" seed 235828503 (3,400 B cells, every
    stain x0.51) showed no IgD turn when widened and one at 0.37 unwidened, where openCyto's
    labels part best (0.372); the last resort (0.41) cut into the naive B cells, double
    negative 0.700 -> 0.989. Nearer than the last resort such a turn bends within the
    majority's own body: on three files of "session 71b" it lay 1.4-2.0 SDs out, 0.02-0.03
    past the best cut, and the last resort was nearer it (unswitched memory 0.861 -> 0.817)."""
    turns = majority_turn(x, turn_smoothing(bandwidth, n), start)
    if turns is not None or n >= TURN_FULL_EVENTS or resort is None:
        return turns
    fine = majority_turn(x, TURN_SMOOTHING * bandwidth, start)
    return fine if fine is not None and fine[0] > resort else None


def turn_limit(
    peak: tuple[float, float], sign: float, most_sd: float, toward: float | None
) -> tuple[float, str]:
    """How far out a density turn may lie: halfway from the majority peak to the peak of a
    reference population that carries the minority's level of the marker (T cells' CD27 for
    the CD27+ memory B cells), else the majority peak +- `most_sd` SDs.

    The SD is that of the peak's narrower half-width, and the logicle scale changes the
    peak's shape with the detector gain: on the real Lyoplate file openCyto's CD27 cut lies 3.5
    naive SDs out at fluorescence x0.33 and 2.7 at x2 (2.8 at x1), so a cap of 3 SD cut the
    memory-poor variant's naive B cells at x0.33 (unswitched memory 0.457). Halfway to the T
    cells' CD27 peak follows the stain: openCyto's cut lies 0.46-0.49 of the way there at every
    gain from x0.33 to x3, in the whole file and the memory-poor variant (0.760 at x0.33)."""
    reach = sign * (toward - peak[0]) if toward is not None else 0.0
    if reach >= TOWARD_MIN_SD * peak[1]:
        return peak[0] + sign * TOWARD_SHARE * reach, "halfway to the reference peak"
    return peak[0] + sign * most_sd * peak[1], f"the majority peak +- {most_sd:g} SD"


# the other population holds at least this share beyond the turn: a CD19+ CD20+ export (no T
# cells) turned at the B cells' CD3 tail, 0.5% of them, and 55 were T cells
FLANK_MIN_SHARE = 0.05


def flank_turn(
    x: np.ndarray, bandwidth: float, search: tuple[float, float]
) -> tuple[float, str] | None:
    """No valley between two populations the template always expects (T cells and the CD3-
    lymphocytes), and no anchor to say which one the majority is: the other one shows as a
    density turn on one flank of the majority peak, searched from 1 SD out as the anchors'
    turns are. The cut is that turn where one flank turns inside the search window; None where
    neither or both do (no telling which side the other population lies on). A CD3 reagent at
    a fifth of its brightness with wide noise: the T cells' narrow peak rose from the CD3-
    cells' plateau with no dip, and the template's 0.45 went through the T cells (F1 0.28)."""
    peak = majority_peak(x, bandwidth)
    if peak is None:
        return None
    smooth, shaped = turn_smoothing(bandwidth, x.size), unpiled(x, bandwidth)
    turns = []
    for sign, side in ((1.0, "above"), (-1.0, "below")):
        turn = find_turn(sign * shaped, smooth, sign * (peak[0] + sign * peak[1]))
        if turn is not None and search[0] <= sign * turn <= search[1]:
            if np.mean(sign * x > turn) >= FLANK_MIN_SHARE:  # a population, not a tail
                turns.append((sign * turn, side))
    if len(turns) != 1:
        return None
    cut, side = turns[0]
    return cut, f"density turn at {cut:.2f} {side} the majority peak at {peak[0]:.2f}"
