"""Checks that each FCS file belongs to its sample-sheet row, on the provenance real files get
at ingestion (cytopipe.synth.sample_files writes them, cytopipe.ingest.fcs reads them)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from cytopipe.clinical.sample_checks import (
    acquisition_date,
    date_mismatches,
    duplicate_files,
    file_sha256,
    is_truthy,
)
from cytopipe.ingest.fcs import read_fcs
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import simulate_sample


def write_file(path, seed: int, start: datetime, **keywords: str):
    sample = simulate_sample(500, blood_composition(), "A", seed, start=start, keywords=keywords)
    return write_sample(path, sample)


def record_of(path) -> dict:
    """What ingestion stores in the sample record (the provenance part)."""
    return {"status": "ok", "provenance": read_fcs(path).provenance}


def sheet_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


@pytest.fixture
def files(tmp_path):
    a = write_file(tmp_path / "a.fcs", 1, datetime(2024, 3, 2, 14, 37, 52))
    b = write_file(tmp_path / "b.fcs", 2, datetime(2024, 5, 2, 9, 0, 0))
    copy = tmp_path / "copy_of_a.fcs"
    copy.write_bytes(a.read_bytes())
    return {"a": a, "b": b, "copy": copy}


def test_is_truthy_accepts_only_deliberate_yes():
    for value in ("yes", "YES", " true ", "True", "1", 1, 1.0, True, np.int64(1)):
        assert is_truthy(value), value
    for value in ("", "no", "0", "false", "maybe", 0, 0.0, 2, None, float("nan"), False):
        assert not is_truthy(value), value


def test_records_give_the_files_hash_and_date(files):
    rec = record_of(files["a"])
    assert file_sha256(rec) == hashlib.sha256(files["a"].read_bytes()).hexdigest()
    assert acquisition_date(rec) == date(2024, 3, 2)
    failed = {"status": "failed", "error": "truncated"}  # never read: no evidence
    assert file_sha256(failed) is None and acquisition_date(failed) is None


def test_same_file_on_two_rows_fails_both_naming_the_other(files):
    records = {
        "S1": record_of(files["a"]),
        "S2": record_of(files["copy"]),
        "S3": record_of(files["b"]),
    }
    sheet = sheet_of([{"sample_id": s} for s in records])
    errors = duplicate_files(sheet, records)
    sha = hashlib.sha256(files["a"].read_bytes()).hexdigest()
    assert sorted(errors) == ["S1", "S2"]
    assert errors["S1"] == (
        f"same FCS file (SHA-256 {sha[:8]}...) as sample S2; one of the rows names the wrong "
        "file: fix the sheet, or set allow_duplicate_file=yes on rows that really share a file"
    )
    assert "as sample S1;" in errors["S2"]


def test_three_rows_on_one_file_and_rows_that_allow_it(files):
    records = {s: record_of(files["a"]) for s in ("S1", "S2", "S3")}
    records["S4"] = record_of(files["b"])
    # numbers as the sheet loader reads them, and a hand-typed "true"
    sheet = sheet_of(
        [{"sample_id": "S1", "allow_duplicate_file": "true"},
         {"sample_id": "S2", "allow_duplicate_file": ""},
         {"sample_id": "S3", "allow_duplicate_file": float("nan")},
         {"sample_id": "S4", "allow_duplicate_file": ""}]
    )  # fmt: skip
    errors = duplicate_files(sheet, records)
    assert sorted(errors) == ["S2", "S3"]  # S1 said the file is shared on purpose
    assert "as samples S1, S3;" in errors["S2"]
    sheet["allow_duplicate_file"] = [1, 1, 1, 0]
    assert duplicate_files(sheet, records) == {}


def test_rows_without_a_read_file_are_not_compared(files):
    records = {"S1": record_of(files["a"]), "S2": {"status": "failed", "error": "x"}}
    assert duplicate_files(sheet_of([{"sample_id": "S1"}, {"sample_id": "S2"}]), records) == {}


def test_acquisition_date_far_from_collection_date_warns(files):
    records = {"S1": record_of(files["a"]), "S2": record_of(files["b"])}
    sheet = sheet_of(
        [{"sample_id": "S1", "collection_date": "2024-05-02"},
         {"sample_id": "S2", "collection_date": "2024-05-03"}]
    )  # fmt: skip
    warnings = date_mismatches(sheet, records)
    assert warnings == {
        "S1": "acquired 2024-03-02 per $DATE, sheet collection_date 2024-05-02: 61 days apart; "
        "check the row's file or date"
    }
    assert date_mismatches(sheet, records, tolerance_days=61) == {}  # not beyond it
    strict = date_mismatches(sheet, records, tolerance_days=0)
    assert strict["S2"].endswith("2024-05-03: 1 day apart; check the row's file or date")


def test_no_warning_without_both_dates(tmp_path, files):
    odd = write_file(tmp_path / "odd.fcs", 3, datetime(2024, 3, 2, 8, 0, 0), **{"$DATE": "Q1-24"})
    records = {"S1": record_of(odd), "S2": record_of(files["a"]), "S3": record_of(files["b"])}
    assert records["S1"]["provenance"]["acquisition_date"] == "Q1-24"  # raw text, not a date
    sheet = sheet_of(
        [{"sample_id": "S1", "collection_date": "2024-09-01"},
         {"sample_id": "S2", "collection_date": None},
         {"sample_id": "S3", "collection_date": float("nan")}]
    )  # fmt: skip
    assert date_mismatches(sheet, records) == {}
    assert date_mismatches(sheet.drop(columns=["collection_date"]), records) == {}
