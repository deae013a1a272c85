"""Acquisition QC: remove margin events and the parts of an acquisition where the flow or the
signal went wrong, and say how much was removed and why (issue 8).

Why each rule exists, and the choices behind it:

* Margin events. An event at the top of a detector's range ($PnR - 1, decoded like the data:
  see `channel_top`) has an unknown true value (the detector saturated), and an event at or
  below zero in a scatter channel is not a measurement of a particle. Both are removed before
  gating. Margins are judged on the raw (uncompensated) values: saturation is a property of the
  detector. Where a population runs off a stain's top (many events just below it, not a few
  spikes) and lost more than `warn_cut_off_pct` of the file's events, the verdict is at least
  warn: that population is counted short, although the file lost too few events to warn.
  Events removed for nothing but stain tops are listed (`at_top`) and, by default
  (`saturated_stains: gate`), still counted by the gates placed without them, wherever their
  true signal above the top cannot move them out (cytopipe.gating.saturated).
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

The rules live in their own modules (cytopipe.preprocess.qc_margins, qc_duplicates, qc_time
and qc_bins); this module holds the settings, the verdict and the entry points, and its
`__all__` is the QC API.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytopipe.config import defaults, validated
from cytopipe.errors import ConfigError
from cytopipe.ingest.panel import EVENT_LENGTH
from cytopipe.preprocess.qc_beads import find_beads
from cytopipe.preprocess.qc_duplicates import _duplicate_check, duplicate_fraction
from cytopipe.preprocess.qc_margins import (
    _finite_float,
    at_stain_tops,
    channel_top,
    kept_scatter_tops,
    margin_masks,
    stain_tops_cut_off,
)
from cytopipe.preprocess.qc_time import (
    _round,
    _time_qc,
    find_time_channel,
    time_step_seconds,
    unwrap_time,
)

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

# The `qc:` settings and their defaults are described by the config schema
# (cytopipe/schemas/config.schema.yaml); these are the built-in values, read-only.
DEFAULTS = defaults("config", "qc")

RULES = ("saturated", "scatter_floor", "flow_rate", "signal")


@dataclass
class QcResult:
    """What QC decided for one sample.

    `keep` is True for the events that go on to gating (the gates are placed on them; `at_top`
    lists removed events still counted after that). `removed` attributes every removed event
    to one rule, in the order of RULES (a saturated event inside a flagged bin counts as
    saturated), so its values add up to `events_in - events_kept`; "flow_rate" are events of
    bins flagged (also) for their rate, "signal" those flagged for their signal only.
    Counting beads (cytopipe.preprocess.qc_beads) come last as "counting_beads": set apart,
    not a fault of the acquisition, so they do not count towards the verdict.

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
    # stain channel index -> events removed for nothing but stain tops, at this one's top
    # (`saturated_stains: gate`: cytopipe.gating.saturated counts them where they certainly go)
    at_top: dict[int, np.ndarray] = field(default_factory=dict)

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


def _json_floats(values) -> list:
    return [
        None if not np.isfinite(v) else _round(float(v)) for v in np.asarray(values, dtype=float)
    ]


# --- settings ----------------------------------------------------------------------------------


def qc_settings(cfg: Mapping | None) -> Mapping:
    """The `qc:` config section over the defaults, checked, so a typo fails before any file is
    read. The schema checks each value; the rules relating two of them are checked here."""
    s = validated(cfg or {}, "config", section="qc")
    if s["z_extend"] > s["z_threshold"]:
        raise ConfigError("qc.z_extend must not exceed qc.z_threshold (it extends flagged bins)")
    if s["warn_removed_pct"] > s["fail_removed_pct"]:
        raise ConfigError("qc.warn_removed_pct must not exceed qc.fail_removed_pct")
    return s


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
    markers: Mapping[int, str] | None = None,
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
    markers: channel index -> the marker it carries, named beside the detector where a stain's
      population runs off its top (the lab changes that reagent or voltage).
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

    # Beads first: beads at the top of a detector are beads, not margin events (they would
    # go uncounted), and they stay out of the margin counts and the time bins' medians.
    beads = find_beads(signals, np.ones(n, dtype=bool)) if s["counting_beads"] else None
    is_bead = beads.mask if beads is not None and beads.levels else np.zeros(n, dtype=bool)
    sat = np.zeros(n, dtype=bool)
    floor = np.zeros(n, dtype=bool)
    margin_by_channel: dict[str, int] = {}
    cut_off: list[str] = []  # stains whose population runs off the top: short or uncertain
    stain_tops: dict[int, float] = {}  # stain channel -> its top, where events sit there
    gated_after = s["saturated_stains"] == "gate"  # events at a stain's top counted later
    scatter_tops: dict[int, float] = {}  # scatter channel -> its top, where removed there
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
        if s["saturated_scatter"] == "keep":
            notes += kept_scatter_tops(raw, tops, scatter_channels, names)
            tops = {i: (None if i in scatter_channels else t) for i, t in tops.items()}
        sat, floor, margin_by_channel, mnotes = margin_masks(
            raw, tops, scatter_channels, names, s["margin_max_fraction"], exclude=is_bead
        )
        notes += mnotes
        pinned = {i: margin_by_channel[names[i]] for i in tops
                  if i not in scatter_channels and names[i] in margin_by_channel}  # fmt: skip
        labels = [f"{c} ({markers[i]})" if markers and i in markers else c
                  for i, c in enumerate(names)]  # fmt: skip
        stain_tops = {i: tops[i] for i in pinned}
        scatter_tops = {i: tops[i] for i in scatter_channels if tops.get(i) is not None}
        warned = stain_tops_cut_off(raw, tops, pinned, labels, is_bead, gated_after)
        notes += warned.values()
        cut_off = [labels[i] for i in warned if pinned[i] > s["warn_cut_off_pct"] / 100 * n]

    bad_bins = np.zeros(n, dtype=bool)
    rate_bins = np.zeros(n, dtype=bool)
    bins_df = None
    settings = dict(s)
    if not s["time_qc"]:
        notes.append("time-based QC off (qc.time_qc is false)")
    elif time is None:
        notes.append("no Time channel: time-based QC skipped")
    else:
        out = _time_qc(
            np.asarray(time), signals, sat | floor | is_bead, timestep, time_range, s, notes
        )
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
    at_top = {}
    if gated_after and stain_tops:
        removed_else = floor | bad_bins | is_bead
        at_top = at_stain_tops(raw, stain_tops, sat & ~removed_else, scatter_tops)
    verdict, why = _verdict(n, int(taken.sum()), s)
    if why:
        notes.append(why)
    if cut_off and verdict == "pass":
        # few of the file's events, but the bright end of one population (a CD20 reagent 2.5x
        # too bright: 3,832 events, 4.9% of the file, 28% of the B cells)
        verdict = "warn"
        notes.append(f"a population runs off the top of {', '.join(cut_off)} (over "
                     f"{s['warn_cut_off_pct']:g}% of the events): warn")  # fmt: skip
    if raw is not None:
        duplicated, note = _duplicate_check(raw, pnr, s)
        verdict = "fail" if duplicated else verdict
        notes += [note] if note else []
    if is_bead.any():  # not cells, but not a fault of the acquisition: no verdict
        counted = is_bead & ~taken  # beads of a flagged time bin go with its cells
        removed["counting_beads"] = int(np.count_nonzero(counted))
        taken |= counted
        notes.append(beads.note)
    return QcResult(~taken, removed, bins_df, verdict, notes, margin_by_channel, settings, at_top)


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
    transformed columns). Margins are checked on every matched channel but Time and event
    length, the floor on the matched scatter channels.
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
    # mass cytometry's event length counts pushes: no detector to saturate at its $PnR
    margin = [i for m, i in idx.items() if m not in ("Time", EVENT_LENGTH)]
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
        markers={i: m for m, i in idx.items() if i in margin},
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
