"""One row per patient (patients.tsv): the aplasia episode, reconstitution, the phenotype of the
returning B cells and the flags a clinician should read first.

Why per patient: the clinical questions ("how long was the aplasia", "did memory B cells come
back") are about the first episode of each patient, with every irregularity (no baseline, a blip
above threshold, aplasia again after reconstitution) written out as a flag rather than hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cytopipe.clinical.definitions import format_number, validate_config
from cytopipe.clinical.states import (
    APLASIA,
    B_GATE_DOUBT,
    BASELINE,
    NOTE_AGAIN,
    NOTE_BLIP,
    NOTE_LAST,
    NOTE_NO_B,
    RECONSTITUTED,
    SUBSET_DOUBT,
    UNKNOWN,
)
from cytopipe.clinical.states import NOT_EVALUABLE as STATE_NOT_EVALUABLE
from cytopipe.results import PATIENT_BOOL_COLUMNS, PATIENT_COLUMNS

DAYS_PER_YEAR = 365.25
MEMORY_FLAG = "possible return of disease-driving B-cell clones"
NOT_EVALUABLE = "not evaluable"  # phenotype_at_return when no subset fraction is above 0


def summarize_patients(
    states: pd.DataFrame, cfg: Mapping, patients: pd.DataFrame | None = None
) -> pd.DataFrame:
    """patients.tsv: one row per patient.

    `patients` (patient_id, disease, age_at_infusion; from the sample sheet) adds the patients
    whose samples all failed, flagged, and supplies disease and age, which the sheet knows even
    for timepoints without statistics.
    """
    cfg = validate_config(cfg)
    rows = {
        pid: _patient_row(pid, group, cfg) for pid, group in states.groupby("patient_id", sort=True)
    }
    if patients is not None:
        for _, info in patients.iterrows():
            pid = info["patient_id"]
            row = rows.setdefault(pid, _patient_row(pid, states.iloc[:0], cfg))
            if not pd.isna(info.get("disease")):
                row["disease"] = info["disease"]
            if pd.isna(row["age_at_infusion"]):
                row["age_at_infusion"] = info.get("age_at_infusion", np.nan)
    frame = pd.DataFrame([rows[p] for p in sorted(rows)], columns=PATIENT_COLUMNS)
    for name in PATIENT_BOOL_COLUMNS:
        frame[name] = frame[name].astype(bool)
    return frame


def _patient_row(pid: str, group: pd.DataFrame, cfg: Mapping) -> dict:
    group = group.sort_values("day", kind="stable")
    day = group["day"].to_numpy(dtype=float)
    state = group["state"].to_numpy()
    flags: list[str] = []
    baseline = group[state == BASELINE]
    base = baseline.iloc[-1] if len(baseline) else None
    # follow-up ends at the last sample that could be classified: a not-evaluable last sample
    # (too few events) must not extend a patient's time in aplasia
    known = group[(state != UNKNOWN) & (state != BASELINE) & (state != STATE_NOT_EVALUABLE)]
    row: dict[str, Any] = {
        "patient_id": pid,
        "disease": _first(group.get("disease")),
        "age_at_infusion": _age_at_infusion(group),
        "n_samples": int(len(group)),
        "baseline_b_pct": np.nan if base is None else base["b_pct_lymphocytes"],
        "baseline_b_per_ul": np.nan if base is None else base["b_cells_per_ul"],
        "last_followup_day": float(known["day"].max()) if len(known) else np.nan,
    }
    if len(group) == 0:
        flags.append("no usable samples (all failed or excluded)")
    elif base is None:
        flags.append("no baseline sample")
    elif not pd.isna(base["below_threshold"]) and bool(base["below_threshold"]):
        flags.append(
            "baseline B cells already below the aplasia threshold (prior B-cell depletion?)"
        )
    # a note may carry doubts after its timepoint rule ('unconfirmed_blip; B-cell gate ...')
    notes_all = group["note"].fillna("").astype(str).to_numpy()
    notes = np.array([n.split("; ")[0] for n in notes_all], dtype=object)
    aplasia = np.flatnonzero((state == APLASIA) & (notes != NOTE_BLIP))
    recon = np.flatnonzero(state == RECONSTITUTED)
    start = day[aplasia[0]] if len(aplasia) else np.nan
    recon_day = day[recon[0]] if len(recon) else np.nan
    reconstituted = bool(len(recon))
    censored = bool(len(aplasia)) and not reconstituted
    end = recon_day if reconstituted else (row["last_followup_day"] if censored else np.nan)
    before = aplasia[day[aplasia] < recon_day] if reconstituted else aplasia
    methods = sorted({str(m) for m in group.get("abs_method", pd.Series(dtype=str)).dropna()})
    row.update(
        last_aplastic_day=day[before[-1]] if len(before) else np.nan,
        counting_method="+".join(methods),
        aplasia_start_day=start,
        aplasia_end_day=end,
        aplasia_duration_days=end - start,
        reconstitution_day=recon_day,
        reconstituted=reconstituted,
        censored=censored,
    )
    if len(group) and not len(known):
        flags.append("no classifiable post-infusion samples")
    elif len(known) and not len(aplasia):
        flags.append(
            "never depleted: B cells at or above threshold at every post-infusion timepoint"
        )
    for i in np.flatnonzero(notes == NOTE_BLIP):
        flags.append(
            f"unconfirmed rise above threshold at day {format_number(day[i])} (next timepoint in aplasia)"
        )
    if reconstituted and notes[recon[0]] == NOTE_LAST:
        flags.append("reconstitution on the last timepoint, not yet confirmed by a later sample")
    for i in np.flatnonzero(notes == NOTE_AGAIN):
        flags.append(
            f"B cells below threshold again at day {format_number(day[i])} after reconstitution"
        )
    for i in np.flatnonzero(notes == NOTE_NO_B):
        flags.append(
            f"B-cell state unknown at day {format_number(day[i])} (no b_cells/lymphocytes)"
        )
    for i, note in enumerate(notes_all):
        for part in note.split("; "):
            if part.startswith((B_GATE_DOUBT, SUBSET_DOUBT)):
                flags.append(f"day {format_number(day[i])}: {part}")
    row.update(_phenotype(group.iloc[recon[0]] if reconstituted else None))
    row["flag_memory_return"], memory_flag, row["flag_memory_return_day"] = _memory_return(
        group, base, cfg
    )
    if memory_flag:
        flags.append(memory_flag)
    row["flags"] = "; ".join(flags)
    return row


def _first(series: pd.Series | None) -> Any:
    if series is None:
        return None
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _age_at_infusion(group: pd.DataFrame) -> float:
    """Age at infusion from age at sampling and days since infusion (baseline row preferred)."""
    age = (
        group["age_years"].to_numpy(dtype=float)
        - group["day"].to_numpy(dtype=float) / DAYS_PER_YEAR
    )
    age = age[np.isfinite(age)]
    return round(float(age[0]), 2) if len(age) else np.nan


def _memory_fraction(row: pd.Series) -> float:
    parts = np.array([row["frac_switched_memory"], row["frac_plasmablast"]], dtype=float)
    return float(np.nansum(parts)) if np.isfinite(parts).any() else np.nan


def _phenotype(row: pd.Series | None) -> dict:
    empty = {
        "phenotype_at_return": "",
        "frac_naive_transitional_at_return": np.nan,
        "frac_memory_at_return": np.nan,
        "frac_plasmablast_at_return": np.nan,
    }
    if row is None:
        return empty
    naive = row["frac_naive"] if np.isfinite(row["frac_naive"]) else row["frac_transitional"]
    memory_parts = np.array(
        [row["frac_unswitched_memory"], row["frac_switched_memory"]], dtype=float
    )
    memory = float(np.nansum(memory_parts)) if np.isfinite(memory_parts).any() else np.nan
    values = {"naive/transitional": naive, "memory": memory, "plasmablast": row["frac_plasmablast"]}
    return {
        "phenotype_at_return": dominant_class(values),
        "frac_naive_transitional_at_return": naive,
        "frac_memory_at_return": memory,
        "frac_plasmablast_at_return": row["frac_plasmablast"],
    }


def dominant_class(fractions: Mapping[str, float]) -> str:
    """The largest B-cell class, or NOT_EVALUABLE when no class holds a cell: with every subset
    unmeasured or at 0 (e.g. failed IgD/CD27 staining) naming a class would be a guess, and the
    first key of the mapping would win every tie at 0."""
    finite = {k: float(v) for k, v in fractions.items() if np.isfinite(v)}
    if not finite or max(finite.values()) <= 0:
        return NOT_EVALUABLE
    return max(finite, key=finite.get)


def _memory_return(
    group: pd.DataFrame, base: pd.Series | None, cfg: Mapping
) -> tuple[bool, str, float]:
    """(flag raised, its text, the day of the sample that raised it: NaN without a flag)."""
    limit = cfg["memory_return_fraction"]
    # an aplastic baseline (prior rituximab) has too few B cells for a meaningful fraction
    usable = (
        base is not None and not pd.isna(base["below_threshold"]) and not base["below_threshold"]
    )
    baseline = _memory_fraction(base) if usable else np.nan
    for _, row in group[group["state"] == RECONSTITUTED].iterrows():
        frac = _memory_fraction(row)
        if not np.isfinite(frac):
            continue
        reasons = []
        if frac > limit:
            reasons.append(f"> {limit:.0%} threshold")
        if np.isfinite(baseline) and frac > baseline:
            reasons.append(f"> baseline {baseline:.0%}")
        if reasons:
            return (
                True,
                f"{MEMORY_FLAG}: switched memory + plasmablasts {frac:.0%} of B cells at day "
                f"{format_number(float(row['day']))} ({' and '.join(reasons)})",
                float(row["day"]),
            )
    return False, "", np.nan


def patient_info_from_sheet(sheet: pd.DataFrame) -> pd.DataFrame:
    """Disease and age at infusion per patient from the sheet (first known value)."""
    nan = pd.Series(np.nan, index=sheet.index)
    disease = sheet["disease"] if "disease" in sheet else nan
    age = pd.to_numeric(sheet["age_years"], errors="coerce") if "age_years" in sheet else nan
    at_infusion = age - pd.to_numeric(sheet["day"], errors="coerce") / DAYS_PER_YEAR
    by = sheet["patient_id"]
    info = pd.DataFrame(
        {
            "disease": disease.groupby(by, sort=True).agg(_first),
            "age_at_infusion": at_infusion.groupby(by, sort=True).first().round(2),
        }
    )
    return info.rename_axis("patient_id").reset_index()
