"""Display/gating scales for fluorescence: logicle (FlowJo/flowutils-compatible) and arcsinh.

Functions take and return 1-D float arrays of one channel. Logicle parameters follow Parks et
al. 2006 / Gating-ML 2.0: T top of scale, W linearization width in decades, M decades, A extra
negative decades. Results equal flowutils' C implementation (the reference FlowKit uses).
"""

from __future__ import annotations

import numpy as np
from flowutils import transforms as _fu


def logicle(x: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0) -> np.ndarray:
    """Logicle-transform one channel to [0, 1] (1 at T)."""
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 1)
    return _fu.logicle(x, [0], t=t, w=w, m=m, a=a)[:, 0]


def logicle_inverse(y: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0) -> np.ndarray:
    """Map logicle-scale values back to linear values (closed form, monotonic)."""
    y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1, 1)
    return _fu.logicle_inverse(y, [0], t=t, w=w, m=m, a=a)[:, 0]


def arcsinh(x: np.ndarray, cofactor: float = 150.0) -> np.ndarray:
    """Arcsinh with a cofactor, the usual scale for clustering and for CyTOF-style data."""
    return np.arcsinh(np.asarray(x, dtype=np.float64) / cofactor)


def arcsinh_inverse(y: np.ndarray, cofactor: float = 150.0) -> np.ndarray:
    return np.sinh(np.asarray(y, dtype=np.float64)) * cofactor
