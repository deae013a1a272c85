"""A spillover matrix stored as its inverse, the compensation matrix.

FCS 3.0's $COMP was written either way by the software of its day, and a matrix copied from an
analysis program's compensation dialog can be the inverse too. Applied as a spillover it
spills every signal a second time instead of removing it.
"""

from __future__ import annotations

import numpy as np

NEGATIVE_SPILL = -0.01  # a measured spillover is not this negative; a compensation matrix is


def stored_inverse(matrix: np.ndarray) -> np.ndarray | None:
    """The spillover of a file that stored its inverse, the compensation matrix (FCS 3.0's
    $COMP was written either way; applied as a spillover it spilled the signal twice: the
    Lyoplate file's unswitched memory 0.85 -> 0.26): off-diagonal values clearly negative and
    the inverse's none. None for a spillover matrix, whose inverse has the negatives."""
    off = ~np.eye(len(matrix), dtype=bool)
    if not off.any() or matrix[off].min() >= NEGATIVE_SPILL:
        return None
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return None
    return inverse if inverse[off].min() >= NEGATIVE_SPILL else None
