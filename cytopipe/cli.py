"""The `cytopipe` command: one subcommand per stage, called by the Snakemake rules and by users.

Each module of `cytopipe.commands` defines `add_cli(subparsers)`, which adds its subcommands
and sets `func` to a function taking the parsed arguments and returning an exit status; the
stage packages below never import a command. Errors the user can act on (CytopipeError) become one line on stderr and status 2,
faults of the machine (memory, disk, permissions) one line and status 75; `--debug` shows the
traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from types import ModuleType

from cytopipe import __version__
from cytopipe.errors import ENVIRONMENT_FAULTS, EX_TEMPFAIL, CytopipeError, environment_message

# Subcommand -> the module of cytopipe.commands that defines it, in the order `--help` lists them.
# A command imports only its own module: every Snakemake job starts a `cytopipe` process, and
# importing every stage (SciPy's statistics, clustering, FlowKit) cost about a second each time.
# tests/test_cli.py checks this table against what the modules register.
COMMAND_MODULES = {
    "synth-cohort": "synth", "init": "init", "fcs-info": "ingest", "ingest": "ingest",
    "preprocess": "sample", "gate": "sample", "collect": "sample", "apply-gates": "gates",
    "autogate": "autogate", "export-fcs": "export", "export-anndata": "export",
    "export-flowjo": "export", "learn-gates": "learn", "apply-model": "learn",
    "model-map": "learn", "expert-map": "learn", "cluster-train": "cluster",
    "cluster-map": "cluster", "longitudinal": "longitudinal", "pool": "pool", "report": "report",
    "report-figures": "report", "config-docs": "settings", "config-check": "settings",
    "check": "check",
}  # fmt: skip


def command_modules(command: str | None = None) -> list[ModuleType]:
    """The module defining `command`, or every command module (for --help) when it is None or
    unknown (argparse then names the valid choices)."""
    names = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMAND_MODULES.values()
    return [importlib.import_module(f"cytopipe.commands.{n}") for n in dict.fromkeys(names)]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cytopipe",
        description="Flow cytometry pipeline for B-cell depletion and reconstitution after CD19 CAR-T.",
    )
    parser.add_argument("--version", action="version", version=f"cytopipe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for commands in command_modules(command):
        commands.add_cli(sub)
    return parser


def _command_word(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_word(argv))
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
