"""The unedited template on a real file we did not write: the Lyoplate B-cell panel (BD
LSRFortessa, human PBMC) against openCyto's automated gates, a peer tool (not truth).

The B-cell titration removes every CD19+ event but k of openCyto's B cells. Targets are the
issue's; the measured figures and the ones still missed (plasmablasts; the
FlowCAP-I GvHD T-cell panel) are printed by benchmarks/real_gating.py and listed in the README.
"""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "real_gating", REPO / "benchmarks" / "real_gating.py"
)
real_gating = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real_gating)

TARGETS = {
    "b_cells": 0.95,
    "b_naive": 0.90,
    "b_unswitched_memory": 0.70,
    "b_switched_memory": 0.70,
    "b_double_negative": 0.70,
    "b_transitional": 0.70,
}


@pytest.fixture(scope="module")
def lyoplate(shared_data):
    return {row["population"]: row for row in real_gating.lyoplate(shared_data / "real")}


@pytest.mark.parametrize("population", sorted(TARGETS))
def test_lyoplate_population_agrees_with_opencyto(lyoplate, population):
    row = lyoplate[population]
    assert row["f1"] >= TARGETS[population], row


@pytest.fixture(scope="module")
def titration(shared_data):
    return {row["ref"]: row["ours"] for row in real_gating.titration(shared_data / "real")}


@pytest.mark.parametrize("kept", real_gating.TITRATION)
def test_b_cells_removed_from_a_real_file_are_not_invented(titration, kept):
    """Aplasia on a real background: 0, 5 or 20 B cells left must stay (near) that few; 100
    and 500 are counted within 20%."""
    assert real_gating.titration_target(kept, titration[kept]), (kept, titration[kept])
