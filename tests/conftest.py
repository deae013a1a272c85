"""Shared test fixtures: where the public reference data lives, and tiny generated cohorts."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
from threadpoolctl import threadpool_limits

# One OpenMP/BLAS thread per test process. `make test` runs one pytest-xdist worker per core,
# and two workers' scikit-learn OpenMP threads fighting over 2 cores made each 3.5x slower
# (10 GvHD fuzz files: 7.5 s per worker with one thread each, 26 s with the default). The
# variables reach libraries loaded later and the workflow's subprocesses; numpy's BLAS is
# already loaded (by a pytest plugin), so threadpoolctl limits it in place.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
threadpool_limits(1)

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
