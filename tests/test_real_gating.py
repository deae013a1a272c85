"""The unedited template on a real file we did not write: the Lyoplate B-cell panel (BD
LSRFortessa, human PBMC) against openCyto's automated gates, a peer tool (not truth).

Targets are the issue's; the measured figures and the ones still missed (plasmablasts; the
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
