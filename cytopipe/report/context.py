"""What every page of the report needs to know about the cohort (`Report`): which patients and
samples there are, each sample's patient and day, cross-links, and what pages may show of
file names and times. Built once from the results folder by `load_report`; `slug` names
the file of each patient's and sample's page."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cytopipe.report.data import ResultsFolder, records
from cytopipe.report.formatting import is_missing
from cytopipe.report.privacy import Privacy
from cytopipe.results import COHORT_SUMMARY, cohort_summary_path

SCRUBBED = ("error", "warnings")  # table columns that may quote a file's name or dates


@dataclass
class Report:
    """What every page needs to know about the cohort: ids, file names and cross-links."""

    results: ResultsFolder
    out: Path
    definitions: dict | None
    definitions_source: str
    sample_patient: dict[str, str] = field(default_factory=dict)
    sample_day: dict[str, float] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    privacy: Privacy = field(default_factory=Privacy)
    status: dict[str, dict] = field(default_factory=dict)  # sample_status.tsv rows by sample
    files: dict[str, list[str]] = field(default_factory=dict)  # failures.tsv paths by sample
    # clusters.json "disagreements" by sample: gates and clustering, two independent methods,
    # disagree on a population; collected while the sample pages are written
    disagreements: dict[str, list[str]] = field(default_factory=dict)
    # the tables the cohort page links, copied into the report folder (shipped_tables)
    downloads: list[dict] = field(default_factory=list)
    # the gate gallery pages (gallery_page): href, name, samples, low-confidence samples
    galleries: list[dict] = field(default_factory=list)
    # (sample, population) with a gate box on the sample page (#gate-<population>): filled as
    # the sample pages are written, read by the cohort page's list of gates to look at
    drawn_gates: set[tuple[str, str]] = field(default_factory=set)

    @property
    def limit_events(self) -> tuple[Any, Any]:
        """(LOD, LLOQ) in events from the definitions; (None, None) for older results."""
        limits = (self.definitions or {}).get("limits") or {}
        return limits.get("lod_events"), limits.get("lloq_events")

    def patient_href(self, pid: str, root: str) -> str:
        return f"{root}patients/{slug(pid)}.html"

    def sample_href(self, sid: str, root: str) -> str:
        return f"{root}samples/{slug(sid)}.html"

    def samples_of(self, pid: str) -> list[str]:
        own = [s for s in self.samples if self.sample_patient.get(s) == pid]
        return sorted(own, key=lambda s: (self.sample_day.get(s, np.inf), s))

    def shown(self, value: Any, sid: str, files: Any = ()) -> Any:
        """Text about sample `sid` as its pages may show it (file names, times; `Privacy`)."""
        return self.privacy.text(value, sid, [*self.files.get(sid, []), *files])

    def shown_rows(self, rows: list[dict]) -> list[dict]:
        """Table rows with their error and warning text as pages may show it."""
        return [
            {**r, **{k: self.shown(r[k], str(r.get("sample_id", ""))) for k in SCRUBBED if k in r}}
            for r in rows
        ]


def load_report(results: ResultsFolder, out: Path, config: str | os.PathLike | None) -> Report:
    definitions, source = _definitions(results, config)
    report = Report(results, out, definitions, source)
    sample_patient: dict[str, str] = {}
    sample_day: dict[str, float] = {}
    for name in ("failures", "sample_status", "population_stats", "sample_states"):
        frame = results.table(name)
        if frame is None or "sample_id" not in frame or "patient_id" not in frame:
            continue
        for sid, pid in zip(frame["sample_id"], frame["patient_id"], strict=True):
            if pid:
                sample_patient[str(sid)] = str(pid)
        if "day" in frame:
            days = pd.to_numeric(frame["day"], errors="coerce")
            for sid, day in zip(frame["sample_id"], days, strict=True):
                if np.isfinite(day):
                    sample_day[str(sid)] = float(day)
    report.sample_patient, report.sample_day = sample_patient, sample_day
    report.status = _rows_by_sample(results.table("sample_status"))
    report.files = _files_by_sample(results.table("failures"))
    samples = set(results.sample_dirs)
    status = results.table("sample_status")
    if status is not None and "sample_id" in status:
        samples |= set(status["sample_id"].astype(str))
    report.samples = sorted(samples)
    patients = set(sample_patient.values())
    table_p = results.table("patients")
    if table_p is not None and "patient_id" in table_p:
        patients |= set(table_p["patient_id"].astype(str))
    report.patients = sorted(p for p in patients if p)
    return report


def _rows_by_sample(frame: pd.DataFrame | None) -> dict[str, dict]:
    if frame is None or "sample_id" not in frame:
        return {}
    return {str(r["sample_id"]): r for r in records(frame)}


def _files_by_sample(failures: pd.DataFrame | None) -> dict[str, list[str]]:
    """The file path each failed sample's row named: its error message quotes it."""
    if failures is None or "path" not in failures or "sample_id" not in failures:
        return {}
    return {
        str(sid): [str(path)]
        for sid, path in zip(failures["sample_id"], failures["path"], strict=True)
        if not is_missing(path) and str(path)
    }


def _definitions(
    results: ResultsFolder, config: str | os.PathLike | None
) -> tuple[dict | None, str]:
    summary = results.summary or {}
    if isinstance(summary.get("definitions"), dict):
        return summary["definitions"], cohort_summary_path(".").as_posix()  # tables/...
    if config is not None:
        from cytopipe.clinical.definitions import definitions, longitudinal_settings
        from cytopipe.config import load_config

        cfg = load_config(config)
        return definitions(
            longitudinal_settings(cfg, config)
        ), f"{config} ({COHORT_SUMMARY} missing)"
    return None, ""


def slug(identifier: str) -> str:
    """A file name for an id: the id itself when safe, else a cleaned form plus a short hash so
    two ids never share a page."""
    text = str(identifier)
    if _SAFE.match(text):
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', text)[:60]}-{digest}"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
