"""The `synth-cohort` command: a synthetic cohort of FCS files with per-event truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from cytopipe.synth.cohort import synth_cohort
from cytopipe.synth.demo import demo_cohort


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth-cohort",
        help="generate a synthetic CAR-T cohort (FCS files with per-event truth + samples.tsv)",
        description="Write synthetic FCS 3.1 files of a CD19 CAR-T cohort, the true population "
        "of every event (NAME.truth.parquet) and the sample sheet samples.tsv.",
    )
    p.add_argument("--patients", type=int, default=5, help="number of patients (default 5)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--events", type=int, default=50_000, help="events per file (default 50000)")
    p.add_argument("--instrument", choices=["A", "B", "mixed"], default="A", help="cytometer")
    p.add_argument(
        "--demo", action="store_true", help="the demo preset (5 patients, seed 1, one on B)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cli_synth_cohort)


def _cli_synth_cohort(args: argparse.Namespace) -> int:
    if args.demo:
        sheet = demo_cohort(args.out, events_per_sample=args.events)
    else:
        sheet = synth_cohort(args.out, args.patients, args.seed, args.events, args.instrument)
    print(
        f"wrote {len(sheet)} FCS files to {args.out}; sample sheet: {Path(args.out) / 'samples.tsv'}"
    )
    return 0
