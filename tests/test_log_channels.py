"""Fluorescence stored as log-amplifier channel numbers without $PnE (cytopipe.preprocess.
log_channels): recognised from the data on real files, gated on the scale as stored, said in
the provenance; linear 10-bit channels and $PnE-decoded channels are left to logicle."""

from __future__ import annotations

from array import array

import flowio
import numpy as np
import pytest

from cytopipe.config import defaults, merge, validated
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.log_channels import log_channel_markers, stored_as_log_channels
from cytopipe.preprocess.qc_margins import channel_top
from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

FLUORESCENCE = ("FL1", "FL2", "FL3", "FL4")


def _fluorescence_verdicts(path) -> dict[str, bool]:
    sample = read_fcs(path)
    return {
        name: stored_as_log_channels(sample.events[:, i], channel_top(sample.keywords, sample.pnr, i) + 1)
        for i, name in enumerate(sample.pnn)
        if name.startswith(FLUORESCENCE)
    }  # fmt: skip


@pytest.mark.parametrize("i", range(1, 10))
def test_flowcap_channel_numbers_are_recognised(shared_data, i):
    verdicts = _fluorescence_verdicts(shared_data / "real" / "flowcap1_gvhd" / f"gvhd_{i:02d}.fcs")
    assert verdicts and all(verdicts.values()), verdicts


@pytest.mark.parametrize(
    "name", ["flowkit/gate_ref/data1.fcs", "flowio/fcs_files/3FITC_4PE_004.fcs",
             "flowio/fcs_files/coulter.lmd"],
)  # fmt: skip
def test_linear_and_decoded_log_channels_are_not(shared_data, name):
    """FACSCalibur/FACScan/FC 500 files with $PnE 4,0 (decoded to 1-10^4 by read_fcs) and
    linear 1024-channel FL channels: none is taken for stored channel numbers."""
    verdicts = _fluorescence_verdicts(shared_data / name)
    assert verdicts and not any(verdicts.values()), verdicts


def _gvhd(shared_data, repo, settings):
    cfg = validated(merge(defaults("config"), settings), "config", source="test")
    path = shared_data / "real" / "flowcap1_gvhd" / "gvhd_07.fcs"
    return preprocess(
        str(path), load_panel(repo / "config" / "panel.yaml"), cfg, required=SCATTER_ONLY
    )


def test_default_settings_gate_them_as_stored_and_say_so(shared_data, repo):
    pre = _gvhd(shared_data, repo, {})
    scales = pre.info["provenance"]["transform"]
    assert all(scales[m] == "linear/1024" for m in ("CD3", "CD4", "CD8", "CD8b")), scales
    notes = [w for w in pre.info["provenance"]["warnings"] if "log-amplifier channel numbers" in w]
    assert len(notes) == 1 and all(f"{m} (FL" in notes[0] for m in ("CD3", "CD4", "CD8", "CD8b"))
    raw = read_fcs(shared_data / "real" / "flowcap1_gvhd" / "gvhd_07.fcs")
    np.testing.assert_allclose(pre.columns["CD3"], raw.events[:, 4] / 1024, rtol=1e-6)


def test_it_can_be_turned_off(shared_data, repo):
    pre = _gvhd(shared_data, repo, {"transform": {"log_channels": "off"}})
    assert pre.info["provenance"]["transform"]["CD3"].startswith("logicle")
    pre = _gvhd(shared_data, repo, {"transform": {"per_marker": {"CD3": {"scale": "arcsinh"}}}})
    assert pre.info["provenance"]["transform"]["CD3"].startswith("arcsinh")
    assert pre.info["provenance"]["transform"]["CD4"] == "linear/1024"


def test_a_channel_below_the_bar_joins_one_of_the_same_range(tmp_path, shared_data, repo):
    """CD3 0.45 decades lower (its median 3.7% of the range, under MIN_MEDIAN_SHARE) beside
    three channels that clearly hold channel numbers: read as they are, and said so."""
    sample = read_fcs(shared_data / "real" / "flowcap1_gvhd" / "gvhd_07.fcs")
    events = np.array(sample.events, dtype=float)
    cd3 = sample.pns.index("CD3")
    events[:, cd3] = np.clip(events[:, cd3] - 0.45 * 256, 0, None)
    assert not stored_as_log_channels(events[:, cd3], 1024)
    path = tmp_path / "lower_cd3.fcs"
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, array("f", events.astype("<f4").tobytes()), sample.pnn, sample.pns,
                          metadata_dict={f"p{i}r": "1024" for i in range(1, len(sample.pnn) + 1)})  # fmt: skip
    cfg = validated(defaults("config"), "config", source="test")
    pre = preprocess(
        str(path), load_panel(repo / "config" / "panel.yaml"), cfg, required=SCATTER_ONLY
    )
    assert pre.info["provenance"]["transform"]["CD3"] == "linear/1024"
    notes = [w for w in pre.info["provenance"]["warnings"] if "like FL" in w]
    assert len(notes) == 1 and notes[0].startswith("CD3 (FL3-H): "), notes


def test_a_channel_named_linear_does_not_join():
    """Beckman writes 'FL3 Lin' beside 'FL3 Log': the linear one, its dim cells near zero,
    stays linear whatever the log one's range (2026-12-02: the same range joined it)."""
    rng = np.random.default_rng(0)
    log = rng.normal(300, 60, 5000).clip(0, 1023)
    lin = rng.exponential(8, 5000).clip(0, 1023)
    found = log_channel_markers(
        {"FL3 Log": (log, 1024), "FL3 Lin": (lin, 1024), "FL4": (lin, 1024)}
    )
    assert found == {"FL3 Log": None, "FL4": "FL3 Log"}, found


def test_a_matrix_over_channel_numbers_is_not_applied():
    """A linear matrix on a log or display scale mixes logarithms: named and not applied."""
    from cytopipe.preprocess.log_channels import matrix_not_applied

    note = matrix_not_applied("$SPILLOVER keyword", ["FL1-H", "FL2-H"], {"FL1-H", "FL2-H"})
    assert note.startswith(
        "the spillover matrix ($SPILLOVER keyword) was not applied: FL1-H, FL2-H"
    )
    assert matrix_not_applied("$SPILLOVER keyword", ["B515-A"], {"FL1-H"}) is None


def test_display_ranges_need_every_stain_within_them_and_no_negatives():
    """Display values under the acquisition's range: every stain within 0-4096 and one of them
    then holding channel numbers. An instrument's own values (negatives, or a stain far above
    4096) keep the declared range."""
    from cytopipe.preprocess.log_channels import display_ranges

    rng = np.random.default_rng(1)
    shown = rng.normal(1500, 400, 5000).clip(0, 4095)
    dim = rng.normal(300, 80, 5000).clip(0, 1023)
    assert display_ranges({"A": (shown, 262144), "B": (dim, 262144)}) == {"A": 4096, "B": 1024}
    assert display_ranges({"A": (shown - 2000, 262144), "B": (dim, 262144)}) == {}
    assert display_ranges({"A": (shown * 10, 262144), "B": (dim, 262144)}) == {}
    assert display_ranges({"A": (shown, 262144)}) == {}
    assert display_ranges({"A": (rng.exponential(20, 5000), 262144), "B": (dim / 10, 262144)}) == {}
