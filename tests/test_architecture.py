"""The layout keeps its design: stage packages a reader finds by folder, data flowing one way,
commands at the edge. The contracts live in pyproject.toml ([tool.importlinter])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

REPO = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "preprocess", "gating", "cluster", "clinical", "report", "synth", "commands")


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_import_cycle_inside_cytopipe():
    """Function-level imports count: grimp reads every import statement of a module."""
    graph = grimp.build_graph("cytopipe")
    edges = nx.DiGraph(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
    )
    assert [c for c in nx.strongly_connected_components(edges) if len(c) > 1] == []


def test_every_stage_is_a_package_and_no_module_is_left_flat():
    root = REPO / "cytopipe"
    for stage in STAGES:
        assert (root / stage / "__init__.py").is_file(), stage
    flat = sorted(p.name for p in root.glob("*.py"))
    assert flat == ["__init__.py", "atomic.py", "cli.py", "config.py", "errors.py", "results.py"], (
        flat
    )


def test_no_module_over_700_lines():
    """Modules a reader can hold in mind: one job each."""
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "cytopipe").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 700
    }
    assert long == {}
