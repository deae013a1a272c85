"""A spillover matrix read the other way round is recognised from the data and turned back;
a matrix as given is kept (every real file with a matrix here, and randomized generated
files)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, benchmark

from cytopipe.clinical.sample_checks import compensation_notes
from cytopipe.config import defaults
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess import compensation as comp
from cytopipe.preprocess.matrix_orientation import oriented
from cytopipe.preprocess.sample import preprocess
from cytopipe.synth.variants import draw_variant, write_variant

# every file here whose matrix has spill (G11 and the Sony file: symmetric, nothing to tell;
# FlowKit's index-sorted plate: 384 events, see below)
REAL = ("real/lyoplate_bcell/lyoplate_bcell_C01.fcs", "flowio/fcs_files/100715.fcs",
        "flowio/fcs_files/B01 KC-A-W---91-US.fcs")  # fmt: skip


def transposed(spill: comp.Spillover) -> comp.Spillover:
    return comp.Spillover(spill.channels, spill.matrix.T.copy(), spill.source)


def assert_kept_and_turned_back(sample, spill: comp.Spillover, label: str) -> None:
    assert oriented(sample.events, sample.pnn, spill) == (spill, None), label
    turned, note = oriented(sample.events, sample.pnn, transposed(spill))
    np.testing.assert_array_equal(turned.matrix, spill.matrix, err_msg=label)
    assert "read transposed" in note and turned.warnings == [note], label


@pytest.mark.parametrize("rel", REAL)
def test_a_real_files_matrix_is_kept_and_its_transpose_turned_back(shared_data: Path, rel):
    sample = read_fcs(shared_data / rel)
    assert_kept_and_turned_back(sample, comp.spillover_from_keywords(sample), rel)


def test_a_labs_csv_matrix_is_kept_and_its_transpose_turned_back(shared_data: Path) -> None:
    """FlowKit's example: the file's own matrix is the identity, the lab's is a CSV."""
    sample = read_fcs(shared_data / "flowkit" / "test_comp_example.fcs")
    csv = shared_data / "flowkit" / "comp_complete_example.csv"
    spill = comp.read_spillover_csv(csv, sample.pnn, sample.pns)
    assert_kept_and_turned_back(sample, spill, csv.name)


def test_generated_files_matrices_are_kept_and_their_transposes_turned_back(tmp_path: Path):
    """Eight randomized generated files (every composition class, either instrument, random
    spill strength), seeds from a fixed string."""
    base = int.from_bytes(b"orientation", "big") % 1_000_000_007
    for seed in range(base, base + 8):
        path = write_variant(tmp_path / f"v{seed}.fcs", draw_variant(seed, (10_000, 30_000)))
        sample = read_fcs(path)
        assert_kept_and_turned_back(sample, comp.spillover_from_keywords(sample), str(seed))


def test_nothing_to_tell_keeps_the_matrix(shared_data: Path) -> None:
    """A symmetric matrix reads the same either way; a plate of 384 index-sorted events is no
    evidence (the lowest 0.2% of a channel is its lowest event), in either orientation."""
    rng = np.random.default_rng(0)
    events = rng.normal(0, 100, (5000, 2)) + rng.random((5000, 2)) * 1e4
    symmetric = comp.Spillover(["A", "B"], np.array([[1.0, 0.2], [0.2, 1.0]]), "test")
    assert oriented(events, ["A", "B"], symmetric) == (symmetric, None)
    plate = read_fcs(shared_data / "flowkit" / "index_sorted" / "index_sorted_example.fcs")
    spill = comp.spillover_from_keywords(plate)
    for matrix in (spill, transposed(spill)):
        assert oriented(plate.events, plate.pnn, matrix) == (matrix, None)


def test_a_turned_matrix_is_said_on_the_sample_and_the_cohort_page(shared_data: Path, tmp_path):
    """The Lyoplate file with its $SPILLOVER transposed: gated as acquired (tests/
    test_real_gating.py), and the lab told to mend its matrix, among the cohort page's file
    checks; the file as acquired has no such note."""
    rg = benchmark("real_gating")
    path = rg.write_misread(shared_data / "real", rg.TRANSPOSED, tmp_path / "turned.fcs")
    panel, cfg = load_panel(REPO / "config" / "panel.yaml"), defaults("config")
    turned = preprocess(str(path), panel, cfg).info["provenance"]
    acquired = preprocess(str(shared_data / REAL[0]), panel, cfg).info["provenance"]
    assert "read transposed" in turned["matrix_turned"] and acquired["matrix_turned"] is None
    assert turned["matrix_turned"] in turned["warnings"]
    listed = compensation_notes(
        {"turned": {"provenance": turned}, "as acquired": {"provenance": acquired}}
    )
    assert list(listed) == ["turned"] and "read transposed" in listed["turned"]


@pytest.mark.parametrize("rel", REAL[:2])
def test_small_acquisitions_are_told_apart_too(shared_data: Path, rel):
    """1,000-5,000 events drawn from the real files (an aplastic tube, a small archive file):
    kept as given and turned back as on the whole file (measured on 300 such draws of these
    and generated files: none wrong)."""
    sample = read_fcs(shared_data / rel)
    spill = comp.spillover_from_keywords(sample)
    rng = np.random.default_rng(0)
    for n in (1000, 2000, 5000):
        rows = np.sort(rng.choice(len(sample.events), n, replace=False))
        small = dataclasses.replace(sample, events=sample.events[rows])
        assert_kept_and_turned_back(small, spill, f"{rel}, {n} events")
