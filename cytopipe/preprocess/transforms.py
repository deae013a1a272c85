"""Display/gating scales for fluorescence: logicle, arcsinh, hyperlog, log, linear, FlowJo biex.

Functions take and return 1-D float arrays of one channel. Parameters follow Gating-ML 2.0
(Parks et al. 2006 for logicle): T top of scale, W linearization width in decades, M decades,
A extra negative decades. Results equal flowutils' C implementation, the reference FlowKit
and FlowJo agree with; `biex` reproduces FlowJo's own biexponential lookup table.

Every forward transform here is monotonic increasing, and each has a closed-form or exact
inverse, so a range on the transformed scale equals a range on the linear scale with
inverse-transformed limits: gating uses that to avoid transforming most events at all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flowutils import logicle_c as _c
from flowutils import transforms as _fu

from cytopipe.errors import GatingError


def _in_c(kernel, x: np.ndarray, t: float, w: float, m: float, a: float) -> np.ndarray:
    """One of flowutils' C kernels on a fresh float64 copy of `x` (they work in place)."""
    y = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    kernel(float(t), float(w), float(m), float(a), y)
    return y


# --------------------------------------------------------------------------- logicle


def logicle(
    x: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0
) -> np.ndarray:
    """Logicle-transform one channel to [0, 1] (1 at T)."""
    return _in_c(_c.logicle_scale, x, t, w, m, a)


def logicle_inverse(
    y: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0
) -> np.ndarray:
    """Map logicle-scale values back to linear values (closed form, monotonic)."""
    return _in_c(_c.logicle_inverse, y, t, w, m, a)


@dataclass(frozen=True)
class _LogicleParams:
    """Moore & Parks (2012) constants: B(y) = a e^(b y) - c e^(-d y) + f, zero at y = x1."""

    a: float
    b: float
    c: float
    d: float
    f: float
    x1: float
    s: float  # data scale of the quasi-linear region, for the table's guess
    h: float  # table step in u = asinh(v / s)
    y: np.ndarray  # logicle at u = k h (k = 0..K-1), from flowutils
    dy: np.ndarray  # y[k + 1] - y[k]


_TABLE = 4096


def _solve_d(b: float, w: float) -> float:
    """Root of 2 (ln d - ln b) + w (b + d) = 0 in (0, b] (the Logicle condition)."""
    if w == 0:
        return b
    lo, hi = 0.0, b
    for _ in range(200):  # bisection to full precision: cheap, done once per parameter set
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if 2 * (np.log(mid) - np.log(b)) + w * (b + mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=64)
def _logicle_params(t: float, w: float, m: float, a: float) -> _LogicleParams:
    wn = w / (m + a)
    x2 = a / (m + a)
    x1 = x2 + wn
    x0 = x2 + 2 * wn
    b = (m + a) * np.log(10.0)
    d = _solve_d(b, wn)
    c_a = np.exp(x0 * (b + d))
    mf_a = np.exp(b * x1) - c_a / np.exp(d * x1)
    aa = t / ((np.exp(b) - mf_a) - c_a / np.exp(d))
    s = float(logicle_inverse(np.array([x1 + wn]), t, w, m, a)[0]) or 1.0
    u_max = float(np.arcsinh(t * 1e3 / s))  # table to 1000 T; beyond, flowutils is used
    h = u_max / (_TABLE - 1)
    y = logicle(s * np.sinh(np.arange(_TABLE) * h), t, w, m, a)
    dy = np.diff(y)
    for arr in (y, dy):
        arr.setflags(write=False)
    return _LogicleParams(aa, b, c_a * aa, d, -mf_a * aa, x1, s, h, y, dy)


def logicle_fast(
    x: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0
) -> np.ndarray:
    """Logicle equal to flowutils' (to ~1e-15), about 3x faster, vectorized.

    flowutils solves B(y) = |x| per value with up to 20 Halley steps in C. Here a table of
    flowutils' own results, uniform in u = asinh(|x| / s), gives a guess within ~1e-7 by linear
    interpolation, and one Halley step on the closed form brings it to machine precision.
    The logicle symmetry logicle(-x) = 2 x1 - logicle(x) handles negatives.
    """
    p = _logicle_params(float(t), float(w), float(m), float(a))
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf go to the reference below
        return _logicle_fast(x, p, (t, w, m, a))


def _logicle_fast(x: np.ndarray, p: _LogicleParams, params: tuple) -> np.ndarray:
    v = np.abs(x)
    pos = np.arcsinh(v / p.s)
    pos *= 1.0 / p.h
    idx = pos.astype(np.intp)
    inside = (idx >= 0) & (idx < _TABLE - 1)
    np.clip(idx, 0, _TABLE - 2, out=idx)
    pos -= idx  # fraction within the table step
    y = p.dy[idx]
    y *= pos
    y += p.y[idx]
    # one Halley step on F(y) = a e^(by) - c e^(-dy) + f - v
    e1 = np.exp(p.b * y)
    e1 *= p.a
    e2 = np.exp(-p.d * y)
    e2 *= p.c
    fy = e1 - e2
    fy += p.f
    fy -= v
    d1 = p.b * e1 + p.d * e2
    d2 = p.b * p.b * e1 - p.d * p.d * e2
    d2 *= fy
    d2 /= 2.0 * d1 * d1
    np.subtract(1.0, d2, out=d2)
    d2 *= d1
    fy /= d2
    y -= fy
    y[v == 0] = p.x1
    neg = x < 0
    y[neg] = 2.0 * p.x1 - y[neg]
    if not inside.all():  # beyond the table (huge values) or NaN: the reference code
        out = ~inside
        y[out] = logicle(x[out], *params)
    return y


def estimate_logicle_w(values: np.ndarray, t: float = 262144.0, m: float = 4.5) -> float:
    """Logicle W from the data's negative spread, as FlowJo does (Parks et al. 2006).

    W = (M - log10(T / |r|)) / 2 with r the 5th percentile of the negative values: wide
    enough that the negative population is not piled up at the axis. No negatives -> 0.
    The result is clipped to [0, M / 2], the range in which logicle is defined.
    """
    v = np.asarray(values, dtype=np.float64)
    neg = v[np.isfinite(v) & (v < 0)]
    if neg.size == 0:
        return 0.0
    r = float(np.percentile(neg, 5))
    w = (m - np.log10(t / abs(r))) / 2.0
    return float(np.clip(w, 0.0, m / 2.0))


DIP_MAX_EVENTS = 200_000  # zero_dip looks at no more events than this


def zero_dip(
    values: np.ndarray, t: float, w: float, m: float, a: float = 0.0, half: float = 0.2
) -> float:
    """The density at zero's position on logicle(T, W, M, A) over the lower of the highest
    densities on either side of it (within `half` of the scale, bins of 0.02): under 1 where
    the negative population shows as two humps, its negative half piled up on the scale's
    negative side because it is wider than W's linear region; at least 1 where it shows as
    one (or only a few events lie below zero, whatever their spread)."""
    v = np.asarray(values)
    if v.size > DIP_MAX_EVENTS:  # a shape, not a cut: a strided subsample (deterministic)
        v = v[:: v.size // DIP_MAX_EVENTS + 1]
    v = v.astype(np.float64)
    y = logicle(v[np.isfinite(v)], t, w, m, a)
    zero = float(logicle(np.zeros(1), t, w, m, a)[0])
    counts, _ = np.histogram(y, zero + np.linspace(-half, half, 21))
    centre = counts[9:11].mean()
    side = min(counts[:9].max(), counts[11:].max())
    return float(centre / side) if side > 0 else float("inf")


# --------------------------------------------------------------------------- arcsinh


def arcsinh(x: np.ndarray, cofactor: float = 150.0) -> np.ndarray:
    """Arcsinh with a cofactor, the usual scale for clustering and for CyTOF-style data."""
    return np.arcsinh(np.asarray(x, dtype=np.float64) / cofactor)


def arcsinh_inverse(y: np.ndarray, cofactor: float = 150.0) -> np.ndarray:
    return np.sinh(np.asarray(y, dtype=np.float64)) * cofactor


def asinh(x: np.ndarray, t: float = 262144.0, m: float = 4.5, a: float = 0.0) -> np.ndarray:
    """Gating-ML's parametrized arcsinh (fasinh): T -> 1, M decades, A negative decades."""
    return _fu.asinh(np.asarray(x, dtype=np.float64).reshape(-1), None, t=t, m=m, a=a)


def asinh_inverse(y: np.ndarray, t: float = 262144.0, m: float = 4.5, a: float = 0.0) -> np.ndarray:
    return _fu.asinh_inverse(np.asarray(y, dtype=np.float64).reshape(-1), None, t=t, m=m, a=a)


# --------------------------------------------------------------------------- hyperlog


def hyperlog(
    x: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0
) -> np.ndarray:
    """Bagwell's hyperlog as Gating-ML defines it (flowutils' C code)."""
    return _in_c(_c.hyperlog_scale, x, t, w, m, a)


def hyperlog_inverse(
    y: np.ndarray, t: float = 262144.0, w: float = 0.5, m: float = 4.5, a: float = 0.0
) -> np.ndarray:
    return _in_c(_c.hyperlog_inverse, y, t, w, m, a)


# --------------------------------------------------------------------------- log / linear


def log(x: np.ndarray, t: float = 262144.0, m: float = 4.5) -> np.ndarray:
    """Gating-ML flog: (1/M) log10(x/T) + 1; undefined (NaN) for x <= 0, so never gated in."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 / m) * np.log10(x / t) + 1.0


def log_inverse(y: np.ndarray, t: float = 262144.0, m: float = 4.5) -> np.ndarray:
    return t * 10.0 ** ((np.asarray(y, dtype=np.float64) - 1.0) * m)


def linear(x: np.ndarray, t: float = 262144.0, a: float = 0.0) -> np.ndarray:
    """Gating-ML flin: (x + A) / (T + A), maps [-A, T] to [0, 1]."""
    return (np.asarray(x, dtype=np.float64) + a) / (t + a)


def linear_inverse(y: np.ndarray, t: float = 262144.0, a: float = 0.0) -> np.ndarray:
    return np.asarray(y, dtype=np.float64) * (t + a) - a


# --------------------------------------------------------------------------- FlowJo biex


@functools.lru_cache(maxsize=32)
def biex_lut(
    negative: float = 0.0,
    width: float = -10.0,
    positive: float = 4.418540,
    max_value: float = 262144.000029,
    channel_range: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """FlowJo 10's biexponential lookup table: (linear value, channel) for channels 0..range.

    The table is FlowJo's definition of the scale (ported by FlowKit from cytolib), so values
    between table entries are linearly interpolated exactly like FlowJo does.
    """
    from flowkit._models.transforms._wsp_transforms import generate_biex_lut

    x, ch = generate_biex_lut(
        channel_range=channel_range,
        pos=positive,
        neg=negative,
        width_basis=width,
        max_value=max_value,
    )
    x = np.asarray(x, dtype=np.float64)
    ch = np.asarray(ch, dtype=np.float64)
    x.setflags(write=False)
    ch.setflags(write=False)
    return x, ch


def biex(
    x: np.ndarray,
    negative: float = 0.0,
    width: float = -10.0,
    positive: float = 4.418540,
    max_value: float = 262144.000029,
    channel_range: int = 4096,
) -> np.ndarray:
    """FlowJo biexponential scale: linear values -> channels [0, channel_range], clamped."""
    lx, ly = biex_lut(negative, width, positive, max_value, channel_range)
    return np.interp(np.asarray(x, dtype=np.float64), lx, ly)


def biex_inverse(
    y: np.ndarray,
    negative: float = 0.0,
    width: float = -10.0,
    positive: float = 4.418540,
    max_value: float = 262144.000029,
    channel_range: int = 4096,
) -> np.ndarray:
    lx, ly = biex_lut(negative, width, positive, max_value, channel_range)
    return np.interp(np.asarray(y, dtype=np.float64), ly, lx)


# --------------------------------------------------------------------------- a channel's scale


_FORWARD = {
    "logicle": lambda x, p: logicle_fast(x, p["T"], p["W"], p["M"], p["A"]),
    "asinh": lambda x, p: asinh(x, p["T"], p["M"], p["A"]),
    "hyperlog": lambda x, p: hyperlog(x, p["T"], p["W"], p["M"], p["A"]),
    "linear": lambda x, p: linear(x, p["T"], p.get("A", 0.0)),
    "log": lambda x, p: log(x, p["T"], p["M"]),
    "biex": lambda x, p: biex(x, p["negative"], p["width"], p["positive"], p["max_value"]),
    "arcsinh": lambda x, p: arcsinh(x, p["cofactor"]),
}
_INVERSE = {
    "logicle": lambda y, p: logicle_inverse(y, p["T"], p["W"], p["M"], p["A"]),
    "asinh": lambda y, p: asinh_inverse(y, p["T"], p["M"], p["A"]),
    "hyperlog": lambda y, p: hyperlog_inverse(y, p["T"], p["W"], p["M"], p["A"]),
    "linear": lambda y, p: linear_inverse(y, p["T"], p.get("A", 0.0)),
    "log": lambda y, p: log_inverse(y, p["T"], p["M"]),
    "biex": lambda y, p: biex_inverse(y, p["negative"], p["width"], p["positive"], p["max_value"]),
    "arcsinh": lambda y, p: arcsinh_inverse(y, p["cofactor"]),
}


@dataclass(frozen=True)
class Scale:
    """One channel scale, for the pipeline (how a channel was put on the gating scale, so
    clustering can undo it: cytopipe.cluster.common_scale) and for Gating-ML/FlowJo gates alike.

    kind: a Gating-ML transformation (logicle, asinh, hyperlog, linear, log, fratio), FlowJo's
    biex, or arcsinh with a cofactor (the cytometry convention, not Gating-ML's asinh); `params`
    are its named parameters in Gating-ML spelling (T, W, M, A); fratio also has `inputs`.
    """

    id: str
    kind: str
    params: tuple[tuple[str, float], ...]
    inputs: tuple[str, ...] = ()  # fratio: (numerator, denominator) FCS dimension names

    @classmethod
    def logicle(cls, t: float, w: float, m: float, a: float, id: str = "logicle") -> Scale:
        return cls(id, "logicle", (("T", t), ("W", w), ("M", m), ("A", a)))

    @classmethod
    def linear(cls, t: float, a: float = 0.0, id: str = "linear") -> Scale:
        return cls(id, "linear", (("T", t), ("A", a)))

    @classmethod
    def arcsinh(cls, cofactor: float, id: str = "arcsinh") -> Scale:
        return cls(id, "arcsinh", (("cofactor", cofactor),))

    @property
    def p(self) -> dict[str, float]:
        return dict(self.params)

    def __str__(self) -> str:
        p = self.p
        if self.kind == "linear" and not p.get("A"):
            return f"linear/{p['T']:g}"
        if self.kind == "arcsinh":
            return f"arcsinh(cofactor={p['cofactor']:g})"
        if self.kind == "logicle":
            return f"logicle(T={p['T']:g}, W={p['W']:.4g}, M={p['M']:g}, A={p['A']:g})"
        return f"{self.kind}({', '.join(f'{k}={v:g}' for k, v in self.params)})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.kind not in _FORWARD:
            raise GatingError(
                f"transformation {self.id!r} of kind {self.kind!r} cannot scale a channel"
            )
        return _FORWARD[self.kind](x, self.p)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        if self.kind not in _INVERSE:
            raise GatingError(f"transformation {self.id!r} of kind {self.kind!r} has no inverse")
        return _INVERSE[self.kind](y, self.p)

    @property
    def total_order_preserving(self) -> bool:
        """True when x >= inverse(L) <=> forward(x) >= L for every real x (no NaN, no clamping),
        which lets a range on this scale be tested on linear values."""
        if self.kind in ("logicle", "asinh", "hyperlog", "arcsinh"):
            return True
        return self.kind == "linear" and self.p["T"] + self.p.get("A", 0.0) > 0

    def to_record(self) -> dict:
        """The scale as JSON (provenance.scales of a preprocessed record)."""
        return {"kind": self.kind, **self.p}

    @classmethod
    def from_record(cls, rec: Mapping) -> Scale:
        """Inverse of to_record; also reads the older record (lower-case t, w, m, a and cofactor
        for every kind), so samples preprocessed before the change still pool correctly."""
        kind = rec["kind"]
        if "t" in rec:  # the older spelling
            if kind == "arcsinh":
                return cls.arcsinh(float(rec["cofactor"]))
            if kind == "linear":
                return cls.linear(float(rec["t"]))
            return cls.logicle(*(float(rec[k]) for k in "twma"))
        params = tuple((k, float(v)) for k, v in rec.items() if k != "kind")
        return cls(kind, kind, params)
