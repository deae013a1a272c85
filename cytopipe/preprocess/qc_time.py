"""Time-based QC: the Time channel and its unit, unwrapping a clock that went backwards, time
bins as contiguous event slices, and the events removed for the flagged bins.

`_time_qc` runs it for `run_qc`: it bins the acquisition, asks cytopipe.preprocess.qc_bins
which bins are anomalous (rate, signal), and turns runs of flagged bins into event ranges,
trimming the edge bins of a rate anomaly to the Time ticks that belong to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cytopipe.preprocess.qc_bins import (
    _bin_means,
    _bin_medians,
    _flag_bins,
    _flag_rate,
    _Flags,
    _sample_index,
)
from cytopipe.preprocess.qc_margins import _finite_float

_TIME_NAME = re.compile(r"^\s*(time|hdr-t)\s*$", re.IGNORECASE)


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


# --- time --------------------------------------------------------------------------------------


def find_time_channel(pnn: Sequence[str]) -> int | None:
    """Index of the Time channel (Time, TIME, HDR-T; the last one, as read_fcs scales it)."""
    hits = [i for i, name in enumerate(pnn) if _TIME_NAME.match(name)]
    return hits[-1] if hits else None


def time_step_seconds(
    pnn: Sequence[str], keywords: Mapping[str, str], time_idx: int
) -> tuple[float | None, str | None]:
    """Seconds per unit of the Time values as `read_fcs` returns them, and a note.

    read_fcs already multiplies the last channel named "time" by a numeric $TIMESTEP (FlowKit's
    raw scale): then the factor is 1. Other time channels (HDR-T) still need $TIMESTEP. BD
    CellQuest files have no $TIMESTEP but $TIMETICKS (milliseconds per tick). Without either
    the unit is unknown (None): bins are then sized by events alone.
    """
    step = _finite_float(keywords.get("timestep"))
    names = [i for i, n in enumerate(pnn) if n.lower() == "time"]
    if step is not None and step > 0:
        if names and names[-1] == time_idx:
            return 1.0, None
        return step, None
    ticks = _finite_float(keywords.get("timeticks"))
    if ticks is not None and ticks > 0:
        return ticks / 1000.0, f"Time scaled with $TIMETICKS ({ticks:g} ms per tick)"
    return None, "no usable $TIMESTEP or $TIMETICKS: Time unit unknown, rates are per Time unit"


def unwrap_time(t: np.ndarray, time_range: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Monotonic acquisition time and notes: backward jumps are clock wrap-arounds (the value
    was near the top of the Time range: add the range) or resets (continue from the last
    value); backward steps of a few ticks are jitter, absorbed by a running maximum."""
    out, _, notes = _monotonic(np.asarray(t), time_range)
    return out, notes


def _monotonic(t: np.ndarray, time_range: float | None) -> tuple[np.ndarray, float, list[str]]:
    """(monotonic time, tick, notes); `t` is returned as is (no copy) when it never goes back.
    The tick is the smallest positive step (the clock's resolution, or finer)."""
    if t.dtype.kind != "f":
        t = t.astype(np.float64)
    if t.size < 2:
        return t, 0.0, []
    d = np.diff(t)
    tick = float(np.min(d, where=d > 0, initial=np.inf))
    tick = tick if math.isfinite(tick) else 0.0
    if tick > 0:  # float32 Time rounds each step a little: the typical smallest step is the tick
        head = d[: 1 << 20]
        near = head[(head > 0) & (head < 1.5 * tick)]
        tick = float(np.median(near)) if near.size else tick
    if not (d < 0).any():
        return t, tick, []
    notes: list[str] = []
    t = t.astype(np.float64)
    big = np.flatnonzero(d < -10.0 * tick) if tick > 0 else np.flatnonzero(d < 0)
    if big.size:
        offsets = np.empty(big.size)
        kinds = []
        for j, k in enumerate(big):  # one iteration per jump, never per event
            before, after = t[k], t[k + 1]
            wrap = bool(
                time_range
                and time_range > 0
                and before >= 0.8 * time_range
                and after <= 0.2 * time_range
            )
            offsets[j] = time_range if wrap else before - after + tick
            kinds.append("wrap-around" if wrap else "reset")
        shift = np.zeros(t.size)
        shift[big + 1] = offsets
        t += np.cumsum(shift)
        where = ", ".join(
            f"event {k + 2} ({kind})" for k, kind in zip(big[:5], kinds, strict=False)
        )
        more = f" and {big.size - 5} more" if big.size > 5 else ""
        notes.append(f"Time went backwards at {where}{more}: unwrapped")
    back = int(np.count_nonzero(np.diff(t) < 0))
    if back:
        np.maximum.accumulate(t, out=t)
        notes.append(f"{back} small backward step(s) in Time (clock jitter) absorbed")
    return t, tick, notes


@dataclass
class _Bins:
    bounds: np.ndarray  # event index of each bin start, plus n at the end
    start: np.ndarray
    end: np.ndarray
    width: float
    tick: float
    rate_events: np.ndarray  # events that count toward the rate (see _make_bins)
    rate_dur: np.ndarray


def _make_bins(
    t: np.ndarray, tick: float, s: Mapping, seconds: bool
) -> tuple[_Bins | None, str | None]:
    """Time bins of whole ticks, at least `bin_seconds` wide and wide enough for about
    `min_events_per_bin` events at the mean rate, at most `max_bins`; bins are contiguous
    event slices because `t` is monotonic."""
    n = t.size
    if tick <= 0:
        return None, "Time is constant: time-based QC skipped"
    span = float(t[-1] - t[0]) + tick
    width = max(
        float(s["bin_seconds"]) if seconds else tick,
        s["min_events_per_bin"] * span / n,
        span / s["max_bins"],
    )
    k = max(1, math.ceil(width / tick - 1e-3))  # tolerate float32 rounding of the tick
    width = k * tick
    n_bins = max(1, int(span // width + 1e-9))  # the remainder joins the last bin
    if n_bins < s["min_bins"]:
        return None, (
            f"only {n_bins} time bin(s) of >= {s['min_events_per_bin']} events "
            f"({n} events): too short for time-based QC, skipped"
        )
    edges = float(t[0]) - tick / 2 + width * np.arange(n_bins + 1)
    edges[-1] = float(t[-1]) + tick / 2
    bounds = np.searchsorted(t, edges.astype(t.dtype), side="left")
    bounds[0], bounds[-1] = 0, n
    # The first and last Time ticks may be partly acquired (acquisition starts and stops
    # between two ticks): their events do not count toward the rate of their bin.
    rate_events = np.diff(bounds).astype(np.float64)
    rate_dur = np.diff(edges)
    ticks = np.rint(rate_dur / tick)
    at = t.dtype.type  # search with t's own dtype: a float64 key would copy all of t
    first = np.searchsorted(t, at(float(t[0]) + tick / 2))
    last = n - np.searchsorted(t, at(float(t[-1]) - tick / 2))
    if ticks[0] >= 2 + (n_bins == 1):
        rate_events[0] -= first
        rate_dur[0] -= tick
    else:  # a one-tick bin: its rate is unknown
        rate_dur[0] = np.nan
    if ticks[-1] >= 2 + (n_bins == 1):
        rate_events[-1] -= last
        rate_dur[-1] -= tick
    else:
        rate_dur[-1] = np.nan
    return _Bins(bounds, edges[:-1], edges[1:], width, tick, rate_events, rate_dur), None


# --- flagged bins -> removed events ----------------------------------------------------------


def _time_qc(
    time: np.ndarray,
    signals: Mapping[str, np.ndarray],
    margin: np.ndarray,
    timestep: float | None,
    time_range: float | None,
    s: Mapping,
    notes: list[str],
):
    """Flag time bins; returns (bins table, per-event flagged, per-event rate-flagged, width)
    or None when the time-based QC cannot run (the reason is appended to `notes`)."""
    n = time.size
    if n == 0:
        return None
    if not math.isfinite(float(np.sum(time, dtype=np.float64))):  # NaN/inf anywhere; no copy
        notes.append("Time has non-finite values: time-based QC skipped")
        return None
    t, tick, tnotes = _monotonic(time, time_range)
    notes += tnotes
    if timestep is not None and timestep != 1.0:
        t = t * timestep  # a new array: never scale the caller's Time in place
        tick *= timestep
    bins, why = _make_bins(t, tick, s, seconds=timestep is not None)
    if bins is None:
        notes.append(why)
        return None
    counts = np.diff(bins.bounds)
    n_bins = counts.size
    fl = _Flags(
        strong=np.zeros(n_bins, dtype=bool),
        weak=np.zeros(n_bins, dtype=bool),
        rate=np.zeros(n_bins, dtype=bool),
        extreme=np.zeros(n_bins, dtype=bool),
        reasons=[[] for _ in range(n_bins)],
        features=[],
    )
    if timestep is not None:
        window = round(float(s["rate_window_seconds"]) / bins.width)
    else:
        window = n_bins // 4
    rate, expected = _flag_rate(bins.rate_events, bins.rate_dur, max(window, 3), s, fl)
    rate_flags = fl.copy()
    # Signal statistics leave margin events out: a saturated burst is the margin rule's business.
    bad = np.flatnonzero(margin)
    n_ok = counts - np.bincount(
        np.searchsorted(bins.bounds, bad, side="right") - 1, minlength=n_bins
    )
    min_stat = max(20, int(s["min_events_per_bin"]) // 4)
    ok = ~margin if bad.size else None
    sample = _sample_index(bins.bounds, int(s["max_median_events"]))
    columns: dict[str, np.ndarray] = {}
    stats: dict[str, np.ndarray] = {}
    for name, values in signals.items():
        values = np.asarray(values)
        med = _bin_medians(values, sample, ok, n_ok >= min_stat)
        columns[f"median:{name}"] = med
        if s["signal_statistic"] == "mean":
            stat = _bin_means(values, bins.bounds, bad, n_ok, min_stat)
            columns[f"mean:{name}"] = stat
        else:
            stat = med
        stats[name] = stat
    fl, flagged = _flag_bins(stats, counts, rate_flags, s, None)
    bulk = ~flagged
    if flagged.any() and bulk.sum() >= max(int(s["min_bins"]), 0.25 * n_bins):
        # Judge again against the stable bulk: a drift over a third of the acquisition moves
        # the all-bins median of every channel it leaks into (through compensation).
        fl, flagged = _flag_bins(stats, counts, rate_flags, s, bulk)
    lo, hi = _removal_ranges(t, bins, flagged, fl.rate, rate, expected, s)
    bad = _ranges_mask(lo, hi, n)
    removed_in_bin = _removed_per_bin(lo, hi, bins.bounds)
    df = pd.DataFrame(
        {
            "start": bins.start,
            "end": bins.end,
            "events": counts,
            "rate": rate,
            "rate_expected": expected,
        }
    )
    for name, col in columns.items():
        df[name] = col
    df["flagged"] = flagged
    df["events_removed"] = removed_in_bin
    df["reason"] = ["; ".join(r) if f else "" for r, f in zip(fl.reasons, flagged, strict=True)]
    if flagged.any():
        unit = "s" if timestep is not None else " Time units"
        notes.append(
            f"{int(flagged.sum())} of {n_bins} time bins ({_round(bins.width, 4):g}{unit} each) "
            f"flagged, {int(removed_in_bin.sum())} events removed"
        )
    bad_rate = bad & np.repeat(flagged & fl.rate, counts)
    return df, bad, bad_rate, bins.width


def _ranges_mask(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of events in the half-open index ranges [lo, hi) (a loop over ranges)."""
    out = np.zeros(n, dtype=bool)
    for a, b in zip(lo, hi, strict=True):
        out[a:b] = True
    return out


def _removed_per_bin(lo: np.ndarray, hi: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Events of each bin inside the ranges (ranges are few; bins are a short vector)."""
    below = np.zeros(bounds.size)
    for a, b in zip(lo, hi, strict=True):
        below += np.clip(bounds - a, 0, b - a)
    return np.diff(below).astype(np.int64)


def _removal_ranges(
    t: np.ndarray,
    bins: _Bins,
    flagged: np.ndarray,
    rate_flagged: np.ndarray,
    rate: np.ndarray,
    expected: np.ndarray,
    s: Mapping,
) -> tuple[np.ndarray, np.ndarray]:
    """Event index ranges to remove: each run of flagged bins, with its two edge bins trimmed
    to the Time ticks that belong to the anomaly when the rate flagged them.

    A clog or bubble rarely starts on a bin edge; the edge bin then holds normal events
    before (or after) it. Where a bin spans several ticks and a tick holds enough events to
    judge, the ticks on the outer side of the first (last) tick whose count is off the
    expected rate like the run's are kept. Loops over runs and their edge ticks only.
    """
    starts = np.flatnonzero(flagged & ~np.r_[False, flagged[:-1]])
    ends = np.flatnonzero(flagged & ~np.r_[flagged[1:], False])
    lo = bins.bounds[starts].copy()
    hi = bins.bounds[ends + 1].copy()
    mc = float(s["rate_min_change"])
    for r, (a, b) in enumerate(zip(starts, ends, strict=True)):
        run = slice(a, b + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = rate[run] / expected[run]
        if not rate_flagged[run].any() or not np.isfinite(ratio).any():
            continue
        low = np.nanmedian(ratio) < 1.0
        for edge, first in ((a, True), (b, False)):
            if not rate_flagged[edge] or (a == b and not first and lo[r] != bins.bounds[a]):
                continue
            keep = _edge_ticks(t, bins, edge, expected[edge], low, mc, from_start=first)
            if first:
                lo[r] = bins.bounds[edge] + keep
            else:
                hi[r] = bins.bounds[edge + 1] - keep
    ok = hi > lo
    return lo[ok], hi[ok]


def _edge_ticks(
    t: np.ndarray,
    bins: _Bins,
    b: int,
    expected_rate: float,
    low: bool,
    mc: float,
    from_start: bool,
) -> int:
    """Events at the outer side of edge bin `b` acquired at the expected rate (0 if unknown)."""
    lo, hi = int(bins.bounds[b]), int(bins.bounds[b + 1])
    per_tick = expected_rate * bins.tick
    ticks = int(round((bins.end[b] - bins.start[b]) / bins.tick))
    if ticks < 2 or not np.isfinite(per_tick) or per_tick < 8 or hi <= lo:
        return 0
    which = np.clip(((t[lo:hi] - bins.start[b]) / bins.tick).astype(np.int64), 0, ticks - 1)
    count = np.bincount(which, minlength=ticks)
    odd = count <= (1 - mc) * per_tick if low else count >= (1 + mc) * per_tick
    if not from_start:
        odd, count = odd[::-1], count[::-1]
    hits = np.flatnonzero(odd)
    first_odd = int(hits[0]) if hits.size else ticks
    return int(count[:first_odd].sum()) if hits.size else 0
