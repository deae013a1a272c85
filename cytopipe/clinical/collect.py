"""Gather every sample's record and statistics into the cohort tables (sample_status,
failures, sample_stats), failing rows whose file cannot belong to them (sample_checks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cytopipe.clinical import sample_checks
from cytopipe.gating.stats import (
    STATS_COLUMNS,
    gates_to_review,
    unlike_template,
)
from cytopipe.results import (
    FAILURES_COLUMNS,
    SAMPLE_STATUS_COLUMNS,
    SAMPLE_STATUS_DTYPES,
    sample_folder,
    sample_record_path,
    sample_stats_path,
)


def collect(
    sheet: pd.DataFrame,
    results: Path,
    *,
    date_tolerance_days: float = sample_checks.DEFAULT_DATE_TOLERANCE_DAYS,
) -> dict[str, pd.DataFrame]:
    """Cohort tables from every sample's record and statistics.

    A file that cannot belong to its row (the same file on another row) fails the row here, at
    stage "sample sheet", with its statistics left out of sample_stats.tsv: every later step and
    the report then treat it as any failed sample. A doubtful acquisition date, or stains gated
    uncompensated or with a transposed matrix, only warn (`warnings` column of sample_status.tsv)."""
    records = {sid: _read_record(results, sid) for sid in sheet["sample_id"].astype(str)}
    records = _fail_duplicate_files(sheet, records)
    warnings = sample_checks.combine_warnings(
        sample_checks.date_mismatches(sheet, records, date_tolerance_days),
        sample_checks.compensation_notes(records),
    )
    status_rows, stats = [], []
    for row in sheet.itertuples(index=False):
        rec = records[str(row.sample_id)]
        st = _read_stats(results, row.sample_id) if rec["status"] == "ok" else None
        if st is not None:
            stats.append(st)
        status_rows.append(_status_row(row, rec, st, warnings.get(str(row.sample_id), "")))
    status = pd.DataFrame(status_rows).astype(SAMPLE_STATUS_DTYPES)
    failures = status.loc[status["status"] != "ok", FAILURES_COLUMNS]
    sample_stats = (
        pd.concat(stats, ignore_index=True) if stats else pd.DataFrame(columns=STATS_COLUMNS)
    )
    return {
        "sample_status": status[SAMPLE_STATUS_COLUMNS],
        "failures": failures,
        "sample_stats": sample_stats,
    }


def _read_record(results: Path, sample_id: str) -> dict:
    return json.loads(sample_record_path(sample_folder(results, sample_id)).read_text())


def _read_stats(results: Path, sample_id: str) -> pd.DataFrame:
    return pd.read_csv(sample_stats_path(sample_folder(results, sample_id)), sep="\t")


def _fail_duplicate_files(sheet: pd.DataFrame, records: dict[str, dict]) -> dict[str, dict]:
    """Records with every row that shares its file with another row failed (stage "sample
    sheet"); the per-sample files stay as they are, the cohort tables carry the failure."""
    errors = sample_checks.duplicate_files(sheet, records)
    return {
        sid: (
            {**rec, "status": "failed", "stage": sample_checks.SHEET_STAGE, "error": errors[sid]}
            if sid in errors
            else rec
        )
        for sid, rec in records.items()
    }


def _status_row(row: Any, rec: Mapping, st: pd.DataFrame | None, warnings: str) -> dict:
    """One line of sample_status.tsv (plus `path`, which only failures.tsv keeps)."""
    qc = rec.get("qc") or {}
    return {
        "sample_id": row.sample_id,
        "patient_id": row.patient_id,
        "day": row.day,
        "path": row.path,
        "status": rec["status"],
        "stage": rec.get("stage") or "",
        "error": rec.get("error") or "",
        "warnings": warnings,
        "qc_verdict": qc.get("verdict", ""),
        "events_in": qc.get("events_in"),
        "events_kept": qc.get("events_kept"),
        "pct_kept": qc.get("pct_kept"),
        "bead_events_found": (qc.get("removed") or {}).get("counting_beads", 0),
        "n_flagged_gates": int((st["flag"].fillna("") != "").sum()) if st is not None else 0,
        "n_gates_to_review": gates_to_review(st) if st is not None else 0,
        "unlike_template": unlike_template(st) if st is not None else "",
    }
