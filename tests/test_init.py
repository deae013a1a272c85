"""`cytopipe init`: a project from a folder of real and generated FCS files (one unreadable, one
whose panel lacks CD19), checked by `cytopipe check` once the clinic's columns are filled in, and
a second run that keeps what was filled in."""

from __future__ import annotations

import shutil

import pandas as pd

from cytopipe import cli
from cytopipe.synth.cohort import synth_cohort


def _folder(tmp_path, shared_data):
    archive = tmp_path / "archive"
    synth_cohort(archive / "2024 run", n_patients=1, seed=5, events_per_sample=3_000,
                 instrument="B", timepoints=(-7, 14))  # fmt: skip
    shutil.copy(shared_data / "real" / "flowcap1_gvhd" / "gvhd_03.fcs", archive / "GvHD tube.FCS")
    good = next((archive / "2024 run").glob("*.fcs"))
    (archive / "broken.fcs").write_bytes(good.read_bytes()[:5000])  # cut short in transfer
    (archive / "notes.txt").write_text("not an FCS file")
    return archive


def test_init_writes_sheet_panel_and_report_then_check_passes(
    tmp_path, shared_data, monkeypatch, capsys
):
    archive = _folder(tmp_path, shared_data)
    project = tmp_path / "project"
    assert cli.main(["init", str(archive), "--out", str(project)]) == 0
    out = capsys.readouterr().out
    assert "4 files, 2 panel(s), 3 new sample(s), 1 unreadable" in out
    sheet = pd.read_csv(
        project / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    assert sorted(sheet["sample_id"]) == ["GvHD_tube", "P01_BL", "P01_D014"]
    assert all((project / p).exists() for p in sheet["path"])  # relative to the project
    assert (sheet["patient_id"] == "").all() and (sheet["day"] == "").all()  # for the clinic
    synth = sheet[sheet["sample_id"].str.startswith("P01")]
    assert (synth["instrument"] == "Navios EX").all() and (synth["collection_date"] != "").all()
    report = (project / "init_report.md").read_text()
    assert (
        "B-cell analysis possible" in report
        and "| CAR | FL8 INT (CD19 CAR-detect APC-A700) |" in report
    )
    assert "no B-cell analysis: no channel for CD19" in report  # the GvHD T-cell panel
    assert "FL2-H (CD8b)" in report  # a channel nobody claimed, to map if wanted
    assert "broken.fcs:" in report and "notes.txt" not in report

    # the clinic fills in its columns; `cytopipe check` in the project then finds nothing wrong
    sheet = sheet[sheet["sample_id"] != "GvHD_tube"].copy()
    sheet["patient_id"] = "P1"
    sheet["day"] = ["-7", "14"]
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    monkeypatch.chdir(project)
    assert cli.main(["check", "--config", "config/config.yaml", "--files"]) == 0, (
        capsys.readouterr().err
    )
    assert "2 sample sheet rows, 2 FCS files opened: all fine" in capsys.readouterr().out

    # a second run keeps every filled-in value and adds only the new file
    shutil.copy(shared_data / "real" / "flowcap1_gvhd" / "gvhd_04.fcs", archive / "gvhd_04.fcs")
    assert cli.main(["init", str(archive), "--out", str(project)]) == 0
    again = pd.read_csv(
        project / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    kept = again.set_index("sample_id")
    assert kept.loc["P01_D014", "day"] == "14" and kept.loc["P01_BL", "patient_id"] == "P1"
    assert sorted(again["sample_id"]) == ["GvHD_tube", "P01_BL", "P01_D014", "gvhd_04"]


def test_progress_shows_on_a_terminal_only():
    """Long commands (init, learn-gates) report files read on a terminal; logs stay quiet."""
    import io

    from cytopipe.commands.progress import progress, progress_done

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term, log = Terminal(), io.StringIO()
    for stream in (term, log):
        progress("cytopipe init: 3/10 files read", stream)
        progress_done(stream)
    assert term.getvalue() == "\rcytopipe init: 3/10 files read\n"
    assert log.getvalue() == ""


def test_the_workflow_runs_on_a_project_made_by_init(tmp_path, shared_data, repo):
    """The README's walkthrough for one's own data: init on a folder (generated files, a real
    file of a panel without CD19, a broken file), fill in patient and day, run the workflow:
    every readable sample is processed, the one without CD19 fails alone and is listed."""
    import subprocess
    import sys

    archive = tmp_path / "archive"
    generated = synth_cohort(archive / "run", n_patients=2, seed=8, events_per_sample=4_000,
                             instrument="mixed", timepoints=(-7, 14, 90))  # fmt: skip
    shutil.copy(shared_data / "real" / "flowcap1_gvhd" / "gvhd_03.fcs", archive / "gvhd_03.fcs")
    (archive / "broken.fcs").write_bytes(b"FCS3.1    not really")
    project = tmp_path / "project"
    assert subprocess.run([sys.executable, "-m", "cytopipe.cli", "init", str(archive), "--out",
                           str(project)], capture_output=True, text=True).returncode == 0  # fmt: skip
    sheet = pd.read_csv(
        project / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    truth = generated.set_index("sample_id")
    known = sheet["sample_id"].isin(truth.index)
    sheet.loc[known, "patient_id"] = sheet.loc[known, "sample_id"].map(truth["patient_id"])
    sheet.loc[known, "day"] = sheet.loc[known, "sample_id"].map(truth["day"]).astype(str)
    sheet.loc[~known, ["patient_id", "day"]] = ["G01", "-1"]
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory",
         str(project), "--cores", "2", "--keep-going", "--quiet"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = pd.read_csv(project / "results" / "tables" / "sample_status.tsv", sep="\t")
    assert len(status) == len(sheet) == 7
    failed = status[status["status"] == "failed"]
    assert list(failed["sample_id"]) == ["gvhd_03"] and "CD19" in failed["error"].iloc[0]
    assert (project / "results" / "report" / "index.html").exists()
    assert (project / "results" / "samples" / "P01_D014" / "gates.xml").exists()
