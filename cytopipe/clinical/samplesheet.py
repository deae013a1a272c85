"""Load and validate the sample sheet (`config/samples.tsv`).

The sheet is the one place where a lab types clinical facts by hand (dates, counts, which file
belongs to which patient), so every problem is reported with the 1-based LINE number in the file
(line 1 = header) and the FIELD, all problems at once, before any FCS file is read. A long
workflow that dies at the longitudinal step because of a typo in row 37 wastes an afternoon.

Columns (tab-separated):
- required: sample_id, patient_id, path, and either `day` or both `collection_date` and
  `infusion_date` (per row; a row may use either form).
- optional: collection_date, infusion_date, birth_date (ISO dates, YYYY-MM-DD), abs_lymphocytes
  (cells/uL from a blood count, dual platform), bead_events, beads_per_test, volume_ul (single
  platform with counting beads), age_years (at sampling), disease, instrument, batch,
  allow_duplicate_file (yes on rows that really share one FCS file; collect fails rows sharing a
  file otherwise, see cytopipe.clinical.sample_checks). Any other
  column (e.g. true_b_cells from the synthetic generator) is carried along unchanged, converted to
  numbers when every non-empty value is numeric.

Derived values:
- `day` = collection_date - infusion_date in days when `day` is empty. When both are given they
  must agree, because a disagreement means one of them is wrong and we cannot tell which.
- `age_years` = (collection_date - birth_date) / 365.25 when empty and both dates are known.

Rules that are errors (ConfigError naming line and field): missing required column, empty
required value, sample_id/patient_id unusable as a file name, missing FCS file (relative paths
are resolved against `base_dir`, default the current working directory, i.e. the Snakemake
workdir = repo root), duplicate sample_id, non-numeric day/count/age, unparseable date, collection
date before birth date, a day that cannot be derived, negative counts or age, counts in the
wrong unit (a blood count in 10^9/L, a volume in mL: see MIN_ALC), different infusion
dates within one patient, and a patient without a pre-infusion (day < 0) baseline sample.
The last one is an error by default because the memory-return flag and the baseline B-cell level
need it; pass `require_baseline=False` (CLI: `--allow-missing-baseline`) for cohorts whose
baseline was never measured; those patients are then flagged in the longitudinal outputs.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError

REQUIRED = ("sample_id", "patient_id", "path")
DATE_FIELDS = ("collection_date", "infusion_date", "birth_date")
COUNT_FIELDS = ("abs_lymphocytes", "bead_events", "beads_per_test", "volume_ul")
NUMERIC_FIELDS = ("day", *COUNT_FIELDS, "age_years")
TEXT_FIELDS = ("disease", "instrument", "batch")
# Every sheet returned has these columns (NaN/None when the lab did not give them), so consumers
# can rely on a stable schema.
STANDARD_COLUMNS = (*REQUIRED, "day", *DATE_FIELDS, *COUNT_FIELDS, "age_years", *TEXT_FIELDS)
DAYS_PER_YEAR = 365.25
# Ids become file and folder names (results/samples/{sample_id}/, report/patients/{id}.html).
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_LISTED = 12
# Unit slips that multiply every absolute count by 1000 (and call aplasia by the per-uL rule):
# a blood count in 10^9/L where cells/uL are asked (a fractional count below MIN_ALC: a lab
# reports cells/uL as whole numbers, and no lymphocyte count is measured below 10/uL), a
# stained volume in mL where uL are asked (below MIN_VOLUME_UL: tubes take 20-100 uL).
MIN_ALC = 10.0
MIN_VOLUME_UL = 1.0
# A day further than this from infusion is a typo (an id, a date typed as a number, a unit
# slip), not follow-up: CAR-T long-term follow-up is 15 years.
MAX_ABS_DAY = 25 * 365


def load_sample_sheet(
    path: str | os.PathLike,
    *,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    require_baseline: bool = True,
) -> pd.DataFrame:
    """Read, validate and complete a sample sheet; raise one ConfigError listing every problem.

    Returns one row per sample in file order with the STANDARD_COLUMNS first (day and numeric
    fields as float, dates as ISO strings or None), then any extra columns. `day` is int64 when
    every day is a whole number, which is the normal case.
    """
    path = Path(path)
    header, rows, lines = _read_rows(path)
    problems = _check_header(header)
    if problems:
        _raise(path, problems)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    records: list[dict] = []
    for line, values in zip(lines, rows, strict=True):
        record, row_problems = _parse_row(dict(zip(header, values, strict=True)), line)
        if check_files and record.get("path"):
            row_problems += _check_file(record["path"], base, line)
        problems += row_problems
        records.append(record)
    problems += _check_duplicates(records, lines)
    problems += _check_infusion_dates(records, lines)
    problems += _check_count_scale(records, lines)
    if require_baseline:
        problems += _check_baselines(records, lines)
    if problems:
        _raise(path, problems)
    return _to_frame(records, header)


def _raise(path: Path, problems: list[str]) -> None:
    problems = sorted(problems, key=_line_of)  # stable: a row's problems stay in field order
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    what = "; ".join(shown) + (f"; ... and {more} more" if more > 0 else "")
    error = ConfigError(
        f"invalid sample sheet: {what}",
        path=path,
        hint="fix these rows (line 1 is the header) and run again",
    )
    error.problems = problems
    raise error


def _line_of(problem: str) -> int:
    match = re.match(r"row (\d+)", problem)
    return int(match.group(1)) if match else 0


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Rows as lists of stripped strings and their 1-based line numbers; skips blank/# lines.

    One line is one row: a TSV sheet has no quoting, so a field that starts with a double quote
    (`"B1 (re-run`) is text, not the start of a field running to the end of the file. Python's
    csv module would silently swallow every later row into that field.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            f"cannot read sample sheet: {exc.strerror}",
            path=path,
            hint="check the `samples` path in config/config.yaml",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start})",
            path=path,
            hint="save the sheet as UTF-8 tab-separated text",
        ) from None
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    problems: list[str] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        fields = [f.strip() for f in raw.split("\t")]
        if not any(fields) or fields[0].startswith("#"):
            continue
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            problems.append(
                f"row {line}: has {len(fields)} tab-separated fields but the header has "
                f"{len(header)}"
            )
            continue
        rows.append(fields)
        lines.append(line)
    if header is None:
        raise ConfigError(
            "sample sheet is empty", path=path, hint="add a header and one row per FCS file"
        )
    if problems:
        _raise(path, problems)
    return header, rows, lines


def _check_header(header: list[str]) -> list[str]:
    problems = []
    for name in REQUIRED:
        if name not in header:
            problems.append(f"row 1 (header), field '{name}': required column is missing")
    has_dates = "collection_date" in header and "infusion_date" in header
    if "day" not in header and not has_dates:
        problems.append(
            "row 1 (header), field 'day': required column is missing "
            "(give `day` relative to infusion, or both `collection_date` and `infusion_date`)"
        )
    seen: set[str] = set()
    for name in header:
        if not name:
            problems.append("row 1 (header): a column has an empty name")
        elif name in seen:
            problems.append(f"row 1 (header), field '{name}': column appears twice")
        seen.add(name)
    return problems


def _parse_row(raw: dict[str, str], line: int) -> tuple[dict, list[str]]:
    """Typed record for one row, plus the problems found in it."""
    problems: list[str] = []
    record: dict = dict(raw)

    def bad(field: str, what: str) -> None:
        problems.append(f"row {line}, field '{field}': {what}")

    for name in REQUIRED:
        if not raw.get(name):
            bad(name, "is empty")
    for name in ("sample_id", "patient_id"):
        value = raw.get(name)
        if value and not _ID_RE.match(value):
            bad(
                name,
                f"{value!r} cannot be used as a file name (use letters, digits, '.', '_', '-', "
                "starting with a letter or digit)",
            )
    for name in NUMERIC_FIELDS:
        record[name] = _parse_number(raw.get(name, ""), name, bad)
    for name in COUNT_FIELDS + ("age_years",):
        value = record[name]
        if value is not None and value < 0:
            bad(name, f"is negative ({raw[name]}); counts and ages must be >= 0")
    if record["volume_ul"] == 0:
        bad("volume_ul", "is 0; the stained blood volume must be positive")
    elif record["volume_ul"] is not None and record["volume_ul"] < MIN_VOLUME_UL:
        bad(
            "volume_ul",
            f"{raw['volume_ul']} uL is less than a drop: the volume looks given in mL; "
            f"give uL ({1000 * record['volume_ul']:g} for {raw['volume_ul']} mL)",
        )
    alc = record["abs_lymphocytes"]
    if alc is not None and 0 < alc < MIN_ALC and alc != round(alc):
        bad(
            "abs_lymphocytes",
            f"{raw['abs_lymphocytes']} cells/uL looks like a count in 10^9/L (10^3/uL); give "
            f"cells/uL ({1000 * alc:g} for {raw['abs_lymphocytes']} x 10^9/L)",
        )
    for name in DATE_FIELDS:
        record[name] = _parse_date(raw.get(name, ""), name, bad)
    for name in TEXT_FIELDS:
        record[name] = raw.get(name) or None

    collection, infusion, birth = (record[n] for n in DATE_FIELDS)
    if collection and birth and collection < birth:
        bad("collection_date", f"{collection} is before birth_date {birth}")
    if infusion and birth and infusion < birth:
        bad("infusion_date", f"{infusion} is before birth_date {birth}")
    derived = (collection - infusion).days if collection and infusion else None
    if record["day"] is None:
        if derived is None and not _invalid_given(raw, ("day", "collection_date", "infusion_date")):
            bad(
                "day",
                "is empty and cannot be derived: give `day` or both collection_date and infusion_date",
            )
        record["day"] = derived
    elif derived is not None and not math.isclose(record["day"], derived):
        bad(
            "day",
            f"{raw['day']} disagrees with collection_date - infusion_date = {derived} days",
        )
    if record["day"] is not None and abs(record["day"]) > MAX_ABS_DAY:
        bad("day", f"{record['day']:g} is more than {MAX_ABS_DAY} days (25 years) from infusion")
    if record["age_years"] is None and collection and birth:
        record["age_years"] = (collection - birth).days / DAYS_PER_YEAR
    for name in DATE_FIELDS:
        record[name] = record[name].isoformat() if record[name] else None
    return record, problems


def _invalid_given(raw: dict[str, str], names: Iterable[str]) -> bool:
    """True when one of `names` was given but unparseable (already reported; do not pile on)."""
    for name in names:
        text = raw.get(name, "")
        if not text or text.upper() in {"NA", "NAN"}:
            continue
        try:
            float(text) if name == "day" else dt.date.fromisoformat(text)
        except ValueError:
            return True
    return False


def _parse_number(text: str, field: str, bad) -> float | None:
    if not text or text.upper() in {"NA", "NAN"}:
        return None
    try:
        value = float(text)
    except ValueError:
        bad(field, f"{text!r} is not a number")
        return None
    if not math.isfinite(value):
        bad(field, f"{text!r} is not a finite number")
        return None
    return value


def _parse_date(text: str, field: str, bad) -> dt.date | None:
    if not text or text.upper() in {"NA", "NAN"}:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        bad(field, f"{text!r} is not a date in YYYY-MM-DD form")
        return None


def _check_file(file: str, base: Path, line: int) -> list[str]:
    full = Path(file) if Path(file).is_absolute() else base / file
    if full.is_file():
        return []
    return [f"row {line}, field 'path': file not found: {full}"]


def _check_duplicates(records: list[dict], lines: list[int]) -> list[str]:
    first: dict[str, int] = {}
    problems = []
    for record, line in zip(records, lines, strict=True):
        sample = record.get("sample_id")
        if not sample:
            continue
        if sample in first:
            problems.append(
                f"row {line}, field 'sample_id': duplicate sample_id {sample!r} "
                f"(first used on row {first[sample]})"
            )
        else:
            first[sample] = line
    return problems


def _check_count_scale(records: list[dict], lines: list[int]) -> list[str]:
    """Whole-number blood counts in 10^9/L ('1', '2') pass the row check; a sheet whose every
    count is below 2 x MIN_ALC cells/uL cannot be in cells/uL (a baseline has hundreds)."""
    given = [(r["abs_lymphocytes"], line) for r, line in zip(records, lines, strict=True)
             if r.get("abs_lymphocytes")]  # fmt: skip
    largest = max((v for v, _ in given), default=0.0)
    if len(given) < 2 or largest >= 2 * MIN_ALC:
        return []
    return [
        f"row {given[0][1]}, field 'abs_lymphocytes': every blood count of the sheet is below "
        f"{2 * MIN_ALC:g} cells/uL (largest {largest:g}): they look given in 10^9/L "
        "(10^3/uL); give cells/uL (x 1000)"
    ]


def _check_infusion_dates(records: list[dict], lines: list[int]) -> list[str]:
    """One CAR-T infusion per patient: differing infusion dates make `day` meaningless."""
    first: dict[str, tuple[str, int]] = {}
    problems = []
    for record, line in zip(records, lines, strict=True):
        patient, infusion = record.get("patient_id"), record.get("infusion_date")
        if not patient or not infusion:
            continue
        if patient in first and first[patient][0] != infusion:
            problems.append(
                f"row {line}, field 'infusion_date': {infusion} differs from {first[patient][0]} "
                f"on row {first[patient][1]} for patient {patient!r}"
            )
        first.setdefault(patient, (infusion, line))
    return problems


def _check_baselines(records: list[dict], lines: list[int]) -> list[str]:
    first_line: dict[str, int] = {}
    has_baseline: dict[str, bool] = {}
    for record, line in zip(records, lines, strict=True):
        patient = record.get("patient_id")
        if not patient:
            continue
        first_line.setdefault(patient, line)
        day = record.get("day")
        has_baseline[patient] = has_baseline.get(patient, False) or (day is not None and day < 0)
    return [
        f"row {first_line[p]}, field 'day': patient {p!r} has no baseline (pre-infusion, day < 0) "
        "sample (add one, or allow it with --allow-missing-baseline / require_baseline=False)"
        for p, ok in has_baseline.items()
        if not ok
    ]


def _to_frame(records: list[dict], header: list[str]) -> pd.DataFrame:
    extras = [c for c in header if c not in STANDARD_COLUMNS]
    columns = [*STANDARD_COLUMNS, *extras]
    frame = (
        pd.DataFrame.from_records(records, columns=columns)
        if records
        else pd.DataFrame(columns=columns)
    )
    for name in NUMERIC_FIELDS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    days = frame["day"].to_numpy()
    if len(days) and np.all(np.isfinite(days)) and np.all(days == np.round(days)):
        frame["day"] = days.astype(np.int64)
    for name in extras:
        frame[name] = _maybe_numeric(frame[name])
    for name in (*REQUIRED, *DATE_FIELDS, *TEXT_FIELDS):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _maybe_numeric(column: pd.Series) -> pd.Series:
    text = column.astype(str).str.strip()
    filled = text[text != ""]
    numbers = pd.to_numeric(filled, errors="coerce")
    if len(filled) and numbers.notna().all():
        out = pd.to_numeric(text.where(text != ""), errors="coerce")
        if out.notna().all() and (out == out.round()).all():
            return out.astype(np.int64)
        return out
    return column
