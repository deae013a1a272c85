"""The robust SD that QC and gating measure spreads with."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

# the MAD of a normal distribution is this share of its SD: scipy.stats.median_abs_deviation
# (scale="normal") computes the same, but importing scipy.stats costs each `cytopipe
# preprocess` / `gate` process (one per Snakemake job) 0.6-0.8 s here
MAD_PER_SD = NormalDist().inv_cdf(0.75)


def robust_sd(
    x: np.ndarray,
    centre: np.ndarray | float | None = None,
    axis: int | None = None,
    nan: bool = False,
) -> np.ndarray | float:
    """The median absolute deviation in SDs of a normal distribution: a spread a minority of
    other events (a second population's tail, outliers) cannot widen much. `centre`: the
    median, where the caller has it already (along `axis`); `nan`: ignore NaN."""
    median = np.nanmedian if nan else np.median
    if centre is None:
        centre = median(x, axis=axis, keepdims=True)
    return median(np.abs(x - centre), axis=axis) / MAD_PER_SD
