"""A small but complete results folder with known truth, for the report tests.

Per-sample files (sample.json, stats.tsv, plots.json) and the collect tables are written here
following the data contracts; the longitudinal tables come from the real engine
(cytopipe.clinical.longitudinal), so the report is tested against exactly what the workflow writes.

Cohort (days since infusion; B cells as % of lymphocytes):
- P01 SLE, 14 y, dual platform: -7: 12 %, 14: 0 (no B-cell events), 28: 0.05, 90: 3, 120: 8,
  180: 10 -> aplasia from day 14, reconstituted day 90 (confirmed by day 120).
- P02 JDM, 5.95 y (crosses the 2-6 y / 6-12 y reference band during follow-up), bead counts:
  -5: 15 %, 7: 0.1, 30: 0.2, 60: 0.3, 100: 0.4 -> censored in aplasia at day 100; its day-150
  sample FAILED (error text contains a script tag).
- P03 SSc, 35 y, dual platform: -10: 9 %, 21: 0.5, 60: 6 -> reconstituted day 60 (last
  timepoint, unconfirmed); the day-21 sample has a marker name and a keyword value that are
  `<script>alert(1)</script>` and lacks CD24 (b_transitional skipped).
- P04 SLE, 10 y, dual platform: -3: 10 %, 30: 5 -> never depleted.

`plant_identifying_names` gives that folder archive-style file names and acquisition times (what
the HTML must not show by default); `build_checked_cohort` runs real generated FCS files through
preprocess and gate for a sheet whose rows do not all own their file (CHECKED_ROWS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.atomic import write_json, write_tsv
from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.clinical.tables import write_outputs
from cytopipe.gating.stats import STATS_COLUMNS, gates_to_review
from cytopipe.synth.model import MARKERS as PANEL_MARKERS
from cytopipe.synth.model import SCATTER

XSS = "<script>alert(1)</script>"
BINS = 24
DAYS_PER_YEAR = 365.25

# patient -> (disease, age at infusion, counting, [(day, B % of lymphocytes), ...])
COHORT = {
    "P01": (
        "SLE",
        14.0,
        "dual",
        [(-7, 12.0), (14, 0.0), (28, 0.05), (90, 3.0), (120, 8.0), (180, 10.0)],
    ),
    "P02": ("JDM", 5.95, "beads", [(-5, 15.0), (7, 0.1), (30, 0.2), (60, 0.3), (100, 0.4)]),
    "P03": ("SSc", 35.0, "dual", [(-10, 9.0), (21, 0.5), (60, 6.0)]),
    "P04": ("SLE", 10.0, "dual", [(-3, 10.0), (30, 5.0)]),
}
FAILED = {
    "P02-d150": (
        "P02",
        150,
        "ingest",
        f"data/P02-d150.fcs: DATA segment truncated {XSS} (re-export the file)",
    )
}
XSS_SAMPLE = "P03-d21"
NO_CD24 = {"P03-d21"}
LOW_CONFIDENCE = {"P01-d28"}

# population -> (parent, x, y, fraction of parent, gate rectangle [x0, x1, y0, y1])
HIERARCHY = {
    "cells": (None, "FSC-A", "SSC-A", 0.92, [0.1, 0.98, 0.0, 0.98]),
    "singlets": ("cells", "FSC-A", "FSC-H", 0.95, [0.0, 1.0, 0.0, 1.0]),
    "live": ("singlets", "viability", "SSC-A", 0.90, [0.0, 0.45, 0.0, 1.0]),
    "leukocytes": ("live", "CD45", "SSC-A", 0.97, [0.4, 1.0, 0.0, 1.0]),
    "lymphocytes": ("leukocytes", "CD45", "SSC-A", 0.30, [0.55, 1.0, 0.0, 0.11]),
    "t_cells": ("lymphocytes", "CD3", "CD19", 0.70, [0.45, 1.0, 0.0, 0.4]),
    "b_cells": ("lymphocytes", "CD3", "CD19", None, [0.0, 0.45, 0.4, 1.0]),
    "b_cd20pos": ("b_cells", "CD20", "CD19", 0.90, [0.4, 1.0, 0.0, 1.0]),
    "b_cd20neg": ("b_cells", "CD20", "CD19", None, [0.0, 0.4, 0.0, 1.0]),
    "plasmablasts": ("b_cd20neg", "CD27", "CD38", 0.30, [0.6, 1.0, 0.6, 1.0]),
    "b_naive": ("b_cd20pos", "IgD", "CD27", 0.60, [0.45, 1.0, 0.0, 0.45]),
    "b_unswitched_memory": ("b_cd20pos", "IgD", "CD27", 0.15, [0.46, 1.0, 0.46, 1.0]),
    "b_switched_memory": ("b_cd20pos", "IgD", "CD27", 0.15, [0.0, 0.46, 0.46, 1.0]),
    "b_double_negative": ("b_cd20pos", "IgD", "CD27", None, [0.0, 0.46, 0.0, 0.46]),
    "b_transitional": ("b_cd20pos", "CD24", "CD38", 0.10, [0.69, 1.0, 0.655, 1.0]),
}
LYMPH_DESCENDANTS = {
    "lymphocytes", "t_cells", "b_cells", "b_cd20pos", "b_cd20neg", "plasmablasts", "b_naive",
    "b_unswitched_memory", "b_switched_memory", "b_double_negative", "b_transitional",
}  # fmt: skip
MARKERS = [*SCATTER, "Time", *PANEL_MARKERS]  # as preprocessing writes them


@dataclass
class Cohort:
    """Where the folder is and what is known to be in it."""

    results: Path
    patients: list[str]
    samples: list[str]  # every sample, failed included
    ok_samples: list[str]
    failed: list[str]
    xss_sample: str = XSS_SAMPLE
    sheet: pd.DataFrame = field(default_factory=pd.DataFrame)


def sample_id(pid: str, day: int) -> str:
    return f"{pid}-d{day}" if day >= 0 else f"{pid}-base"


def population_counts(b_pct: float, events: int, with_cd24: bool) -> dict[str, int]:
    """Nested counts following HIERARCHY; b_cells set from the B-cell % of lymphocytes."""
    counts: dict[str, int] = {}
    for pop, (parent, _, _, frac, _) in HIERARCHY.items():
        if pop == "b_transitional" and not with_cd24:
            continue
        base = events if parent is None else counts[parent]
        if pop == "b_cells":
            counts[pop] = int(round(counts["lymphocytes"] * b_pct / 100.0))
        elif pop == "b_cd20neg":
            counts[pop] = counts["b_cells"] - counts["b_cd20pos"]
        elif pop == "b_double_negative":
            used = counts["b_naive"] + counts["b_unswitched_memory"] + counts["b_switched_memory"]
            counts[pop] = counts["b_cd20pos"] - used
        else:
            counts[pop] = int(round(base * frac))
    return counts


def stats_table(
    sid: str, counts: dict[str, int], events: int, rng: np.random.Generator
) -> pd.DataFrame:
    rows = []
    for pop, n in counts.items():
        parent = HIERARCHY[pop][0]
        den = events if parent is None else counts[parent]
        flag = "low_confidence" if sid in LOW_CONFIDENCE and pop == "b_cells" else ""
        row = {
            "sample_id": sid,
            "population": pop,
            "parent": parent or "",
            "count": n,
            # a polygon (lymphocytes) has no cut to move; the others a tenth either way
            "count_cut_low": None if pop == "lymphocytes" else n - n // 10,
            "count_cut_high": None if pop == "lymphocytes" else n + n // 10,
            "pct_parent": 100.0 * n / den if den else np.nan,
            "pct_lymphocytes": 100.0 * n / counts["lymphocytes"]
            if pop in LYMPH_DESCENDANTS
            else np.nan,
            "gate_method": "valley" if pop in ("b_cells", "lymphocytes") else "fixed",
            "confidence": 0.42 if flag else 0.95,
            "flag": flag,
        }
        for m in ("CD45", "CD3", "CD19", "CD20", "CD27", "CD38", "IgD", "CD24"):
            row[f"median_{m}"] = float(rng.uniform(0.2, 0.8)) if n else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


# Cuts as gating/sample.py writes them: name -> (dim, population searched on, value, method,
# flag); the gates that use them.
CUTS = {
    "cd3": ("CD3", "lymphocytes", 0.45, "valley", ""),
    "cd19": ("CD19", "lymphocytes", 0.40, "valley", ""),
    "igd": ("IgD", "b_cd20pos", 0.46, "fallback", "fallback: no valley between 0.25 and 0.45"),
    "cd27": ("CD27", "b_cd20pos", 0.46, "valley", ""),
}
GATE_CUTS = {
    "t_cells": ("cd3",), "b_cells": ("cd19", "cd3"), "b_naive": ("igd", "cd27"),
    "b_unswitched_memory": ("igd", "cd27"), "b_switched_memory": ("cd27", "igd"),
    "b_double_negative": ("igd", "cd27"),
}  # fmt: skip


def cut(name: str, counts: dict[str, int], rng: np.random.Generator) -> dict:
    dim, on, value, method, flag = CUTS[name]
    x = np.concatenate(
        [rng.normal(0.2, 0.06, counts[on] // 2), rng.normal(0.7, 0.05, counts[on] // 2)]
    )
    edges = np.linspace(0.0, 1.0, 121)
    hist, _ = np.histogram(np.clip(x, 0, 1), bins=edges)
    return {"name": name, "dim": dim, "on": on, "where": [], "edges": edges.round(5).tolist(),
            "counts": hist.astype(int).tolist(), "events": int(x.size), "value": value,
            "method": method, "confidence": 0.9 if method == "valley" else 0.5, "flag": flag}  # fmt: skip


def density(
    pop: str, counts: dict[str, int], events: int, rng: np.random.Generator, shared: dict
) -> dict:
    """The parent's events binned on the gate's axes (one histogram per parent and axes, as
    gates that share them see the same density), with the gate and its cuts (one per name)."""
    parent, x, y, _, (x0, x1, y0, y1) = HIERARCHY[pop]
    n_parent = events if parent is None else counts[parent]
    edges = np.linspace(0.0, 1.0, BINS + 1)
    if (parent, x, y) not in shared:
        n_draw = min(n_parent, 4000)
        inside = min(counts[pop], n_draw)
        pts_in = np.column_stack([rng.uniform(x0, x1, inside), rng.uniform(y0, y1, inside)])
        pts_out = rng.normal(0.5, 0.2, (n_draw - inside, 2)).clip(0, 0.999)
        pts = np.vstack([pts_in, pts_out])
        hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=(edges, edges))
        shared[(parent, x, y)] = hist.astype(int).tolist()
    return {
        "population": pop,
        "parent": parent or "",
        "x": x,
        "y": y,
        "x_range": [0.0, 1.0],
        "y_range": [0.0, 1.0],
        "x_edges": edges.round(5).tolist(),
        "y_edges": edges.round(5).tolist(),
        "counts": shared[(parent, x, y)],
        "gate": [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]],
        "count": counts[pop],
        "pct_parent": 100.0 * counts[pop] / n_parent if n_parent else float("nan"),
        "cuts": [
            shared.setdefault(name, cut(name, counts, rng)) for name in GATE_CUTS.get(pop, ())
        ],
    }


def sample_record(sid: str, counts: dict[str, int], events: int, with_cd24: bool) -> dict:
    xss = sid == XSS_SAMPLE
    markers = [m for m in MARKERS if with_cd24 or m != "CD24"]
    panel = {m: f"{m}-A ({m})" for m in markers}
    if xss:
        panel["CD27"] = f"BV421-A ({XSS})"
    kept = int(events * 0.97)
    return {
        "sample_id": sid,
        "status": "ok",
        "error": None,
        "stage": None,
        "provenance": {
            "file": f"{sid}.fcs",
            "sha256": "0" * 64,
            "fcs_version": "FCS3.1",
            "cytometer": "Synthetic Cytometer",
            "acquisition_date": "2024-01-01",
            "spillover_source": "$SPILLOVER keyword",
            "transform": {m: "logicle(T=262144, W=0.5, M=4.5, A=0)" for m in markers[4:]},
            "warnings": [f"odd keyword {XSS}"] if xss else [],
            "cytopipe_version": "0.1.0",
        },
        "qc": {
            "verdict": "warn" if xss else "pass",
            "events_in": events,
            "events_kept": kept,
            "pct_kept": 100.0 * kept / events,
            "removed": {"saturated": events - kept, "scatter_floor": 0},
        },
        "panel": panel,
        "skipped_populations": [] if with_cd24 else ["b_transitional"],
        "skip_reasons": {} if with_cd24 else {"b_transitional": "panel lacks CD24"},
        "keywords": {"$CYT": "Synthetic Cytometer", "$SRC": XSS if xss else "blood"},
    }


def build_results(root: Path, *, seed: int = 7) -> Cohort:
    """Write results/{samples,tables} under `root`; returns what is in it."""
    rng = np.random.default_rng(seed)
    results = Path(root)
    sheet_rows, status_rows, all_stats = [], [], []
    for pid, (disease, age0, counting, series) in COHORT.items():
        for day, b_pct in series:
            sid = sample_id(pid, day)
            events = 20000
            with_cd24 = sid not in NO_CD24
            counts = population_counts(b_pct, events, with_cd24)
            folder = results / "samples" / sid
            stats = stats_table(sid, counts, events, rng)
            all_stats.append(stats)
            write_tsv(folder / "stats.tsv", stats)
            shared: dict = {}  # one density per parent and axes within a sample
            plots = [density(p, counts, events, rng, shared) for p in counts]
            write_json(folder / "plots.json", {"sample_id": sid, "plots": plots})
            record = sample_record(sid, counts, events, with_cd24)
            write_json(folder / "sample.json", record)
            qc = record["qc"]
            status_rows.append({
                "sample_id": sid, "patient_id": pid, "path": f"data/{sid}.fcs", "status": "ok",
                "stage": "", "error": "", "qc_verdict": qc["verdict"], "events_in": qc["events_in"],
                "events_kept": qc["events_kept"], "pct_kept": qc["pct_kept"],
                "n_flagged_gates": int((stats["flag"] != "").sum()),
                "n_gates_to_review": gates_to_review(stats),
            })  # fmt: skip
            sheet_rows.append(_sheet_row(sid, pid, day, disease, age0, counting))
    for sid, (pid, day, stage, error) in FAILED.items():
        write_json(
            results / "samples" / sid / "sample.json",
            {"sample_id": sid, "status": "failed", "error": error, "stage": stage},
        )
        status_rows.append({
            "sample_id": sid, "patient_id": pid, "path": f"data/{sid}.fcs", "status": "failed",
            "stage": stage, "error": error, "qc_verdict": "", "events_in": np.nan,
            "events_kept": np.nan, "pct_kept": np.nan, "n_flagged_gates": 0, "n_gates_to_review": 0,
        })  # fmt: skip
        disease, age0, counting, _ = COHORT[pid]
        sheet_rows.append(_sheet_row(sid, pid, day, disease, age0, counting))
    tables = results / "tables"
    status = pd.DataFrame(status_rows)
    write_tsv(tables / "sample_status.tsv", status.drop(columns=["path"]))
    failures = status.loc[
        status["status"] == "failed", ["sample_id", "patient_id", "path", "stage", "error"]
    ]
    write_tsv(tables / "failures.tsv", failures)
    stats = pd.concat(all_stats, ignore_index=True)
    write_tsv(tables / "sample_stats.tsv", stats)
    sheet = pd.DataFrame(sheet_rows)
    result = run_longitudinal(stats, sheet, None, status.drop(columns=["path"]))
    write_outputs(result, tables)
    samples = sorted(status["sample_id"])
    return Cohort(
        results=results,
        patients=sorted(COHORT),
        samples=samples,
        ok_samples=sorted(status.loc[status["status"] == "ok", "sample_id"]),
        failed=sorted(FAILED),
        sheet=sheet,
    )


def _sheet_row(sid: str, pid: str, day: int, disease: str, age0: float, counting: str) -> dict:
    row = {
        "sample_id": sid,
        "patient_id": pid,
        "path": f"data/{sid}.fcs",
        "day": float(day),
        "age_years": round(age0 + day / DAYS_PER_YEAR, 4),
        "disease": disease,
        "abs_lymphocytes": np.nan,
        "bead_events": np.nan,
        "beads_per_test": np.nan,
        "volume_ul": np.nan,
    }
    if counting == "dual":
        row["abs_lymphocytes"] = 1500.0 + 10 * day
    else:
        row.update(bead_events=5000.0, beads_per_test=50000.0, volume_ul=50.0)
    return row


# ----------------------------------------------------------------------------- rows vs files

# Real FCS files (cytopipe.synth.sample_files) through the real preprocess and gate commands, named like an
# archive's files, with a sheet whose rows cannot all own the file they name:
# - P2_BL names Smith_John.fcs, a byte-identical copy of P1_BL's file (a copy-paste slip);
# - P3_BL and P3_BL_rerun name one file and say so (allow_duplicate_file = yes);
# - P1_D030's file was acquired 2024-03-02 ($DATE) but the row says collected 2024-05-02;
# - P3_D030's file was acquired the day after collection (stained next morning: no warning).
# sample_id -> (patient, file name, sheet collection_date, acquired at, allow_duplicate_file)
CHECKED_ROWS = {
    "P1_BL": ("P1", "Doe_Jane_base.fcs", "2024-03-28", "2024-03-28T09:12:34", ""),
    "P1_D030": ("P1", "Doe_Jane_march.fcs", "2024-05-02", "2024-03-02T14:37:52", ""),
    "P2_BL": ("P2", "Smith_John.fcs", "2024-03-28", None, ""),  # None: copy of P1_BL's file
    "P2_D030": ("P2", "Smith_John_may.fcs", "2024-05-02", "2024-05-02T10:05:11", ""),
    "P3_BL": ("P3", "Roe_Richard_base.fcs", "2024-03-27", "2024-03-27T11:20:45", "yes"),
    "P3_BL_rerun": ("P3", "Roe_Richard_base.fcs", "2024-03-27", None, "yes"),
    "P3_D030": ("P3", "Roe_Richard_may.fcs", "2024-05-02", "2024-05-03T08:01:02", ""),
}
CHECKED_INFUSION = "2024-04-02"
CHECKED_COPIES = {"P2_BL": "P1_BL"}  # sample whose file is a byte copy of another's


@dataclass
class CheckedCohort:
    """A results folder whose per-sample outputs came from real files, before `collect`."""

    root: Path
    sheet: Path
    results: Path
    files: dict[str, Path]  # sample_id -> its FCS file


def build_checked_cohort(root: Path, *, events: int = 4000) -> CheckedCohort:
    """Write the CHECKED_ROWS files and sheet under `root` and run preprocess and gate on them."""
    from datetime import datetime

    from cytopipe import cli
    from cytopipe.synth.composition import blood_composition
    from cytopipe.synth.sample_files import write_sample
    from cytopipe.synth.simulate import simulate_sample

    root = Path(root)
    repo = Path(__file__).resolve().parent.parent
    files: dict[str, Path] = {}
    for i, (sid, (_, name, _, acquired, _)) in enumerate(CHECKED_ROWS.items()):
        path = root / "archive" / name
        if acquired is not None and not path.exists():
            b_share = 0.10 if sid.endswith("_BL") else 0.0005
            sample = simulate_sample(
                events, blood_composition(b_of_lymphocytes=b_share), "A", 100 + i,
                start=datetime.fromisoformat(acquired),
            )  # fmt: skip
            write_sample(path, sample)
        files[sid] = path
    for copy, source in CHECKED_COPIES.items():
        files[copy].write_bytes(files[source].read_bytes())
    sheet = root / "samples.tsv"
    pd.DataFrame(
        [
            {"sample_id": sid, "patient_id": pid, "path": str(files[sid]),
             "collection_date": collected, "infusion_date": CHECKED_INFUSION,
             "abs_lymphocytes": 1500, "age_years": 12.0, "allow_duplicate_file": allow}
            for sid, (pid, _, collected, _, allow) in CHECKED_ROWS.items()
        ]
    ).to_csv(sheet, sep="\t", index=False)  # fmt: skip
    results = root / "results"
    settings = ["--config", str(repo / "config" / "config.yaml")]
    for sid, path in files.items():
        pre = results / "preprocessed" / sid
        assert (
            cli.main(
                [
                    "preprocess",
                    str(path),
                    "--sample-id",
                    sid,
                    *settings,
                    "--panel",
                    str(repo / "config" / "panel.yaml"),
                    "--out-events",
                    f"{pre}.parquet",
                    "--out-info",
                    f"{pre}.json",
                ]
            )
            == 0
        )
        assert cli.main(["gate", f"{pre}.parquet", "--info", f"{pre}.json",
                         "--template", str(repo / "config" / "gating.yaml"),
                         "--out-dir", str(results / "samples" / sid)]) == 0  # fmt: skip
    return CheckedCohort(root, sheet, results, files)


# ----------------------------------------------------------------------------- identifying names

ARCHIVE_PATH = "/archive/Smith_John.fcs"  # an archive named after the patient
PLANTED_FAILED, PLANTED_SAMPLE = "P02-d150", "P01-d90"
PLANTED_DATE, PLANTED_TIME = "2023-11-17", "14:37:52"


def plant_identifying_names(results: Path) -> list[str]:
    """Give the failed sample and one good sample of a built results folder the file name,
    acquisition date and time an archive would have; returns the strings no HTML page may show
    unless the report options allow them."""
    results = Path(results)
    error = f"{ARCHIVE_PATH}: truncated DATA segment (Smith_John.fcs holds 2/3 of its bytes)"
    for name in ("failures", "sample_status"):
        path = results / "tables" / f"{name}.tsv"
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        table.loc[table["sample_id"] == PLANTED_FAILED, "error"] = error
        if "path" in table:
            table.loc[table["sample_id"] == PLANTED_FAILED, "path"] = ARCHIVE_PATH
        write_tsv(path, table)
    failed = results / "samples" / PLANTED_FAILED / "sample.json"
    write_json(failed, {**json.loads(failed.read_text()), "error": error})
    good = results / "samples" / PLANTED_SAMPLE / "sample.json"
    record = json.loads(good.read_text())
    record["provenance"].update(
        file="Smith_John.fcs",
        acquisition_date=PLANTED_DATE,
        acquisition_time=PLANTED_TIME,
        warnings=["Smith_John.fcs: $TOT missing; 20000 events inferred from the DATA size"],
    )
    # as if the lab had allowlisted them for the JSON outputs (keyword_allowlist)
    record["keywords"].update(
        {"$FIL": "Smith_John.fcs", "$DATE": "17-NOV-2023", "$BTIM": PLANTED_TIME}
    )
    write_json(good, record)
    return ["Smith_John", PLANTED_TIME, PLANTED_DATE, "17-NOV-2023"]
