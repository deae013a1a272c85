"""Errors a user can act on.

Every stage raises a subclass of CytopipeError for bad input; the CLI prints it as one line
(`cytopipe: error: FILE: what is wrong (what to do)`) and exits with status 2. Faults of the
machine, not of the input (out of memory, disk full, permission denied, I/O errors), exit with
status 75 and a line saying what to do: the job fails, so Snakemake retries it (with more
memory per attempt) or stops, instead of recording a permanent failed sample. Anything else
that escapes is a bug in cytopipe and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


class CytopipeError(Exception):
    """Bad input or configuration, described for the person who has to fix it."""

    def __init__(
        self, what: str, *, path: str | os.PathLike | None = None, hint: str | None = None
    ):
        self.what = what
        self.path = None if path is None else os.fspath(path)
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.what}" if self.path else self.what
        return f"{text} ({self.hint})" if self.hint else text


class FcsError(CytopipeError):
    """An FCS file that cannot be read or trusted."""


class ConfigError(CytopipeError):
    """A configuration, panel, template or sample sheet that is invalid."""


class GatingError(CytopipeError):
    """A gating strategy that cannot be applied to a sample."""


EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; the job may succeed when retried

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


# Out of memory or an operating-system error: the machine, not the sample, is at fault.
ENVIRONMENT_FAULTS = (MemoryError, OSError)


def environment_message(exc: BaseException) -> str:
    """One line for an environment fault: what happened, to which file, and what to do."""
    if isinstance(exc, MemoryError):
        return (
            "out of memory (rerun with more memory; under Snakemake with `--retries`, each "
            "attempt asks for more)"
        )
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _DISK_FULL:
        hint = "free disk space or raise the quota, then rerun; finished samples are kept"
    elif exc.errno in _DENIED:
        hint = "give the workflow's user access to this path, then rerun"
    else:
        hint = "a system error, not a problem of the FCS file; check the storage, then rerun"
    return f"{what}{where} ({hint})"
