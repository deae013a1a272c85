"""The tables the cohort page cites, copied into the report folder (report/tables/), so a report
folder shared on its own (mailed, put on a share) keeps working links instead of pointing at
../tables/ of a results folder the reader does not have.

The copies follow the report's privacy options: without `report.show_file_names` the failures
table loses its file paths and its error messages name "the file of sample X", as the pages do.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cytopipe.atomic import atomic_path
from cytopipe.report.privacy import Privacy
from cytopipe.results import (
    EXPORT_DICTIONARY_FILE,
    cohort_export_path,
    cohort_summary_path,
    table_path,
)

SHIPPED = "tables"  # folder inside the report

# (table, what it holds) in the order the cohort page lists them
CITED = (
    ("cohort_export", "one row per patient with the definitions, for pooling across centres"),
    ("cohort_export_dictionary", "what each column of the export means"),
    ("patients", "per-patient summary"),
    ("sample_states", "B-cell state per timepoint"),
    ("population_stats", "every population of every sample, with cells/µL"),
    ("km", "Kaplan-Meier table"),
    ("cohort_summary", "cohort numbers and definitions"),
    ("sample_status", "status and QC verdict per sample"),
    ("failures", "failed samples"),
)


def _source(root: Path, name: str) -> Path:
    if name == "cohort_export":
        return cohort_export_path(root)
    if name == "cohort_summary":
        return cohort_summary_path(root)
    if name == "cohort_export_dictionary":
        return cohort_export_path(root).with_name(EXPORT_DICTIONARY_FILE)
    return table_path(root, name)


def ship_tables(results_root: Path, out: Path, privacy: Privacy) -> list[dict]:
    """Copy the cited tables that exist into `out`/tables; returns the cohort page's links
    ({href relative to index.html, name, what}). Tables gone from the results are removed
    from the report's copy too."""
    folder = out / SHIPPED
    folder.mkdir(parents=True, exist_ok=True)
    links, kept = [], set()
    for name, what in CITED:
        src = _source(results_root, name)
        if not src.exists():
            continue
        dest = folder / src.name
        with atomic_path(dest) as tmp:
            if name == "failures" and not privacy.show_file_names:
                _private_failures(src, Path(tmp), privacy)
            else:
                shutil.copyfile(src, tmp)
        kept.add(dest.name)
        links.append({"href": f"{SHIPPED}/{dest.name}", "name": dest.name, "what": what})
    for old in folder.iterdir():
        if old.is_file() and old.name not in kept:
            old.unlink()
    return links


def _private_failures(src: Path, dest: Path, privacy: Privacy) -> None:
    table = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False)
    paths: Sequence[str] = table["path"].tolist() if "path" in table else [""] * len(table)
    if "error" in table:
        table["error"] = [
            privacy.text(err, sid, [p])
            for err, sid, p in zip(table["error"], table["sample_id"], paths, strict=True)
        ]
    table.drop(columns=["path"], errors="ignore").to_csv(dest, sep="\t", index=False)
