"""`cytopipe init FOLDER --out PROJECT`: a project from a folder of FCS files, without writing
the sample sheet or the panel file by hand.

Scans the folder tree (FCS 2.0-3.2, LMD, any name), reads each file's header (not its events),
groups the files by panel, matches every channel against the panel file, and writes
PROJECT/config/{config.yaml, samples.tsv} (and copies of the shipped panel.yaml, gating.yaml and
clustering.yaml, the lab's own to edit; existing files are kept) and PROJECT/init_report.md: per panel,
which canonical markers sit on which channel, which are missing, whether the B-cell analysis
can run and why not, the channels nobody claimed (to map in panel.yaml), and the files that
cannot be read, each with the reason. A second run on the same folder keeps every row (and
every value filled in) of the existing samples.tsv and adds the new files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

SUFFIXES = (".fcs", ".lmd")
MINIMAL_CONFIG = """\
# cytopipe workflow configuration (written by cytopipe init): every key left out takes its
# default, described in config/README.md of the cytopipe repository.
samples: config/samples.tsv      # one row per FCS file: fill patient_id and day
panel: config/panel.yaml         # canonical markers and their aliases
gating: config/gating.yaml       # gating template
clustering: config/clustering.yaml
results: results
"""


def scan(folder: Path) -> list[Path]:
    """FCS/LMD files below `folder`, sorted (hidden folders skipped)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if f.lower().endswith(SUFFIXES)]
    return out


def read_header(path: Path, base: Path):
    from cytopipe.errors import CytopipeError
    from cytopipe.ingest.fcs import open_fcs
    from cytopipe.ingest.inventory import FileInfo
    from cytopipe.ingest.keywords import acquisition_date

    shown = os.path.relpath(path, base)
    try:
        sample = open_fcs(path, sha256=False)
    except CytopipeError as exc:
        return FileInfo(shown, error=exc.what if hasattr(exc, "what") else str(exc))
    except OSError as exc:
        return FileInfo(shown, error=f"cannot read: {exc.strerror or exc}")
    kw = sample.keywords
    return FileInfo(
        shown, list(sample.pnn), list(sample.pns), acquisition_date(kw),
        str(kw.get("cyt", "")).strip(),
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from cytopipe.atomic import atomic_path
    from cytopipe.commands.progress import progress, progress_done
    from cytopipe.config import PACKAGED
    from cytopipe.errors import CytopipeError
    from cytopipe.ingest.inventory import panel_groups, proposed_sheet
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.sample import REQUIRED

    folder = Path(args.folder).resolve()
    if not folder.is_dir():
        raise CytopipeError("not a folder", path=args.folder, hint="give the folder of FCS files")
    project = Path(args.out).resolve()
    config = project / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name in ("panel.yaml", "gating.yaml", "clustering.yaml"):  # the lab's own to edit
        if not (config / name).exists():
            (config / name).write_text((PACKAGED / name).read_text())
    panel_path = config / "panel.yaml"
    files = scan(folder)
    infos = []
    for n, path in enumerate(files, 1):
        infos.append(read_header(path, project))
        progress(f"cytopipe init: {n}/{len(files)} files read")
    progress_done()
    groups = panel_groups(infos, load_panel(panel_path), REQUIRED)
    sheet_path = config / "samples.tsv"
    previous = (
        pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
        if sheet_path.exists()
        else None
    )
    sheet = proposed_sheet(infos, groups, previous)
    with atomic_path(sheet_path) as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    config_path = config / "config.yaml"
    if not config_path.exists():  # every other key takes its default (config/README.md)
        config_path.write_text(MINIMAL_CONFIG)
    unreadable = [i for i in infos if i.error]
    report = _report(folder, groups, unreadable, len(sheet), sheet)
    (project / "init_report.md").write_text(report)
    added = len(sheet) - (0 if previous is None else len(previous))
    print(
        f"cytopipe init: {len(files)} files, {len(groups)} panel(s), {added} new sample(s), "
        f"{len(unreadable)} unreadable; see {project / 'init_report.md'}; fill patient_id and "
        f"day (or infusion_date) in {sheet_path}, then `cytopipe check --config "
        f"{config_path}`"
    )
    return 0


def _report(folder, groups, unreadable, n_rows, sheet) -> str:
    lines = [f"# cytopipe init: {folder}", "", f"{n_rows} samples in config/samples.tsv.", ""]
    for g in groups:
        lines += [f"## {g.name}: {len(g.files)} file(s), {g.why}", ""]
        lines += ["| marker | channel |", "|---|---|"]
        lines += [f"| {m} | {c} |" for m, c in g.markers.items()]
        if g.missing:
            lines += ["", f"Not in this panel: {', '.join(g.missing)}."]
        if g.unmatched:
            lines += ["", "Channels no marker claimed (add a name to config/panel.yaml to use "
                      f"one): {', '.join(g.unmatched)}."]  # fmt: skip
        lines += [
            "",
            "Files: " + ", ".join(g.files[:10]) + (" ..." if len(g.files) > 10 else ""),
            "",
        ]
    if unreadable:
        lines += ["## Files that cannot be read", ""]
        lines += [f"- {i.path}: {i.error}" for i in unreadable]
        lines += [""]
    empty = [c for c in ("patient_id", "day") if c in sheet and (sheet[c].astype(str) == "").any()]
    if empty:
        lines += ["## To fill in", "", f"config/samples.tsv: {', '.join(empty)} (day: days since "
                  "CAR-T infusion, or infusion_date beside collection_date)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init",
        help="make a project from a folder of FCS files: sample sheet, panel file, report",
        description=(
            "Scans FOLDER for FCS/LMD files, groups them by panel, matches their channels to "
            "the panel file and writes PROJECT/config/{config.yaml,panel.yaml,samples.tsv} and "
            "PROJECT/init_report.md. A second run keeps what was filled in and adds new files."
        ),
    )
    parser.add_argument("folder", help="folder (searched recursively) of FCS files")
    parser.add_argument("--out", default=".", help="project folder (default: here)")
    parser.set_defaults(func=_run)
