"""Per-bin statistics of the time-based QC and the rules that flag bins: robust baselines,
the flow-rate rule, the signal rule (single bins and smoothed drifts), hysteresis over runs,
and the optional isolation forest.

Split from cytopipe.preprocess.qc_time so the statistics (why the mean, why both halves of a
smoothed window must agree, why baselines come from the stable bulk) read on their own; the
reasons for each rule are in cytopipe.preprocess.qc's docstring.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cytopipe.preprocess.robust import robust_sd

# A flagged run of bins grows into neighbours whose signal moved by at least this fraction of
# signal_min_shift (and z_extend robust SDs): the shoulders of a drift, the edges of a bubble.
_WEAK_SHIFT = 0.75
# The two halves of a smoothed window must each show a drift with at least this z (see
# `_smoothed`): a clean half next to a drift's start rarely does.
_SIDE_Z = 2.0


# --- per-bin statistics ------------------------------------------------------------------------


def _sample_index(bounds: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, valid): up to `cap` evenly spread event indices per bin, as an (n_bins, cap)
    matrix (events arrive in random biological order, so an even spread is a fair sample)."""
    counts = np.diff(bounds)
    width = int(max(1, min(cap, counts.max(initial=1))))
    take = np.minimum(counts, width)
    j = np.arange(width)
    idx = bounds[:-1, None] + (j[None, :] * counts[:, None]) // np.maximum(take[:, None], 1)
    valid = j[None, :] < take[:, None]
    return np.where(valid, idx, 0), valid


def _bin_medians(
    values: np.ndarray,
    sample: tuple[np.ndarray, np.ndarray],
    ok: np.ndarray | None,
    enough: np.ndarray,
) -> np.ndarray:
    """Median per bin over the sampled events that are `ok` (not margin events) and finite;
    NaN where not `enough`. One gather and one row-wise sort (SIMD) per channel."""
    idx, valid = sample
    x = values[idx]
    valid = valid & np.isfinite(x)
    if ok is not None:
        valid &= ok[idx]
    x = np.where(valid, x, np.inf)
    x.sort(axis=1)
    m = valid.sum(axis=1)
    rows = np.arange(x.shape[0])
    lo, hi = np.maximum(m - 1, 0) // 2, m // 2
    with np.errstate(invalid="ignore"):
        med = 0.5 * (x[rows, lo].astype(np.float64) + x[rows, np.minimum(hi, x.shape[1] - 1)])
    med[(m == 0) | ~enough] = np.nan
    return med


def _bin_means(
    values: np.ndarray, bounds: np.ndarray, bad: np.ndarray, n_ok: np.ndarray, min_events: int
) -> np.ndarray:
    """Mean of each contiguous slice without the events at indices `bad` (sparse: margin
    events), NaN for slices with fewer than `min_events` such events. One reduceat pass."""
    n = values.size
    counts = np.diff(bounds)
    starts = np.minimum(bounds[:-1], max(n - 1, 0))
    sums = np.add.reduceat(values, starts).astype(np.float64) if n else np.zeros(counts.size)
    sums[counts == 0] = 0.0  # reduceat returns the element at an empty slice's start
    if bad.size:
        which = np.searchsorted(bounds, bad, side="right") - 1
        sums -= np.bincount(which, weights=values[bad].astype(np.float64), minlength=counts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / n_ok
    out[n_ok < min_events] = np.nan
    return out


def _robust(x: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """(median, max(robust SD, floor)) over the finite values; (NaN, NaN) if there are none."""
    v = x[np.isfinite(x)]
    if not v.size:
        return np.nan, np.nan
    base = float(np.median(v))
    return base, max(float(robust_sd(v, base)), floor, 1e-12)


def _robust_refined(x: np.ndarray, cut: float, floor: float = 0.0) -> tuple[float, float]:
    """`_robust`, re-estimated without the values beyond `cut` robust SDs: when a drift covers
    a quarter of the acquisition it biases the first median toward itself and inflates the MAD.
    """
    base, scale = _robust(x, floor)
    if not np.isfinite(base):
        return base, scale
    with np.errstate(invalid="ignore"):
        inner = np.abs(x - base) < cut * scale
    if inner.sum() >= 0.5 * np.isfinite(x).sum():
        base, scale = _robust(np.where(inner, x, np.nan), floor)
    return base, scale


def _baseline(x: np.ndarray, cut: float, bulk: np.ndarray | None) -> tuple[float, float]:
    """Center and spread of a per-bin series: the median of the `bulk` bins (the stable part
    of the acquisition, when known) and the larger of the bulk's and all bins' robust SD (the
    bulk's alone, estimated from fewer bins, would sometimes come out small by chance)."""
    base, scale = _robust_refined(x, cut)
    if bulk is not None:
        base, scale_bulk = _robust_refined(np.where(bulk, x, np.nan), cut)
        scale = max(scale, scale_bulk)
    return base, scale


def _smoothed(
    x: np.ndarray, window: int, clip: float, bulk: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deviation and robust z-score of a per-bin series averaged over the 2 * `window` - 1 bins
    centred on each bin, for slow drifts whose single bins stay within the noise.

    Edge-preserving: the `window` bins ending at a bin and the `window` bins starting at it
    must each deviate the same way as the centred mean by at least `_SIDE_Z` SDs (near either
    end of the acquisition only the side that is complete), so a drift does not bleed into
    the clean bins before it starts, while on a ramp the centred mean stays unbiased. Values
    are first clipped to `clip` robust SDs, so that one wild bin (a bubble) cannot drag its
    neighbours along. Bins are independent samples of the same events: the mean of m bins has
    the single-bin SD over sqrt(m) (the MAD of a smoothed series would be estimated from few
    effectively independent values, and noisily). Baselines come from the `bulk` bins.
    Returns (deviation, z); 0 where the sides disagree, NaN where x is NaN or too short."""
    dev = np.full(x.shape, np.nan)
    z = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    h = max(int(window), 2)
    if ok.sum() < 2 * h:
        return dev, z
    base, scale = _baseline(x, clip, bulk)
    v = np.clip(x[ok].astype(np.float64), base - clip * scale, base + clip * scale)
    m = v.size
    csum = np.r_[0.0, np.cumsum(v)]
    i = np.arange(m)
    lo, hi = np.maximum(i - h + 1, 0), np.minimum(i + h, m)
    n_left, n_right, n_mid = i + 1 - lo, hi - i, hi - lo
    left = (csum[i + 1] - csum[lo]) / n_left
    right = (csum[hi] - csum[i]) / n_right
    mid = (csum[hi] - csum[lo]) / n_mid
    in_bulk = np.ones(m, dtype=bool) if bulk is None else bulk[ok]
    base_s, _ = _robust_refined(np.where((n_mid == 2 * h - 1) & in_bulk, mid, np.nan), clip)
    dm = mid - base_s
    sign = np.sign(dm)
    agree = np.ones(m, dtype=bool)
    for side, count in ((left - base_s, n_left), (right - base_s, n_right)):
        complete = count == h
        z_side = sign * side / (scale / np.sqrt(count))
        agree &= ~complete | (z_side >= _SIDE_Z)
    d = np.where(agree, dm, 0.0)
    dev[ok] = d
    z[ok] = d / (scale / np.sqrt(n_mid))
    return dev, z


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Bins in a run of consecutive weak-or-strong bins that holds at least one strong bin."""
    cand = strong | weak
    starts = cand & ~np.r_[False, cand[:-1]]
    run = np.cumsum(starts) * cand
    seeded = np.zeros(int(run.max()) + 1, dtype=bool)
    seeded[run[strong]] = True
    seeded[0] = False
    return seeded[run]


@dataclass
class _Flags:
    strong: np.ndarray
    weak: np.ndarray
    rate: np.ndarray  # bins where the rate criterion (weak or strong) fired
    extreme: np.ndarray  # bins whose rate is extreme (a physical rule, not a statistical one)
    reasons: list[list[str]]
    features: list[np.ndarray]

    def copy(self) -> _Flags:
        return _Flags(
            self.strong.copy(),
            self.weak.copy(),
            self.rate.copy(),
            self.extreme.copy(),
            [list(r) for r in self.reasons],
            list(self.features),
        )


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centered running median over `window` (odd) values, NaN skipped, shorter at the ends."""
    w = max(1, int(window) | 1)
    if x.size == 0:
        return x.copy()
    h = w // 2
    padded = np.concatenate([np.full(h, np.nan), x, np.full(h, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)
    with warnings.catch_warnings():  # an all-NaN window gives NaN, which is what we want
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(windows, axis=1)


def _flag_rate(
    counts: np.ndarray, dur: np.ndarray, window: int, s: Mapping, fl: _Flags
) -> tuple[np.ndarray, np.ndarray]:
    """Flag bins by event rate; returns (rate, expected rate).

    Two ways a rate is anomalous. Extreme: below 1/`rate_extreme_factor` or above that factor
    times the acquisition's median rate (a clog, however long). Abrupt: off by
    `rate_min_change` (relative) and `z_threshold` robust SDs from the rate expected there, a
    running median over `window` bins that leaves out the extreme bins. Slow trends of the rate
    (a tube settling, a well emptying) move the expected rate with them and are not anomalies:
    the signal rules judge whether the events acquired meanwhile are any different.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(dur > 0, counts / dur, np.nan)
    base_g, _ = _robust(rate)
    ex = float(s["rate_extreme_factor"])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_g = rate / base_g if base_g > 0 else np.ones_like(rate)
    extreme = (ratio_g <= 1.0 / ex) | (ratio_g >= ex)
    expected = _running_median(np.where(extreme, np.nan, rate), window)
    expected = np.where(np.isfinite(expected), expected, base_g)
    poisson = math.sqrt(max(float(np.median(counts)), 1.0)) / float(np.nanmedian(dur))
    _, scale = _robust(np.where(extreme, np.nan, rate - expected), floor=poisson)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (rate - expected) / scale
        rel = np.where(expected > 0, rate / expected - 1.0, 0.0)
        k, kw, mc = s["z_threshold"], s["z_extend"], s["rate_min_change"]
        strong = ((np.abs(z) >= k) & (np.abs(rel) >= mc)) | extreme
        weak = (np.abs(z) >= kw) & (np.abs(rel) >= mc / 2)
    fl.strong |= strong
    fl.weak |= weak
    fl.rate |= strong | weak
    fl.extreme |= extreme
    fl.features.append(np.nan_to_num(z))
    for b in np.flatnonzero(strong | weak):
        fl.reasons[b].append(f"rate x{rate[b] / expected[b]:.2f} of expected (z={z[b]:+.1f})")
    return rate, expected


def _flag_signals(
    stats: Mapping[str, np.ndarray],
    counts: np.ndarray,
    s: Mapping,
    fl: _Flags,
    bulk: np.ndarray | None = None,
) -> None:
    """Flag bins by each channel's per-bin statistic, in two steps.

    Step 1 judges single bins (sharp changes). Step 2 judges a centred mean over bins holding
    about 2 x `smooth_events` events whose halves agree (slow drifts; see `_smoothed`),
    computed without the bins step 1 or the rate flagged strongly, so that a bubble's wild bins
    do not drag their clean neighbours along. Baselines (median, MAD) come from the `bulk`
    bins (all when None).
    """
    k, kw, shift = s["z_threshold"], s["z_extend"], s["signal_min_shift"]
    label = s["signal_statistic"]
    dev: dict[str, np.ndarray] = {}
    n_strong = np.zeros(fl.strong.size, dtype=np.int64)
    huge = np.zeros(fl.strong.size, dtype=bool)
    for name, stat in stats.items():
        base, scale = _baseline(stat, kw, bulk)
        d = stat - base
        z = d / scale
        with np.errstate(invalid="ignore"):
            strong = (np.abs(z) >= k) & (np.abs(d) >= shift)
            weak = (np.abs(z) >= kw) & (np.abs(d) >= _WEAK_SHIFT * shift)
        n_strong += strong
        huge |= strong & (np.abs(z) >= 2 * k)
        fl.weak |= weak
        fl.features.append(np.nan_to_num(z))
        dev[name] = np.where(weak | strong, d, np.nan)
    # Bins x channels are many tests per file: a single bin seeds a flag when two channels
    # agree (a bubble moves them all) or one moves by twice the threshold.
    fl.strong |= (n_strong >= 2) | huge
    sharp = fl.strong.copy()
    per_bin = float(np.median(counts)) if counts.size else 1.0
    window = max(3, round(float(s["smooth_events"]) / max(per_bin, 1.0)))
    for name, stat in stats.items():
        ds, zs = _smoothed(np.where(sharp, np.nan, stat), window, kw, bulk)
        with np.errstate(invalid="ignore"):
            strong = (np.abs(zs) >= k) & (np.abs(ds) >= shift)
            weak = (np.abs(zs) >= kw) & (np.abs(ds) >= _WEAK_SHIFT * shift)
        fl.strong |= strong
        fl.weak |= weak
        fl.features.append(np.nan_to_num(zs))
        d = np.where(np.isfinite(dev[name]), dev[name], np.where(weak | strong, ds, np.nan))
        for b in np.flatnonzero(np.isfinite(d)):
            fl.reasons[b].append(f"{name} {label} {d[b]:+.3f}")


def _flag_bins(
    stats: Mapping[str, np.ndarray],
    counts: np.ndarray,
    rate_flags: _Flags,
    s: Mapping,
    bulk: np.ndarray | None,
) -> tuple[_Flags, np.ndarray]:
    """Signal flags on top of the rate flags, seeds (z rule or isolation forest), hysteresis."""
    fl = rate_flags.copy()
    _flag_signals(stats, counts, s, fl, bulk)
    seeds = fl.strong
    if s["method"] == "isolation_forest" and fl.features:
        seeds = _isolation_seeds(fl.features, s) | fl.extreme
    return fl, _hysteresis(seeds, fl.weak | fl.strong)


def _isolation_seeds(features: list[np.ndarray], s: Mapping) -> np.ndarray:
    """Bins an isolation forest isolates early AND that deviate by at least min_z somewhere:
    the forest ranks unusual combinations, the z floor keeps it from flagging clean files."""
    from sklearn.ensemble import IsolationForest

    x = np.column_stack([np.nan_to_num(f) for f in features])
    iso = s["isolation_forest"]
    forest = IsolationForest(
        n_estimators=100, contamination=iso["contamination"], random_state=int(iso["seed"])
    )
    outlier = forest.fit_predict(x) == -1
    return outlier & (np.abs(x).max(axis=1) >= iso["min_z"])
