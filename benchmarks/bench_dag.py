"""Benchmark: how the workflow scales to archives of thousands of FCS files.

1. Planning: `snakemake -n` (parse the sheet, build the DAG, plan every job) for sample sheets of
   2,000 and 10,000 rows. The rows point at ten tiny generated FCS files (one patient's
   timepoints repeated under new patient ids): planning never reads events, so file size does
   not matter here. Reported as wall time and CPU time (user + system) of the Snakemake process:
   on a shared machine CPU time is the steadier figure.
2. Processing: the real workflow on a generated cohort (default 2 patients x 10 timepoints x
   50,000 events, `--cores 2`): per-sample steps first (`--until gate`), then the cohort steps;
   samples per minute = samples / wall minutes.

    .venv/bin/python benchmarks/bench_dag.py                    # both parts
    .venv/bin/python benchmarks/bench_dag.py --sizes 2000 --no-run

Prints a table; the last line is `dry_run_s_2000=... dry_run_s_10000=... samples_per_min=...`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cytopipe.synth.cohort import synth_cohort  # noqa: E402


def workdir(root: Path, sheet: pd.DataFrame) -> Path:
    """A workflow directory (copied config) with `sheet` as its sample sheet."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "config", root / "config")
    sheet.to_csv(root / "config" / "samples.tsv", sep="\t", index=False)
    return root


def repeated_sheet(template: pd.DataFrame, n_samples: int) -> pd.DataFrame:
    """n_samples rows: the template patient's files again and again under new patient ids."""
    suffix = template["sample_id"].str.split("_", n=1).str[1]
    blocks = [
        template.assign(patient_id=f"Q{p:05d}", sample_id=f"Q{p:05d}_" + suffix)
        for p in range(-(-n_samples // len(template)))
    ]
    return pd.concat(blocks, ignore_index=True).iloc[:n_samples]


def timed_snakemake(work: Path, *args: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of one Snakemake run (its own process and the jobs it starts)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), *args],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed in {work}:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stdout + proc.stderr


def bench_planning(scratch: Path, sizes: list[int]) -> list[dict]:
    template = synth_cohort(scratch / "tiny", n_patients=1, seed=3, events_per_sample=300)
    rows = []
    for n in sizes:
        work = workdir(scratch / f"plan{n}", repeated_sheet(template, n))
        wall, cpu, _ = timed_snakemake(work, "-n", "--quiet", "rules")
        rows.append({"what": f"dry run, {n} samples", "wall_s": wall, "cpu_s": cpu})
        print(f"  dry run {n:>6} samples: {wall:6.1f} s wall, {cpu:6.1f} s CPU", flush=True)
    return rows


def bench_processing(scratch: Path, patients: int, events: int, cores: int) -> list[dict]:
    sheet = synth_cohort(scratch / "cohort", n_patients=patients, seed=7, events_per_sample=events)
    work = workdir(scratch / "run", sheet)
    n = len(sheet)
    per_sample = timed_snakemake(work, "--cores", str(cores), "--until", "gate", "--quiet")
    cohort = timed_snakemake(work, "--cores", str(cores), "--quiet")
    total = per_sample[0] + cohort[0]
    rows = [
        {"what": f"per-sample steps, {n} x {events} events", "wall_s": per_sample[0], "cpu_s": per_sample[1]},
        {"what": "cohort steps (collect, longitudinal, report)", "wall_s": cohort[0], "cpu_s": cohort[1]},
        {"what": f"whole workflow, {n} samples", "wall_s": total, "cpu_s": per_sample[1] + cohort[1]},
    ]  # fmt: skip
    rows[0]["samples_per_min"] = n / (per_sample[0] / 60)
    rows[2]["samples_per_min"] = n / (total / 60)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'measurement':<52} {'wall s':>8} {'CPU s':>8} {'samples/min':>12}")
    for r in rows:
        rate = f"{r['samples_per_min']:.1f}" if "samples_per_min" in r else ""
        print(f"{r['what']:<52} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {rate:>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--patients", type=int, default=2, help="10 samples per patient")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--no-run", action="store_true", help="only the planning part")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="cytopipe-bench-dag-"))
    try:
        print(f"scratch: {scratch}", flush=True)
        rows = bench_planning(scratch, args.sizes)
        if not args.no_run:
            rows += bench_processing(scratch, args.patients, args.events, args.cores)
        print_table(rows)
        summary = [
            f"dry_run_s_{n}={r['wall_s']:.1f}" for n, r in zip(args.sizes, rows, strict=False)
        ]
        rates = [r["samples_per_min"] for r in rows if "samples_per_min" in r]
        if rates:
            summary.append(f"samples_per_min={rates[-1]:.1f}")
        print(" ".join(summary))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
