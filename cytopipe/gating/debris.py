"""Where a debris cut lies among cells.

Why: the forward-scatter debris cut is a valley searched in a window of the scale's lower part.
A FACSCalibur file has no debris population (its acquisition threshold removed it), and at a
lower forward-scatter gain its lymphocytes move into that window: the valley found there lay
between the lymphocytes and the larger cells (FlowCAP-I GvHD file 8 at FSC x0.4: the cut at
0.116 took 44% of the T cells as debris, T-cell F1 0.98 -> 0.71). Debris is not lineage+: where
the events below the cut carry CD3/CD19/CD20 at least MIN_RATIO as often as those above, they
are cells, and the cut moves below the lineage+ events (their LOW_QUANTILE). Measured with the
template's cut on GvHD 1-9, the Lyoplate file and generated files: at most 0.28 where the cut
holds debris, 0.91 on that file (the Lyoplate file at scatter x0.3: 0.76, its cut already at
the lymphocytes' lower edge). The CD45- cut is checked alike: with CD45 ten times dimmer its
valley search found the dip between granulocytes and lymphocytes (generated blood: T cells F1
0.15, nothing said); lineage+ 0.86 times as often below it as above, it moves below them.
The other way round, a template position with no valley to place it at whose events below are
lineage+ at most a tenth as often as those above is confirmed as a debris cut ('backgated').
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cytopipe.gating.placement import Placement

MIN_RATIO = 0.5
LOW_QUANTILE = 0.01
MIN_BELOW = 0.01  # the events below the cut: at least this share of the population ...
MIN_BELOW_EVENTS = 50  # ... and this many
BACKGATE_EVENTS = 200_000  # events (a strided subsample) that measure the shares: 10 M-event files


def _lineage_below(
    x: np.ndarray, bright: np.ndarray | None, cut: float, min_below: float
) -> tuple[int, float] | None:
    """The events below `cut` and how many times as often they are lineage+ as those above;
    None without lineage+ events, with fewer than `min_below` below, or none above."""
    if bright is None:
        return None
    below = x < cut
    n_below = int(np.count_nonzero(below))
    if n_below < min_below or n_below == x.size:
        return None
    return n_below, float(bright[below].mean()) / max(float(bright[~below].mean()), 1e-9)


def below_cells(x: np.ndarray, bright: np.ndarray | None, cut: float) -> tuple[float, str] | None:
    """The cut moved below the lineage+ (`bright`) events of `x` and why, where the events
    below `cut` are lineage+ at least MIN_RATIO as often as those above; else None."""
    shares = _lineage_below(x, bright, cut, max(MIN_BELOW_EVENTS, MIN_BELOW * x.size))
    if shares is None or shares[1] < MIN_RATIO:
        return None
    ratio = shares[1]
    low = float(np.quantile(x[bright], LOW_QUANTILE))
    if low >= cut:
        return None
    why = (
        f"the events below {cut:.2f} were lineage+ {ratio:.2f} times as often as those above "
        f"(cells, not debris): moved to {low:.2f}, below the lineage+ events"
    )
    return low, why


CONFIRM_RATIO = 0.1  # lineage+ below the cut at most this often (relative to above): debris
CHECKED = 0.6  # the confidence of a template position this check confirmed ('backgated')


def debris_below(x: np.ndarray, bright: np.ndarray | None, cut: float) -> str | None:
    """Why a template position with no valley to place it at still cuts debris, not cells:
    the events below it are lineage+ at most CONFIRM_RATIO as often as those above. A
    FACSCalibur's acquisition threshold truncates the debris, and what is left declines into
    the cells without a dip (FlowCAP-I GvHD: 1-2% of the events below the template's 0.06, none
    of the experts' T cells; every file's debris gate was listed to review for it). None where
    that cannot be told (no lineage marker shows two populations, under MIN_BELOW_EVENTS below
    the cut) or where cells may lie below it."""
    shares = _lineage_below(x, bright, cut, MIN_BELOW_EVENTS)
    if shares is None or shares[1] > CONFIRM_RATIO:
        return None
    n_below, ratio = shares
    return (
        f"no valley: the template's {cut:.2f} checked on this sample, its {n_below:,} events "
        f"below ({n_below / x.size:.1%}) lineage+ {ratio:.2f} times as often as those above "
        "(debris, not cells)"
    )


def backgated(placed: Placement, x: np.ndarray, bright: np.ndarray | None) -> Placement:
    """A debris (or CD45-) cut checked against the lineage+ (`bright`) events of `x`: moved
    below them where it lay among cells (with the sample unlike the template), or, a template
    position the events below confirm as debris, no longer a fallback ('backgated')."""
    moved = below_cells(x, bright, placed.value)
    if moved is not None:
        flag = f"{placed.flag}; {moved[1]}" if placed.flag else moved[1]
        return replace(placed, value=moved[0], flag=flag, unlike=flag)
    checked = debris_below(x, bright, placed.value) if placed.method == "fallback" else None
    if checked is None:
        return placed
    return replace(placed, method="backgated", confidence=CHECKED, flag=checked)
