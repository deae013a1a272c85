"""The `config-docs` and `config-check` commands: the settings files' documentation, generated
from their schemas, and a check of one file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cytopipe.clinical.definitions import longitudinal_settings
from cytopipe.cluster.settings import load_settings
from cytopipe.config import KINDS, config_docs, load_file, thaw
from cytopipe.errors import ConfigError
from cytopipe.gating.template import load_template
from cytopipe.preprocess.qc import qc_settings


def _run_docs(args: argparse.Namespace) -> int:
    text = config_docs()
    if args.out:
        Path(args.out).write_text(text)
        print(args.out)
    else:
        sys.stdout.write(text)
    return 0


def _run_check(args: argparse.Namespace) -> int:
    """The schema, then the checks the stages make when they read the file."""
    settings = load_file(args.file, args.kind)
    if args.kind == "config":
        try:
            qc_settings(settings["qc"])
        except ConfigError as exc:
            raise ConfigError(exc.what, path=args.file, hint=exc.hint) from None
        longitudinal_settings(settings, args.file)
    elif args.kind == "gating":
        load_template(args.file)
    else:
        load_settings(args.file)
    if args.show:
        print(json.dumps(thaw(settings), indent=2))
    else:
        print(f"{args.file}: valid {KINDS[args.kind][1]}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    docs = subparsers.add_parser(
        "config-docs",
        help="document every key of config.yaml, gating.yaml and clustering.yaml (Markdown)",
        description="Write the tables of config/README.md from the schemas shipped with "
        "cytopipe: every key, what it allows, its default and what it does.",
    )
    docs.add_argument("--out", default=None, help="write here (e.g. config/README.md), not stdout")
    docs.set_defaults(func=_run_docs)
    check = subparsers.add_parser(
        "config-check",
        help="check a settings file against its schema",
        description="Validate config.yaml, gating.yaml or clustering.yaml like the pipeline "
        "does (exit status 2 with the key, the value and what is allowed when one is bad).",
    )
    check.add_argument("file", help="the settings file")
    check.add_argument(
        "--kind", choices=list(KINDS), default="config", help="which file it is (default config)"
    )
    check.add_argument(
        "--show", action="store_true", help="print the settings with every default filled in"
    )
    check.set_defaults(func=_run_check)
