"""Errors a user can act on.

Every stage raises a subclass of CytopipeError for bad input; the CLI prints it as one line
(`cytopipe: error: FILE: what is wrong (what to do)`) and exits with status 2. Anything else
that escapes is a bug in cytopipe and keeps its traceback.
"""

from __future__ import annotations

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
