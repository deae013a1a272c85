"""A nominal $PnR must not turn aplasia into reconstitution.

Regression: a CD19 channel declaring $PnR 1024 while its values ran to 262,144 was put on a
logicle with T = 1024, and a tube with no B cells at all gave hundreds of gated B cells (QC
pass). The top now comes from the file's other channels (or the standard range), the
provenance says so, and the sample is a QC warning whose statistics carry the flag.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cytopipe import cli
from cytopipe.config import load_config
from cytopipe.errors import FcsError
from cytopipe.gating.sample import gate
from cytopipe.gating.template import load_template
from cytopipe.ingest import panel
from cytopipe.ingest.fcs import read_fcs
from cytopipe.preprocess.ranges import DEFAULT_TOP, channel_ranges, declared_top, filled_top
from cytopipe.preprocess.sample import preprocess
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import simulate_sample


def _tube(tmp_path, name, b_of_lymphocytes, nominal=(), seed=7, top=1024.0):
    """A 30,000-event tube whose `nominal` markers (or "all" channels) declare range `top`."""
    sample = simulate_sample(
        30_000, blood_composition(b_of_lymphocytes=b_of_lymphocytes), "A", seed
    )
    for i, (pnn, pns) in enumerate(zip(sample.pnn, sample.pns, strict=True)):
        if pnn != "Time" and (nominal == "all" or pns.split(" ")[0] in nominal):
            sample.pnr[i] = top
    return write_sample(tmp_path / f"{name}.fcs", sample)


def _gated(path, repo):
    cfg = load_config(repo / "config" / "config.yaml")
    pre = preprocess(str(path), panel.load_panel(repo / "config" / "panel.yaml"), cfg)
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    gated = gate("S", columns, load_template(repo / "config" / "gating.yaml"))
    return pre, gated.stats.set_index("population")["count"]


@pytest.mark.parametrize("nominal", [("CD19",), ("CD3", "CD19", "CD20"), "all"])
def test_aplasia_with_a_nominal_range_stays_aplasia(tmp_path, repo, nominal):
    pre, counts = _gated(_tube(tmp_path, "aplasia", 0.0, nominal), repo)
    assert counts["lymphocytes"] > 5000
    assert counts["b_cells"] / counts["lymphocytes"] < 0.001  # was 7% with T = 1024
    replaced = pre.info["provenance"]["ranges_replaced"]
    assert "CD19" in replaced and replaced["CD19"]["declared"] == 1024
    assert replaced["CD19"]["top"] == DEFAULT_TOP
    assert pre.info["qc"]["verdict"] == "warn"
    assert any("declared range 1024 is nominal" in n for n in pre.info["qc"]["notes"])


@pytest.mark.parametrize("nominal", [("CD19",), "all"])
def test_a_nominal_range_gates_like_the_true_one(tmp_path, repo, nominal):
    _, true_counts = _gated(_tube(tmp_path, "true", 0.08), repo)
    pre, counts = _gated(_tube(tmp_path, "nominal", 0.08, nominal), repo)
    assert true_counts["b_cells"] > 500
    pd.testing.assert_series_equal(counts, true_counts)
    assert pre.info["qc"]["removed"]["saturated"] < 0.02 * 30_000  # bright cells are not margin


def test_the_gate_step_flags_every_statistic_of_such_a_sample(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    fcs = _tube(tmp_path, "aplasia", 0.0, ("CD19",))
    info, out = tmp_path / "S.json", tmp_path / "gated"
    assert cli.main(["preprocess", str(fcs), "--sample-id", "S", "--panel", "config/panel.yaml",
                     "--out-events", str(tmp_path / "S.parquet"), "--out-info", str(info)]) == 0  # fmt: skip
    assert cli.main(["gate", str(tmp_path / "S.parquet"), "--info", str(info), "--out-dir", str(out)]) == 0  # fmt: skip
    stats = pd.read_csv(out / "stats.tsv", sep="\t")
    assert stats["flag"].str.contains("qc_warn").all()
    record = json.loads((out / "sample.json").read_text())
    assert any("is nominal" in w for w in record["provenance"]["warnings"])


def test_no_real_reference_file_has_a_range_replaced(shared_data):
    files = sorted(shared_data.rglob("*.fcs"))
    assert len(files) >= 15
    for path in files:
        sample = read_fcs(path)
        declared = {
            i: declared_top(sample, i)
            for i in range(len(sample.pnn))
            if sample.pnn[i].lower() not in ("time", "hdr-t")
        }
        replaced = [sample.pnn[i] for i, r in channel_ranges(
            sample.events, declared, sample.pnn, str(path)).items() if r.replaced]  # fmt: skip
        assert not replaced, (path.name, replaced)


def test_a_few_stray_values_above_the_range_do_not_replace_it():
    raw = np.random.default_rng(1).uniform(0, 260_000, size=(100_000, 2)).astype(np.float32)
    raw[:5, 0] = 5e5  # 0.005%: a corrupt value or two, not a nominal range
    assert not any(r.replaced for r in channel_ranges(raw, {0: 262144.0, 1: 262144.0}, "ab", "f").values())  # fmt: skip


def test_values_beyond_any_instrument_are_refused_naming_the_channel():
    raw = np.random.default_rng(1).uniform(0, 260_000, size=(10_000, 2)).astype(np.float32)
    raw[:, 1] *= 1e6
    with pytest.raises(FcsError, match=r"f\.fcs: channel CD19-A: values reach .* cannot be placed"):
        channel_ranges(raw, {0: 262144.0, 1: 262144.0}, ["FSC-A", "CD19-A"], "f.fcs")


def test_beyond_the_standard_range_the_top_is_the_power_of_two_above_the_data():
    raw = np.random.default_rng(1).uniform(0, 3e6, size=(10_000, 1)).astype(np.float32)
    (r,) = channel_ranges(raw, {0: 1024.0}, ["B1-A"], "f.fcs").values()
    assert r.replaced and r.top == 2.0**22 and r.declared == 1024.0


@pytest.mark.parametrize("top", [2.0**22, 2.0**24])
def test_a_declared_range_far_above_the_values_gates_like_the_true_one(tmp_path, repo, top):
    """An 18-bit tube declaring 22 or 24 bits (a BD Accuri C6's range; a file rewritten with a
    spectral instrument's): its logicle topped there put every population where negatives
    belong. Read on the range the values fill, it gates as the tube declaring its own range
    (saturated events, no longer at the declared top, are not margin: counts within 1%)."""
    _, true_counts = _gated(_tube(tmp_path, "true", 0.08), repo)
    pre, counts = _gated(_tube(tmp_path, "wide", 0.08, "all", top=top), repo)
    assert true_counts["b_cells"] > 500
    for population in ("lymphocytes", "t_cells", "b_cells", "b_naive", "b_transitional"):
        assert counts[population] == pytest.approx(true_counts[population], rel=0.01), population
    notes = [w for w in pre.info["provenance"]["warnings"] if "the range they fill" in w]
    assert len(notes) == 2 and all(f"declared range {top:,.0f}" in n for n in notes), notes
    assert {s["T"] for s in pre.info["provenance"]["scales"].values()} == {DEFAULT_TOP}


def test_only_a_range_far_above_every_value_of_the_group_is_replaced():
    rng = np.random.default_rng(1)
    accuri = [rng.uniform(0, 155_000, 10_000), rng.uniform(0, 31_000, 10_000)]
    assert filled_top(accuri, [2.0**24, 2.0**24]) == DEFAULT_TOP
    assert filled_top([*accuri, np.array([2.0**24 - 1])], [2.0**24] * 3) is None  # saturated
    assert filled_top([rng.uniform(0, 400_000, 10_000)], [2.0**22]) == 2.0**19
    assert filled_top([rng.uniform(0, 300_000, 10_000)], [2.0**20]) is None  # 1/4 of it
    assert filled_top([rng.uniform(0, 1_000, 10_000)], [DEFAULT_TOP]) is None  # the standard
    # scatter, a fraction of its range, is read on the range it fills whatever was declared
    low_gain = [rng.uniform(0, 13_000, 10_000), rng.uniform(0, 9_000, 10_000)]
    assert filled_top(low_gain, [DEFAULT_TOP] * 2, floor=None) == 2.0**14
    assert filled_top([*low_gain, np.array([40_000.0])], [DEFAULT_TOP] * 3, floor=None) is None


def test_a_real_accuri_files_stains_are_read_on_the_range_they_fill(shared_data, repo, tmp_path):
    """BD Accuri C6 Plus (../shared/data/flowio): `$PnR` 16,777,216 on every channel, its
    stains reaching 31,000-155,000 and its side scatter the top. Named as stains by a panel,
    the four fluorescence areas go on the 18-bit range; the scatter keeps its declared one."""
    path = shared_data / "flowio" / "fcs_files" / "B01 KC-A-W---91-US.fcs"
    names = {"CD3": "FL1-A", "CD19": "FL2-A", "CD20": "FL3-A", "CD27": "FL4-A"}
    text = (repo / "config" / "panel.yaml").read_text()
    for marker, channel in names.items():
        text = text.replace(f"\n{marker}: [", f"\n{marker}: [{channel}, ", 1)
    (tmp_path / "panel.yaml").write_text(text)
    own = panel.load_panel(tmp_path / "panel.yaml")
    cfg = load_config(repo / "config" / "config.yaml")
    prov = preprocess(str(path), own, cfg, required=()).info["provenance"]
    assert {prov["scales"][m]["T"] for m in names} == {DEFAULT_TOP}, prov["scales"]
    assert prov["scales"]["FSC-A"]["T"] == 2.0**24
    said = [w for w in prov["warnings"] if "the range they fill" in w]
    assert len(said) == 1 and said[0].startswith("stain values lie below 1/8"), said
