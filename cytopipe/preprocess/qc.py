"""Acquisition QC: remove margin events and the parts of an acquisition where the flow or the
signal went wrong, and say how much was removed and why (issue 8).

Why each rule exists, and the choices behind it:

* Margin events. An event at the top of a detector's range ($PnR - 1, decoded like the data:
  see `channel_top`) has an unknown true value (the detector saturated), and an event at or
  below zero in a scatter channel is not a measurement of a particle. Both are removed before
  gating. Margins are judged on the raw (uncompensated) values: saturation is a property of the
  detector.
* Time bins. Clogs, bubbles and fluidics or laser drift change the event rate and the signal
  of everything acquired while they last, whatever the cells are. The acquisition is cut into
  time bins (Time in seconds; whole Time ticks per bin; at least `bin_seconds` and wide enough
  for about `min_events_per_bin` events at the mean rate; at most `max_bins`).
* Flow rate. A bin is anomalous when its rate is extreme against the whole acquisition (below
  1/`rate_extreme_factor` or above that factor: a clog, however long) or departs abruptly from
  the rate expected there (a running median over `rate_window_seconds`), by `rate_min_change`
  and `z_threshold` robust SDs. Slow rate trends (a tube settling, a well emptying: the
  FACSCalibur plate wells in the reference data run at 1.7x their later rate for the first
  seconds) are not anomalies in themselves; the signal rule judges the events.
* Signal. Per bin and fluorescence channel, the mean on the analysis scale (logicle/arcsinh)
  of the events that are not margin events, judged by a robust z-score (median/MAD over
  bins) AND a minimum shift (`signal_min_shift`, analysis-scale units). The mean, not the
  median, is the default statistic because a channel whose events form two populations of
  similar size (CD24 on granulocytes vs lymphocytes) has a bin median that jumps between them
  as the mix changes by chance, while the mean moves smoothly; the median per bin is still
  computed for the report. A single bin seeds a flag when two channels agree or one departs
  by twice the threshold (bins x channels are many tests per file). A centred mean over bins
  holding about 2 x `smooth_events` events, whose two halves must agree (edge-preserving),
  computed without the bins already flagged, finds slow drifts whose single bins stay within
  the noise. Once anything is flagged, every bin is judged again against the stable bulk
  (the bins not flagged): a drift over a third of the acquisition moves the all-bins median
  of every channel it leaks into through compensation.
* Runs of flagged bins. Seeds grow into neighbouring bins that deviate by `z_extend` and most
  of the minimum change (hysteresis), so the ramp of a drift and the partial bins at the edges
  of a bubble go with them while isolated weak bins stay. The edge bins of a rate anomaly are
  trimmed to the Time ticks that belong to it. Optionally an isolation forest over the per-bin
  z-scores picks the seed bins (`method: isolation_forest`).
* Duplicated events. Two real events are never equal in every channel at once (Time, scatter
  and every detector): on the real reference files at most 0.1% of events have such a twin
  (coulter.lmd's FCS 2.0 dataset: 8 channels of 10-bit integers, no Time), although single
  channels of the old 10-bit files repeat values all the time. Many events equal in every
  channel mean a stuck acquisition or an export that wrote events repeatedly; the verdict is
  fail above `fail_duplicate_pct`. Files whose channels allow too few distinct events ($PnR
  levels per channel) to tell all events apart are not judged (noted).
* Time that goes backwards (the clock wrapped at the top of its range, or was reset) is
  unwrapped; backward steps of a few ticks (jitter) are absorbed. Files without a Time channel,
  with constant or non-finite Time, or too short for `min_bins` bins skip the time-based QC,
  and the notes say so.

Speed: events are in acquisition order, so after unwrapping every bin is a contiguous slice.
Counts come from one searchsorted, means from one `np.add.reduceat` per channel, medians from
one gather of at most `max_median_events` evenly spread events per bin and one row-wise sort,
margins from one blocked pass over the raw matrix, duplicates from one blocked hash pass and
one sort of the hashes. Loops run over bins, runs or channels, never over events. About
0.3-0.5 s for 10 M events x 12 channels on 2 shared cores (`benchmark`), plus ~0.4 s for the
duplicate check.
"""

from __future__ import annotations

import math
import re
import time as _time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "RULES",
    "QcResult",
    "benchmark",
    "channel_top",
    "duplicate_fraction",
    "find_time_channel",
    "margin_masks",
    "qc_sample",
    "qc_settings",
    "run_qc",
    "time_step_seconds",
    "unwrap_time",
]

DEFAULTS: dict = {
    "remove_margin_events": True,
    "time_qc": True,
    "method": "mad",
    "bin_seconds": 0.1,
    "min_events_per_bin": 150,
    "max_bins": 2000,
    "min_bins": 8,
    "z_threshold": 5.0,
    "z_extend": 3.5,
    "rate_min_change": 0.5,
    "rate_extreme_factor": 4.0,
    "rate_window_seconds": 10.0,
    "signal_min_shift": 0.02,
    "smooth_events": 1500,
    "signal_statistic": "mean",
    "max_median_events": 500,
    "margin_max_fraction": 0.5,
    "warn_removed_pct": 10.0,
    "fail_removed_pct": 30.0,
    "fail_duplicate_pct": 10.0,
    "isolation_forest": {"contamination": "auto", "min_z": 4.0, "seed": 0},
}

RULES = ("saturated", "scatter_floor", "flow_rate", "signal")
_TIME_NAME = re.compile(r"^\s*(time|hdr-t)\s*$", re.IGNORECASE)
_MAD = 1.4826  # MAD -> standard deviation of a normal distribution
# A flagged run of bins grows into neighbours whose signal moved by at least this fraction of
# signal_min_shift (and z_extend robust SDs): the shoulders of a drift, the edges of a bubble.
_WEAK_SHIFT = 0.75
# The two halves of a smoothed window must each show a drift with at least this z (see
# `_smoothed`): a clean half next to a drift's start rarely does.
_SIDE_Z = 2.0


@dataclass
class QcResult:
    """What QC decided for one sample.

    `keep` is True for the events that go on to gating. `removed` attributes every removed
    event to one rule, in the order of RULES (a saturated event inside a flagged bin counts as
    saturated), so its values add up to `events_in - events_kept`; "flow_rate" are events of
    bins flagged (also) for their rate, "signal" those flagged for their signal only.

    `bins` is the time-binned series for the report (None when the time-based QC was
    skipped), one row per bin: `start`, `end` (seconds, or Time units when the unit is
    unknown), `events`, `rate` and `rate_expected` (events per second; NaN for a one-tick edge
    bin), `median:<marker>` and `mean:<marker>` per fluorescence channel (analysis scale, margin
    events left out; NaN in bins with too few events), `flagged`, `events_removed` (edge bins of
    a rate anomaly may lose only part of their events) and `reason`.
    """

    keep: np.ndarray
    removed: dict[str, int]
    bins: pd.DataFrame | None
    verdict: str
    notes: list[str]
    margin_by_channel: dict[str, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def events_in(self) -> int:
        return int(self.keep.size)

    @property
    def events_kept(self) -> int:
        return int(np.count_nonzero(self.keep))

    @property
    def pct_kept(self) -> float:
        return 100.0 * self.events_kept / self.events_in if self.events_in else 0.0

    @property
    def bins_flagged(self) -> int:
        return 0 if self.bins is None else int(self.bins["flagged"].sum())

    def record(self) -> dict:
        """The small JSON-able summary for sample.json ("qc")."""
        bins = self.bins
        return {
            "verdict": self.verdict,
            "events_in": self.events_in,
            "events_kept": self.events_kept,
            "pct_kept": round(self.pct_kept, 4),
            "removed": dict(self.removed),
            "time_qc": "skipped" if bins is None else "done",
            "bins": 0 if bins is None else len(bins),
            "bins_flagged": self.bins_flagged,
            "bin_seconds": None if bins is None else _round(float(self.settings["bin_width"])),
            "time_unit": None if bins is None else self.settings.get("time_unit", "s"),
            "margin_by_channel": dict(self.margin_by_channel),
            "notes": list(self.notes),
        }

    def timeline(self) -> dict | None:
        """The binned series as JSON-able column lists (NaN -> None), for the report's "event
        rate and median signal over time, removed bins shaded" plot; None if time QC skipped."""
        if self.bins is None:
            return None
        b = self.bins

        def series(prefix: str) -> dict[str, list]:
            return {
                c.split(":", 1)[1]: _json_floats(b[c]) for c in b.columns if c.startswith(prefix)
            }

        return {
            "time_unit": self.settings.get("time_unit", "s"),
            "statistic": self.settings.get("signal_statistic", "mean"),
            "start": _json_floats(b["start"]),
            "end": _json_floats(b["end"]),
            "events": [int(v) for v in b["events"]],
            "events_removed": [int(v) for v in b["events_removed"]],
            "rate": _json_floats(b["rate"]),
            "rate_expected": _json_floats(b["rate_expected"]),
            "median": series("median:"),
            "mean": series("mean:"),
            "flagged": [bool(v) for v in b["flagged"]],
            "reason": [str(v) for v in b["reason"]],
        }


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def _json_floats(values) -> list:
    return [
        None if not np.isfinite(v) else _round(float(v)) for v in np.asarray(values, dtype=float)
    ]


# --- settings ----------------------------------------------------------------------------------


def qc_settings(cfg: Mapping | None) -> dict:
    """The `qc:` config section over DEFAULTS, checked, so a typo fails before any file is read."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"qc: unknown setting(s) {', '.join(unknown)}", hint=f"use {', '.join(DEFAULTS)}"
        )
    s = {**DEFAULTS, **cfg}
    s["isolation_forest"] = {
        **DEFAULTS["isolation_forest"],
        **dict(cfg.get("isolation_forest") or {}),
    }
    for key in ("remove_margin_events", "time_qc"):
        if not isinstance(s[key], bool):
            raise ConfigError(f"qc.{key} must be true or false, not {s[key]!r}")
    if s["signal_statistic"] not in ("mean", "median"):
        raise ConfigError(
            f"qc.signal_statistic must be mean or median, not {s['signal_statistic']!r}"
        )
    if s["method"] not in ("mad", "isolation_forest"):
        raise ConfigError(f"qc.method must be mad or isolation_forest, not {s['method']!r}")
    positive = (
        "bin_seconds",
        "z_threshold",
        "z_extend",
        "rate_min_change",
        "signal_min_shift",
        "rate_window_seconds",
    )
    for key in positive:
        _number(s, key, lo=0.0, strict=True)
    for key in ("min_events_per_bin", "max_bins", "min_bins", "smooth_events", "max_median_events"):
        _number(s, key, lo=1, integer=True)
    _number(s, "margin_max_fraction", lo=0.0, hi=1.0, strict=True)
    _number(s, "rate_extreme_factor", lo=1.0, strict=True)
    for key in ("warn_removed_pct", "fail_removed_pct", "fail_duplicate_pct"):
        _number(s, key, lo=0.0, hi=100.0)
    if s["z_extend"] > s["z_threshold"]:
        raise ConfigError("qc.z_extend must not exceed qc.z_threshold (it extends flagged bins)")
    if s["warn_removed_pct"] > s["fail_removed_pct"]:
        raise ConfigError("qc.warn_removed_pct must not exceed qc.fail_removed_pct")
    iso = s["isolation_forest"]
    extra = sorted(set(iso) - set(DEFAULTS["isolation_forest"]))
    if extra:
        raise ConfigError(f"qc.isolation_forest: unknown setting(s) {', '.join(extra)}")
    c = iso.get("contamination")
    if not (c == "auto" or (isinstance(c, int | float) and 0 < c <= 0.5)):
        raise ConfigError(
            f"qc.isolation_forest.contamination must be auto or in (0, 0.5], not {c!r}"
        )
    _number(iso, "min_z", lo=0.0, what="qc.isolation_forest.min_z")
    _number(iso, "seed", lo=0, integer=True, what="qc.isolation_forest.seed")
    return s


def _number(s: Mapping, key: str, *, lo=None, hi=None, strict=False, integer=False, what=None):
    v = s[key]
    name = what or f"qc.{key}"
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if ok and lo is not None:
        ok = v > lo if strict else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = f" {'>' if strict else '>='} {lo}" if lo is not None else ""
        bounds += f" and <= {hi}" if hi is not None else ""
        raise ConfigError(f"{name} must be {kind}{bounds}, not {v!r}")


# --- margins -----------------------------------------------------------------------------------


def _finite_float(text) -> float | None:
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def channel_top(keywords: Mapping[str, str], pnr: Sequence[float], i: int) -> float | None:
    """The value `read_fcs` returns for the top code ($PnR - 1) of channel i: log-amplified
    channels ($PnE) and gains ($PnG) change it, so a FACSCalibur's 1024-channel log FL1 tops
    out near 10^4, not at 1023. None when the file gives no usable range."""
    r = float(pnr[i])
    if not (r > 1 and math.isfinite(r)):
        return None
    top = r - 1.0
    e = keywords.get(f"p{i + 1}e", "")
    parts = [p.strip() for p in str(e).split(",")] if str(e).strip() else []
    if len(parts) == 2:
        f1, f2 = _finite_float(parts[0]), _finite_float(parts[1])
        if f1 and f1 > 0:
            top = 10 ** (f1 * top / r) * (f2 if f2 else 1.0)
    g = _finite_float(keywords.get(f"p{i + 1}g"))
    if g not in (None, 0.0, 1.0):
        top /= g
    return top


_CHUNK_ROWS = 1 << 15  # events per block of the margin pass (a 16-channel block is 2 MB)


def _margin_pass(
    raw: np.ndarray, top_cols: Sequence[int], tops: np.ndarray, floor_cols: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per event: any `top_cols` >= its top; any `floor_cols` <= 0.

    One pass over the event matrix in cache-sized row blocks, each compared as one flat
    vector against the per-channel limits tiled to the block (channels not checked get an
    unreachable limit): a comparison per row of a dozen channels would spend its time in loop
    overhead, and a column at a time would read the whole matrix once per channel. Margin
    events are rare, so their rows are found from the few flat hits.
    """
    n, n_ch = raw.shape
    sat = np.zeros(n, dtype=bool)
    floor = np.zeros(n, dtype=bool)
    if not n or not (len(top_cols) or len(floor_cols)):
        return sat, floor
    rows = min(_CHUNK_ROWS, n)
    lim_top = np.full(n_ch, np.inf)
    lim_top[list(top_cols)] = tops
    lim_floor = np.full(n_ch, -np.inf)
    lim_floor[list(floor_cols)] = 0.0
    tile_top = np.tile(lim_top.astype(raw.dtype), rows)
    tile_floor = np.tile(lim_floor.astype(raw.dtype), rows)
    hit = np.empty(rows * n_ch, dtype=bool)
    for a in range(0, n, rows):
        flat = np.ascontiguousarray(raw[a : a + rows]).reshape(-1)
        m = flat.size
        if len(top_cols):
            np.greater_equal(flat, tile_top[:m], out=hit[:m])
            sat[a + np.flatnonzero(hit[:m]) // n_ch] = True
        if len(floor_cols):
            np.less_equal(flat, tile_floor[:m], out=hit[:m])
            floor[a + np.flatnonzero(hit[:m]) // n_ch] = True
    return sat, floor


def margin_masks(
    raw: np.ndarray,
    tops: Mapping[int, float | None],
    scatter: Sequence[int],
    names: Sequence[str],
    max_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str]]:
    """(saturated, scatter_floor) event masks, margin events per channel, notes.

    A channel with more than `max_fraction` of its events at the "top" has a $PnR that does not
    describe its values (some exporters write a nominal range); it is left out of the rule and
    noted rather than removing most of the file. Same for a scatter channel mostly <= 0.
    """
    n = raw.shape[0]
    top_cols = [i for i, v in tops.items() if v is not None]
    floor_cols = list(scatter)
    lims = np.array([tops[i] * (1 - 1e-6) for i in top_cols], dtype=np.float64)
    notes: list[str] = []
    for _ in range(2):  # a second pass only when a channel's range turned out nominal
        sat, floor = _margin_pass(raw, top_cols, lims, floor_cols)
        top_n = (raw[np.flatnonzero(sat)][:, top_cols] >= lims.astype(raw.dtype)).sum(axis=0)
        floor_n = (raw[np.flatnonzero(floor)][:, floor_cols] <= 0).sum(axis=0)
        nominal_t = [j for j, c in enumerate(top_n) if n and c > max_fraction * n]
        nominal_f = [j for j, c in enumerate(floor_n) if n and c > max_fraction * n]
        if not (nominal_t or nominal_f):
            break
        for j in nominal_t:
            notes.append(
                f"{names[top_cols[j]]}: {100 * top_n[j] / n:.0f}% of events at or above "
                f"$PnR - 1 ({lims[j]:g}); the range looks nominal, channel not used for the "
                "saturation rule"
            )
        for j in nominal_f:
            notes.append(
                f"{names[floor_cols[j]]}: {100 * floor_n[j] / n:.0f}% of events at or below 0; "
                "channel not used for the scatter-floor rule"
            )
        top_cols = [c for j, c in enumerate(top_cols) if j not in nominal_t]
        lims = np.delete(lims, nominal_t)
        floor_cols = [c for j, c in enumerate(floor_cols) if j not in nominal_f]
    per_channel = {names[c]: int(k) for c, k in zip(top_cols, top_n, strict=True) if k}
    per_channel.update(
        {f"{names[c]} (floor)": int(k) for c, k in zip(floor_cols, floor_n, strict=True) if k}
    )
    return sat, floor, per_channel, notes


# --- duplicated events -------------------------------------------------------------------------

_HASH_SEED = np.uint64(0x243F6A8885A308D3)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64
_HASH_ROWS = 1 << 14  # events per block of the hash pass (measured fastest on 12 channels)


def _words(block: np.ndarray, pad: np.ndarray | None) -> np.ndarray:
    """The bit pattern of each row as uint64 words: two float32 channels per word, half the
    passes of one per channel. A row that is not a whole number of 8 bytes is first copied
    into `pad` (zero bytes at the end; one small block, in cache)."""
    if pad is None:
        return block.view(np.uint64)
    m, nbytes = block.shape[0], block.shape[1] * block.dtype.itemsize
    pad[:m, :nbytes] = block.view(np.uint8)
    return pad[:m].view(np.uint64)


def _row_hashes(raw: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each event's bit pattern over all channels, computed in cache-sized row
    blocks (memory: the hashes and one block). Equal events get equal hashes; each step is a
    bijection, so events differing only in the last word never collide, and two other events
    collide with probability ~2^-64 (~3e-6 for any pair among 10 M events). Equality is
    bitwise: -0.0 and 0.0 differ, which can only hide duplicates, never invent them."""
    n = raw.shape[0]
    out = np.empty(n, dtype=np.uint64)
    rows = min(_HASH_ROWS, n)
    h = np.empty(rows, dtype=np.uint64)
    shifted = np.empty(rows, dtype=np.uint64)
    nbytes = raw.shape[1] * raw.dtype.itemsize
    pad = np.zeros((rows, -(-nbytes // 8) * 8), dtype=np.uint8) if nbytes % 8 else None
    for a in range(0, n, rows):
        words = _words(np.ascontiguousarray(raw[a : a + rows]), pad)
        m = words.shape[0]
        hb, sb = h[:m], shifted[:m]
        hb.fill(_HASH_SEED)
        for c in range(words.shape[1]):
            hb ^= words[:, c]
            hb *= _HASH_MUL
            np.right_shift(hb, np.uint64(29), out=sb)
            hb ^= sb
        out[a : a + m] = hb
    return out


def duplicate_fraction(raw: np.ndarray) -> float:
    """Share of events (0-1) equal in every channel to at least one other event of the file.

    Vectorized: one hash per event (`_row_hashes`), one sort, neighbours compared; about
    0.4 s for 10 M events x 12 float32 channels on 2 shared cores (np.unique over the rows
    takes 5 s), with no copy of the event matrix (80 MB of hashes for 10 M events)."""
    n = raw.shape[0]
    if n < 2 or raw.shape[1] == 0:
        return 0.0
    h = _row_hashes(raw)
    h.sort()
    same = h[1:] == h[:-1]
    twin = np.zeros(n, dtype=bool)
    twin[1:] = same
    twin[:-1] |= same
    return float(np.count_nonzero(twin)) / n


def _distinct_bits(pnr: Sequence[float] | None, n_ch: int) -> float:
    """log2 of how many distinct events the channel ranges allow: $PnR levels per channel (a
    float32 mantissa, 24 bits, when the range is unknown)."""
    if pnr is None:
        return 24.0 * n_ch
    return sum(math.log2(r) if math.isfinite(r) and r >= 2 else 24.0 for r in map(float, pnr))


def _duplicate_check(
    raw: np.ndarray, pnr: Sequence[float] | None, s: Mapping
) -> tuple[bool, str | None]:
    """(fail, note) of the duplicated-events rule (see the module docstring)."""
    n, n_ch = raw.shape
    if n < 2 or n_ch == 0 or s["fail_duplicate_pct"] >= 100:
        return False, None
    bits = _distinct_bits(pnr, n_ch)
    if bits < 2 * math.log2(n):  # equal events are then expected by chance
        return False, (
            f"duplicate check skipped: {n_ch} channel(s) allow about 2^{bits:.0f} distinct "
            f"events, too few to tell {n} events apart"
        )
    pct = 100.0 * duplicate_fraction(raw)
    if pct <= s["fail_duplicate_pct"]:
        return False, None
    return True, (
        f"{pct:.1f}% of events are exact duplicates of another event in every channel "
        f"(> {s['fail_duplicate_pct']:g}%); the acquisition or export is broken: fail"
    )


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
    """(median, max(1.4826 MAD, floor)) over the finite values; (NaN, NaN) if there are none."""
    v = x[np.isfinite(x)]
    if not v.size:
        return np.nan, np.nan
    base = float(np.median(v))
    return base, max(_MAD * float(np.median(np.abs(v - base))), floor, 1e-12)


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


# --- the QC ------------------------------------------------------------------------------------


def run_qc(
    time: np.ndarray | None,
    signals: Mapping[str, np.ndarray],
    raw: np.ndarray | None = None,
    pnr: Sequence[float] | None = None,
    *,
    margin_channels: Sequence[int] = (),
    scatter_channels: Sequence[int] = (),
    tops: Mapping[int, float | None] | None = None,
    channel_names: Sequence[str] | None = None,
    timestep: float | None = 1.0,
    time_range: float | None = None,
    cfg: Mapping | None = None,
) -> QcResult:
    """QC of one acquisition; pure (no I/O), vectorized over events.

    time: the Time channel values in file event order, or None when the file has none.
    signals: fluorescence marker -> values on the analysis scale (logicle/arcsinh; same length).
    raw, pnr: the raw (uncompensated) event matrix and each channel's $PnR, for the margin rule
      on `margin_channels` (top: $PnR - 1, or `tops[i]` when given, see `channel_top`) and
      `scatter_channels` (bottom: <= 0). raw None skips the margin rule.
      The duplicate rule compares whole rows of raw: give every channel, Time included
      (qc_sample does), or events that differ only in a missing channel look equal.
    timestep: seconds per Time unit (1.0 when `time` is already in seconds, as read_fcs returns
      a Time channel with $TIMESTEP); None when unknown (bins sized by events only).
    time_range: the Time channel's range in Time units ($PnR), to tell a wrap-around from a reset.
    cfg: the `qc:` config section (see DEFAULTS).
    """
    s = qc_settings(cfg)
    n = _event_count(time, signals, raw)
    notes: list[str] = []
    names = (
        list(channel_names)
        if channel_names is not None
        else [f"channel {i + 1}" for i in range(0 if raw is None else raw.shape[1])]
    )

    sat = np.zeros(n, dtype=bool)
    floor = np.zeros(n, dtype=bool)
    margin_by_channel: dict[str, int] = {}
    if not s["remove_margin_events"]:
        notes.append("margin events kept (qc.remove_margin_events is false)")
    elif raw is None:
        notes.append("no raw events given: margin rule skipped")
    else:
        if tops is None:
            tops = {
                i: (float(pnr[i]) - 1.0 if pnr is not None and pnr[i] > 1 else None)
                for i in margin_channels
            }
        sat, floor, margin_by_channel, mnotes = margin_masks(
            raw, tops, scatter_channels, names, s["margin_max_fraction"]
        )
        notes += mnotes

    bad_bins = np.zeros(n, dtype=bool)
    rate_bins = np.zeros(n, dtype=bool)
    bins_df = None
    settings = dict(s)
    if not s["time_qc"]:
        notes.append("time-based QC off (qc.time_qc is false)")
    elif time is None:
        notes.append("no Time channel: time-based QC skipped")
    else:
        out = _time_qc(np.asarray(time), signals, sat | floor, timestep, time_range, s, notes)
        if out is not None:
            bins_df, bad_bins, rate_bins, width = out
            settings["bin_width"] = width
            settings["time_unit"] = "s" if timestep is not None else "Time units"

    removed = {}
    taken = np.zeros(n, dtype=bool)
    for rule, mask in zip(RULES, (sat, floor, bad_bins & rate_bins, bad_bins), strict=True):
        new = mask & ~taken
        removed[rule] = int(np.count_nonzero(new))
        taken |= new
    if margin_by_channel:
        top = sorted(margin_by_channel.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{name} {k}" for name, k in top[:6])
        notes.insert(
            0,
            f"{removed['saturated'] + removed['scatter_floor']} margin event(s) removed "
            f"({listed}{', ...' if len(top) > 6 else ''})",
        )
    verdict, why = _verdict(n, int(taken.sum()), s)
    if why:
        notes.append(why)
    if raw is not None:
        duplicated, note = _duplicate_check(raw, pnr, s)
        verdict = "fail" if duplicated else verdict
        notes += [note] if note else []
    return QcResult(~taken, removed, bins_df, verdict, notes, margin_by_channel, settings)


def _verdict(n: int, removed: int, s: Mapping) -> tuple[str, str | None]:
    """pass / warn / fail from the share of events removed (thresholds in config)."""
    if n == 0:
        return "fail", "no events"
    pct = 100.0 * removed / n
    if pct > s["fail_removed_pct"]:
        return "fail", f"{pct:.1f}% of events removed (> {s['fail_removed_pct']:g}%): fail"
    if pct > s["warn_removed_pct"]:
        return "warn", f"{pct:.1f}% of events removed (> {s['warn_removed_pct']:g}%): warn"
    return "pass", None


def _event_count(time, signals: Mapping[str, np.ndarray], raw) -> int:
    sizes = {len(v) for v in signals.values()}
    if time is not None:
        sizes.add(len(time))
    if raw is not None:
        sizes.add(raw.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"run_qc: time, signals and raw differ in event count: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


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


# --- a sample from read_fcs --------------------------------------------------------------------


def qc_sample(
    sample,
    idx: Mapping[str, int],
    signals: Mapping[str, np.ndarray],
    cfg: Mapping | None = None,
    scatter: Sequence[str] = ("FSC-A", "FSC-H", "SSC-A"),
    tops: Mapping[int, float] | None = None,
) -> QcResult:
    """QC of an `FcsSample` (cytopipe.ingest.fcs.read_fcs) whose channels were matched to markers.

    `tops` (channel index -> top value) replaces the file's top for channels whose declared
    range is nominal (cytopipe.preprocess.ranges): their margin events sit at the real top, and the
    nominal one would take every bright cell for a saturated one.

    `idx` maps canonical marker -> channel index (panel.match_channels); a "Time" entry is the
    Time channel. `signals` are the fluorescence markers on the analysis scale (the pipeline's
    transformed columns). Margins are checked on every matched channel but Time, the floor on
    the matched scatter channels.
    """
    time_idx = idx.get("Time")
    time = timestep = time_range = None
    notes: list[str] = []
    if time_idx is not None:
        time = np.ascontiguousarray(sample.events[:, time_idx])  # one strided read
        timestep, note = time_step_seconds(sample.pnn, sample.keywords, time_idx)
        if note:
            notes.append(note)
        r = float(sample.pnr[time_idx])
        if r > 0:  # the range in the units read_fcs returns
            time_range = (
                r * (_finite_float(sample.keywords.get("timestep")) or 1.0)
                if timestep == 1.0
                else r
            )
    margin = [i for m, i in idx.items() if m != "Time"]
    replaced = tops or {}
    tops = {i: replaced.get(i, channel_top(sample.keywords, sample.pnr, i)) for i in margin}
    result = run_qc(
        time,
        signals,
        sample.events,
        sample.pnr,
        margin_channels=margin,
        scatter_channels=[idx[m] for m in scatter if m in idx],
        tops=tops,
        channel_names=sample.pnn,
        timestep=timestep,
        time_range=time_range,
        cfg=cfg,
    )
    result.notes[:0] = notes
    return result


# --- benchmark ---------------------------------------------------------------------------------


def benchmark(n_events: int = 10_000_000, n_fluorescence: int = 12, seed: int = 0) -> dict:
    """Time `run_qc` on `n_events` generated events: Time at 20,000 events/s in 10 us ticks,
    `n_fluorescence` signals on a 0-1 scale, a raw matrix of 3 scatter + the fluorescence
    channels for the margin rule, a 2 s clog. Generating the data is not timed.

    Returns {"events", "seconds", "events_per_second", "bins", "removed"} for the benchmark's
    per-step table (benchmarks/bench_gating.py can call it next to its ingest timing)."""
    rng = np.random.default_rng(seed)
    rate = 20_000.0
    gaps = rng.exponential(1.0 / rate, n_events)
    clog = slice(int(0.4 * n_events), int(0.4 * n_events) + 200)
    gaps[clog] = 2.0 / 200  # 200 events over 2 s
    time = (np.floor(np.cumsum(gaps) / 1e-5) * 1e-5).astype(np.float32)
    signals = {}
    for j in range(n_fluorescence):
        x = rng.random(n_events, dtype=np.float32)
        x *= np.float32(0.6)
        x += np.float32(0.1 + 0.01 * j)
        signals[f"M{j}"] = x
    raw = rng.random((n_events, 3 + n_fluorescence), dtype=np.float32)
    raw *= np.float32(262_144.0)
    pnr = [262_144.0] * raw.shape[1]
    start = _time.perf_counter()
    result = run_qc(
        time,
        signals,
        raw,
        pnr,
        margin_channels=range(raw.shape[1]),
        scatter_channels=(0, 1, 2),
        timestep=1.0,
    )
    seconds = _time.perf_counter() - start
    return {
        "events": n_events,
        "seconds": seconds,
        "events_per_second": n_events / seconds if seconds > 0 else float("inf"),
        "bins": 0 if result.bins is None else len(result.bins),
        "removed": dict(result.removed),
    }
