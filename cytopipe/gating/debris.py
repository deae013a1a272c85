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
"""

from __future__ import annotations

import numpy as np

MIN_RATIO = 0.5
LOW_QUANTILE = 0.01
MIN_BELOW = 0.01  # the events below the cut: at least this share of the population ...
MIN_BELOW_EVENTS = 50  # ... and this many
BACKGATE_EVENTS = 200_000  # events (a strided subsample) that measure the shares: 10 M-event files


def below_cells(x: np.ndarray, bright: np.ndarray | None, cut: float) -> tuple[float, str] | None:
    """The cut moved below the lineage+ (`bright`) events of `x` and why, where the events
    below `cut` are lineage+ at least MIN_RATIO as often as those above; else None."""
    if bright is None:
        return None
    below = x < cut
    n_below = int(np.count_nonzero(below))
    if n_below < max(MIN_BELOW_EVENTS, MIN_BELOW * x.size) or n_below == x.size:
        return None
    ratio = float(bright[below].mean()) / max(float(bright[~below].mean()), 1e-9)
    if ratio < MIN_RATIO:
        return None
    low = float(np.quantile(x[bright], LOW_QUANTILE))
    if low >= cut:
        return None
    why = (
        f"the events below {cut:.2f} were lineage+ {ratio:.2f} times as often as those above "
        f"(cells, not debris): moved to {low:.2f}, below the lineage+ events"
    )
    return low, why
