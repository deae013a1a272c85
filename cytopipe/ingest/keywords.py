"""What FCS keywords may say outside the pipeline: which are safe to publish, and when the
sample was acquired.

Outputs and reports must not leak who was measured or by whom ($SRC, $OP, $FIL, comments,
vendor free text with clinical data), so only standard technical keywords pass unless the
config allowlists more. The acquisition date goes into provenance; archives write it in many
forms, so it is parsed here once, for the reader and for anyone comparing dates.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from collections.abc import Iterable, Mapping

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}


def acquisition_date(keywords: Mapping[str, str]) -> str | None:
    """ISO date of acquisition from $BEGINDATETIME (FCS 3.2) or $DATE (dd-mmm-yyyy; other
    orders seen in archives are tried); the raw text when it cannot be parsed."""
    bdt = keywords.get("begindatetime", "").strip()
    if bdt:
        try:
            return _dt.datetime.fromisoformat(bdt.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            pass
    raw = keywords.get("date", "").strip()
    if not raw:
        return bdt or None
    m = re.fullmatch(r"(\d{1,2})[-/ .]([A-Za-z]{3})[A-Za-z]*[-/ .](\d{2,4})", raw)
    try:
        if m:
            year = int(m.group(3))
            year = year + (2000 if year < 70 else 1900) if year < 100 else year
            return _dt.date(year, _MONTHS[m.group(2).upper()], int(m.group(1))).isoformat()
        for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"):
            try:
                return _dt.datetime.strptime(raw, fmt).date().isoformat()
            except ValueError:
                continue
    except (KeyError, ValueError):
        pass
    return raw


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------

# Standard FCS keywords that describe the instrument and the data layout, never the person.
# Anything else (operator, source/patient, file name, comments, project, plate names, dates,
# vendor free text) is dropped from outputs unless the config allowlists it.
SAFE_KEYWORDS = frozenset(
    """
    byteord datatype mode nextdata par tot begindata enddata beginanalysis endanalysis
    beginstext endstext timestep cyt cytsn sys spillover spill comp unicode abrt lost
    csmode csvbits vol tr flowrate gate originality unstainedcenters unstainedinfo
    """.split()
)
# Per-channel technical keywords: $PnN, $PnS, $PnR, $PnB, $PnE, $PnG, $PnV, $PnL, $PnO, $PnP,
# $PnT, $PnF, $PnD, $PnTYPE, $PnDATATYPE, $PnDET, $PnCALIBRATION, $PnFEATURE, $PnANALYTE, $PnTAG.
_SAFE_CHANNEL = re.compile(
    r"p\d+(n|s|r|b|e|g|v|l|o|p|t|f|d|type|datatype|det|calibration|feature|analyte|tag)"
)
IDENTIFYING = ("src", "op", "fil", "smno", "inst", "com", "proj", "exp", "cells")


def cytometer_named(keywords: Mapping[str, str], names: Iterable[str]) -> str | None:
    """'$CYT <value>' when the file's $CYT holds one of `names` (case-insensitive substrings),
    else None: the instrument families whose files are read their own way (mass, spectral)."""
    cyt = str(keywords.get("cyt", "")).strip()
    return f"$CYT {cyt}" if any(name in cyt.casefold() for name in names) else None


def _norm_key(key: str) -> str:
    key = str(key).strip()
    return (key[1:] if key.startswith("$") else key).lower()


def public_keywords(keywords: Mapping[str, str], allowlist: Iterable[str] = ()) -> dict[str, str]:
    """Keywords safe to put in outputs and reports: standard technical keywords only, plus those
    the allowlist names (names or glob patterns, case-insensitive, with or without '$')."""
    allowed = [_norm_key(a) for a in allowlist]
    out: dict[str, str] = {}
    for key, value in keywords.items():
        k = _norm_key(key)
        if (
            k in SAFE_KEYWORDS
            or _SAFE_CHANNEL.fullmatch(k)
            or any(fnmatch.fnmatchcase(k, a) for a in allowed)
        ):
            out[key] = value
    return out
