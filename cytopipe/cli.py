"""The `cytopipe` command: one subcommand per stage, called by the Snakemake rules and by users.

Each module of `cytopipe.commands` defines `add_cli(subparsers)`, which adds its subcommands
and sets `func` to a function taking the parsed arguments and returning an exit status; the
stage packages below never import a command. Errors the user can act on (CytopipeError) become one line on stderr and status 2,
faults of the machine (memory, disk, permissions) one line and status 75; `--debug` shows the
traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from cytopipe import __version__
from cytopipe.commands import (
    autogate,
    check,
    cluster,
    export,
    gates,
    ingest,
    init,
    learn,
    longitudinal,
    pool,
    report,
    sample,
    settings,
    synth,
)
from cytopipe.errors import ENVIRONMENT_FAULTS, EX_TEMPFAIL, CytopipeError, environment_message

# Command modules, in the order `--help` lists their subcommands.
COMMANDS = (
    synth, init, ingest, sample, gates, autogate, export, learn, cluster, longitudinal, pool,
    report, settings, check,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cytopipe",
        description="Flow cytometry pipeline for B-cell depletion and reconstitution after CD19 CAR-T.",
    )
    parser.add_argument("--version", action="version", version=f"cytopipe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for commands in COMMANDS:
        commands.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CytopipeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"cytopipe: error: {exc}", file=sys.stderr)
        return 2
    except ENVIRONMENT_FAULTS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"cytopipe: error: {environment_message(exc)}", file=sys.stderr)
        return EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
