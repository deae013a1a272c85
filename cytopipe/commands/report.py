"""The `report` and `report-figures` commands: the HTML report from the results folder."""

from __future__ import annotations

import argparse
from typing import Any

from cytopipe.config import settings_from_args
from cytopipe.report.pages import write_report, write_report_figures
from cytopipe.results import report_folder


def _run(args: argparse.Namespace) -> int:
    options = settings_from_args(args).get("report")
    index = write_report(
        args.results, args.out or report_folder(args.results), args.config, options
    )
    print(index)
    return 0


def _run_figures(args: argparse.Namespace) -> int:
    for path in write_report_figures(args.results, args.out).values():
        print(path)
    return 0


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="interactive HTML report: cohort, patient and sample pages",
        description=(
            "Reads RESULTS/tables/* and RESULTS/samples/*/{sample.json,stats.tsv,plots.json} "
            "and writes a static report that opens offline; prints the path of index.html."
        ),
    )
    parser.add_argument(
        "--results", required=True, help="results folder (default layout: results/)"
    )
    parser.add_argument("--out", default=None, help="report folder (default: RESULTS/report)")
    parser.add_argument(
        "--config",
        default=None,
        help="config/config.yaml: its `report:` options, and the definitions to state when "
        "tables/cohort_summary.json is missing",
    )
    parser.add_argument(
        "--settings",
        default=None,
        help='JSON overriding --config, e.g. {"report": {"show_file_names": true}} (the '
        "workflow passes its own `report:` section)",
    )
    parser.set_defaults(func=_run)
    figures = subparsers.add_parser(
        "report-figures",
        help="swimmer and Kaplan-Meier plots as standalone HTML (for snakemake --report)",
    )
    figures.add_argument("--results", required=True, help="results folder")
    figures.add_argument("--out", required=True, help="folder for swimmer.html and km.html")
    figures.set_defaults(func=_run_figures)
