"""Acquisition QC accuracy, measured (issue 8): on generated files with planted anomalies and
per-event truth, at least 90% of anomalous events are removed and at most 2% of clean events;
on clean generated files the verdict is pass; on every real file with a Time channel the QC
runs and says what it did.

Each file goes the pipeline's way: written as FCS 3.1, read with read_fcs, compensated with its
$SPILLOVER, fluorescence on the pipeline's default logicle scale (T = $PnR, W 0.5, M 4.5).

Drift truth. The generator labels drift events by the change of the raw detector (more than
10%), but a detector drift reaches the analysis through compensation, which can multiply it (a
PE-Cy7 detector losing 3% turns the CD24-PE-bright granulocytes visibly negative in compensated
CD19 on instrument A) or damp it (instrument B). What the QC promises is to catch drifts that
move a channel's mean on the analysis scale by at least `qc.signal_min_shift`. So the drift
truth here is measured on that scale from a twin file (same seed, same events, no drift):
events acquired while the largest mean shift over the fluorescence channels is >= the minimum
shift are anomalous, below half of it clean, in between a grey zone counted on neither side
(reported). The generator's own label is reported beside it.

Margin truth. The generator's detectors saturate by themselves (bright granulocyte SSC-A on
both instruments, about 0.5-1% of events): such an event is at the margin whether or not an
anomaly was planted, and removing it is the margin rule doing its job. Those events are reported
as "at margin (not planted)" and are not counted as clean.

The table is printed (pytest -s) and written as TSV to the pytest temp folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytopipe.errors import FcsError
from cytopipe.ingest import panel
from cytopipe.ingest.fcs import FcsSample, read_fcs
from cytopipe.preprocess import compensation, qc, transforms
from cytopipe.synth.anomalies import Bubble, Clog, Drift, Saturation
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import SimulatedSample, simulate_sample

REPO = Path(__file__).resolve().parent.parent
PANEL = panel.load_panel(REPO / "config" / "panel.yaml")
SCATTER = ("FSC-A", "FSC-H", "SSC-A")
N_EVENTS = 60_000
MIN_SHIFT = qc.DEFAULTS["signal_min_shift"]

# Anomalies per scenario; Drift goes before Saturation so that a twin without the drift draws
# the same random numbers (Drift draws none) and holds the same events.
SCENARIOS: dict[str, list] = {
    "clog": [Clog(at=0.35, seconds=4.0)],
    "bubble": [Bubble(at=0.6, seconds=0.5, rate_factor=3.0)],
    "drift": [Drift(channel="CD19", start=0.6, end=1.0, change=-0.5)],
    "saturated": [Saturation(fraction=0.01)],
    "combined": [
        Clog(at=0.2, seconds=3.0),
        Bubble(at=0.45, seconds=0.4, rate_factor=4.0),
        Drift(channel="CD45", start=0.75, end=0.95, change=-0.6),
        Saturation(fraction=0.005),
    ],
}
KINDS = ("clog", "bubble", "drift", "saturated")
NATURAL = "at margin (not planted)"
LARGE = "saturated scatter (kept)"  # a large cell: stains measured (qc.saturated_scatter)


def prepare(sample: SimulatedSample, path: Path) -> tuple[FcsSample, dict, dict]:
    """Write, read back, compensate and transform like the pipeline: (sample, idx, signals)."""
    fcs = read_fcs(write_sample(path, sample))
    idx = panel.match_channels(PANEL, fcs.pnn, fcs.pns)
    spill = compensation.spillover_from_keywords(fcs)
    events = compensation.compensate(fcs.events, fcs.pnn, spill)
    signals = {
        m: transforms.logicle(events[:, i], t=fcs.pnr[i], w=0.5, m=4.5, a=0).astype(np.float32)
        for m, i in idx.items()
        if m not in SCATTER and m != "Time"
    }
    return fcs, idx, signals


def at_margin(fcs: FcsSample, idx: dict, stains_only: bool = False) -> np.ndarray:
    """Events at the top of a matched channel's range or at/below 0 in scatter (raw values);
    `stains_only`: at the top of a fluorescence channel."""
    out = np.zeros(fcs.n_events, dtype=bool)
    for m, i in idx.items():
        if m == "Time" or (stains_only and m in SCATTER):
            continue
        out |= fcs.events[:, i] >= fcs.pnr[i] - 1
        if m in SCATTER:
            out |= fcs.events[:, i] <= 0
    return out


def drift_truth(drifted: dict, twin: dict, order: np.ndarray, window: int = 1000) -> np.ndarray:
    """Per event, the largest shift of any channel's mean on the analysis scale caused by the
    drift, estimated over windows of `window` consecutive events (events in time order)."""
    shift = np.zeros(order.size)
    for m in drifted:
        delta = (drifted[m].astype(np.float64) - twin[m].astype(np.float64))[order]
        starts = np.arange(0, delta.size, window)
        means = np.add.reduceat(delta, starts) / np.diff(np.r_[starts, delta.size])
        per_event = np.repeat(means, np.diff(np.r_[starts, delta.size]))
        shift[order] = np.maximum(shift[order], np.abs(per_event))
    return shift


def run_scenario(name: str, instrument: str, seed: int, tmp: Path) -> dict:
    anomalies = SCENARIOS[name]
    sample = simulate_sample(N_EVENTS, blood_composition(), instrument, seed, anomalies=anomalies)
    fcs, idx, signals = prepare(sample, tmp / f"{name}_{instrument}.fcs")
    result = qc.qc_sample(fcs, idx, signals)
    label = np.asarray(sample.extra_truth["anomaly"]).astype(object)
    generator_label = label.copy()
    label[(label == "none") & at_margin(fcs, idx)] = NATURAL
    scatter = [i for m, i in idx.items() if m in SCATTER]
    large = (fcs.events[:, scatter] >= np.asarray(fcs.pnr)[scatter] - 1).any(axis=1)
    label[(label == "saturated") & large & ~at_margin(fcs, idx, stains_only=True)] = LARGE
    if any(isinstance(a, Drift) for a in anomalies):
        twin_sample = simulate_sample(
            N_EVENTS,
            blood_composition(),
            instrument,
            seed,
            anomalies=[a for a in anomalies if not isinstance(a, Drift)],
        )
        _, _, twin = prepare(twin_sample, tmp / f"{name}_{instrument}_twin.fcs")
        order = np.argsort(fcs.events[:, idx["Time"]], kind="stable")
        shift = drift_truth(signals, twin, order)
        judged = np.isin(label, ["none", "drift"])
        label[judged & (shift >= MIN_SHIFT)] = "drift"
        label[judged & (shift >= MIN_SHIFT / 2) & (shift < MIN_SHIFT)] = "drift (grey zone)"
        label[judged & (shift < MIN_SHIFT / 2)] = "none"
    return {
        "name": name,
        "instrument": instrument,
        "result": result,
        "label": label,
        "generator_label": generator_label,
    }


def rows_for(run: dict) -> list[dict]:
    removed = ~run["result"].keep
    label, gen = run["label"], run["generator_label"]
    clean = label == "none"
    rows = []
    for kind in [*KINDS, "drift (grey zone)", NATURAL, LARGE]:
        m = label == kind
        if m.any():
            rows.append(
                {
                    "file": run["name"],
                    "instrument": run["instrument"],
                    "kind": kind,
                    "anomalous_events": int(m.sum()),
                    "pct_anomalous_removed": 100.0 * removed[m].mean(),
                    "clean_events": int(clean.sum()),
                    "pct_clean_removed": 100.0 * removed[clean].mean(),
                    "verdict": run["result"].verdict,
                }
            )
    g = gen == "drift"
    if g.any():  # the generator's own label (raw detector off by > 10%), for comparison
        rows.append(
            {
                "file": run["name"],
                "instrument": run["instrument"],
                "kind": "drift (generator label: detector > 10% off)",
                "anomalous_events": int(g.sum()),
                "pct_anomalous_removed": 100.0 * removed[g].mean(),
                "clean_events": int((gen == "none").sum()),
                "pct_clean_removed": 100.0 * removed[gen == "none"].mean(),
                "verdict": run["result"].verdict,
            }
        )
    return rows


@pytest.fixture(scope="module")
def accuracy(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("qc_accuracy")
    runs = [
        run_scenario(name, inst, seed=11 + i, tmp=tmp)
        for i, name in enumerate(SCENARIOS)
        for inst in ("A", "B")
    ]
    table = pd.DataFrame([r for run in runs for r in rows_for(run)])
    pooled = []
    for kind in KINDS:
        sel = [run for run in runs if (run["label"] == kind).any()]
        anomalous = np.concatenate([~run["result"].keep[run["label"] == kind] for run in sel])
        clean = np.concatenate([~run["result"].keep[run["label"] == "none"] for run in sel])
        pooled.append(
            {
                "file": "all",
                "instrument": "A+B",
                "kind": kind,
                "anomalous_events": anomalous.size,
                "pct_anomalous_removed": 100.0 * anomalous.mean(),
                "clean_events": clean.size,
                "pct_clean_removed": 100.0 * clean.mean(),
                "verdict": "",
            }
        )
    table = pd.concat([table, pd.DataFrame(pooled)], ignore_index=True)
    out = tmp / "qc_accuracy.tsv"
    table.round(2).to_csv(out, sep="\t", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nQC accuracy on planted anomalies (per file and pooled per kind):")
        print(table.round(2).to_string(index=False))
        print(f"(written to {out})")
    return {"runs": runs, "table": table}


def test_anomalous_events_removed_and_clean_events_kept(accuracy):
    table = accuracy["table"]
    judged = table[table["kind"].isin(KINDS)]
    low = judged[judged["pct_anomalous_removed"] < 90.0]
    assert low.empty, f"fewer than 90% of anomalous events removed:\n{low.to_string()}"
    over = judged[judged["pct_clean_removed"] > 2.0]
    assert over.empty, f"more than 2% of clean events removed:\n{over.to_string()}"
    large = table[(table["kind"] == LARGE) & (table["file"] == "saturated")]
    assert not large.empty and (large["pct_anomalous_removed"] == 0).all(), large.to_string()
    pooled = table[table["file"] == "all"]
    assert set(pooled["kind"]) == set(KINDS)
    assert (pooled["anomalous_events"] > 200).all()  # each kind is really exercised


def test_rules_attribute_removals(accuracy):
    """Each kind is removed by the rule meant for it, so the record explains the removal."""
    for run in accuracy["runs"]:
        res, label = run["result"], run["label"]
        removed = res.removed
        assert sum(removed.values()) == res.events_in - res.events_kept
        if run["name"] in ("clog", "bubble"):
            assert removed["flow_rate"] >= 0.9 * (label == run["name"]).sum()
        if run["name"] == "saturated":
            assert removed["saturated"] >= (label == "saturated").sum()
            assert removed["flow_rate"] + removed["signal"] == 0
        if run["name"] == "drift":
            assert removed["signal"] >= 0.9 * (label == "drift").sum()
            flagged = res.bins[res.bins["flagged"]]
            assert flagged["reason"].str.contains("CD19").all()
            # the drifted part, not the whole file: flagged bins are the late ones
            assert flagged["start"].min() > 0.5 * res.bins["end"].iloc[-1]


def test_clean_files_pass(tmp_path):
    for instrument, seed in (("A", 3), ("B", 4)):
        sample = simulate_sample(N_EVENTS, blood_composition(), instrument, seed)
        fcs, idx, signals = prepare(sample, tmp_path / f"clean_{instrument}.fcs")
        res = qc.qc_sample(fcs, idx, signals)
        assert res.verdict == "pass", res.record()
        assert res.removed["flow_rate"] + res.removed["signal"] == 0, res.bins[res.bins.flagged]
        assert res.pct_kept > 98.0
        assert res.bins is not None and len(res.bins) >= 100


# --- real files ---------------------------------------------------------------------------------


def fcs_files_with_time(root: Path) -> list[tuple[Path, FcsSample]]:
    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        with open(p, "rb") as fh:
            if fh.read(3) != b"FCS":
                continue
        try:
            sample = read_fcs(p)
        except FcsError:
            continue  # refused files are the reader's business (tests/test_fcs.py)
        if qc.find_time_channel(sample.pnn) is not None:
            found.append((p, sample))
    return found


def generic_channels(sample: FcsSample) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Without a panel: scatter by name, every other non-Time, non-width channel is a signal."""
    t = qc.find_time_channel(sample.pnn)
    idx: dict[str, int] = {"Time": t}
    signals = {}
    for i, name in enumerate(sample.pnn):
        up = name.upper()
        if i == t:
            continue
        if up.startswith(("FSC", "FS ", "SSC", "SS ")):
            canonical = (
                {"A": "FSC-A", "H": "FSC-H"}.get(up[-1], "FSC-A") if up.startswith("F") else "SSC-A"
            )
            idx.setdefault(canonical, i)
            idx.setdefault(name, i)
            continue
        idx[name] = i
        if "WIDTH" in up or up.endswith("-W"):
            continue
        top = qc.channel_top(sample.keywords, sample.pnr, i) or 262144.0
        signals[name] = transforms.logicle(
            sample.events[:, i], t=max(top, float(sample.pnr[i]), 2.0), w=0.5, m=4.5, a=0
        ).astype(np.float32)
    return idx, signals


def test_every_real_file_with_time_runs(shared_data):
    files = fcs_files_with_time(shared_data)
    names = {p.name for p, _ in files}
    assert len(files) >= 8, names
    assert {"G11.fcs", "data1.fcs", "0877408774.B08", "test_comp_example.fcs"} <= names
    lines = []
    for path, sample in files:
        idx, signals = generic_channels(sample)
        res = qc.qc_sample(sample, idx, signals)
        rec = res.record()
        json.dumps(rec, allow_nan=False)
        json.dumps(res.timeline(), allow_nan=False)
        assert rec["verdict"] in ("pass", "warn", "fail")
        assert rec["events_in"] == sample.n_events
        assert sum(rec["removed"].values()) == rec["events_in"] - rec["events_kept"]
        if rec["time_qc"] == "skipped":
            assert any("skipped" in n for n in rec["notes"]), rec
        else:
            assert rec["bins"] >= qc.DEFAULTS["min_bins"]
            span = float(res.bins["end"].iloc[-1] - res.bins["start"].iloc[0])
            assert math.isfinite(span) and span > 0
        if sample.keywords.get("timeticks") and not sample.keywords.get("timestep"):
            assert any("TIMETICKS" in n for n in rec["notes"])
        lines.append(f"{path.name}: {rec['verdict']}, kept {rec['pct_kept']:.1f}%, {rec['notes']}")
    print("\n" + "\n".join(lines))
    # A FACSCalibur well acquired at a steady rate: nothing but margin events is removed.
    b08 = next(s for p, s in files if p.name == "0877408774.B08")
    idx, signals = generic_channels(b08)
    res = qc.qc_sample(b08, idx, signals)
    assert res.removed["flow_rate"] + res.removed["signal"] == 0 and res.verdict == "pass"
