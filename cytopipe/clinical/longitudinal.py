"""Longitudinal B-cell aplasia and reconstitution after CD19 CAR-T, per timepoint and per patient:
every cohort table from the combined sample statistics, the sample sheet and the sample status.

The definitions are in cytopipe.clinical.definitions; the steps in states (per timepoint),
patients (per patient) and kaplan_meier; the files in tables.

cohort_export.csv carries the definitions as COLUMNS (def_*, cytopipe_version) on every row, not a
comment block, so rows pooled from several centres keep the definitions they were computed with
and any CSV reader can load the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytopipe import __version__
from cytopipe.clinical.car_kinetics import COLUMNS as CAR_COLUMNS
from cytopipe.clinical.car_kinetics import car_kinetics
from cytopipe.clinical.counts import COUNT_INPUTS, add_absolute_counts, with_beads_found
from cytopipe.clinical.definitions import confirmation_rule, definitions, validate_config
from cytopipe.clinical.kaplan_meier import km_median, km_table
from cytopipe.clinical.patients import patient_info_from_sheet, summarize_patients
from cytopipe.clinical.states import SUBSETS, assign_states, sample_table
from cytopipe.errors import CytopipeError
from cytopipe.results import EXPORT_COLUMNS, PATIENT_COLUMNS


@dataclass
class LongitudinalResult:
    """Everything the `longitudinal` command writes, as in-memory tables."""

    population_stats: pd.DataFrame
    sample_states: pd.DataFrame
    patients: pd.DataFrame
    km: pd.DataFrame
    summary: dict
    export: pd.DataFrame = field(default_factory=pd.DataFrame)


def run_longitudinal(
    stats: pd.DataFrame,
    sheet: pd.DataFrame,
    cfg: Mapping | None = None,
    status: pd.DataFrame | None = None,
    template_sha256: str = "",
) -> LongitudinalResult:
    """All longitudinal tables from the combined sample stats, the sheet and the sample status.

    Failed samples (status "failed") never have stats and are listed in the summary; with
    `skip_failed_qc` samples whose QC verdict is "fail" are dropped from the states as well.
    """
    cfg = validate_config(cfg)
    stats = _check_stats(stats)
    status = _status_frame(status, sheet)
    sheet = with_beads_found(sheet, status)
    pop_stats = add_absolute_counts(stats, sheet)
    verdict = status.set_index("sample_id")["qc_verdict"]
    failed = status[status["status"] == "failed"]
    used = pop_stats[~pop_stats["sample_id"].isin(failed["sample_id"])]
    qc_excluded: list[str] = []
    if cfg["skip_failed_qc"]:
        fail_qc = set(status.loc[status["qc_verdict"] == "fail", "sample_id"])
        qc_excluded = sorted(fail_qc & set(used["sample_id"]))
        used = used[~used["sample_id"].isin(fail_qc)]
    samples = sample_table(used) if len(used) else _empty_samples()
    counting = [c for c in COUNT_INPUTS if c in sheet]
    samples = samples.merge(sheet[["sample_id", *counting]], on="sample_id", how="left")
    samples["qc_verdict"] = samples["sample_id"].map(verdict).fillna("")
    states = assign_states(samples, cfg)
    patient_info = patient_info_from_sheet(sheet)
    patients = summarize_patients(states, cfg, patient_info)
    kinetics = car_kinetics(used, cfg["limits"]["lod_events"])
    patients = patients.drop(columns=CAR_COLUMNS, errors="ignore").merge(
        kinetics, on="patient_id", how="left"
    )[PATIENT_COLUMNS]
    km, excluded = km_table(patients)
    with_stats = set(stats["sample_id"])
    missing = [
        s for s in sheet["sample_id"] if s not in with_stats and s not in set(failed["sample_id"])
    ]
    summary = {
        "n_patients": int(len(patients)),
        "n_reconstituted": int(patients["reconstituted"].sum()),
        "n_censored": int(patients["censored"].sum()),
        "n_never_depleted": sum(e["reason"] == "never depleted" for e in excluded),
        "median_days_to_reconstitution": km_median(km),
        # the median's 95% interval: where the band's low and high curves cross 0.5
        "median_days_to_reconstitution_ci": [
            km_median(km, "still_aplastic_low"),
            km_median(km, "still_aplastic_high"),
        ],
        "n_samples_used": int(len(states)),
        "excluded_from_km": excluded,
        "failed_samples": _records(failed, ["sample_id", "patient_id", "stage", "error"]),
        "excluded_failed_qc": qc_excluded,
        "samples_without_stats": missing,
        "definitions": {
            **definitions(cfg),
            **({"gating_template": f"sha256 {template_sha256[:12]}"} if template_sha256 else {}),
        },
    }
    export = cohort_export(patients, cfg, failed, template_sha256)
    return LongitudinalResult(pop_stats, states, patients, km, summary, export)


def cohort_export(
    patients: pd.DataFrame,
    cfg: Mapping,
    failed: pd.DataFrame | None = None,
    template_sha256: str = "",
) -> pd.DataFrame:
    """One row per patient for pooling across centres, definitions as def_* columns (every
    column is described in results.EXPORT_DICTIONARY, written beside the export)."""
    defs = definitions(cfg)
    out = patients[[c for c in EXPORT_COLUMNS if c in PATIENT_COLUMNS]].copy()
    n_failed = (failed["patient_id"].value_counts() if failed is not None and len(failed)
                else pd.Series(dtype=int))  # fmt: skip
    out["n_failed_samples"] = out["patient_id"].map(n_failed).fillna(0).astype(int)
    out["reconstitution_interval"] = [
        f"({_day(a)}, {_day(r)}]" if rec and np.isfinite(a) else ""
        for a, r, rec in zip(
            patients["last_aplastic_day"], patients["reconstitution_day"],
            patients["reconstituted"], strict=True,
        )
    ]  # fmt: skip
    out["days_to_reconstitution_or_censoring"] = np.where(
        patients["reconstituted"],
        patients["reconstitution_day"],
        np.where(patients["censored"], patients["last_followup_day"], np.nan),
    )
    out["def_aplasia_pct_lymphocytes"] = cfg["aplasia_pct_lymphocytes"]
    out["def_aplasia_cells_per_ul"] = cfg["aplasia_cells_per_ul"]
    out["def_baseline_rule"] = defs["baseline"]
    out["def_confirmation_rule"] = confirmation_rule(cfg)
    out["def_reconstitution_rule"] = cfg["reconstitution_rule"]
    out["def_phenotype_rule"] = defs["phenotype_at_return"]
    out["def_memory_return_fraction"] = cfg["memory_return_fraction"]
    out["def_memory_flag_rule"] = defs["memory_return_rule"]
    out["def_lod_events"] = cfg["limits"]["lod_events"]
    out["def_lloq_events"] = cfg["limits"]["lloq_events"]
    out["def_limits_source"] = cfg["limits"]["source"]
    out["def_reference_ranges_source"] = cfg["reference_ranges"]["source"]
    out["centre"] = cfg["centre"]
    out["gating_template_sha256"] = template_sha256
    out["cytopipe_version"] = __version__
    return out[EXPORT_COLUMNS]


def _day(value: float) -> str:
    return f"{value:g}" if np.isfinite(value) else ""


def _check_stats(stats: pd.DataFrame) -> pd.DataFrame:
    needed = ["sample_id", "population", "count", "pct_lymphocytes"]
    missing = [c for c in needed if c not in stats]
    if missing:
        raise CytopipeError(
            f"sample statistics lack column(s) {', '.join(missing)}",
            hint="regenerate tables/sample_stats.tsv with this cytopipe version",
        )
    stats = stats.copy()
    for name in ("count", "pct_lymphocytes"):
        values = pd.to_numeric(stats[name], errors="coerce")
        bad = values.isna() & stats[name].notna() & (stats[name].astype(str) != "")
        if bad.any():
            raise CytopipeError(
                f"sample statistics column {name!r} has non-numeric value "
                f"{stats.loc[bad, name].iloc[0]!r} (sample {stats.loc[bad, 'sample_id'].iloc[0]})",
                hint="regenerate tables/sample_stats.tsv",
            )
        stats[name] = values
    if "flag" in stats:
        stats["flag"] = stats["flag"].fillna("").astype(str)
    return stats


def _status_frame(status: pd.DataFrame | None, sheet: pd.DataFrame) -> pd.DataFrame:
    if status is None or not len(status):
        status = pd.DataFrame({"sample_id": sheet["sample_id"]})
    status = status.copy()
    for name, default in (("status", "ok"), ("qc_verdict", ""), ("stage", ""), ("error", "")):
        if name not in status:
            status[name] = default
        status[name] = status[name].fillna(default).astype(str)
    if "patient_id" not in status:
        status["patient_id"] = status["sample_id"].map(sheet.set_index("sample_id")["patient_id"])
    return status


def _empty_samples() -> pd.DataFrame:
    columns = ["sample_id", "patient_id", "day", "age_years", "disease", "b_cells", "lymphocytes"]
    columns += ["b_pct_lymphocytes", "b_cells_per_ul", "abs_method", "cd20_pct_lymphocytes"]
    columns += ["plasmablast_pct_b", *SUBSETS, "gate_flags"]
    frame = pd.DataFrame(columns=columns)
    for name in columns:
        if name not in ("sample_id", "patient_id", "disease", "abs_method", "gate_flags"):
            frame[name] = frame[name].astype(float)
    return frame


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    present = [c for c in columns if c in frame]
    return [
        {k: (None if pd.isna(v) else v) for k, v in rec.items()}
        for rec in frame[present].to_dict("records")
    ]
