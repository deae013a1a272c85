"""The workflow on a real SLURM cluster: a single-node cluster started for this test
(workflow/scripts/slurm_cluster.sh), the shipped profile (workflow/profiles/slurm) with
`--executor slurm`, and results identical to a local run of the same cohort.

Run with `make test-slurm` (marker `slurm`). Skipped, with the reason, where SLURM cannot start
(not root, no apt-get, the daemons fail); CYTOPIPE_REQUIRE_SLURM=1 turns that skip into a failure
for machines where the cluster must work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cytopipe.synth.cohort import synth_cohort

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "workflow" / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
PROFILE_SETTINGS = yaml.safe_load((PROFILE / "config.yaml").read_text())
TIMEPOINTS = (-7, 28, 180)  # 2 patients x 3 timepoints = 6 samples
SAMPLES_PER_JOB = 3  # the test's group size: 2 group jobs that the 2-CPU node runs side by side
TABLES = ("sample_stats.tsv", "patients.tsv", "cohort_export.csv", "population_stats.tsv", "km.tsv")


def _cannot_run(reason: str) -> None:
    if os.environ.get("CYTOPIPE_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM is required here (CYTOPIPE_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM; yields the environment that reaches it. Stopped at the end."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _cannot_run("snakemake-executor-plugin-slurm is not installed")
    scratch = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(
        ["bash", str(SCRIPT), "start", str(scratch)], capture_output=True, text=True, timeout=600
    )
    if start.returncode != 0:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(scratch)], capture_output=True, timeout=120
        )
        _cannot_run(
            f"the test cluster did not start (exit {start.returncode}): {start.stderr[-1500:]}"
        )
    values = dict(line.split("=", 1) for line in start.stdout.splitlines() if "=" in line)
    env = {**os.environ, "PATH": values["PATH_PREFIX"] + os.pathsep + os.environ["PATH"]}
    env["SLURM_CONF"] = values["SLURM_CONF"]
    partitions = subprocess.run(
        ["sinfo", "--noheader", "--format=%P"], env=env, capture_output=True, text=True
    ).stdout.split()
    # The profile's partition placeholder names the cluster's NON-default partition, so a job
    # found there proves the setting reached sbatch.
    partition = next(p for p in partitions if not p.endswith("*"))
    env["CYTOPIPE_SLURM_PARTITION"] = partition
    try:
        yield {"env": env, "scratch": scratch, "partition": partition}
    finally:
        stop = subprocess.run(
            ["bash", str(SCRIPT), "stop", str(scratch)], capture_output=True, timeout=120
        )
        assert stop.returncode == 0, stop.stderr


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same generated cohort run twice at once: locally, and through SLURM with the profile."""
    cohort = tmp_path_factory.mktemp("cohort")
    sheet = synth_cohort(
        cohort / "fcs", n_patients=2, seed=21, events_per_sample=3000, timepoints=TIMEPOINTS
    )
    work = {}
    for name in ("local", "slurm"):
        work[name] = cohort / name
        shutil.copytree(REPO / "config", work[name] / "config")
        sheet.to_csv(work[name] / "config" / "samples.tsv", sep="\t", index=False)
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    local = subprocess.Popen(
        [*base, "--directory", str(work["local"]), "--cores", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    slurm = subprocess.run(
        [*base, "--directory", str(work["slurm"]), "--profile", str(PROFILE),
         "--group-components", f"sample={SAMPLES_PER_JOB}",
         # the status-check timer dominates a tiny workflow's wall time: check after 1 s
         "--slurm-init-seconds-before-status-checks", "1",
         "--slurm-keep-successful-logs"],
        env=cluster["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    local_out = local.communicate(timeout=900)[0]
    print(f"\nSLURM run of {len(sheet)} samples: {seconds:.0f} s")
    assert local.returncode == 0, local_out[-3000:]
    assert slurm.returncode == 0, (slurm.stdout + slurm.stderr)[-4000:]
    return {"work": work, "sheet": sheet, "log": slurm.stdout + slurm.stderr}


def submitted_jobs(log: str) -> dict[str, str]:
    """SLURM job id -> Snakemake job name (group_sample_..., rule_collect, ...), from the log."""
    pattern = r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/([^/]+)/\d+\.log\)"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, log)}


def declared_mem_mb(log: str, rule: str) -> int:
    """The mem_mb Snakemake evaluated for a rule's job, as printed in its job description."""
    block = log.split(f"rule {rule}:", 1)[1].split("submitted with SLURM", 1)[0]
    return int(re.search(r"\bmem_mb=(\d+)", block).group(1))


def test_results_equal_a_local_run(runs):
    local, slurm = (runs["work"][k] / "results" / "tables" for k in ("local", "slurm"))
    for name in TABLES:
        assert (slurm / name).read_bytes() == (local / name).read_bytes(), name
    assert (runs["work"]["slurm"] / "results" / "report" / "index.html").is_file()


def test_per_sample_steps_ran_as_group_jobs_through_slurm(runs, cluster):
    jobs = submitted_jobs(runs["log"])
    groups = [j for j, name in jobs.items() if name.startswith("group_sample")]
    assert len(groups) == len(runs["sheet"]) // SAMPLES_PER_JOB
    assert {"rule_collect", "rule_longitudinal", "rule_report"} <= set(jobs.values())
    # No per-sample step was submitted on its own: 6 samples x 2 steps became 2 jobs.
    assert not [n for n in jobs.values() if n in ("rule_preprocess", "rule_gate")]
    # The plugin's own SLURM log of each group job shows Snakemake running the steps inside it.
    logs = runs["work"]["slurm"] / ".snakemake" / "slurm_logs"
    for job_id in groups:
        text = (logs / jobs[job_id] / f"{job_id}.log").read_text()
        assert text.count("localrule preprocess:") == SAMPLES_PER_JOB
        assert text.count("localrule gate:") == SAMPLES_PER_JOB


def test_slurm_ran_the_jobs_with_the_profiles_resources(runs, cluster):
    """slurmctld itself (no accounting database needed) confirms every job completed in the
    non-default partition named through the profile's placeholder, with the memory the rules
    declare."""
    jobs = submitted_jobs(runs["log"])
    assert jobs
    for job_id, name in jobs.items():
        info = subprocess.run(
            ["scontrol", "show", "job", job_id], env=cluster["env"], capture_output=True, text=True
        ).stdout
        assert "JobState=COMPLETED" in info, info
        assert f"Partition={cluster['partition']}" in info, info
        if name.startswith("group_sample"):  # the profile's `cores`: one CPU per group job
            assert f"NumCPUs={PROFILE_SETTINGS['cores']} " in info, info
        if name == "rule_collect":
            assert f"MinMemoryNode={declared_mem_mb(runs['log'], 'collect')}M" in info, info


def test_every_sample_processed(runs):
    import pandas as pd

    status = pd.read_csv(runs["work"]["slurm"] / "results/tables/sample_status.tsv", sep="\t")
    assert sorted(status["sample_id"]) == sorted(runs["sheet"]["sample_id"])
    assert (status["status"] == "ok").all()
