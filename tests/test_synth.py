"""The synthetic data generator: files real readers accept, truth that matches the events, and
cohort stories (aplasia, early / never reconstitution, relapse) that the analysis must find."""

from __future__ import annotations

import argparse
import hashlib
from datetime import date, timedelta

import flowio
import flowkit as fk
import numpy as np
import pandas as pd
import pytest
from flowutils import transforms as fu_transforms

from cytopipe.commands import synth as synth_commands
from cytopipe.errors import ConfigError, FcsError
from cytopipe.ingest.fcs import read_fcs
from cytopipe.synth.anomalies import Bubble, Clog, Drift, Saturation
from cytopipe.synth.cohort import SAMPLE_SHEET_COLUMNS, synth_cohort
from cytopipe.synth.cohort_plan import b_fraction, plan_cohort, timepoint_counts
from cytopipe.synth.composition import blood_composition, composition_counts
from cytopipe.synth.demo import demo_cohort
from cytopipe.synth.model import (
    B_SUBSETS,
    INSTRUMENTS,
    LEUKOCYTES,
    LYMPHOCYTES,
    POPULATIONS,
    TIMEPOINTS,
)
from cytopipe.synth.sample_files import read_truth, truth_path, write_sample
from cytopipe.synth.simulate import SimulatedSample, get_instrument, simulate_sample
from cytopipe.synth.truth import truth_masks

SMALL = 3_000


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _compensated(sample: SimulatedSample) -> np.ndarray:
    """Compensate with plain NumPy: x_comp = x @ inv(S) on the spilled detectors."""
    out = sample.events.astype(np.float64)
    idx = [sample.pnn.index(c) for c in sample.spillover_channels]
    out[:, idx] = np.linalg.solve(sample.spillover.T, out[:, idx].T).T
    return out


def _by_canonical(sample: SimulatedSample, values: np.ndarray) -> dict[str, np.ndarray]:
    inst = get_instrument(sample.instrument)
    return {c.canonical: values[:, sample.pnn.index(c.pnn)] for c in inst.channels}


@pytest.fixture(scope="module")
def sample_a() -> SimulatedSample:
    comp = blood_composition(b_of_lymphocytes=0.3, lymphocytes_of_leukocytes=0.5)
    return simulate_sample(40_000, comp, "A", 3)


@pytest.fixture(scope="module")
def sample_b() -> SimulatedSample:
    comp = blood_composition(b_of_lymphocytes=0.3, lymphocytes_of_leukocytes=0.5)
    return simulate_sample(40_000, comp, "B", 3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    sheet = synth_cohort(out / "c", n_patients=5, seed=7, events_per_sample=SMALL)
    return out / "c", sheet


# --- determinism -------------------------------------------------------------------------------


def test_simulate_sample_is_deterministic_for_a_seed():
    comp = blood_composition()
    a = simulate_sample(5_000, comp, "A", 11)
    b = simulate_sample(5_000, comp, "A", 11)
    c = simulate_sample(5_000, comp, "A", 12)
    assert np.array_equal(a.events, b.events)
    assert np.array_equal(a.labels.codes, b.labels.codes)
    assert not np.array_equal(a.events, c.events)


def test_cohort_is_byte_identical_for_a_seed(tmp_path, monkeypatch):
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        synth_cohort("out", n_patients=3, seed=5, events_per_sample=500, instrument="mixed")
    one, two = tmp_path / "one" / "out", tmp_path / "two" / "out"
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir())
    assert len([f for f in files if f.endswith(".fcs")]) == 3 * len(TIMEPOINTS)
    for name in files:
        assert _sha(one / name) == _sha(two / name), name
    other = tmp_path / "other"
    synth_cohort(other, n_patients=3, seed=6, events_per_sample=500, instrument="mixed")
    assert _sha(one / "P01_BL.fcs") != _sha(other / "P01_BL.fcs")


# --- files round-trip through flowkit and flowio --------------------------------------------------


def test_fcs_reads_back_with_flowkit_and_flowio(tmp_path, sample_a):
    kw = {"$SRC": "PATIENT P99 J. Doe"}
    sample = simulate_sample(2_000, blood_composition(), "A", 1, keywords=kw)
    path = write_sample(tmp_path / "x.fcs", sample)

    fks = fk.Sample(str(path))
    assert fks.event_count == 2_000
    assert fks.pnn_labels == [c.pnn for c in INSTRUMENTS["A"].channels]
    assert fks.pns_labels == [c.pns for c in INSTRUMENTS["A"].channels]
    raw = fks.get_events(source="raw")
    t = sample.pnn.index("Time")
    other = [i for i in range(len(sample.pnn)) if i != t]
    assert np.array_equal(raw[:, other].astype(np.float32), sample.events[:, other])
    # FlowKit scales Time by $TIMESTEP: the file holds ticks.
    np.testing.assert_allclose(raw[:, t], sample.events[:, t] * 0.01, rtol=1e-6)
    md = fks.metadata
    assert md["cyt"] == "LSRFortessa" and md["src"] == "PATIENT P99 J. Doe"
    assert md["fil"] == "x.fcs" and md["timestep"] == "0.01"
    assert {"date", "btim", "etim", "spillover"} <= set(md)

    fd = flowio.FlowData(str(path))
    assert fd.event_count == 2_000 and fd.version == "3.1"
    assert fd.pnn_labels == sample.pnn and fd.pns_labels == sample.pns
    assert [float(r) for r in fd.pnr_values] == sample.pnr
    assert np.array_equal(fd.as_array(preprocess=False).astype(np.float32), sample.events)
    assert fd.text["datatype"] == "F"


def test_spillover_keyword_compensates_back_to_the_true_signal(tmp_path, sample_a):
    path = write_sample(tmp_path / "comp.fcs", sample_a)
    fks = fk.Sample(str(path))
    fks.apply_compensation(fks.metadata["spillover"])
    comp = fks.get_events(source="comp")
    idx = [sample_a.pnn.index(c) for c in sample_a.spillover_channels]
    np.testing.assert_allclose(comp[:, idx], _compensated(sample_a)[:, idx], rtol=1e-4, atol=0.05)

    unsaturated = (sample_a.events[:, idx] < 262_143).all(axis=1)
    true = sample_a.true_fluorescence[unsaturated].astype(np.float64)
    err_comp = comp[unsaturated][:, idx] - true
    err_raw = sample_a.events[unsaturated][:, idx] - true
    # What is left after compensation is exactly the detector noise carried through inv(S):
    # standardized by the propagated noise model it is N(0, 1) on every channel.
    inst = INSTRUMENTS["A"]
    noiseless = true @ sample_a.spillover
    var = inst.photon_factor * np.maximum(noiseless, 0) + inst.electronic_sd**2
    sd = np.sqrt(var @ np.linalg.inv(sample_a.spillover) ** 2)
    z = err_comp / sd
    for j, name in enumerate(sample_a.spillover_channels):
        assert abs(np.median(z[:, j])) < 0.05, name
        assert 0.9 < np.std(z[:, j]) < 1.1, name
        assert np.mean(np.abs(z[:, j]) < 4) > 0.999, name
    # ... while leaving the spill in is far off wherever a detector receives a lot of it.
    spill_in = true @ (sample_a.spillover - np.eye(len(sample_a.spillover)))
    for name in ("PE-Cy7-A", "PerCP-Cy5-5-A", "PE-A", "V500-A"):
        j = sample_a.spillover_channels.index(name)
        hit = spill_in[:, j] > 1_000
        assert hit.sum() > 500, name
        med_comp, med_raw = np.median(np.abs(err_comp[hit, j])), np.median(np.abs(err_raw[hit, j]))
        assert med_comp < 0.3 * med_raw, name


def test_spillover_matrix_is_realistic_and_compensated_negatives_spread_below_zero(sample_a):
    s = sample_a.spillover
    off = s[~np.eye(len(s), dtype=bool)]
    nonzero = off[off > 0]
    assert np.all(np.diag(s) == 1)
    assert nonzero.min() >= 0.001 and nonzero.max() <= 0.25 and (nonzero >= 0.1).sum() >= 3
    pe, pecy7 = (
        sample_a.spillover_channels.index("PE-A"),
        sample_a.spillover_channels.index("PE-Cy7-A"),
    )
    assert 0.1 <= s[pe, pecy7] <= 0.2
    comp = _by_canonical(sample_a, _compensated(sample_a))
    t_cells = np.asarray(sample_a.labels) == "t_cell"
    below = np.mean(comp["IgD"][t_cells] < 0)  # T cells are IgD negative
    assert 0.05 < below < 0.5


def test_time_channel_is_poisson_arrivals_at_a_constant_rate(sample_a):
    ticks = sample_a.column("Time").astype(np.float64)
    assert np.all(np.diff(ticks) >= 0) and ticks[-1] > ticks[0]
    counts, _ = np.histogram(ticks, bins=20)
    mean = counts.mean()
    assert np.all(np.abs(counts - mean) < 5 * np.sqrt(mean))
    assert sample_a.keywords["$TIMESTEP"] == "0.01"


# --- truth ---------------------------------------------------------------------------------------


def test_truth_parquet_has_one_categorical_label_per_event(tmp_path, sample_a):
    path = write_sample(tmp_path / "t.fcs", sample_a)
    assert truth_path(path) == tmp_path / "t.truth.parquet"
    truth = read_truth(path)
    assert list(truth.columns) == ["population"]
    assert len(truth) == fk.Sample(str(path)).event_count == sample_a.n_events
    assert isinstance(truth["population"].dtype, pd.CategoricalDtype)
    assert list(truth["population"].cat.categories) == list(POPULATIONS)
    assert np.array_equal(truth["population"].to_numpy(), np.asarray(sample_a.labels))


def test_fractions_become_exact_counts_and_cohort_composition_matches_the_plan(cohort):
    comp = blood_composition(b_of_lymphocytes=0.15, nk_of_lymphocytes=0.1)
    sample = simulate_sample(20_000, comp, "A", 4)
    observed = sample.labels.value_counts()
    expected = composition_counts(20_000, comp)
    assert all(observed[p] == expected[p] for p in POPULATIONS)
    assert all(abs(expected[p] - comp[p] * 20_000) <= 1 for p in POPULATIONS)

    # Cohort files draw their counts: baseline B % of lymphocytes within sampling error of the plan.
    out, sheet = cohort
    plans = {p.patient_id: p for p in plan_cohort(5, 7)}
    for row in sheet[sheet["day"] < 0].itertuples():
        p, n = plans[row.patient_id].b_baseline, row.true_lymphocytes
        assert abs(row.true_b_cells / n - p) < 4.5 * np.sqrt(p * (1 - p) / n), row.sample_id


def test_aplasia_sample_has_exactly_the_requested_b_cells(tmp_path):
    counts = {"t_cell": 42_990, "nk": 7_000, "b_naive": 6, "b_transitional": 3, "plasmablast": 1}
    counts |= {
        "debris": 2_000,
        "doublet": 1_500,
        "dead": 1_000,
        "granulocyte": 20_000,
        "monocyte": 3_000,
    }
    sample = simulate_sample(None, counts, "A", 9)
    masks = truth_masks(sample.labels)
    assert masks["b_cells"].sum() == 10 and masks["lymphocytes"].sum() == 50_000
    assert masks["plasmablasts"].sum() == 1 and masks["b_cd20pos"].sum() == 9
    path = write_sample(tmp_path / "aplasia.fcs", sample)
    assert truth_masks(read_truth(path)["population"])["b_cells"].sum() == 10


def test_truth_masks_follow_the_gating_hierarchy():
    labels = np.array(POPULATIONS * 3)
    m = truth_masks(labels)
    expected = {
        "cells": set(POPULATIONS) - {"debris"},
        "singlets": set(POPULATIONS) - {"debris", "doublet"},
        "live": set(POPULATIONS) - {"debris", "doublet", "dead"},
        "leukocytes": set(LEUKOCYTES),
        "lymphocytes": set(LYMPHOCYTES),
        "t_cells": {"t_cell", "car_t"},  # CAR+ T cells are T cells
        "car_t": {"car_t"},
        "b_cells": set(B_SUBSETS),
        "b_cd20pos": set(B_SUBSETS) - {"plasmablast"},
        "b_cd20neg": {"plasmablast"},
        "plasmablasts": {"plasmablast"},
        **{s: {s} for s in B_SUBSETS if s != "plasmablast"},
    }
    assert set(m) == set(expected)
    for pid, pops in expected.items():
        assert set(labels[m[pid]]) == pops, pid
    for child, parent in [
        ("singlets", "cells"),
        ("live", "singlets"),
        ("leukocytes", "live"),
        ("lymphocytes", "leukocytes"),
        ("b_cells", "lymphocytes"),
        ("t_cells", "lymphocytes"),
        ("car_t", "t_cells"),
        ("b_naive", "b_cd20pos"),
        ("plasmablasts", "b_cd20neg"),
    ]:
        assert not (m[child] & ~m[parent]).any(), (child, parent)
    for excluded in ("debris", "doublet", "dead", "cd45_negative"):
        assert not m["lymphocytes"][labels == excluded].any()
    assert np.array_equal(m["b_cd20pos"] | m["b_cd20neg"], m["b_cells"])
    assert m["lymphocytes"].sum() == 3 * len(LYMPHOCYTES) and m["b_cells"].sum() == 3 * len(
        B_SUBSETS
    )
    assert m["cells"].sum() == 3 * (len(POPULATIONS) - 1)
    with pytest.raises(ConfigError, match="b_cell"):
        truth_masks(["t_cell", "b_cell"])


@pytest.mark.parametrize("key", ["A", "B"])
def test_populations_separate_with_the_design_gating_strategy(key, sample_a, sample_b):
    """Fixed gates of DESIGN.md's strategy on compensated logicle data recover the truth."""
    sample = sample_a if key == "A" else sample_b
    inst = INSTRUMENTS[key]
    comp = _compensated(sample)
    fl = [sample.pnn.index(c) for c in sample.spillover_channels]
    logicle = comp.copy()
    logicle[:, fl] = fu_transforms.logicle(comp, fl, t=262_144, w=0.5, m=4.5, a=0)[:, fl]
    x = _by_canonical(sample, logicle)
    for name in ("FSC-A", "FSC-H", "SSC-A"):  # scatter back on the instrument-A scale
        x[name] = x[name] / inst.scatter_gain.get(name, 1.0)
    cells = x["FSC-A"] > 20_000
    singlets = cells & (x["FSC-H"] / x["FSC-A"] > 0.68)
    live = singlets & (x["viability"] < 0.5)
    leuko = live & (x["CD45"] > 0.45)
    lymph = leuko & (x["CD45"] > 0.68) & (x["SSC-A"] < 30_000)
    t_cells = lymph & (x["CD3"] > 0.5)
    b_cells = lymph & (x["CD3"] < 0.5) & (x["CD19"] > 0.45)
    cd20 = b_cells & (x["CD20"] > 0.5)
    # CD27 (ECD) on B receives 0.22 of the bright PE (CD24): its spillover spread needs a higher cut.
    igd, cd27 = x["IgD"] > 0.45, x["CD27"] > (0.42 if key == "A" else 0.48)
    transitional = cd20 & (x["CD24"] > 0.68) & (x["CD38"] > 0.66)
    gates = {
        "cells": cells,
        "singlets": singlets,
        "live": live,
        "leukocytes": leuko,
        "lymphocytes": lymph,
        "t_cells": t_cells,
        "b_cells": b_cells,
        "b_cd20pos": cd20,
        "plasmablasts": b_cells & ~(x["CD20"] > 0.5) & (x["CD27"] > 0.75) & (x["CD38"] > 0.8),
        "b_unswitched_memory": cd20 & igd & cd27,
        "b_switched_memory": cd20 & ~igd & cd27,
        "b_double_negative": cd20 & ~igd & ~cd27,
        "b_transitional": transitional,
        "b_naive": cd20 & igd & ~cd27 & ~transitional,
    }
    truth = truth_masks(sample.labels)
    for pid, gate in gates.items():
        hit = (gate & truth[pid]).sum()
        recall, precision = hit / truth[pid].sum(), hit / gate.sum()
        assert recall > (0.85 if pid == "plasmablasts" else 0.95), (pid, recall)
        assert precision > 0.95, (pid, precision)
    # Doublets: FSC-A doubles, FSC-H barely grows.
    labels = np.asarray(sample.labels)
    ratio = x["FSC-H"] / x["FSC-A"]
    assert np.median(ratio[labels == "doublet"]) < 0.6 < 0.75 < np.median(ratio[labels == "t_cell"])


def test_instrument_b_has_other_names_order_ranges_and_scales(tmp_path, sample_a, sample_b):
    path = write_sample(tmp_path / "b.fcs", sample_b)
    fks = fk.Sample(str(path))
    assert fks.metadata["cyt"] == "Navios EX"
    assert fks.pnn_labels[0] == "TIME" and fks.pnn_labels != sample_a.pnn
    assert set(fks.pnn_labels).isdisjoint(set(sample_a.pnn) - {"Time"})
    assert {float(fks.metadata[f"p{i}r"]) for i in range(2, 14)} == {1_048_576.0}
    assert fks.pns_labels[fks.pnn_labels.index("FL6 INT")] == "7-AAD"
    assert fks.metadata["spillover"].startswith("9,FL1 INT,FL2 INT,")
    # Same seed and composition: same biology, recorded on another scale.
    t_a = np.asarray(sample_a.labels) == "t_cell"
    fsc_ratio = np.median(sample_b.column("FS INT")[t_a]) / np.median(sample_a.column("FSC-A")[t_a])
    assert 3.0 < fsc_ratio < 3.8  # range ratio 4 times the optics' factor
    b_cells = truth_masks(sample_a.labels)["b_cells"]
    cd19_a = _by_canonical(sample_a, _compensated(sample_a))["CD19"][b_cells]
    cd19_b = _by_canonical(sample_b, _compensated(sample_b))["CD19"][b_cells]
    gain = INSTRUMENTS["B"].fluor_gain["CD19"]
    assert 0.7 <= gain <= 1.3
    assert np.median(cd19_b) / np.median(cd19_a) == pytest.approx(gain, rel=0.05)


# --- cohorts -------------------------------------------------------------------------------------


def _b_pct(sheet: pd.DataFrame) -> pd.Series:
    return 100 * sheet["true_b_cells"] / sheet["true_lymphocytes"]


def test_cohort_sheet_layout_and_timepoints(cohort, tmp_path, monkeypatch):
    out, sheet = cohort
    assert list(sheet.columns) == list(SAMPLE_SHEET_COLUMNS)
    on_disk = pd.read_csv(out / "samples.tsv", sep="\t")
    assert list(on_disk.columns) == list(SAMPLE_SHEET_COLUMNS) and len(on_disk) == 50
    for pid, rows in sheet.groupby("patient_id"):
        assert list(rows["day"]) == list(TIMEPOINTS)
        assert rows["infusion_date"].nunique() == 1
        infusion = date.fromisoformat(rows["infusion_date"].iloc[0])
        for row in rows.itertuples():
            assert row.collection_date == (infusion + timedelta(days=row.day)).isoformat()
            assert row.sample_id == (f"{pid}_BL" if row.day < 0 else f"{pid}_D{row.day:03d}")
            truth = read_truth(row.path)
            masks = truth_masks(truth["population"])
            assert masks["b_cells"].sum() == row.true_b_cells
            assert masks["lymphocytes"].sum() == row.true_lymphocytes
        alc = rows.set_index("day")["abs_lymphocytes"]
        assert alc[7] < alc[-7] and alc[7] < 800 and alc[365] > 1000
    monkeypatch.chdir(tmp_path)
    rel = synth_cohort("rel", n_patients=1, seed=1, events_per_sample=200)
    assert rel["path"].iloc[0] == "rel/P01_BL.fcs"


def test_cohort_has_aplasia_then_never_early_and_typical_reconstitution(cohort):
    out, sheet = cohort
    sheet = sheet.assign(b_pct=_b_pct(sheet))
    roles = pd.read_csv(out / "patients.truth.tsv", sep="\t").set_index("patient_id")["role"]
    assert sorted(roles) == ["early", "never", "relapse", "typical", "typical"]
    for pid, rows in sheet.groupby("patient_id"):
        post = rows[rows["day"] > 0].set_index("day")
        assert rows[rows["day"] < 0]["b_pct"].iloc[0] >= 3.0
        back = post[post["b_pct"] >= 1.0].index
        if roles[pid] == "never":
            assert back.empty, post["b_pct"]
            continue
        first = back.min()
        assert list(back) == [d for d in post.index if d >= first]  # stays back once returned
        assert (post.loc[: first - 1, "b_pct"] < 0.5).all()  # near-total loss before
        assert (post.loc[: first - 1, "true_b_cells"] <= 20).all()
        if roles[pid] == "early":
            assert first in (28, 56)
        else:
            assert 56 < first <= 180
        later = post.loc[first:, "b_pct"]
        assert later.iloc[-1] > later.iloc[0]


def test_aplasia_leaves_0_to_20_b_cells_in_a_50k_tube():
    """At full size (counts only, no events simulated): residual B cells stay within 0-20."""
    residual = []
    for plan in plan_cohort(8, seed=3):
        for t_index, day in enumerate(TIMEPOINTS):
            rng = np.random.default_rng([3, 1, plan.index, t_index])
            counts, alc = timepoint_counts(plan, day, 50_000, rng)
            b = sum(counts[s] for s in B_SUBSETS)
            lymph = sum(counts[s] for s in LYMPHOCYTES)
            if b_fraction(plan, day, alc) is None:
                residual.append(b)
                assert b <= 20 and 100 * b / lymph < 1.0 and b / lymph * alc < 10
            else:
                assert 100 * b / lymph > 1.5 and b / lymph * alc > 15, (plan.patient_id, day)
    assert len(residual) > 20 and max(residual) > 0


def _subset_fractions(path) -> pd.Series:
    pops = read_truth(path)["population"]
    b = pops[pops.isin(B_SUBSETS)]
    return b.value_counts(normalize=True).reindex(list(B_SUBSETS), fill_value=0.0)


def test_returning_b_cells_are_naive_and_relapse_brings_back_memory(tmp_path):
    sheet = synth_cohort(tmp_path, n_patients=5, seed=7, events_per_sample=20_000)
    roles = pd.read_csv(tmp_path / "patients.truth.tsv", sep="\t").set_index("patient_id")
    sheet = sheet.assign(b_pct=_b_pct(sheet))
    for pid, rows in sheet.groupby("patient_id"):
        if roles.loc[pid, "role"] == "never":
            continue
        first = rows[(rows["day"] > 0) & (rows["b_pct"] >= 1.0)].iloc[0]
        at_return = _subset_fractions(first["path"])
        assert at_return["b_transitional"] + at_return["b_naive"] > 0.8, pid
        assert at_return["b_transitional"] > 0.2, pid
        baseline = _subset_fractions(rows.iloc[0]["path"])
        last = _subset_fractions(rows.iloc[-1]["path"])
        relapse = last[["b_switched_memory", "plasmablast"]].sum()
        if roles.loc[pid, "role"] == "relapse":
            assert last["b_switched_memory"] > baseline["b_switched_memory"]
            assert last["plasmablast"] > baseline["plasmablast"]
            assert relapse > 0.25
        else:
            assert relapse < baseline[["b_switched_memory", "plasmablast"]].sum()


def test_demo_cohort_has_children_adults_and_one_archive_instrument(tmp_path):
    sheet = demo_cohort(tmp_path, events_per_sample=300)
    # 5 patients x 10 timepoints, plus one archived file truncated in transfer
    assert sheet["patient_id"].nunique() == 5 and len(sheet) == 51
    broken = sheet.iloc[-1]
    assert broken["sample_id"] == "P05_D400" and pd.isna(broken["true_b_cells"])
    with pytest.raises(FcsError, match="truncated"):
        read_fcs(broken["path"])
    ages = sheet.groupby("patient_id")["age_years"].min()
    assert ((ages >= 6) & (ages < 18)).any() and (ages >= 18).any()
    per_patient = sheet.groupby("patient_id")["instrument"].agg(set)
    assert sorted("".join(sorted(s)) for s in per_patient) == ["A", "A", "A", "A", "B"]
    b_file = sheet[sheet["instrument"] == "B"]["path"].iloc[0]
    assert fk.Sample(b_file).metadata["cyt"] == "Navios EX"
    src = flowio.FlowData(sheet["path"].iloc[0]).text["src"]
    assert src.startswith("PATIENT P01 ")


def test_cli_writes_the_cohort_and_says_where(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth_commands.add_cli(parser.add_subparsers())
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "synth-cohort",
            "--patients",
            "3",
            "--seed",
            "2",
            "--events",
            "300",
            "--instrument",
            "B",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert "30 FCS files" in line and str(out / "samples.tsv") in line
    sheet = pd.read_csv(out / "samples.tsv", sep="\t")
    assert set(sheet["instrument"]) == {"B"} and len(list(out.glob("*.fcs"))) == 30


def test_bad_input_raises_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown synthetic instrument"):
        simulate_sample(100, blood_composition(), "Z")
    with pytest.raises(ConfigError, match="add up to 20 events"):
        simulate_sample(100, {"t_cell": 20}, "A")
    with pytest.raises(ConfigError, match="b_cells"):
        simulate_sample(100, {"b_cells": 0.5, "t_cell": 0.5}, "A")
    with pytest.raises(ConfigError, match="n_patients"):
        synth_cohort(tmp_path, n_patients=0, seed=1)
    with pytest.raises(ConfigError, match="fraction"):
        blood_composition(b_of_lymphocytes=1.5)


def test_planted_anomalies_change_the_acquisition_and_are_in_the_truth(tmp_path):
    anomalies = [
        Clog(at=0.3, seconds=5.0),
        Bubble(at=0.6, seconds=0.3, rate_factor=4.0),
        Drift(channel="CD19", start=0.85, change=-0.6),
        Saturation(fraction=0.01),
    ]
    comp = blood_composition(b_of_lymphocytes=0.3)
    clean = simulate_sample(30_000, comp, "A", 21)
    sample = simulate_sample(30_000, comp, "A", 21, anomalies=anomalies)
    path = write_sample(tmp_path / "qc.fcs", sample)
    truth = read_truth(path)
    assert list(truth.columns) == ["population", "anomaly"]
    kinds = truth["anomaly"].value_counts()
    assert set(kinds.index) == {"none", "clog", "bubble", "drift", "saturated"}
    assert kinds["none"] > 0.6 * len(truth)

    t = sample.column("Time") * 0.01  # seconds
    assert np.all(np.diff(t) >= 0)
    rate = len(t) / (clean.column("Time")[-1] * 0.01)  # normal events per second
    label = truth["anomaly"].to_numpy()
    clog_t, bubble_t = t[label == "clog"], t[label == "bubble"]
    assert clog_t.max() - clog_t.min() > 4.0 and (label == "clog").sum() < 0.1 * 5.0 * rate
    assert (label == "bubble").sum() / (bubble_t.max() - bubble_t.min()) > 3 * rate
    assert t[-1] - clean.column("Time")[-1] * 0.01 == pytest.approx(
        (5.0 - 5.0 * 0.05) - (0.3 * 4 - 0.3), abs=0.05
    )

    b_cells = truth_masks(sample.labels)["b_cells"]
    cd19 = sample.column("PE-Cy7-A")  # the detector drifts (so compensation of it goes wrong too)
    early = np.median(cd19[b_cells & (t < 0.5 * t[-1]) & (label == "none")])
    late = np.median(cd19[b_cells & (t > 0.97 * t[-1]) & (label == "drift")])
    assert late / early == pytest.approx(0.4, abs=0.08)

    saturated = label == "saturated"
    at_top = (sample.events[:, :-1] >= 262_143).any(axis=1)
    assert at_top[saturated].all() and 0.005 < saturated.mean() < 0.015
