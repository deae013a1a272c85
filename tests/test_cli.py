"""The command line as users meet it: subcommands listed, real files ingested, bad input
reported in one line with exit status 2 and no traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cytopipe import cli
from cytopipe import commands as command_package
from cytopipe.ingest.fcs import read_fcs


def cytopipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cytopipe.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_stage_commands():
    out = cytopipe("--help").stdout
    for cmd in (
        "synth-cohort",
        "ingest",
        "preprocess",
        "gate",
        "collect",
        "longitudinal",
        "report",
        "apply-gates",
        "fcs-info",
    ):
        assert cmd in out, cmd


def test_every_command_is_dispatched_to_the_module_that_defines_it():
    """cli.py imports only the named command's module; its table must name, for every
    subcommand any command module registers, that module (and nothing else)."""
    registered = {}
    for info in pkgutil.iter_modules(command_package.__path__):
        module = importlib.import_module(f"cytopipe.commands.{info.name}")
        if hasattr(module, "add_cli"):
            sub = argparse.ArgumentParser().add_subparsers()
            module.add_cli(sub)
            registered.update(dict.fromkeys(sub.choices, info.name))
    assert registered == cli.COMMAND_MODULES


def test_a_per_sample_command_starts_without_the_cohort_stages():
    """Each Snakemake job starts a `cytopipe` process: `preprocess` and `gate` must not pay for
    SciPy's statistics, clustering or the report at start-up."""
    code = (
        "import sys; from cytopipe import cli; cli.build_parser('gate'); cli.build_parser('preprocess');"
        "print(' '.join(m for m in ('scipy.stats', 'cytopipe.cluster.training', 'plotly',"
        " 'cytopipe.report.pages') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_ingest_real_file_with_panel(tmp_path, shared_data, repo):
    fcs = shared_data / "flowio/fcs_files/100715.fcs"
    proc = cytopipe(
        "ingest", str(fcs), "--out", str(tmp_path), "--panel", str(repo / "config/panel.yaml")
    )
    assert proc.returncode == 0, proc.stderr
    events = pd.read_parquet(tmp_path / "100715.events.parquet")
    np.testing.assert_array_equal(events.to_numpy(), read_fcs(fcs).events)
    channels = pd.read_csv(tmp_path / "100715.channels.tsv", sep="\t", keep_default_na=False)
    assert channels.set_index("marker").loc["CD19", "pnn"] == "G710-A"
    prov = json.loads((tmp_path / "100715.provenance.json").read_text())
    assert prov["n_events"] == 65016 and len(prov["sha256"]) == 64
    assert "cd age" not in {k.lower() for k in prov["keywords"]}  # identifying keyword dropped


@pytest.mark.parametrize(
    "content, words",
    [
        (b"not an fcs file at all" * 10, "not an FCS"),
        (b"", "empty"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, content, words):
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(content)
    proc = cytopipe("ingest", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"cytopipe: error: {bad}: ")
    assert words.lower() in lines[0].lower()
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"garbage" * 20)
    proc = cytopipe("--debug", "ingest", str(bad), "--out", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_missing_required_marker_names_what_the_file_has(tmp_path, shared_data, repo):
    """A FACSCalibur file without CD19: preprocess records a failure listing the file's
    channels, and still writes its outputs so the batch carries on."""
    info = tmp_path / "info.json"
    proc = cytopipe(
        "preprocess", str(shared_data / "flowkit/gate_ref/data1.fcs"), "--sample-id", "S1",
        "--panel", str(repo / "config/panel.yaml"), "--out-events", str(tmp_path / "ev.parquet"),
        "--out-info", str(info),
    )  # fmt: skip
    assert proc.returncode == 0
    rec = json.loads(info.read_text())
    assert rec["status"] == "failed" and rec["stage"] == "ingest"
    assert "CD19" in rec["error"] and "FL1-H" in rec["error"] and "panel.yaml" in rec["error"]
    assert pd.read_parquet(tmp_path / "ev.parquet").empty


def _run_in(folder, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cytopipe.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )


def test_installed_user_gates_a_file_from_any_folder(tmp_path, shared_data):
    """The template, panel and clustering rules ship with the package: `cytopipe autogate FILE`
    works in a folder without config/ (it failed with `config/gating.yaml: cannot read`)."""
    fcs = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    res = _run_in(tmp_path, "autogate", str(fcs), "--out", "m.parquet", "--stats", "s.tsv")
    assert res.returncode == 0, res.stderr
    stats = pd.read_csv(tmp_path / "s.tsv", sep="\t").set_index("population")
    assert stats.loc["b_cells", "count"] > 10_000
    b = stats.loc["b_cells"]  # the count, and the counts as its cuts move, as the stats say
    shown = f"b_cells {b['count']} ({b['count_cut_low']:.0f}-{b['count_cut_high']:.0f})"
    assert shown in res.stdout


def test_a_projects_own_config_overrides_the_shipped_one(tmp_path, shared_data, repo):
    fcs = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    (tmp_path / "config").mkdir()
    panel = (repo / "config" / "panel.yaml").read_text().replace("CD19: [CD19,", "CD19: [B710-A,")
    (tmp_path / "config" / "panel.yaml").write_text(panel.replace("\nCD20:", "\nCD20x:"))
    res = _run_in(tmp_path, "autogate", str(fcs), "--out", "m.parquet", "--stats", "s.tsv")
    assert res.returncode == 0, res.stderr
    assert "skipped b_cd20neg: no CD20 channel" in res.stderr  # the project's panel was read


def test_check_lists_every_problem_before_a_run(tmp_path, shared_data, repo):
    """`cytopipe check`: settings, sheet and files all at once, each with its place."""
    (tmp_path / "bad.yaml").write_text("qc:\n  fail_duplicate_pct: 500\n")
    real = shared_data / "flowio" / "fcs_files" / "100715.fcs"
    lyo = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    (tmp_path / "bad.tsv").write_text(
        f"sample_id\tpatient_id\tpath\tday\nA\tP\tmissing.fcs\t-3\nB\tP\t{real}\tabc\n"
    )
    res = _run_in(repo, "check", "--config", str(tmp_path / "bad.yaml"), "--samples",
                  str(tmp_path / "bad.tsv"))  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "qc.fail_duplicate_pct" in res.stderr
    assert "row 2, field 'path': file not found" in res.stderr
    assert "row 3, field 'day': 'abc' is not a number" in res.stderr
    assert "3 problem(s)" in res.stderr
    (tmp_path / "good.tsv").write_text(
        f"sample_id\tpatient_id\tpath\tday\nA\tP\t{real}\t-3\nB\tP\t{lyo}\t28\n"
    )
    res = _run_in(repo, "check", "--samples", str(tmp_path / "good.tsv"), "--files")
    assert res.returncode == 0, res.stderr
    assert "2 sample sheet rows, 2 FCS files opened: all fine" in res.stdout
