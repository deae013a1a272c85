"""`cytopipe check`: every problem of the settings, panel, gating template, clustering rules and
sample sheet at once, before a run, each with its file, row or key and what to do; with
--files, also whether each FCS file opens and has the markers the B-cell analysis needs.

A core facility preparing a run of hundreds of archived files wants the whole list, not the
first error of a run that failed after an hour.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from cytopipe.config import add_settings_arguments, defaults, project_file, settings_from_args
from cytopipe.errors import CytopipeError

Problem = tuple[str, str]  # (where, what is wrong and what to do)


def _try(where: str, step: Callable[[], object], problems: list[Problem]) -> object:
    try:
        return step()
    except CytopipeError as exc:
        listed = getattr(exc, "problems", None)
        if listed:
            problems += [(where, str(p)) for p in listed]
        else:
            problems.append((where, str(exc)))
    except OSError as exc:
        problems.append((where, f"cannot read: {exc.strerror or exc}"))
    return None


def _files(sheet, panel, problems: list[Problem]) -> int:
    """Each sheet row's file opens, and has CD19 or the markers the template needs."""
    from cytopipe.ingest.fcs import open_fcs
    from cytopipe.ingest.panel import match_channels

    checked = 0
    for row in sheet.itertuples():
        where = f"sample {row.sample_id} ({row.path})"
        sample = _try(where, lambda p=row.path: open_fcs(p, sha256=False), problems)
        if sample is None:
            continue
        checked += 1
        found = match_channels(panel, sample.pnn, sample.pns)
        for marker in ("CD19", "CD3"):
            if marker not in found:
                problems.append((
                    where,
                    f"no channel for {marker}: the B-cell analysis needs it; add the file's name "
                    f"for it to the panel (channels: {', '.join(sample.pns or sample.pnn)[:200]})",
                ))  # fmt: skip
    return checked


def run_check(args: argparse.Namespace) -> int:
    from cytopipe.clinical.definitions import longitudinal_settings
    from cytopipe.clinical.samplesheet import load_sample_sheet
    from cytopipe.cluster.settings import load_settings
    from cytopipe.gating.template import load_template
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.qc import qc_settings

    problems: list[Problem] = []
    where = args.config or "settings (defaults)"
    cfg = _try(where, lambda: settings_from_args(args), problems)
    if cfg is None:  # still check the other files, at their default places
        cfg = defaults("config")
    _try(where, lambda: qc_settings(cfg["qc"]), problems)
    _try(where, lambda: longitudinal_settings(cfg, args.config), problems)
    panel = _try(cfg["panel"], lambda: load_panel(cfg["panel"]), problems)
    _try(cfg["gating"], lambda: load_template(cfg["gating"]), problems)
    _try(cfg["clustering"], lambda: load_settings(project_file(cfg["clustering"])), problems)
    sheet_path = args.samples or cfg["samples"]
    sheet = _try(sheet_path, lambda: load_sample_sheet(sheet_path), problems)
    checked = 0
    if args.files and sheet is not None and panel is not None:
        checked = _files(sheet, panel, problems)
    return _report(problems, sheet=sheet, checked=checked)


def _report(problems: list[Problem], sheet=None, checked: int = 0) -> int:
    if problems:
        for where, what in problems:
            print(what if what.startswith(str(where)) else f"{where}: {what}", file=sys.stderr)
        print(f"cytopipe check: {len(problems)} problem(s); fix them and check again",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = "" if sheet is None else f", {len(sheet)} sample sheet rows"
    files = f", {checked} FCS files opened" if checked else ""
    print(f"cytopipe check: settings, panel, template, clustering rules{rows}{files}: all fine")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="check settings, panel, template, clustering rules and sample sheet before a run",
        description="Every problem at once, each with its file and row or key and what to do "
        "(exit status 2 when there is one). --files also opens every FCS file of the sheet "
        "(its header only) and checks it has the markers the B-cell analysis needs.",
    )
    p.add_argument("--samples", default=None, help="sample sheet (default: the config's)")
    p.add_argument("--files", action="store_true", help="also open every FCS file of the sheet")
    add_settings_arguments(p)
    p.set_defaults(func=run_check)
