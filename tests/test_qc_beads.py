"""Counting beads set apart before gating (cytopipe.preprocess.qc_beads): found where a
single-platform tube has them, never invented where a file has none, and the B cells' share of
the lymphocytes, which decides aplasia, as without beads."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, benchmark
from test_qc import acquisition, clock

from cytopipe.config import load_config
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.qc import run_qc
from cytopipe.preprocess.qc_beads import find_beads
from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

real_gating = benchmark("real_gating")


def _cells(rng, n=20_000):
    """CD45, CD3, CD19 of T cells, B cells and CD45-dim granulocytes (0-1 analysis scale)."""
    kind = rng.choice(3, n, p=[0.5, 0.1, 0.4])
    cd45 = np.where(kind == 2, 0.45, 0.72) + rng.normal(0, 0.05, n)
    cd3 = np.where(kind == 0, 0.70, 0.15) + rng.normal(0, 0.06, n)
    cd19 = np.where(kind == 1, 0.68, 0.18) + rng.normal(0, 0.06, n)
    return {"CD45": cd45, "CD3": cd3, "CD19": cd19}


def _with(signals, rng, n, level, sd=0.005):
    return {m: np.concatenate([v, level + rng.normal(0, sd, n)]) for m, v in signals.items()}


def test_beads_bright_in_every_channel_are_found_and_no_cell():
    rng = np.random.default_rng(0)
    cells = _cells(rng)
    signals = _with(cells, rng, 1_000, 0.85)
    found = find_beads(signals, np.ones(21_000, dtype=bool))
    assert found.mask[20_000:].all() and not found.mask[:20_000].any()
    assert found.levels and "1000 counting bead event(s)" in found.note


def test_beads_of_two_intensities_are_both_found():
    """AccuCheck-style: two bead populations, one dimmer than the other."""
    rng = np.random.default_rng(1)
    signals = _with(_with(_cells(rng), rng, 800, 0.90), rng, 600, 0.78)
    found = find_beads(signals, np.ones(21_400, dtype=bool))
    assert found.mask[20_000:].all() and not found.mask[:20_000].any()
    assert len(found.levels) == 2


def test_no_beads_are_invented():
    """Without beads, and with a cell population bright in every channel (T-B doublets, CD45+
    CD3+ CD19+) that is as spread as cells are: nothing is a bead."""
    rng = np.random.default_rng(2)
    cells = _with(_cells(rng), rng, 1_000, 0.75, sd=0.05)
    assert not find_beads(cells, np.ones(21_000, dtype=bool)).mask.any()


def test_two_channels_are_too_few_to_tell_beads_from_double_positive_cells():
    rng = np.random.default_rng(3)
    two = {m: v for m, v in _with(_cells(rng), rng, 1_000, 0.85).items() if m != "CD3"}
    assert not find_beads(two, np.ones(21_000, dtype=bool)).mask.any()


def test_beads_are_set_apart_without_changing_the_verdict():
    """20% of the events are beads: removed as `counting_beads`, the QC verdict still pass
    (the acquisition had no fault) and the removal counts still add up."""
    rng = np.random.default_rng(4)
    signals = _with(_cells(rng), rng, 5_000, 0.85)
    result = run_qc(None, signals, cfg=load_config(None)["qc"])
    assert result.removed["counting_beads"] == 5_000 and result.verdict == "pass"
    assert sum(result.removed.values()) == result.events_in - result.events_kept
    off = run_qc(None, signals, cfg={**load_config(None)["qc"], "counting_beads": False})
    assert "counting_beads" not in off.removed and off.events_kept == 25_000


@pytest.fixture(scope="module")
def tube(shared_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("beads") / "beads.fcs"
    return real_gating.write_with_beads(shared_data / "real", path)


def test_beads_of_a_single_platform_tube_are_counted(shared_data, tube):
    """The real Lyoplate file with 5% counting beads and no viability dye: every bead set
    apart and no cell taken for one (QC removes the same cells as from the file without
    beads); the count is the bead count of the sample."""
    path, _, is_bead = tube
    panel, cfg = load_panel(REPO / "config" / "panel.yaml"), load_config(None)
    pre = preprocess(str(path), panel, cfg)
    original = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    assert pre.info["qc"]["removed"]["counting_beads"] == is_bead.sum()
    assert not pre.qc_pass[is_bead].any()
    assert pre.qc_pass[~is_bead].sum() == preprocess(str(original), panel, cfg).qc_pass.sum()


def test_beads_at_the_top_of_a_detector_are_counted_not_taken_for_margin_events(
    shared_data, tmp_path
):
    """Beads at the top of CD20's detector (a voltage set for dim cells): before, QC removed
    its 4,296 beads as saturated margin events (no bead count, a margin note naming CD20 with
    4,434 events); now every bead is counted, and QC removes the same cells with the same
    notes as the file without beads."""
    path, _, is_bead = real_gating.write_with_beads(
        shared_data / "real", tmp_path / "beads.fcs", saturating=("CD20",)
    )
    panel, cfg = load_panel(REPO / "config" / "panel.yaml"), load_config(None)
    qc = preprocess(str(path), panel, cfg)
    original = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    without = preprocess(str(original), panel, cfg)
    assert qc.info["qc"]["removed"] == {
        **without.info["qc"]["removed"],
        "counting_beads": is_bead.sum(),
    }
    assert not qc.qc_pass[is_bead].any()
    assert qc.qc_pass[~is_bead].sum() == without.qc_pass.sum()
    assert qc.info["qc"]["notes"][:-1] == without.info["qc"]["notes"]


@pytest.fixture(scope="module")
def gated_tube(tube):
    path, ref, _ = tube
    rows = real_gating._lyoplate_rows(real_gating.BEADS, real_gating.gated(path), ref)
    return {row["population"]: row for row in rows}


@pytest.mark.parametrize("population", ["lymphocytes", "t_cells"])
def test_beads_do_not_join_the_lymphocytes(gated_tube, population):
    """Before beads were set apart, 4,300 of this tube's beads became lymphocytes and T cells
    (CD3-bright): F1 against openCyto 0.930 and 0.920; now 0.974 and 0.979 (the file without
    beads: 0.975, 0.987)."""
    assert gated_tube[population]["f1"] >= 0.95, gated_tube[population]


def test_the_b_cells_share_of_the_lymphocytes_is_as_without_beads(shared_data, gated_tube):
    """The share that decides aplasia: 22.2% on the file without beads; 20.7% when the beads
    joined the lymphocytes, 22.2% now."""
    original = {row["population"]: row for row in real_gating.lyoplate(shared_data / "real")}

    def share(rows):
        return rows["b_cells"]["ours"] / rows["lymphocytes"]["ours"]

    assert share(gated_tube) == pytest.approx(share(original), rel=0.01)


@pytest.mark.parametrize("name", ["lyoplate", *real_gating.GVHD_FILES, "100715"])
def test_real_files_without_beads_have_none(shared_data, name):
    real = shared_data / "real"
    path, required = {
        "lyoplate": (real / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs", None),
        "100715": (shared_data / "flowio" / "fcs_files" / "100715.fcs", SCATTER_ONLY),
    }.get(name, (real / "flowcap1_gvhd" / f"{name}.fcs", SCATTER_ONLY))
    kwargs = {"required": required} if required else {}
    pre = preprocess(
        str(path), load_panel(REPO / "config" / "panel.yaml"), load_config(None), **kwargs
    )
    assert "counting_beads" not in pre.info["qc"]["removed"]


def test_beads_in_a_flagged_stretch_of_the_acquisition_go_with_its_cells():
    """The bead count divides the cell count of single-platform counts: where QC removes a
    stretch of the acquisition (a clog), it removes that stretch's beads too, so the ratio
    of what is left holds."""
    t, sig = acquisition(continuous=True, seed=5)
    rng = np.random.default_rng(5)
    is_bead = rng.random(t.size) < 0.05
    for m in sig:
        sig[m][is_bead] = 0.9 + rng.normal(0, 0.005, is_bead.sum())
    start = float(t[int(0.4 * t.size)]) + 0.003
    clog = (t >= start) & (t < start + 0.25)
    t2 = t.copy()
    t2[clog] = start + (t2[clog] - start) * 20.0
    t2[t >= start + 0.25] += 4.75
    res = run_qc(clock(t2), sig, cfg=load_config(None)["qc"])
    removed = ~res.keep
    assert removed[clog].mean() >= 0.95 and res.removed["flow_rate"] >= 0.95 * clog.sum()
    outside = is_bead & ~clog
    assert abs(res.removed["counting_beads"] - outside.sum()) <= 0.01 * outside.sum()
    assert sum(res.removed.values()) == res.events_in - res.events_kept
