"""Reading a results folder for the report, tolerating whatever is missing.

The report is the last step and also what people open when something went wrong, so it must
render from a partial results folder: every table is optional (None when absent or unreadable,
with the reason kept for the page), and per-sample files are read one sample at a time so a
cohort of thousands of samples never sits in memory at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cytopipe.results import (
    BOOL_COLUMNS,
    MISSING_VALUES,
    TABLE_FILES,
    TEXT_COLUMNS,
    cohort_summary_path,
    sample_clusters_path,
    sample_expert_path,
    sample_learned_path,
    sample_plots_path,
    sample_record_path,
    sample_stats_path,
    samples_folder,
    table_path,
)


@dataclass
class SampleFiles:
    """One sample's own outputs (record always read; stats/plots only for ok samples)."""

    sample_id: str
    folder: Path
    record: dict
    stats: pd.DataFrame | None
    plots: list[dict] | None
    clusters: Any | None
    problems: list[str] = field(default_factory=list)
    learned: Any | None = None  # learned.json: the learned gating model's opinion (gating_model)
    expert: Any | None = None  # expert.json: agreement with the expert's gating (expert_gates)

    @property
    def failed(self) -> bool:
        return self.record.get("status") == "failed"


@dataclass
class ResultsFolder:
    """The cohort tables of a results folder plus where the per-sample files are."""

    root: Path
    tables: dict[str, pd.DataFrame | None]
    summary: dict | None
    missing: dict[str, str]
    sample_dirs: dict[str, Path]

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)

    def why_missing(self, name: str) -> str:
        return self.missing.get(name, "")


def read_table(path: Path) -> tuple[pd.DataFrame | None, str]:
    """A TSV as written by earlier steps, or (None, reason). Ids and text stay strings (a
    sample called "0012" must not become 12), booleans written as True/False become bool."""
    if not path.exists():
        return None, f"{path.name} was not found in {path.parent}"
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype={c: str for c in TEXT_COLUMNS},
            keep_default_na=True,
            na_values=list(MISSING_VALUES),
        )
    except pd.errors.EmptyDataError:
        return None, f"{path.name} is empty"
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        return None, f"{path.name} is not a readable table ({exc})"
    for name in TEXT_COLUMNS:
        if name in frame:
            frame[name] = frame[name].fillna("")
    for name in BOOL_COLUMNS:
        if name in frame:
            frame[name] = _bools(frame[name])
    return frame, ""


def _bools(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    text = series.astype(str).str.strip().str.lower()
    return text.map(mapping).astype(object).where(text.isin(list(mapping)), None)


def read_json(path: Path) -> tuple[Any | None, str]:
    if not path.exists():
        return None, f"{path.name} was not found in {path.parent}"
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        return None, f"{path.name} is not readable JSON ({exc})"


def load_results(results_dir: str | os.PathLike) -> ResultsFolder:
    """The cohort tables of `results_dir` (tables/ and samples/*/)."""
    root = Path(results_dir)
    tables: dict[str, pd.DataFrame | None] = {}
    missing: dict[str, str] = {}
    for name in TABLE_FILES:
        tables[name], why = read_table(table_path(root, name))
        if why:
            missing[name] = why
    summary, why = read_json(cohort_summary_path(root))
    if why or not isinstance(summary, dict):
        missing["cohort_summary"] = why or "cohort_summary.json is not a JSON object"
        summary = None
    sample_dirs = {}
    samples_root = samples_folder(root)
    if samples_root.is_dir():
        for folder in sorted(samples_root.iterdir()):
            if sample_record_path(folder).is_file():
                sample_dirs[folder.name] = folder
    return ResultsFolder(root, tables, summary, missing, sample_dirs)


def load_sample(sample_id: str, folder: Path | None) -> SampleFiles:
    """One sample's record, statistics, density plots and (later) clustering results."""
    problems: list[str] = []
    if folder is None:
        record = {"sample_id": sample_id, "status": "unknown"}
        problems.append("no sample.json for this sample in the results folder")
        return SampleFiles(sample_id, Path(), record, None, None, None, problems)
    record, why = read_json(sample_record_path(folder))
    if not isinstance(record, dict):
        problems.append(why or "sample.json is not a JSON object")
        record = {"sample_id": sample_id, "status": "unknown"}
    stats, plots = None, None
    if sample_stats_path(folder).exists():
        stats, why = read_table(sample_stats_path(folder))
        if why:
            problems.append(why)
        elif not len(stats):
            stats = None
    plot_doc, why = read_json(sample_plots_path(folder))
    if isinstance(plot_doc, dict) and isinstance(plot_doc.get("plots"), list):
        plots = [p for p in plot_doc["plots"] if isinstance(p, dict)] or None
    elif plot_doc is not None:
        problems.append("plots.json has no list of plots")
    clusters, _ = read_json(sample_clusters_path(folder))
    learned, _ = read_json(sample_learned_path(folder))
    expert, _ = read_json(sample_expert_path(folder))
    outlines = expert.get("outlines") if isinstance(expert, dict) else None
    if isinstance(outlines, dict):  # each drawn on its gate's own density plot
        for plot in plots or ():
            if outlines.get(str(plot.get("population"))):
                plot["expert_gate"] = outlines[str(plot.get("population"))]
    return SampleFiles(sample_id, folder, record, stats, plots, clusters, problems, learned, expert)


def records(frame: pd.DataFrame | None) -> list[dict]:
    """Rows as dicts (NaN kept as NaN, which the formatters show as "—")."""
    if frame is None or not len(frame):
        return []
    return frame.to_dict("records")
