"""Spectral cytometers unmix each event's spectrum into the stains, which replaces
compensation: their files carry no spillover matrix, and that is not a missing one. Before
(2026-12-03) every such file was warned about as 'gated uncompensated' and listed among the
cohort page's file checks."""

from __future__ import annotations

import pytest
from conftest import benchmark

real_gating = benchmark("real_gating")


@pytest.fixture(scope="module")
def unmixed(shared_data, tmp_path_factory):
    """The Lyoplate file's compensated events (what unmixing gives) without a matrix, written
    by a spectral instrument (`$CYT` Aurora: 22-bit values, 16 times the 18-bit file's, and
    ranges) or by a conventional one."""
    sample, ref, _, _, events = real_gating._compensated_source(shared_data / "real")
    events = events * 16.0
    tmp = tmp_path_factory.mktemp("spectral")
    paths = {
        cyt: real_gating.write_fcs(
            tmp / f"{cyt}.fcs", events, sample.pnn, sample.pns, {"$CYT": cyt}, 4194304
        )  # fmt: skip
        for cyt in ("Aurora", "LSRFortessa")
    }
    return paths, ref


def test_a_spectral_file_without_a_matrix_is_not_called_uncompensated(unmixed):
    paths, _ = unmixed
    spectral = real_gating.preprocessed(paths["Aurora"]).info["provenance"]
    conventional = real_gating.preprocessed(paths["LSRFortessa"]).info["provenance"]
    assert spectral["uncompensated"] is None
    assert any(w.startswith("spectral cytometer ($CYT Aurora)") for w in spectral["warnings"])
    # the same values from a conventional cytometer are: no matrix there is a missing one
    assert conventional["uncompensated"].startswith("no spillover matrix")


def test_a_spectral_file_gates_as_the_file_compensated(unmixed):
    """Unmixed values are gated as they are: every target against openCyto is met."""
    paths, ref = unmixed
    rows = real_gating._lyoplate_rows("aurora", real_gating.gated(paths["Aurora"]), ref)
    assert all(r["f1"] >= r["target"] for r in rows if r["target"]), rows
