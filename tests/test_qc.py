"""Acquisition QC (cytopipe.preprocess.qc): the rules one at a time on events whose truth is known by
construction, the awkward clocks (wrap-around, reset, jitter, constant, missing), settings
errors, the record for sample.json, and speed. Accuracy on generated cytometry files with
planted anomalies is measured in tests/test_qc_accuracy.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from test_fcs import all_fcs_files
from test_qc_accuracy import PANEL, at_margin, generic_channels, prepare

from cytopipe.errors import ConfigError, FcsError
from cytopipe.ingest import panel
from cytopipe.ingest.fcs import read_fcs
from cytopipe.preprocess import qc
from cytopipe.synth.anomalies import Bubble, Clog, Saturation
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.simulate import SimulatedSample, simulate_sample

RATE = 2_000.0  # events per second
TICK = 0.01  # seconds


def clock(t: np.ndarray) -> np.ndarray:
    """Arrival times (s) as a cytometer writes them: whole 10 ms ticks, float32."""
    return (np.floor(t / TICK) * TICK).astype(np.float32)


def acquisition(
    n: int = 60_000, seed: int = 0, channels: int = 4, continuous: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Poisson arrivals on a 10 ms clock (or in continuous seconds) and `channels` signals on
    a 0-1 analysis scale, each a two-population mixture (the bin-to-bin composition noise the
    QC must tolerate)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / RATE, n))
    t = t if continuous else clock(t)
    signals = {}
    for j in range(channels):
        pos = rng.random(n) < 0.3 + 0.1 * j
        x = np.where(pos, rng.normal(0.65, 0.06, n), rng.normal(0.2, 0.05, n))
        signals[f"M{j}"] = x.astype(np.float32)
    return t, signals


def test_clean_acquisition_passes_untouched():
    t, sig = acquisition()
    res = qc.run_qc(t, sig)
    assert res.verdict == "pass"
    assert res.events_kept == res.events_in == t.size
    assert res.removed == {"saturated": 0, "scatter_floor": 0, "flow_rate": 0, "signal": 0}
    assert res.bins is not None and not res.bins["flagged"].any()
    # bins: whole ticks, at least bin_seconds and ~min_events_per_bin events, contiguous
    width = res.record()["bin_seconds"]
    assert width >= qc.DEFAULTS["bin_seconds"]
    assert width / TICK == pytest.approx(round(width / TICK), abs=1e-3)
    assert res.bins["events"].sum() == t.size
    assert res.bins["events"].median() >= 0.8 * qc.DEFAULTS["min_events_per_bin"]
    assert np.allclose(res.bins["start"].to_numpy()[1:], res.bins["end"].to_numpy()[:-1])
    assert res.bins["rate"].median() == pytest.approx(RATE, rel=0.05)


def test_clog_is_removed_with_its_edges_trimmed():
    t, sig = acquisition(continuous=True)
    n = t.size
    # a 5 s clog after 40% of the events: 5% of the normal rate, dimmed signals
    start = float(t[int(0.4 * n)]) + 0.003
    clog = (t >= start) & (t < start + 0.25)
    t2 = t.copy()
    t2[clog] = start + (t2[clog] - start) * 20.0
    t2[t >= start + 0.25] += 4.75
    t2 = clock(t2)
    for m in sig:
        sig[m][clog] *= np.float32(0.6)
    res = qc.run_qc(t2, sig)
    removed = ~res.keep
    assert removed[clog].mean() >= 0.95
    assert removed[~clog].mean() <= 0.005
    assert res.removed["flow_rate"] >= 0.95 * clog.sum()
    flagged = res.bins[res.bins["flagged"]]
    assert flagged["reason"].str.contains("rate x0.0").any()
    assert flagged["start"].min() >= start - 0.2 and flagged["end"].max() <= start + 5.2


def test_bubble_spike_and_signal_step_are_flagged_where_they_are():
    t, sig = acquisition(seed=1, continuous=True)
    n = t.size
    # a short burst: 3x the rate for 0.5 s with garbage signals
    burst = (t >= 10.0) & (t < 11.5)
    t2 = t.copy()
    t2[burst] = 10.0 + (t2[burst] - 10.0) / 3.0
    t2[t >= 11.5] -= 1.0
    t2 = clock(t2)
    for m in sig:
        sig[m][burst] = np.float32(0.05)
    # from 70% of the acquisition on, one channel is 0.08 lower (a detector that lost gain)
    late = np.arange(n) >= int(0.7 * n)
    sig["M2"][late] -= np.float32(0.08)
    res = qc.run_qc(t2, sig)
    removed = ~res.keep
    assert removed[burst].mean() >= 0.95
    assert removed[late].mean() >= 0.95
    clean = ~burst & ~late
    assert removed[clean].mean() <= 0.01
    assert res.removed["signal"] >= 0.95 * late.sum()
    reasons = res.bins.loc[res.bins["flagged"], "reason"]
    assert reasons.str.contains("M2 mean -0.0").any()


def test_slow_rate_trend_is_not_an_anomaly():
    """A tube settling: the rate falls from 1.6x to 1x over 20 s; signals unchanged."""
    rng = np.random.default_rng(2)
    n = 80_000
    gaps = rng.exponential(1.0, n)
    rate = RATE * (1.0 + 0.6 * np.exp(-np.arange(n) / 20_000))
    t = clock(np.cumsum(gaps / rate))
    _, sig = acquisition(n=n, seed=2)
    res = qc.run_qc(t, sig)
    assert res.removed["flow_rate"] == 0 and res.verdict == "pass"


def test_composition_noise_in_a_bimodal_channel_is_tolerated():
    """A channel whose events split ~50/50 between two populations: the bin median jumps
    between them by chance, the bin mean does not (why `signal_statistic` is mean)."""
    rng = np.random.default_rng(3)
    t, _ = acquisition(seed=3)
    n = t.size
    pos = rng.random(n) < 0.44  # the bin median sits in the lower population, now and then not
    sig = {"bimodal": np.where(pos, rng.normal(0.7, 0.03, n), rng.normal(0.3, 0.03, n))}
    res = qc.run_qc(t, sig)
    assert res.removed["signal"] == 0 and res.verdict == "pass"
    med = res.bins["median:bimodal"]
    assert med.max() - med.min() > 0.2  # the median does jump
    by_median = qc.run_qc(t, sig, cfg={"signal_statistic": "median"})
    assert by_median.removed["signal"] > 0  # ... and judging by it would cost clean events


def test_time_reset_and_wrap_around_are_unwrapped():
    t, sig = acquisition(seed=4)
    n = t.size
    base = qc.run_qc(t, sig)
    # a reset: at 60% of the events the clock restarts at 0
    k = int(0.6 * n)
    reset = t.copy()
    reset[k:] -= reset[k]
    res = qc.run_qc(reset, sig)
    assert any(f"event {k + 1} (reset)" in note for note in res.notes), res.notes
    assert res.removed == base.removed and np.array_equal(res.keep, base.keep)
    # a wrap-around: the clock counts modulo 20 s (the Time range)
    wrapped = np.mod(t.astype(np.float64), 20.0).astype(np.float32)
    res = qc.run_qc(wrapped, sig, time_range=20.0)
    assert any("wrap-around" in note for note in res.notes), res.notes
    assert np.array_equal(res.keep, base.keep)
    assert res.bins["end"].iloc[-1] == pytest.approx(float(t[-1]), abs=0.02)
    # jitter: a few events a tick early
    jitter = t.copy()
    jitter[1000:1010] -= np.float32(TICK)
    out, notes = qc.unwrap_time(jitter)
    assert np.all(np.diff(out) >= 0) and any("jitter" in note for note in notes)
    assert out.max() == pytest.approx(float(t.max()))


def test_unwrap_time_does_not_touch_monotonic_time():
    t = np.array([0.0, 0.0, 0.01, 0.02, 0.02], dtype=np.float32)
    out, notes = qc.unwrap_time(t)
    assert notes == [] and np.array_equal(out, t)
    wrapped = np.array([8.0, 9.0, 9.5, 0.5, 1.0], dtype=np.float32)
    out, notes = qc.unwrap_time(wrapped, time_range=10.0)
    assert np.allclose(out, [8.0, 9.0, 9.5, 10.5, 11.0]) and "wrap-around" in notes[0]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (None, "no Time channel: time-based QC skipped"),
        (np.full(50_000, 3.0, dtype=np.float32), "Time is constant"),
        (np.r_[np.arange(49_999, dtype=np.float32), np.nan], "non-finite"),
        (np.arange(300, dtype=np.float32) * 0.01, "too short for time-based QC"),
    ],
)
def test_time_qc_skipped_with_a_reason(time, expected):
    n = 50_000 if time is None else time.size
    sig = {"M": np.random.default_rng(5).random(n).astype(np.float32)}
    res = qc.run_qc(time, sig)
    assert res.bins is None and res.timeline() is None
    assert res.record()["time_qc"] == "skipped"
    assert any(expected in note for note in res.notes), res.notes
    assert res.verdict == "pass" and res.events_kept == n


def test_unknown_time_unit_bins_by_events():
    t, sig = acquisition(seed=6)
    ticks = np.round(t / TICK).astype(np.float32)  # Time in ticks, unit unknown
    res = qc.run_qc(ticks, sig, timestep=None)
    assert res.record()["time_unit"] == "Time units"
    assert res.bins["events"].median() >= 0.8 * qc.DEFAULTS["min_events_per_bin"]
    assert res.verdict == "pass" and res.removed["flow_rate"] + res.removed["signal"] == 0


# --- margins ------------------------------------------------------------------------------------


def test_margin_rule_top_floor_nominal_range_and_attribution():
    rng = np.random.default_rng(7)
    n = 40_000
    raw = (rng.random((n, 5)) * 1000).astype(np.float32)
    raw[:100, 0] = 1023  # saturated scatter
    raw[100:150, 3] = 2000  # above $PnR - 1 (integer data masked to a power of 2)
    raw[150:170, 1] = 0  # scatter floor
    raw[170:175, 1] = -5
    raw[:, 4] = 1023  # a channel whose $PnR is nominal: every event "at the top"
    t, sig = acquisition(n=n, seed=7, channels=2)
    res = qc.run_qc(
        t,
        sig,
        raw,
        [1024.0] * 5,
        margin_channels=[0, 1, 2, 3, 4],
        scatter_channels=[0, 1],
        channel_names=["FSC-A", "SSC-A", "FL1", "FL2", "FL3"],
        cfg={"saturated_scatter": "remove"},
    )
    assert res.removed["saturated"] == 150
    assert res.removed["scatter_floor"] == 25
    assert res.margin_by_channel == {"FSC-A": 100, "FL2": 50, "SSC-A (floor)": 25}
    assert any("FL3: 100% of events" in note and "nominal" in note for note in res.notes)
    assert res.notes[0].startswith("175 margin event(s) removed (FSC-A 100, FL2 50")
    assert not res.keep[:175].any() and res.keep[175:].all()
    off = qc.run_qc(
        t, sig, raw, [1024.0] * 5, margin_channels=[0], cfg={"remove_margin_events": False}
    )
    assert off.removed["saturated"] == 0 and "margin events kept" in off.notes[0]
    # the default: a cell at the top of a scatter channel stays (size off-scale, stains
    # measured); saturated stains and the scatter floor still go
    default = qc.run_qc(
        t, sig, raw, [1024.0] * 5, margin_channels=[0, 1, 2, 3, 4], scatter_channels=[0, 1],
        channel_names=["FSC-A", "SSC-A", "FL1", "FL2", "FL3"],
    )  # fmt: skip
    assert default.removed["saturated"] == 50 and default.removed["scatter_floor"] == 25
    assert default.keep[:100].all() and not default.keep[100:175].any()
    assert "100 event(s) at the top of FSC-A kept" in " ".join(default.notes)


def test_a_population_running_off_the_top_of_a_stain_is_named():
    """Events pinned at a stain's top are removed either way (their value and its spill are
    unknown); where a population runs off the scale (many events just below the top) the
    notes say that population is counted short, and where a few spikes are pinned above a
    population far below, they do not."""
    rng = np.random.default_rng(3)
    n = 40_000
    bright = np.exp(rng.normal(np.log(600.0), 0.4, n))  # its upper tail passes 1023
    dim = np.exp(rng.normal(np.log(20.0), 0.4, n))
    dim[:30] = 1023  # spikes
    raw = np.column_stack([np.minimum(bright, 1023), dim]).astype(np.float32)
    t, sig = acquisition(n=n, seed=3, channels=2)
    res = qc.run_qc(t, sig, raw, [1024.0] * 2, margin_channels=[0, 1], channel_names=["FL1", "FL2"])
    pinned = int((raw[:, 0] >= 1023).sum())
    assert res.margin_by_channel == {"FL1": pinned, "FL2": 30} and pinned > 500
    warned = [note for note in res.notes if "runs off the scale" in note]
    assert len(warned) == 1 and warned[0].startswith(f"FL1: {pinned} event(s) at the top removed")
    # the cohort page lists the sample: that population is counted short, although the file
    # lost fewer events than warn by themselves (10%); not where it lost under
    # warn_cut_off_pct of the file (the real Lyoplate file: 0.14%), nor for a few spikes
    assert res.verdict == "warn" and res.events_in - res.events_kept < 0.1 * n
    assert any("runs off the top of FL1 (over 1% of" in note for note in res.notes)
    cfg = {"warn_cut_off_pct": 100 * pinned / n + 0.1}
    below = qc.run_qc(
        t, sig, raw, [1024.0] * 2, margin_channels=[0, 1], channel_names=["FL1", "FL2"], cfg=cfg
    )
    assert below.verdict == "pass" and below.notes == [
        x for x in res.notes if "(over 1% of" not in x
    ]
    # the marker beside the detector, where the panel named it: the lab changes that reagent
    named = qc.run_qc(
        t,
        sig,
        raw,
        [1024.0] * 2,
        margin_channels=[0, 1],
        channel_names=["FL1", "FL2"],
        markers={0: "CD20"},
    )
    assert any(x.startswith(f"FL1 (CD20): {pinned} event(s)") for x in named.notes)
    assert any("runs off the top of FL1 (CD20) (over 1%" in x for x in named.notes)
    assert named.margin_by_channel == res.margin_by_channel  # counts stay by detector
    spikes = qc.run_qc(t, sig, raw[:, 1:], [1024.0], margin_channels=[0], channel_names=["FL2"])
    assert spikes.margin_by_channel == {"FL2": 30} and spikes.verdict == "pass"


def test_margin_events_inside_flagged_bins_count_once():
    t, sig = acquisition(n=40_000, seed=8, channels=2)
    raw = np.full((t.size, 2), 10.0, dtype=np.float32)
    late = np.arange(t.size) >= 30_000
    sig["M0"][late] += np.float32(0.1)
    raw[late & (np.arange(t.size) % 10 == 0), 1] = 262_143  # saturated inside the shift
    res = qc.run_qc(t, sig, raw, [262_144.0] * 2, margin_channels=[0, 1])
    assert res.removed["saturated"] == (late & (np.arange(t.size) % 10 == 0)).sum()
    assert sum(res.removed.values()) == res.events_in - res.events_kept
    assert res.removed["signal"] + res.removed["saturated"] >= late.sum() * 0.95


def test_channel_top_follows_the_decoding_of_read_fcs(shared_data):
    s = read_fcs(shared_data / "flowcore" / "0877408774.F06")
    fl1 = s.pnn.index("FL1-H")  # 4-decade log channel on 1024 channels, saturated 3 times
    top = qc.channel_top(s.keywords, s.pnr, fl1)
    assert top == pytest.approx(10 ** (4 * 1023 / 1024))
    assert float(s.events[:, fl1].max()) == pytest.approx(top, rel=1e-6)
    fsc = s.pnn.index("FSC-H")  # linear
    assert qc.channel_top(s.keywords, s.pnr, fsc) == 1023.0
    assert qc.channel_top({"p1g": "2"}, [1024.0], 0) == pytest.approx(511.5)
    assert qc.channel_top({}, [0.0], 0) is None


# --- clocks of real files -----------------------------------------------------------------------


def test_time_step_seconds():
    # read_fcs already scaled the last channel named "time" by $TIMESTEP
    assert qc.time_step_seconds(["FSC-A", "Time"], {"timestep": "0.01"}, 1) == (1.0, None)
    # an HDR-T channel is not scaled by read_fcs
    assert qc.time_step_seconds(["HDR-T", "FSC-A"], {"timestep": "0.001"}, 0) == (0.001, None)
    step, note = qc.time_step_seconds(["Time"], {"timeticks": "50"}, 0)
    assert step == pytest.approx(0.05) and "TIMETICKS" in note
    step, note = qc.time_step_seconds(["Time"], {"timestep": "xxxxxxxxx"}, 0)
    assert step is None and "unknown" in note
    assert qc.find_time_channel(["FSC-A", "TIME", "SSC-A"]) == 1
    assert qc.find_time_channel(["HDR-T", "FSC-A"]) == 0
    assert qc.find_time_channel(["FSC-A", "Timer-A"]) is None


def test_wrapped_time_in_a_written_file(tmp_path):
    """A generated file whose Time channel counts modulo its $PnR: read back, unwrapped, and
    the QC decides exactly as on the same acquisition with a clock that does not wrap."""
    sample = simulate_sample(40_000, blood_composition(), "A", 9, anomalies=[Clog(at=0.5)])
    fcs, idx, signals = prepare(sample, tmp_path / "straight.fcs")
    straight = qc.qc_sample(fcs, idx, signals)
    ti = sample.pnn.index("Time")
    ticks = sample.events[:, ti].astype(np.int64)
    period = 1 << 11  # 20.48 s at 10 ms
    assert ticks.max() > period
    sample.events[:, ti] = (ticks % period).astype(np.float32)
    sample.pnr[ti] = float(period)
    fcs2, idx2, signals2 = prepare(sample, tmp_path / "wrapped.fcs")
    assert (np.diff(fcs2.events[:, ti]) < 0).any()  # the clock really wraps in the file
    wrapped = qc.qc_sample(fcs2, idx2, signals2)
    assert any("wrap-around" in note for note in wrapped.notes), wrapped.notes
    assert np.array_equal(wrapped.keep, straight.keep)
    assert wrapped.removed == straight.removed and wrapped.removed["flow_rate"] > 0


# --- settings, record, methods ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"z_treshold": 4}, "unknown setting"),
        ({"z_threshold": -1}, "z_threshold must be a number > 0"),
        ({"min_events_per_bin": 10.5}, "must be an integer"),
        ({"method": "peaks"}, "method must be mad or isolation_forest"),
        ({"z_extend": 6}, "z_extend must not exceed"),
        ({"warn_removed_pct": 50, "fail_removed_pct": 30}, "warn_removed_pct must not exceed"),
        ({"time_qc": "yes"}, "must be true or false"),
        ({"isolation_forest": {"contamination": 0.9}}, "contamination"),
        ({"isolation_forest": {"trees": 5}}, "unknown setting"),
        ({"signal_statistic": "mode"}, "signal_statistic"),
        ({"fail_duplicate_pct": 120}, "fail_duplicate_pct must be a number >= 0.0 and <= 100"),
    ],
)
def test_bad_settings_raise_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        qc.qc_settings(cfg)


def test_config_file_defaults_are_valid(repo):
    import yaml

    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    s = qc.qc_settings(cfg["qc"])
    assert set(cfg["qc"]) <= set(qc.DEFAULTS)
    assert s["fail_removed_pct"] == 30


def test_verdict_thresholds_and_record_json():
    t, sig = acquisition(seed=10)
    late = np.arange(t.size) >= int(0.8 * t.size)
    sig["M1"][late] += np.float32(0.1)  # 20% of events drifted
    assert qc.run_qc(t, sig).verdict == "warn"
    assert qc.run_qc(t, sig, cfg={"fail_removed_pct": 15}).verdict == "fail"
    res = qc.run_qc(t, sig, cfg={"warn_removed_pct": 25, "fail_removed_pct": 50})
    assert res.verdict == "pass"
    rec = res.record()
    json.dumps(rec, allow_nan=False)
    assert rec["events_in"] == t.size and rec["bins_flagged"] > 0
    assert rec["pct_kept"] == pytest.approx(100.0 * rec["events_kept"] / rec["events_in"], abs=1e-3)
    line = res.timeline()
    json.dumps(line, allow_nan=False)
    n_bins = rec["bins"]
    assert all(
        len(line[k]) == n_bins for k in ("start", "end", "events", "rate", "flagged", "reason")
    )
    assert set(line["median"]) == set(line["mean"]) == set(sig)
    assert sum(line["events_removed"]) == res.events_in - res.events_kept
    assert qc.run_qc(t[:0], {"M": sig["M0"][:0]}).verdict == "fail"


def test_isolation_forest_method_finds_the_same_anomalies(tmp_path):
    sample = simulate_sample(
        40_000,
        blood_composition(),
        "B",
        12,
        anomalies=[Clog(at=0.3), Bubble(at=0.7)],
    )
    fcs, idx, signals = prepare(sample, tmp_path / "iso.fcs")
    label = np.asarray(sample.extra_truth["anomaly"])
    res = qc.qc_sample(fcs, idx, signals, {"method": "isolation_forest"})
    removed = ~res.keep
    for kind in ("clog", "bubble"):
        assert removed[label == kind].mean() >= 0.9, kind
    clean = (label == "none") & ~at_margin(fcs, idx)
    assert removed[clean].mean() <= 0.02
    clean = simulate_sample(40_000, blood_composition(), "B", 13)
    fcs, idx, signals = prepare(clean, tmp_path / "iso_clean.fcs")
    assert qc.qc_sample(fcs, idx, signals, {"method": "isolation_forest"}).verdict == "pass"


def test_qc_sample_uses_the_panel_channels(tmp_path):
    sample = simulate_sample(20_000, blood_composition(), "B", 14, anomalies=[Saturation(0.02)])
    fcs, idx, signals = prepare(sample, tmp_path / "b.fcs")
    assert idx == panel.match_channels(PANEL, fcs.pnn, fcs.pns)
    res = qc.qc_sample(fcs, idx, signals)
    planted = np.asarray(sample.extra_truth["anomaly"]) == "saturated"
    scatter = [idx[m] for m in ("FSC-A", "FSC-H", "SSC-A") if m in idx]
    in_scatter = (fcs.events[:, scatter] >= np.asarray(fcs.pnr)[scatter] - 1).any(axis=1)
    assert (planted & in_scatter).sum() > 20 and (planted & ~in_scatter).sum() > 100
    assert not res.keep[planted & ~in_scatter].any()  # saturated stains go
    assert res.keep[planted & in_scatter].mean() > 0.95  # large cells stay (saturated_scatter)
    assert set(res.margin_by_channel) <= {*fcs.pnn, *(f"{p} (floor)" for p in fcs.pnn)}
    assert "TIME" not in res.margin_by_channel  # the Time channel is no margin channel


# --- duplicated events --------------------------------------------------------------------------


def clean_sample(seed: int, n: int = 20_000) -> SimulatedSample:
    return simulate_sample(n, blood_composition(), "A", seed)


def typical_event(sample: SimulatedSample) -> int:
    """An event inside every channel's range (not a margin event), so that nothing but the
    duplicates can make the QC fail."""
    ev, top = sample.events, np.asarray(sample.pnr, dtype=np.float32) - 1
    inside = (ev > 0).all(axis=1) & (ev < top).all(axis=1)
    return int(np.flatnonzero(inside)[0])


def duplicate_notes(res: qc.QcResult) -> list[str]:
    return [note for note in res.notes if "duplicates of another event" in note]


def test_identical_events_fail_with_a_note(tmp_path):
    """A stuck acquisition or an export bug: every event the same in every channel, Time and
    scatter included. Nothing is at a margin and Time is constant (time QC skipped), so only
    the duplicate rule can tell; before it, such a file passed."""
    sample = clean_sample(20)
    k = typical_event(sample)
    sample.events = np.repeat(sample.events[k : k + 1], sample.n_events, axis=0)
    fcs, idx, signals = prepare(sample, tmp_path / "identical.fcs")
    res = qc.qc_sample(fcs, idx, signals)
    assert res.verdict == "fail", res.record()
    assert res.removed == {"saturated": 0, "scatter_floor": 0, "flow_rate": 0, "signal": 0}
    [note] = duplicate_notes(res)
    assert note.startswith("100.0% of events are exact duplicates of another event in every")
    assert "acquisition or export is broken" in note and note in res.record()["notes"]


def test_stuck_and_doubled_acquisitions_fail(tmp_path):
    """Nearly all identical is enough: the last 30% of events stuck on one event, or every
    event written twice (each event then has a twin)."""
    sample = clean_sample(21)
    n = sample.n_events
    stuck = int(0.7 * n)
    sample.events[stuck:] = sample.events[stuck - 1]
    fcs, idx, signals = prepare(sample, tmp_path / "stuck.fcs")
    res = qc.qc_sample(fcs, idx, signals)
    assert res.verdict == "fail" and duplicate_notes(res)[0].startswith("30.0% of events")
    doubled = clean_sample(22, n=10_000)
    doubled.events = np.repeat(doubled.events, 2, axis=0)
    doubled.labels = doubled.labels.repeat(2)
    fcs, idx, signals = prepare(doubled, tmp_path / "doubled.fcs")
    res = qc.qc_sample(fcs, idx, signals)
    assert res.verdict == "fail" and duplicate_notes(res)[0].startswith("100.0% of events")
    assert qc.qc_sample(fcs, idx, signals, {"fail_duplicate_pct": 100}).verdict == "pass"


def test_normal_generated_file_has_no_duplicates(tmp_path):
    fcs, idx, signals = prepare(clean_sample(23), tmp_path / "clean.fcs")
    assert qc.duplicate_fraction(fcs.events) == 0.0
    res = qc.qc_sample(fcs, idx, signals)
    assert res.verdict == "pass" and not duplicate_notes(res)


def test_real_files_keep_their_verdicts(shared_data):
    """Measured on every real file (FCS 2.0 10-bit integer files included): at most 0.1% of
    events have a twin equal in every channel (coulter.lmd), far below the default threshold;
    the verdict is the one the QC gives without the duplicate rule."""
    worst = 0.0
    for path in all_fcs_files(shared_data):
        try:
            sample = read_fcs(path)
        except FcsError:
            continue
        worst = max(worst, qc.duplicate_fraction(sample.events))
        idx, signals = generic_channels(sample)
        res = qc.qc_sample(sample, idx, signals)
        off = qc.qc_sample(sample, idx, signals, {"fail_duplicate_pct": 100})
        assert res.verdict == off.verdict and not duplicate_notes(res), (path.name, res.notes)
    assert worst < 0.002 < qc.DEFAULTS["fail_duplicate_pct"] / 100


def test_few_possible_values_are_not_judged():
    """Two 8-bit channels and no Time hold at most 65,536 distinct events: 100,000 events of
    a real population repeat each other by necessity, which says nothing about the file."""
    rng = np.random.default_rng(24)
    raw = np.clip(rng.normal(100, 20, size=(100_000, 2)), 0, 255).round().astype(np.float32)
    assert qc.duplicate_fraction(raw) > 0.9
    res = qc.run_qc(None, {}, raw, [256.0, 256.0], margin_channels=[0, 1])
    assert res.verdict == "pass" and not duplicate_notes(res)
    assert any("duplicate check skipped" in note for note in res.notes), res.notes


def test_duplicate_fraction_counts_rows_not_values():
    rows = np.array([[1, 2, 3], [1, 2, 4], [1, 2, 3], [3, 2, 1], [1, 2, 3]], dtype=np.float32)
    assert qc.duplicate_fraction(rows) == pytest.approx(3 / 5)  # three events are one event
    assert qc.duplicate_fraction(rows[:2]) == 0.0 and qc.duplicate_fraction(rows[:0]) == 0.0
    assert qc.duplicate_fraction(rows.T.copy()) == 0.0  # equal values per channel are fine
    assert qc.duplicate_fraction(rows.astype(np.float64)) == pytest.approx(3 / 5)


# --- speed --------------------------------------------------------------------------------------


def test_benchmark_runs_and_finds_its_clog():
    out = qc.benchmark(400_000, n_fluorescence=4)
    assert out["events"] == 400_000 and out["bins"] > 100
    assert out["removed"]["flow_rate"] > 0 and out["removed"]["signal"] == 0
    assert out["seconds"] > 0


@pytest.mark.slow
def test_ten_million_events_take_well_under_ingest():
    """10 M events x 12 fluorescence channels + 15 raw channels: measured ~0.3-0.8 s on the
    2-core machine (reading the same events from FCS takes ~3 s)."""
    t0 = time.perf_counter()
    out = qc.benchmark(10_000_000)
    print(
        f"\nQC of 10 M events: {out['seconds']:.2f} s ({time.perf_counter() - t0:.1f} s with data generation)"
    )
    assert out["seconds"] < 3.0


def test_events_removed_only_for_a_stain_top_are_listed_for_gating():
    """`at_top` (qc.saturated_stains: gate) lists, per stain channel, the events removed for
    nothing but stain tops: not those also at a removed scatter top, on the scatter floor or in
    a flagged time bin (cytopipe.gating.saturated counts the listed ones where they certainly
    belong); `remove` lists none."""
    t, sig = acquisition(n=40_000, seed=8, channels=2)
    n = t.size
    raw = np.full((n, 4), 10.0, dtype=np.float32)  # FSC-A, SSC-A, FL1, FL2
    raw[:, :2] = 500.0
    late = np.arange(n) >= 30_000
    sig["M0"][late] += np.float32(0.1)  # a signal shift: the late bins are flagged
    raw[0:50, 2] = 1023  # FL1 at its top: listed
    raw[50:60, 3] = 1023  # FL2 at its top: listed
    raw[60:70, [0, 2]] = 1023  # also at the forward-scatter top (removed): not listed
    raw[70:80, 1] = 0  # on the side-scatter floor ...
    raw[70:80, 2] = 1023  # ... and at FL1's top: not listed
    raw[32_000::10, 2] = 1023  # inside the flagged bins: not listed
    kwargs = dict(margin_channels=[0, 1, 2, 3], scatter_channels=[0, 1],
                  channel_names=["FSC-A", "SSC-A", "FL1", "FL2"])  # fmt: skip
    res = qc.run_qc(t, sig, raw, [1024.0] * 4, cfg={"saturated_scatter": "remove"}, **kwargs)
    assert set(res.at_top) == {2, 3}
    assert np.array_equal(np.flatnonzero(res.at_top[2]), np.arange(50))
    assert np.array_equal(np.flatnonzero(res.at_top[3]), np.arange(50, 60))
    assert not res.keep[:80].any()  # all removed, as before
    removed = qc.run_qc(
        t, sig, raw, [1024.0] * 4, cfg={"saturated_scatter": "remove",
                                         "saturated_stains": "remove"}, **kwargs
    )  # fmt: skip
    assert removed.at_top == {} and np.array_equal(removed.keep, res.keep)
