"""The top of each channel's scale: the file's declared range, or another one when the
declared range is clearly wrong.

Scatter is scaled as a fraction of the top and fluorescence goes on a logicle whose T is the
top, so a wrong top moves every event: a CD19 channel that declares `$PnR` 1024 while its
values run to 262,144 puts the negative cells of an aplastic patient where the template expects
B cells. Several instruments and exporters write such nominal ranges. A channel whose events
lie well above its declared top does not describe its values. Its top is then the range the
file's other channels declare (one instrument digitizes every channel alike), or, when none can
be trusted, the standard 262,144, or the power of two above the data when they reach beyond
it. Not the data's own maximum: that moves with the brightest cells of each tube, and the
longitudinal comparison needs one scale at every timepoint. The sample says what was done.
The other way round, a declared range far above every value of the stains or the scatter
(`filled_top`) is read on the standard range, or the power of two above the data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cytopipe.errors import FcsError
from cytopipe.preprocess.qc_margins import channel_top

DEFAULT_TOP = 262144.0  # an 18-bit range, the most common; used when the file gives none
# Events this far above the declared top cannot come from a range that describes the channel
# (real files reach at most a code or two above it: 262,145 on a 262,144 range).
ABOVE_TOLERANCE = 1.01
# ... and this many of them (at least MIN_ABOVE) rule out a lone corrupt value.
MIN_FRACTION_ABOVE = 1e-4
MIN_ABOVE = 3
# The data's top ignores the highest 0.001% of events: one corrupt value must not set it.
TOP_QUANTILE = 1 - 1e-5
# No instrument's range comes near this (spectral instruments: 2^22).
MAX_TOP = 2.0**26


def declared_top(sample, i: int) -> float | None:
    """The top an `FcsSample` declares for channel i's values as read: $PnR, or the decoded
    top of a log-amplified channel ($PnE), whose values run to 10^decades, not to $PnR."""
    top = channel_top(sample.keywords, sample.pnr, i)
    if top is None:
        return None
    return float(sample.pnr[i]) if top == sample.pnr[i] - 1 else top


@dataclass(frozen=True)
class Range:
    """The top used for a channel, and where it came from."""

    top: float
    declared: float
    replaced: bool = False
    pct_above_declared: float = 0.0
    basis: str = "declared"

    def note(self, name: str) -> str:
        return (
            f"{name}: declared range {self.declared:g} is nominal ({self.pct_above_declared:.2g}% "
            f"of events above it); scale top {self.top:g} ({self.basis})"
        )


def channel_ranges(
    raw: np.ndarray, declared: Mapping[int, float | None], names: Sequence[str], path: str
) -> dict[int, Range]:
    """The top of each channel in `declared` (column index -> the top the file declares for
    its values as read; None when it gives none), from the raw (uncompensated) events."""
    n = raw.shape[0]
    tops = {i: float(d) if d and d > 0 and math.isfinite(d) else DEFAULT_TOP
            for i, d in declared.items()}  # fmt: skip
    above = {i: int(np.count_nonzero(raw[:, i] > t * ABOVE_TOLERANCE)) for i, t in tops.items()}
    nominal = {i for i, k in above.items() if n and k >= max(MIN_ABOVE, MIN_FRACTION_ABOVE * n)}
    trusted = Counter(t for i, t in tops.items() if i not in nominal)
    shared = max(trusted, key=lambda t: (trusted[t], t)) if trusted else None
    out = {i: Range(top=t, declared=t) for i, t in tops.items() if i not in nominal}
    for i in nominal:
        high = float(np.quantile(raw[:, i], TOP_QUANTILE))
        if not math.isfinite(high) or high > MAX_TOP:
            raise FcsError(
                f"channel {names[i]}: values reach {high:.3g}, far above its declared range "
                f"{tops[i]:g} and any instrument's range; its scale cannot be placed",
                path=path,
                hint="re-export the file from the acquisition software",
            )
        if shared is not None and shared >= high:
            top, basis = shared, "the range the file's other channels declare"
        elif high <= DEFAULT_TOP:
            top, basis = DEFAULT_TOP, "the standard 18-bit range, which holds the data"
        else:
            top, basis = 2.0 ** math.ceil(math.log2(high)), "the power of two above the data"
        out[i] = Range(top=top, declared=tops[i], replaced=True,
                       pct_above_declared=100.0 * above[i] / n, basis=basis)  # fmt: skip
    return out


# A declared range this many times above every value of a group of channels is not the range
# the values fill: a BD Accuri C6 declares 24 bits (16,777,216) while its stains reach 30,000-
# 155,000 (../shared/data/flowio B01), and a file rewritten with a 22-bit range keeps 18-bit
# values. A logicle topped there leaves its upper decades empty and puts every population
# where the template expects negatives (the Lyoplate file declared 24-bit: B and T cells F1 0;
# 22-bit: switched memory 0.26). Values of the 18-bit range are read on it, as from a BD
# instrument; instruments that digitize to a larger range (spectral, 22 bits) fill it.
FAR_ABOVE = 8


def filled_top(
    values: Sequence[np.ndarray], declared: Sequence[float], floor: float | None = DEFAULT_TOP
) -> float | None:
    """One top for a group of channels read alike (the stains, the scatter) whose declared
    ranges lie FAR_ABOVE times above all of their values: the power of two above the data, at
    least `floor` (stains: the standard 262,144, and only declared ranges above it are
    replaced; the same for every tube of such an instrument, as `channel_ranges` chooses);
    None to keep the declared ranges. The largest value decides: a bright or saturated event
    keeps them. Scatter (`floor` None), a fraction of its range, is read on the range it fills
    whatever was declared: an 18-bit file whose every scatter value lies below 13,000 (forward
    and side scatter x0.05) put every cell below the debris cut."""
    if not values or (floor is not None and min(declared) <= floor):
        return None
    high = max(float(np.nanmax(v)) if v.size else 0.0 for v in values)
    if not math.isfinite(high) or high <= 0 or high > min(declared) / FAR_ABOVE:
        return None
    if floor is not None and high <= floor * ABOVE_TOLERANCE:
        return floor
    return 2.0 ** math.ceil(math.log2(high))
