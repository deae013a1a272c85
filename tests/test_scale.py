"""Archives at scale: the workflow plans thousands of samples quickly and in batches, reruns only
what a change touches, resumes a killed run without redoing finished samples, and never trusts a
half-written output.

The 2,000-sample sheet points at ten tiny generated FCS files (one patient's timepoints, repeated
under 200 patient ids): planning does not read events, so this is the real cost of the DAG.
Timings are printed, not asserted (benchmarks/bench_dag.py reports them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cytopipe.atomic import atomic_path, write_json
from cytopipe.synth.cohort import synth_cohort

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "workflow" / "profiles" / "slurm"
PER_SAMPLE = ("preprocess", "gate")
COHORT = ("collect", "longitudinal", "report")
SMALL_TIMEPOINTS = (-7, 28, 180)  # one patient, baseline included: the sheet demands one


# ---------------------------------------------------------------- helpers


def snakemake(work: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def make_workdir(work: Path, template: pd.DataFrame, n_samples: int) -> pd.DataFrame:
    """A workflow directory whose sheet repeats one patient's files under new patient ids."""
    shutil.copytree(REPO / "config", work / "config")
    per_patient = len(template)
    blocks = []
    for p in range(-(-n_samples // per_patient)):
        pid = f"Q{p:05d}"
        suffix = template["sample_id"].str.split("_", n=1).str[1]
        blocks.append(template.assign(patient_id=pid, sample_id=pid + "_" + suffix))
    sheet = pd.concat(blocks, ignore_index=True).iloc[:n_samples]
    sheet.to_csv(work / "config" / "samples.tsv", sep="\t", index=False)
    return sheet


def planned_jobs(dry_run_output: str) -> Counter:
    """(rule, sample) pairs a dry run would execute; sample is None for cohort rules."""
    jobs: Counter = Counter()
    rule = None
    for line in dry_run_output.splitlines():
        if m := re.match(r"^\s*(?:local)?rule (\w+):$", line):
            if rule is not None:
                jobs[(rule, None)] += 1
            rule = m.group(1)
        elif rule is not None and (m := re.match(r"^\s+wildcards: sample=(\S+)$", line)):
            jobs[(rule, m.group(1))] += 1
            rule = None
        elif rule is not None and re.match(r"^\s*(\[|Job stats:|rule |localrule )", line):
            jobs[(rule, None)] += 1
            rule = None
    if rule is not None:
        jobs[(rule, None)] += 1
    return jobs


def job_stats(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = dry_run_output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(?m)^(\w+)\s+(\d+)$", table)}


def rules_of(jobs: Counter) -> set[str]:
    return {rule for rule, _ in jobs}


def samples_of(jobs: Counter, rule: str) -> set[str]:
    return {sample for r, sample in jobs if r == rule}


def dry_run(work: Path, *args: str) -> Counter:
    proc = snakemake(work, "-n", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return planned_jobs(proc.stdout + proc.stderr)


def edit_config(work: Path, section: str, key: str, value) -> None:
    path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg[section][key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_patient(tmp_path_factory) -> pd.DataFrame:
    """Ten real FCS files of one patient (all standard timepoints), 300 events each."""
    out = tmp_path_factory.mktemp("fcs")
    return synth_cohort(out, n_patients=1, seed=3, events_per_sample=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small cohort whose first run was killed (SIGKILL, like a lost login node) and resumed.

    Returns the work dir, the sheet, the kill report and the finished outputs' mtimes.
    """
    fcs = tmp_path_factory.mktemp("small_fcs")
    template = synth_cohort(
        fcs, n_patients=1, seed=4, events_per_sample=2000, timepoints=SMALL_TIMEPOINTS
    )
    work = tmp_path_factory.mktemp("small_run")
    sheet = make_workdir(work, template, len(template))
    killed = kill_mid_run(work, sheet)
    unlock = snakemake(work, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    resumed_plan = dry_run(work, "--rerun-incomplete")
    done_before = {s: record_of(work, s).stat().st_mtime_ns for s in killed["finished"]}
    t0 = time.perf_counter()
    proc = snakemake(work, "--cores", "2", "--rerun-incomplete", "--quiet")
    print(f"\nresume after kill: {time.perf_counter() - t0:.1f} s for {len(sheet)} samples")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        "work": work,
        "sheet": sheet,
        "killed": killed,
        "resumed_plan": resumed_plan,
        "done_before": done_before,
    }


def kill_mid_run(work: Path, sheet: pd.DataFrame) -> dict:
    """Start the workflow with one core and SIGKILL it, and the job it runs, mid-run.

    It is killed once a sample is finished in Snakemake's eyes: its gate job wrote its record and
    a later job has started since (one core: jobs run one after another, and Snakemake records a
    job as done before it starts the next).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
         "--cores", "1", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not (finished := finished_samples(work, sheet)):
            assert proc.poll() is None, "the workflow ended before it could be interrupted"
            assert time.monotonic() < deadline, "no sample finished within 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the job it is running, mid-write
        proc.wait()
    have_record = {s for s in sheet["sample_id"] if record_of(work, s).exists()}
    return {
        "finished": sorted(finished),
        "unfinished": sorted(set(sheet["sample_id"]) - have_record),
        "unreadable": unreadable_outputs(work / "results"),
    }


def record_of(work: Path, sample: str) -> Path:
    return work / "results" / "samples" / sample / "sample.json"


def finished_samples(work: Path, sheet: pd.DataFrame) -> set[str]:
    """Samples whose record exists and after whose gate job another job has written its log."""
    logs = {p: p.stat().st_mtime_ns for p in (work / "results" / "logs").glob("*/*.log")}
    done = set()
    for sample in sheet["sample_id"]:
        try:
            written = record_of(work, sample).stat().st_mtime_ns
        except FileNotFoundError:
            continue
        own = work / "results" / "logs" / "gate" / f"{sample}.log"
        if any(t > written for p, t in logs.items() if p != own):
            done.add(sample)
    return done


def unreadable_outputs(results: Path) -> list[str]:
    """Declared per-sample outputs present on disk that do not parse completely."""
    readers = {".json": lambda p: json.loads(p.read_text()), ".parquet": pd.read_parquet,
               ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".xml": ET.parse}  # fmt: skip
    bad = []
    for path in [*results.glob("preprocessed/*"), *results.glob("samples/*/*")]:
        if path.name.startswith("."):  # a temporary file of atomic_path: no rule declares it
            continue
        try:
            readers[path.suffix](path)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
            bad.append(f"{path}: {exc}")
    return bad


# ---------------------------------------------------------------- planning at scale


def test_dry_run_of_2000_samples_plans_every_step_in_batches(tiny_patient, tmp_path):
    """2,000 samples: one preprocess and one gate per sample, one of each cohort step, and the
    per-sample steps batched into group jobs of the profile's size (what a cluster receives)."""
    group_size = yaml.safe_load((PROFILE / "config.yaml").read_text())["group-components"]["sample"]
    sheet = make_workdir(tmp_path, tiny_patient, 2000)
    t0 = time.perf_counter()
    proc = snakemake(tmp_path, "-n", "--group-components", f"sample={group_size}")
    seconds = time.perf_counter() - t0
    print(f"\ndry run, 2000 samples: {seconds:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    stats = job_stats(out)
    assert {r: stats[r] for r in PER_SAMPLE} == {"preprocess": 2000, "gate": 2000}
    assert all(stats[r] == 1 for r in COHORT)
    jobs = planned_jobs(out)
    assert samples_of(jobs, "preprocess") == set(sheet["sample_id"])
    assert out.count("Group job sample") == 2000 // group_size


def test_profile_loads_and_groups_samples(tiny_patient, tmp_path):
    """The SLURM profile itself parses and turns per-sample steps into group jobs (dry run: no
    cluster needed, only the executor plugin)."""
    pytest.importorskip(
        "snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed"
    )
    make_workdir(tmp_path, tiny_patient, 40)
    proc = snakemake(tmp_path, "-n", "--profile", str(PROFILE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    group_size = yaml.safe_load((PROFILE / "config.yaml").read_text())["group-components"]["sample"]
    assert out.count("Group job sample") == 40 // group_size
    assert job_stats(out)["preprocess"] == 40


# ---------------------------------------------------------------- interrupt, resume, rerun


def test_killed_run_resumes_without_redoing_finished_samples(finished_run):
    killed, plan = finished_run["killed"], finished_run["resumed_plan"]
    assert killed["finished"] and killed["unfinished"], killed
    for rule in PER_SAMPLE:
        assert not samples_of(plan, rule) & set(killed["finished"]), (rule, plan)
    assert samples_of(plan, "gate") >= set(killed["unfinished"])
    work = finished_run["work"]
    for sample, mtime in finished_run["done_before"].items():
        assert record_of(work, sample).stat().st_mtime_ns == mtime
    status = pd.read_csv(work / "results/tables/sample_status.tsv", sep="\t")
    assert sorted(status["sample_id"]) == sorted(finished_run["sheet"]["sample_id"])
    assert (status["status"] == "ok").all(), status


def test_finished_run_has_nothing_to_do(finished_run):
    assert not dry_run(finished_run["work"])


def test_longitudinal_settings_rerun_only_cohort_steps_after_longitudinal(finished_run, tmp_path):
    work = clone(finished_run["work"], tmp_path)
    edit_config(work, "longitudinal", "aplasia_pct_lymphocytes", 2.5)
    plan = dry_run(work)
    assert "longitudinal" in rules_of(plan) and "report" in rules_of(plan)
    assert not rules_of(plan) & {*PER_SAMPLE, "collect"}, plan


def test_gating_template_change_reruns_gate_and_downstream_not_preprocess(finished_run, tmp_path):
    work = clone(finished_run["work"], tmp_path)
    with open(work / "config" / "gating.yaml", "a") as fh:
        fh.write("\n# reviewed\n")
    plan = dry_run(work)
    assert samples_of(plan, "gate") == set(finished_run["sheet"]["sample_id"])
    assert {"collect", "longitudinal", "report"} <= rules_of(plan)
    assert "preprocess" not in rules_of(plan)


def test_preprocessing_settings_rerun_every_sample(finished_run, tmp_path):
    work = clone(finished_run["work"], tmp_path)
    edit_config(work, "qc", "remove_margin_events", False)
    plan = dry_run(work)
    assert samples_of(plan, "preprocess") == set(finished_run["sheet"]["sample_id"])


def test_new_archive_rows_process_only_the_new_samples(finished_run, tmp_path):
    """Adding files to the sheet reruns the cohort steps but not the samples already done."""
    work = clone(finished_run["work"], tmp_path)
    sheet_path = work / "config" / "samples.tsv"
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
    extra = sheet.iloc[[1]].assign(sample_id="Q00000_REPEAT")
    pd.concat([sheet, extra]).to_csv(sheet_path, sep="\t", index=False)
    plan = dry_run(work)
    assert samples_of(plan, "preprocess") == {"Q00000_REPEAT"}
    assert samples_of(plan, "gate") == {"Q00000_REPEAT"}
    assert {"collect", "longitudinal", "report"} <= rules_of(plan)


def outputs_snapshot(results: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in results.rglob("*") if p.is_file() and "logs" not in p.parts}  # fmt: skip


def test_archive_offline_stops_the_run_and_keeps_every_result(finished_run, tmp_path):
    """Regression: a missing file was dropped from the job's inputs, so Snakemake reran every
    sample and overwrote good results with "file not found" records, and exited 0."""
    work = clone(finished_run["work"], tmp_path)
    archive = Path(finished_run["sheet"]["path"].iloc[0]).parent
    before = outputs_snapshot(work / "results")
    offline = archive.with_name(archive.name + "_unmounted")
    archive.rename(offline)
    try:
        proc = snakemake(work, "--cores", "2", "--keep-going")
        after = outputs_snapshot(work / "results")
        unlock = snakemake(work, "--unlock")  # after a crash, with the archive still offline
    finally:
        offline.rename(archive)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    n = len(finished_run["sheet"])
    assert f"{n} FCS file(s) that earlier runs processed are unreachable" in message, message
    assert str(archive) in message and "no result was changed" in message
    assert after == before
    assert not dry_run(work)  # archive back: nothing to redo


@pytest.mark.parametrize(
    ("name", "reruns"),
    [("gating.yaml", "gate"), ("panel.yaml", "preprocess"), ("clustering.yaml", "cluster_map")],
)
def test_config_restored_with_old_mtime_still_reruns(finished_run, tmp_path, name, reruns):
    """Regression: changes were detected by modification time only, so a config file restored
    with `cp -p` or `rsync -t` (older than the outputs, different content) kept stale results."""
    work = clone(finished_run["work"], tmp_path)
    path = work / "config" / name
    stat = path.stat()
    with open(path, "a") as fh:
        fh.write("\n# restored from the lab's backup\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p leaves it
    plan = dry_run(work)
    assert samples_of(plan, reruns) == set(finished_run["sheet"]["sample_id"])


def clone(work: Path, dest: Path) -> Path:
    """A copy of a finished run (outputs, Snakemake's metadata and mtimes) to change freely."""
    target = dest / "run"
    shutil.copytree(work, target, symlinks=True)
    return target


# ---------------------------------------------------------------- atomic outputs


def test_killed_writer_leaves_the_previous_output_untouched(tmp_path):
    """SIGKILL in the middle of writing: the output keeps its old complete content and the
    partial data sits only in a hidden temporary file no rule declares."""
    target = tmp_path / "samples" / "S1" / "sample.json"
    write_json(target, {"sample_id": "S1", "status": "ok"})
    before = target.read_bytes()
    script = (
        "import os, signal, sys\n"
        "from cytopipe.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'w') as fh:\n"
        '        fh.write(\'{"sample_id": "S1", "sta\')\n'
        "        fh.flush()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    json.loads(target.read_text())
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    assert leftovers and all(
        n.startswith(".sample.json.") and n.endswith(".tmp") for n in leftovers
    )


def test_killed_writer_of_a_new_output_leaves_no_file_at_its_path(tmp_path):
    target = tmp_path / "stats.tsv"
    script = (
        "import os, signal, sys\n"
        "from cytopipe.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'w').write('sample_id\\tpopulation\\n')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()


def test_failed_block_removes_its_temporary_file(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_outputs_on_disk_right_after_the_kill_were_complete(finished_run):
    """SIGKILL hit snakemake and the job it ran: every output file present then parses."""
    assert finished_run["killed"]["unreadable"] == []


# ---------------------------------------------------------------- lint


def test_snakemake_lint_reports_nothing(tiny_patient, tmp_path):
    make_workdir(tmp_path, tiny_patient, 10)
    proc = snakemake(tmp_path, "--lint")
    titles = sorted(set(re.findall(r"(?m)^\s+\* (.+?):?$", proc.stdout + proc.stderr)))
    assert proc.returncode == 0 and not titles, titles
