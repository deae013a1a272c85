"""Geometry kernels of gating: is each event inside a range, a polygon, an ellipsoid.

Vectorized over events (Python loops run over dims or polygon edges only) and exact where the
reference is: float32 columns are compared against limits rounded the right way instead of
being upcast, the polygon test has flowutils'/FlowKit's crossing parity, the ellipsoid test
computes in float64 like FlowKit. Gate objects are not needed here, only arrays, so
cytopipe.gating.gates (evaluation) and cytopipe.gating.autogate (placement) share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Limit = float | None


# --------------------------------------------------------------------------- geometry kernels


def _in_ranges(cols: list[np.ndarray], ranges: list[tuple[Limit, Limit]]) -> np.ndarray:
    """min <= x < max on every dim, exact for float32 columns without upcasting them."""
    result: np.ndarray | None = None
    for col, (lo, hi) in zip(cols, ranges, strict=True):
        for limit, is_min in ((lo, True), (hi, False)):
            if limit is None:
                continue
            thr = _threshold(limit, col.dtype)
            test = np.greater_equal(col, thr) if is_min else np.less(col, thr)
            if result is None:
                result = test
            else:
                result &= test
    if result is None:  # fully open: every event passes (except NaN-free check is moot)
        return np.ones(len(cols[0]), dtype=bool)
    return result


def _threshold(limit: float, dtype: np.dtype) -> np.generic:
    """A limit in the column's dtype that gives the same comparisons as float64 would.

    For float32 x and a float64 limit L: x >= L  <=>  x >= c and x < L <=> x < c, where c is
    the smallest float32 >= L. So float32 columns are compared without a float64 copy.
    """
    if dtype == np.float32:
        c = np.float32(limit)
        if float(c) < limit:
            c = np.nextafter(c, np.float32(np.inf))
        return c
    if np.issubdtype(dtype, np.floating) and dtype.itemsize >= 8:
        return np.float64(limit)
    return np.float64(limit)


def points_in_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd test of points against a closed polygon, one NumPy pass per edge.

    The crossing rule is Sunday's winding-number test (an upward edge counts when the point is
    strictly left of it, a downward edge when strictly right, half-open in y), whose parity is
    exactly what flowutils/FlowKit compute, including points that lie on an edge. Only points
    inside the polygon's bounding box are tested: outside it the crossing count is even.
    The Python loop runs over edges (a handful), never over events.
    """
    v = np.asarray(vertices, dtype=np.float64)
    x = np.asarray(x)
    y = np.asarray(y)
    inside = np.zeros(len(x), dtype=bool)
    box = _in_ranges([x, y], [(v[:, 0].min(), None), (v[:, 1].min(), None)])
    box &= np.less_equal(x, _threshold_le(v[:, 0].max(), x.dtype))
    box &= np.less_equal(y, _threshold_le(v[:, 1].max(), y.dtype))
    idx = np.flatnonzero(box)
    if len(idx) == 0:
        return inside
    px = x[idx].astype(np.float64)
    py = y[idx].astype(np.float64)
    odd = np.zeros(len(idx), dtype=bool)
    x1, y1 = v[-1]
    for x2, y2 in v:
        if y1 != y2:
            lo, hi = (y1, y2) if y1 < y2 else (y2, y1)
            spans = (py >= lo) & (py < hi)
            # which side of the edge line: > 0 left of an upward edge (as flowutils' isLeft)
            side = (x2 - x1) * (py - y1) - (px - x1) * (y2 - y1)
            spans &= side > 0 if y1 < y2 else side < 0
            odd ^= spans
        x1, y1 = x2, y2
    inside[idx] = odd
    return inside


def _threshold_le(limit: float, dtype: np.dtype) -> np.generic:
    """Limit for x <= L that is exact for float32 x: the largest float32 <= L."""
    if dtype == np.float32:
        c = np.float32(limit)
        if float(c) > limit:
            c = np.nextafter(c, np.float32(-np.inf))
        return c
    return np.float64(limit)


def points_in_ellipsoid(
    cols: Sequence[np.ndarray], mean: np.ndarray, inverse: np.ndarray, distance_square: float
) -> np.ndarray:
    """Mahalanobis distance squared <= distance_square, computed in float64 like FlowKit."""
    d = [np.asarray(c, dtype=np.float64) - m for c, m in zip(cols, mean, strict=True)]
    k = len(d)
    q = np.zeros(len(d[0]), dtype=np.float64)
    for i in range(k):
        row = inverse[i, 0] * d[0]
        for j in range(1, k):
            row += inverse[i, j] * d[j]
        row *= d[i]
        q += row
    return q <= distance_square
