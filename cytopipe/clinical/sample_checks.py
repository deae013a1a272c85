"""Does each FCS file belong to its sample-sheet row? Checks `collect` runs over the cohort.

The sheet is typed by hand and archive files are copied around, so a row can name another
patient's file (or the same file twice) and every statistic of that row is then about the wrong
person. The file itself carries evidence a row cannot fake: its SHA-256 (recorded at ingestion
in `provenance.sha256`) and its acquisition date (`provenance.acquisition_date`, from $DATE or
$BEGINDATETIME). Two checks use it:

- the same file (same SHA-256) on two rows fails every such row (stage "sample sheet"): we cannot
  tell which row is right, and counting one tube for two patients or timepoints corrupts both;
  rows whose `allow_duplicate_file` column is yes/true/1 really share a file and are exempt;
- an acquisition date further than a tolerance from the row's `collection_date` is a warning:
  blood is sometimes stained a day later, a file from another visit is months away.

Pure functions over the sheet and the per-sample records (no I/O), so they are testable on
their own and `collect` stays the only place that reads files.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

SHEET_STAGE = "sample sheet"
ALLOW_DUPLICATE = "allow_duplicate_file"
DEFAULT_DATE_TOLERANCE_DAYS = 1.0
_TRUE = {"yes", "true", "1"}
_SHA_SHOWN = 8  # hex digits of the SHA-256 quoted in messages: enough to find the file
WARNING_SEPARATOR = " | "  # between a sample's warnings in one cell (messages contain ";")


def is_truthy(value: Any) -> bool:
    """yes/true/1 (any case, also as a number or bool) from a hand-typed sheet cell; empty,
    NaN and anything else are false, so only a deliberate entry exempts a row."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value == 1
    return str(value).strip().lower() in _TRUE


def file_sha256(record: Mapping) -> str | None:
    """The SHA-256 of the sample's file as ingestion recorded it; None when the file was never
    read (failed at ingestion) or hashing was skipped."""
    prov = record.get("provenance")
    sha = prov.get("sha256") if isinstance(prov, Mapping) else None
    return str(sha).lower() if sha else None


def acquisition_date(record: Mapping) -> dt.date | None:
    """The acquisition date recorded at ingestion, when it is an ISO date (raw $DATE text that
    could not be parsed is no evidence either way)."""
    prov = record.get("provenance")
    raw = prov.get("acquisition_date") if isinstance(prov, Mapping) else None
    return _iso_date(raw)


def _iso_date(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


def _sheet_column(sheet: pd.DataFrame, name: str) -> dict[str, Any]:
    """sample_id -> the row's value of an optional sheet column (empty when the column is absent)."""
    if name not in sheet:
        return {}
    return dict(zip(sheet["sample_id"].astype(str), sheet[name], strict=True))


def duplicate_files(sheet: pd.DataFrame, records: Mapping[str, Mapping]) -> dict[str, str]:
    """sample_id -> error for every row whose file has the same SHA-256 as another row's file,
    except rows that allow it (`allow_duplicate_file`)."""
    allowed = _sheet_column(sheet, ALLOW_DUPLICATE)
    by_sha: dict[str, list[str]] = defaultdict(list)
    for sid in sheet["sample_id"].astype(str):
        sha = file_sha256(records.get(sid) or {})
        if sha:
            by_sha[sha].append(sid)
    errors: dict[str, str] = {}
    for sha, samples in by_sha.items():
        if len(samples) < 2:
            continue
        for sid in samples:
            if not is_truthy(allowed.get(sid)):
                errors[sid] = duplicate_message(sha, [s for s in samples if s != sid])
    return errors


def duplicate_message(sha: str, others: Iterable[str]) -> str:
    others = list(others)
    which = "sample" if len(others) == 1 else "samples"
    return (
        f"same FCS file (SHA-256 {sha[:_SHA_SHOWN]}...) as {which} {', '.join(others)}; one of "
        f"the rows names the wrong file: fix the sheet, or set {ALLOW_DUPLICATE}=yes on rows "
        "that really share a file"
    )


def date_mismatches(
    sheet: pd.DataFrame,
    records: Mapping[str, Mapping],
    tolerance_days: float = DEFAULT_DATE_TOLERANCE_DAYS,
) -> dict[str, str]:
    """sample_id -> warning for every row whose file was acquired more than `tolerance_days`
    away from the row's collection_date (rows without either date are not judged)."""
    collected = _sheet_column(sheet, "collection_date")
    warnings: dict[str, str] = {}
    for sid, when in collected.items():
        sheet_date = _iso_date(when)
        acquired = acquisition_date(records.get(sid) or {})
        if sheet_date is None or acquired is None:
            continue
        apart = abs((acquired - sheet_date).days)
        if apart > tolerance_days:
            warnings[sid] = date_message(acquired, sheet_date, apart)
    return warnings


def date_message(acquired: dt.date, collected: dt.date, apart: int) -> str:
    days = "day" if apart == 1 else "days"
    return (
        f"acquired {acquired.isoformat()} per $DATE, sheet collection_date "
        f"{collected.isoformat()}: {apart} {days} apart; check the row's file or date"
    )


def compensation_notes(records: Mapping[str, Mapping]) -> dict[str, str]:
    """sample_id -> preprocessing's note for every file whose stains were gated uncompensated
    (a digital instrument's file with no spillover matrix, none given), or whose matrix was
    applied transposed (read the other way round, as its data showed): its subsets can be
    wholly wrong while every gate still looks placed, or the lab's matrix is to be mended, so
    the cohort page lists it, not only its own page."""
    out = {}
    for sid, rec in records.items():
        prov = rec.get("provenance")
        if isinstance(prov, Mapping):
            notes = [str(prov[k]) for k in ("uncompensated", "matrix_turned") if prov.get(k)]
            if notes:
                out[sid] = WARNING_SEPARATOR.join(notes)
    return out


def combine_warnings(*checks: Mapping[str, str]) -> dict[str, str]:
    """sample_id -> every check's warning for it in one table cell (WARNING_SEPARATOR)."""
    out: dict[str, list[str]] = defaultdict(list)
    for check in checks:
        for sid, text in check.items():
            out[sid].append(text)
    return {sid: WARNING_SEPARATOR.join(texts) for sid, texts in out.items()}
