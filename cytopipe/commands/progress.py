"""Progress of long commands (files read, files scanned) on a terminal only: a log file and a
Snakemake job stay quiet, so their logs hold what matters."""

from __future__ import annotations

import sys
from typing import TextIO


def progress(text: str, stream: TextIO | None = None) -> None:
    """Overwrite the terminal's current line with `text` (nothing when not a terminal)."""
    stream = stream or sys.stderr
    if stream.isatty():
        print(f"\r{text}", end="", file=stream, flush=True)


def progress_done(stream: TextIO | None = None) -> None:
    """End the progress line (nothing when not a terminal)."""
    stream = stream or sys.stderr
    if stream.isatty():
        print(file=stream, flush=True)
