"""Shared test fixtures: where the public reference data lives, and tiny generated cohorts."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CYTOPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))


def benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ as a module: tests assert what the benchmark measures."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public FCS files and reference results (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}; set CYTOPIPE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
