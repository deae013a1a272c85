"""The `longitudinal` command: cohort tables of B-cell states, aplasia and reconstitution."""

from __future__ import annotations

import argparse
from typing import Any

from cytopipe.clinical.definitions import format_number, longitudinal_settings
from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.clinical.tables import read_tsv, write_outputs
from cytopipe.config import add_settings_arguments, settings_from_args


def _run(args: argparse.Namespace) -> int:
    from cytopipe.clinical.samplesheet import load_sample_sheet

    whole = settings_from_args(args)
    cfg = longitudinal_settings(whole, args.config)
    sheet = load_sample_sheet(
        args.samples,
        base_dir=args.base_dir,
        check_files=args.check_files,
        require_baseline=not args.allow_missing_baseline,
    )
    stats = read_tsv(args.stats, "sample statistics")
    status = read_tsv(args.status, "sample status table") if args.status else None
    result = run_longitudinal(stats, sheet, cfg, status, _template_sha256(whole))
    write_outputs(result, args.out)
    summary = result.summary
    median = summary["median_days_to_reconstitution"]
    print(
        f"longitudinal: {summary['n_patients']} patients, {summary['n_reconstituted']} reconstituted, "
        f"{summary['n_censored']} censored, median days to reconstitution "
        f"{'not reached' if median is None else format_number(median)}, "
        f"{len(summary['failed_samples'])} failed samples; tables in {args.out}"
    )
    return 0


def _template_sha256(cfg) -> str:
    """The gating template the workflow configured, by content: centres pooling their exports
    see whether they gated alike ("" when the file cannot be read)."""
    import hashlib

    from cytopipe.config import project_file

    try:
        return hashlib.sha256(project_file(cfg["gating"]).read_bytes()).hexdigest()
    except OSError:
        return ""


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "longitudinal",
        help="B-cell states, aplasia/reconstitution episodes, Kaplan-Meier and cohort export",
        description=(
            "Reads the combined per-sample statistics and status, classifies every timepoint "
            "(baseline/aplasia/reconstituted/not_depleted) and writes population_stats.tsv, "
            "sample_states.tsv, patients.tsv, km.tsv, cohort_summary.json and cohort_export.csv."
        ),
    )
    parser.add_argument("--stats", required=True, help="tables/sample_stats.tsv")
    parser.add_argument("--status", help="tables/sample_status.tsv")
    parser.add_argument("--samples", required=True, help="the sample sheet (config/samples.tsv)")
    add_settings_arguments(parser)  # --config FILE and --settings JSON (its `longitudinal` key)
    parser.add_argument("--out", required=True, help="output folder (tables/)")
    parser.add_argument(
        "--base-dir", default=None, help="folder that relative FCS paths start from (default: cwd)"
    )
    parser.add_argument(
        "--check-files",
        action="store_true",
        help="also check that every FCS file in the sheet exists (off: the files were read earlier)",
    )
    parser.add_argument(
        "--allow-missing-baseline",
        action="store_true",
        help="accept patients without a pre-infusion sample (flagged instead of an error)",
    )
    parser.set_defaults(func=_run)
