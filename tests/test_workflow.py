"""End to end: Snakemake runs the whole workflow on a tiny generated cohort with known truth,
including one corrupt file that must fail alone and be listed in the report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cytopipe.synth.cohort import synth_cohort

N_EVENTS = 6000
# Every patient's course (aplasia at day 7-28, reconstitution or not by day 365) at six of the ten
# standard timepoints, two patients: the cohort's jobs per step were most of CI's time.
TIMEPOINTS = (-7, 7, 28, 90, 180, 365)


REAL_ID = "R01_BL"  # a real archive file beside the generated ones: 100715.fcs, read-only


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory, repo, shared_data):
    work = tmp_path_factory.mktemp("workflow")
    real = shared_data / "flowio" / "fcs_files" / "100715.fcs"
    real_hash = sha256(real)
    shutil.copytree(repo / "config", work / "config")
    sheet = synth_cohort(
        work / "cohort", n_patients=2, seed=11, events_per_sample=N_EVENTS, timepoints=TIMEPOINTS
    )
    sheet["path"] = [str(Path(p).relative_to(work)) for p in sheet["path"]]
    # plant a broken archive file: a real FCS file cut in half
    good = work / sheet["path"].iloc[3]
    broken = work / "cohort" / "broken.fcs"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    infusion = pd.Timestamp(sheet["infusion_date"].iloc[3])
    bad_row = sheet.iloc[[3]].assign(
        sample_id="P01_BROKEN", path="cohort/broken.fcs", day=29,
        collection_date=(infusion + pd.Timedelta(days=29)).date().isoformat(),
    )  # fmt: skip
    real_row = sheet.iloc[[0]].assign(
        sample_id=REAL_ID, patient_id="R01", path=str(real), day=-3, true_b_cells=None,
        true_lymphocytes=None, instrument="FACSAria", collection_date=(infusion - pd.Timedelta(days=3)).date().isoformat(),
    )  # fmt: skip
    sheet = pd.concat([sheet, bad_row, real_row], ignore_index=True)
    sheet.to_csv(work / "config" / "samples.tsv", sep="\t", index=False)
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
    assert cfg["samples"] == "config/samples.tsv"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
         "--cores", "2", "--keep-going", "--quiet"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sha256(real) == real_hash  # archived input is never modified
    return work, sheet


def test_every_sample_processed_and_only_the_broken_one_failed(run):
    work, sheet = run
    status = pd.read_csv(work / "results/tables/sample_status.tsv", sep="\t")
    assert set(status["sample_id"]) == set(sheet["sample_id"])
    failed = status[status["status"] == "failed"]
    assert list(failed["sample_id"]) == ["P01_BROKEN"]
    assert "broken.fcs" in failed["error"].iloc[0]
    failures = pd.read_csv(work / "results/tables/failures.tsv", sep="\t")
    assert list(failures["sample_id"]) == ["P01_BROKEN"]


def test_b_cell_counts_follow_the_truth(run):
    work, sheet = run
    stats = pd.read_csv(work / "results/tables/sample_stats.tsv", sep="\t")
    b = stats[stats["population"] == "b_cells"].set_index("sample_id")["count"]
    lym = stats[stats["population"] == "lymphocytes"].set_index("sample_id")["count"]
    truth = sheet.set_index("sample_id").drop(["P01_BROKEN", REAL_ID])
    b, lym = b.drop(REAL_ID), lym.drop(REAL_ID)
    assert set(b.index) == set(truth.index)
    # fixed template gates on clean generated data: B cells within 10% (or 10 events) of truth
    err = (b - truth["true_b_cells"]).abs()
    assert (err <= (0.10 * truth["true_b_cells"]).clip(lower=10)).all(), err.sort_values().tail()
    # the per-population accuracy targets are in test_autogate_accuracy; here: no gross error,
    # lymphopenic early samples included (monocytes outnumber lymphocytes at day 7).
    rel = (lym - truth["true_lymphocytes"]).abs() / truth["true_lymphocytes"]
    assert (rel <= 0.05).all(), rel.sort_values().tail()


def test_longitudinal_tables_hold_every_patient(run):
    work, sheet = run
    patients = pd.read_csv(work / "results/tables/patients.tsv", sep="\t")
    assert sorted(patients["patient_id"]) == sorted(sheet["patient_id"].unique())
    export = (work / "results/tables/cohort_export.csv").read_text()
    assert all(p in export for p in sheet["patient_id"].unique())


def test_report_pages_exist_and_list_the_failure(run):
    work, sheet = run
    report = work / "results/report"
    index = (report / "index.html").read_text()
    assert "P01_BROKEN" in index
    for pid in sheet["patient_id"].unique():
        assert (report / "patients" / f"{pid}.html").exists()
        assert pid in index
    for sid in sheet["sample_id"]:
        assert (report / "samples" / f"{sid}.html").exists()
    assert (report / "assets" / "plotly.min.js").stat().st_size > 1_000_000


def test_sample_records_carry_provenance(run):
    work, sheet = run
    sid = sheet["sample_id"].iloc[0]
    rec = json.loads((work / "results/samples" / sid / "sample.json").read_text())
    assert rec["status"] == "ok"
    assert len(rec["provenance"]["sha256"]) == 64
    assert rec["provenance"]["spillover_source"] != "none"


def test_snakemake_report_embeds_the_cohort_plots(run, repo):
    work, _ = run
    out = work / "results" / "snakemake_report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
         "--report", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = out.read_text(errors="replace")
    assert "swimmer.html" in html and "km.html" in html


def test_real_lymphocyte_file_gets_b_cell_gates_in_the_report(run):
    """100715.fcs (BD FACSAria, no CD45): its B-cell gates drawn on the sample page. Neither CD3
    nor CD19 shows a second population in this file (tests/test_autogate.py), so no B cells
    are made up from the NK tail and the sample is listed as unlike the template."""
    work, _ = run
    stats = pd.read_csv(work / "results/samples" / REAL_ID / "stats.tsv", sep="\t")
    count = stats.set_index("population")["count"]
    assert count["b_cells"] / count["lymphocytes"] < 0.002
    status = pd.read_csv(work / "results/tables/sample_status.tsv", sep="\t").set_index("sample_id")
    unlike = status.loc[REAL_ID, "unlike_template"]
    assert "cd3: 1 population" in unlike and "t_cells" in unlike.split(": cd3")[0], unlike
    plots = json.loads((work / "results/samples" / REAL_ID / "plots.json").read_text())["plots"]
    b = next(p for p in plots if p["population"] == "b_cells")
    assert (
        (b["x"], b["y"]) == ("CD3", "CD19")
        and len(b["gate"]) >= 4
        and b["count"] == count["b_cells"]
    )
    page = (work / "results/report/samples" / f"{REAL_ID}.html").read_text()
    assert "b_cells" in page  # the archive's file name stays out of the HTML by default
    assert "100715" not in page and f"the file of sample {REAL_ID}" in page


def test_sample_pages_show_the_qc_timeline_and_stats_carry_qc(run):
    work, sheet = run
    sid = sheet["sample_id"].iloc[1]
    rec = json.loads((work / "results/samples" / sid / "sample.json").read_text())
    assert rec["qc"]["time_qc"] == "done" and rec["qc"]["verdict"] == "pass"
    assert len(rec["qc_timeline"]["start"]) == rec["qc"]["bins"] > 8
    page = (work / "results/report/samples" / f"{sid}.html").read_text()
    assert "acquisition time" in page and "red bands" in page


def test_the_workflow_report_renders_in_a_browser(run, repo):
    """The browser test of test_report_browser.py that loads every page, on this workflow
    run's real report (the others check the fixture cohort's pages: once is enough)."""
    work, _ = run
    env = {**os.environ, "CYTOPIPE_REPORT_DIR": str(work / "results" / "report")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         str(repo / "tests" / "test_report_browser.py"), "-k", "every_page_renders"],
        capture_output=True, text=True, timeout=600, env=env, cwd=repo,
    )  # fmt: skip
    if "chromium not installed" in proc.stdout:
        pytest.skip("chromium not installed: apt-get install chromium")
    assert proc.returncode == 0, proc.stdout[-4000:]
    # every browser test ran on this report (none skipped, none failed)
    assert " passed" in proc.stdout and not any(w in proc.stdout for w in ("skipped", "failed"))


def test_the_batch_flowjo_workspace_holds_every_gated_sample_with_our_counts(run):
    """results/flowjo/<batch>.wsp (no batch column: all.wsp): every gated sample, the failed one
    left out and named in the log; FlowKit reads a sample's gates back with our counts."""
    import warnings

    import flowkit as fk
    import numpy as np

    work, sheet = run
    wsp = work / "results" / "flowjo" / "all.wsp"
    log = (work / "results" / "logs" / "flowjo_workspace" / "all.log").read_text()
    assert "broken.fcs: no gates" in log
    text = wsp.read_text()
    assert text.count("<SampleNode ") == len(sheet) - 1
    sid = sheet["sample_id"].iloc[0]
    fcs = work / sheet["path"].iloc[0]
    ours = pd.read_parquet(work / "results" / "samples" / sid / "gates.parquet")
    keep = pd.read_parquet(work / "results" / "preprocessed" / f"{sid}.parquet")["qc_pass"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(wsp), fcs_samples=str(fcs))
        ws.analyze_samples(sample_id=fcs.name)
        results = ws.get_gating_results(fcs.name)
    for pop in ("lymphocytes", "t_cells", "b_cells", "b_naive"):
        path = results.report[results.report["gate_name"] == pop]["gate_path"].iloc[0]
        theirs = np.asarray(results.get_gate_membership(pop, gate_path=path))
        assert np.array_equal(theirs[keep.to_numpy()], ours[pop].to_numpy()[keep.to_numpy()]), pop


def test_the_catalog_test_configuration_runs(repo, tmp_path):
    """The workflow-catalog convention: `.test/` holds a small configuration and data that run
    end to end (`snakemake --directory .test`); results go to a temporary folder here."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"),
         "--directory", str(repo / ".test"), "--cores", "2", "--quiet",
         "--config", f"results={results}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = pd.read_csv(results / "tables" / "sample_status.tsv", sep="\t")
    sheet = pd.read_csv(repo / ".test" / "config" / "samples.tsv", sep="\t")
    assert sorted(status["sample_id"]) == sorted(sheet["sample_id"])
    assert (status["status"] == "ok").all(), status.to_string()
    assert (results / "report" / "index.html").exists()
