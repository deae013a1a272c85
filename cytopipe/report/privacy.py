"""What the published pages may say about a sample's file (config `report:`).

Archive files are often named after the patient and acquisition times are exact enough to
re-identify a visit; the report is published, the lab's tables are not. `Privacy.text` is
applied to every piece of text about a sample before a page shows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cytopipe.errors import ConfigError

# Archive files are often named after the patient ("Smith_John.fcs") and acquisition times are
# exact enough to re-identify a visit: the report is published, the lab's tables are not, so
# pages name the sample instead unless the config's `report:` section allows these.
REPORT_OPTIONS = {"show_file_names": False, "show_acquisition_times": False}

HIDDEN_DATE, HIDDEN_TIME = "(date hidden)", "(time hidden)"

FILE_KEYWORDS = frozenset({"fil"})

TIME_KEYWORDS = frozenset({"date", "btim", "etim", "begindatetime", "enddatetime", "last_modified"})

_DATE_RE = re.compile(  # ISO dates (and date-times), and $DATE's dd-mmm-yyyy
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{1,2}[-/ .](?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[-/ .]\d{2,4}\b",
    re.IGNORECASE,
)

_TIME_RE = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b")

_FCS_PATH_RE = r"[^\s'\"()<>,;]*\.(?:fcs|lmd)\b"  # any path or name of a list-mode file

_TOKEN = r"[^\s'\"()<>,;]*"  # what may precede a known file name in a path


@dataclass(frozen=True)
class Privacy:
    """What the HTML pages may say about a sample's file (config `report:` section)."""

    show_file_names: bool = False
    show_acquisition_times: bool = False

    @classmethod
    def from_config(cls, section: Mapping | None) -> Privacy:
        """The options of config `report:`; ConfigError naming a misspelt or non-boolean key,
        because a typo silently falling back to "show" or "hide" is a privacy bug either way."""
        if section is not None and not isinstance(section, Mapping):
            raise ConfigError(f"report must be a mapping of options, not {section!r}")
        options = dict(REPORT_OPTIONS)
        for key, value in (section or {}).items():
            if key not in REPORT_OPTIONS:
                raise ConfigError(
                    f"unknown setting report.{key}",
                    hint=f"use {', '.join(f'report.{k}' for k in REPORT_OPTIONS)}",
                )
            if not isinstance(value, bool):
                raise ConfigError(f"report.{key} must be true or false, not {value!r}")
            options[key] = value
        return cls(**options)

    def text(self, value: Any, sample_id: str, files: Iterable[str] = ()) -> Any:
        """`value` as a page may show it: the sample's file paths and names (`files`, and any
        other .fcs/.lmd path) become "the file of sample <id>", dates and times "(... hidden)".
        Non-text values pass unchanged."""
        if not isinstance(value, str) or not value:
            return value
        if not self.show_file_names:
            value = name_files(value, sample_id, files)
        if not self.show_acquisition_times:
            value = _TIME_RE.sub(HIDDEN_TIME, _DATE_RE.sub(HIDDEN_DATE, value))
        return value

    def keyword_shown(self, key: str) -> bool:
        """Whether an FCS keyword (already public per keyword_allowlist) may be on a page."""
        k = key.strip().lstrip("$").lower()
        if k in FILE_KEYWORDS:
            return self.show_file_names
        return self.show_acquisition_times or k not in TIME_KEYWORDS


def name_files(text: str, sample_id: str, files: Iterable[str] = ()) -> str:
    """`text` with every path or name of the sample's file replaced by "the file of sample
    <id>", in one pass (so the replacement is never matched again): the known paths whole, a
    known file name with whatever path precedes it, its name without extension, and any other
    .fcs/.lmd path (error messages quote the path the sheet gave, which may differ)."""
    names: list[str] = []
    for path in files:
        if not isinstance(path, str) or not path.strip():
            continue
        base = re.split(r"[\\/]", path.strip())[-1]
        names += [re.escape(path.strip()), _TOKEN + re.escape(base)]
        stem = base.rsplit(".", 1)[0]
        if len(stem) >= 3 and stem != sample_id:
            names.append(rf"(?<![\w.-]){re.escape(stem)}(?![\w-])")
    pattern = "|".join([*names, _FCS_PATH_RE])
    return re.sub(pattern, f"the file of sample {sample_id}", text, flags=re.IGNORECASE)
