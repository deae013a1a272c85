"""Longitudinal B-cell aplasia and reconstitution after CD19 CAR-T, per timepoint and per patient.

Paediatric CAR-T cohorts in autoimmunity are small and only comparable when every centre uses the
same definitions, so the definitions are implemented exactly as below, are configurable under
`longitudinal:` in config/config.yaml, and are written into every output (`definitions()`).

Definitions (defaults in brackets):
- Aplasia at a timepoint: CD19+ B cells (population `b_cells`) below `aplasia_pct_lymphocytes`
  [1.0] % of lymphocytes, OR below `aplasia_cells_per_ul` [10] cells/uL when an absolute count is
  known. Below EITHER threshold is aplasia: a lymphopenic patient with 2 % B cells of 300
  lymphocytes/uL has 6 B cells/uL and is aplastic by count. When neither value can be computed
  (no b_cells population, no lymphocytes) the timepoint is "unknown" and ignored by the episode
  logic (listed in `note`).
- Baseline: samples with day < 0. Day 0 (the infusion day) counts as post-infusion.
- States of post-infusion timepoints, in day order:
  * "aplasia": below threshold; the first such timepoint starts the aplasia episode.
  * "not_depleted": at/above threshold before any aplasia was seen.
  * "reconstituted": at/above threshold after aplasia, confirmed by the next classifiable
    timepoint also being at/above threshold (`confirm_with_next` [true]). When there is no next
    timepoint the reconstitution is accepted unconfirmed (note "unconfirmed_last_timepoint") as
    DESIGN.md says "confirmed by the next timepoint when one exists". Later at/above timepoints
    stay "reconstituted".
  * An at/above timepoint inside aplasia whose next timepoint is below again is NOT a
    reconstitution: it keeps state "aplasia" with below_threshold False and note
    "unconfirmed_blip", and the patient gets a flag.
  * A below-threshold timepoint after reconstitution is "aplasia" again (note
    "below_threshold_after_reconstitution", patient flag); returning above it needs confirmation
    again. The patient-level episode is the FIRST one.
- Per patient: aplasia_start_day = first post-infusion timepoint below threshold;
  reconstitution_day = day of the first confirmed at/above timepoint (days since infusion);
  aplasia_end_day = reconstitution_day, or last follow-up when censored; aplasia_duration_days =
  aplasia_end_day - aplasia_start_day; censored = aplasia began and follow-up ended before
  reconstitution. The baseline is the last pre-infusion sample.
- Phenotype of returning B cells at the reconstitution timepoint, as fractions of b_cells:
  naive/transitional = b_naive (the IgD+CD27- quadrant, which contains the CD24hi CD38hi
  transitional cells; b_transitional is used only when b_naive is missing), memory = unswitched +
  switched memory, plasmablast = plasmablasts; the dominant class is `phenotype_at_return`,
  "not evaluable" when every fraction is missing or 0 (empty when B cells never returned).
- flag_memory_return: at any reconstituted timepoint, (switched memory + plasmablasts) / b_cells
  exceeds `memory_return_fraction` [0.25] OR exceeds the same fraction at baseline (only when the
  baseline itself was not below the aplasia threshold, e.g. after prior rituximab, because a few
  residual cells give no meaningful fraction); the flag text says which ("possible return of
  disease-driving B-cell clones").
- Age reference band: the band of `reference_ranges.bands` with min_age <= age_years < max_age
  (age at sampling); b_cells_per_ul is "below"/"within"/"above" [low, high] or "unknown".
- Kaplan-Meier of time to reconstitution, time origin = infusion (day 0): event = reconstitution
  at reconstitution_day, censored at last follow-up when follow-up ended in aplasia. Patients
  never depleted (or without post-infusion data) are excluded and listed in cohort_summary.json.
- cohort_export.csv carries the definitions as COLUMNS (def_*, cytopipe_version) on every row,
  not a comment block, so rows pooled from several centres keep the definitions they were computed
  with and any CSV reader can load the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cytopipe import __version__
from cytopipe.atomic import atomic_path, write_json
from cytopipe.clinical.counts import NONE, add_absolute_counts
from cytopipe.errors import ConfigError, CytopipeError

BASELINE, APLASIA, RECONSTITUTED, NOT_DEPLETED, UNKNOWN = (
    "baseline",
    "aplasia",
    "reconstituted",
    "not_depleted",
    "unknown",
)
NOTE_BLIP = "unconfirmed_blip"
NOTE_LAST = "unconfirmed_last_timepoint"
NOTE_AGAIN = "below_threshold_after_reconstitution"
NOTE_NO_B = "b_cells_unavailable"
DAYS_PER_YEAR = 365.25
MEMORY_FLAG = "possible return of disease-driving B-cell clones"
NOT_EVALUABLE = "not evaluable"  # phenotype_at_return when no subset fraction is above 0

DEFAULT_REFERENCE_RANGES: dict[str, Any] = {
    "source": (
        "Shearer WT et al. Lymphocyte subsets in healthy children from birth through 18 years of "
        "age: the Pediatric AIDS Clinical Trials Group P1009 study. J Allergy Clin Immunol "
        "2003;112:973-80 (CD19+ cells/uL, 10th-90th percentile, as commonly cited)"
    ),
    "unit": "cells_per_ul",
    "bands": [
        {"min_age": 0.0, "max_age": 0.25, "low": 300, "high": 2000},
        {"min_age": 0.25, "max_age": 0.5, "low": 430, "high": 3000},
        {"min_age": 0.5, "max_age": 1.0, "low": 610, "high": 2600},
        {"min_age": 1.0, "max_age": 2.0, "low": 720, "high": 2600},
        {"min_age": 2.0, "max_age": 6.0, "low": 390, "high": 1400},
        {"min_age": 6.0, "max_age": 12.0, "low": 270, "high": 860},
        {"min_age": 12.0, "max_age": 18.0, "low": 110, "high": 570},
        {"min_age": 18.0, "max_age": 200.0, "low": 110, "high": 570},
    ],
}
DEFAULTS: dict[str, Any] = {
    "aplasia_pct_lymphocytes": 1.0,
    "aplasia_cells_per_ul": 10.0,
    "confirm_with_next": True,
    "memory_return_fraction": 0.25,
    "skip_failed_qc": False,
    "reference_ranges": DEFAULT_REFERENCE_RANGES,
}

SAMPLE_STATE_COLUMNS = [
    "patient_id",
    "sample_id",
    "day",
    "age_years",
    "b_cells",
    "lymphocytes",
    "b_pct_lymphocytes",
    "b_cells_per_ul",
    "abs_method",
    "cd20_pct_lymphocytes",
    "plasmablast_pct_b",
    "frac_naive",
    "frac_transitional",
    "frac_unswitched_memory",
    "frac_switched_memory",
    "frac_double_negative",
    "frac_plasmablast",
    "state",
    "below_threshold",
    "ref_low",
    "ref_high",
    "ref_source_band",
    "ref_position",
    "qc_verdict",
    # beyond the contract: why a state is special, and which gates were flagged
    "note",
    "gate_flags",
]
PATIENT_COLUMNS = [
    "patient_id",
    "disease",
    "age_at_infusion",
    "n_samples",
    "baseline_b_pct",
    "baseline_b_per_ul",
    "aplasia_start_day",
    "aplasia_end_day",
    "aplasia_duration_days",
    "reconstitution_day",
    "reconstituted",
    "censored",
    "last_followup_day",
    "phenotype_at_return",
    "frac_naive_transitional_at_return",
    "frac_memory_at_return",
    "frac_plasmablast_at_return",
    "flag_memory_return",
    "flags",
]
KM_COLUMNS = ["day", "at_risk", "events", "censored", "still_aplastic"]
EXPORT_COLUMNS = [
    "patient_id",
    "disease",
    "age_at_infusion",
    "baseline_b_pct",
    "baseline_b_per_ul",
    "aplasia_start_day",
    "days_to_reconstitution_or_censoring",
    "reconstituted",
    "phenotype_at_return",
    "flags",
    "def_aplasia_pct_lymphocytes",
    "def_aplasia_cells_per_ul",
    "def_confirmation_rule",
    "def_memory_return_fraction",
    "def_reference_ranges_source",
    "cytopipe_version",
]
SUBSETS = {
    "frac_naive": "b_naive",
    "frac_transitional": "b_transitional",
    "frac_unswitched_memory": "b_unswitched_memory",
    "frac_switched_memory": "b_switched_memory",
    "frac_double_negative": "b_double_negative",
    "frac_plasmablast": "plasmablasts",
}


# ----------------------------------------------------------------------------- configuration


def validate_config(cfg: Mapping | None) -> dict:
    """The `longitudinal` mapping with defaults applied; ConfigError naming the bad key.

    Unknown keys are errors: a misspelt threshold silently falling back to its default would
    change every patient's state without anyone noticing.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        _config_error("longitudinal", "must be a mapping of settings")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        _config_error(
            f"longitudinal.{unknown[0]}", f"unknown setting (known: {', '.join(DEFAULTS)})"
        )
    out = {**DEFAULTS, **cfg}
    out["aplasia_pct_lymphocytes"] = _number(out, "aplasia_pct_lymphocytes", 0.0, 100.0)
    out["aplasia_cells_per_ul"] = _number(out, "aplasia_cells_per_ul", 0.0, math.inf)
    out["memory_return_fraction"] = _number(out, "memory_return_fraction", 0.0, 1.0)
    for key in ("confirm_with_next", "skip_failed_qc"):
        if not isinstance(out[key], bool):
            _config_error(f"longitudinal.{key}", f"must be true or false, not {out[key]!r}")
    out["reference_ranges"] = _validate_reference_ranges(out["reference_ranges"])
    return out


def _config_error(key: str, what: str) -> None:
    raise ConfigError(
        f"config key '{key}': {what}", hint="fix it under `longitudinal:` in config/config.yaml"
    )


def _number(cfg: Mapping, key: str, low: float, high: float, prefix: str = "longitudinal") -> float:
    value = cfg.get(key)
    name = f"{prefix}.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _config_error(name, f"must be a number, not {value!r}")
    if not low <= value <= high:
        _config_error(name, f"must be between {low:g} and {high:g}, not {value!r}")
    return float(value)


def _validate_reference_ranges(ranges: Any) -> dict:
    key = "longitudinal.reference_ranges"
    if not isinstance(ranges, Mapping):
        _config_error(key, "must be a mapping with source, unit and bands")
    source = ranges.get("source")
    if not isinstance(source, str) or not source.strip():
        _config_error(f"{key}.source", "must name where the reference ranges come from")
    unit = ranges.get("unit", "cells_per_ul")
    if unit != "cells_per_ul":
        _config_error(f"{key}.unit", f"only cells_per_ul is supported, not {unit!r}")
    bands = ranges.get("bands")
    if not isinstance(bands, list) or not bands:
        _config_error(f"{key}.bands", "must be a non-empty list of {min_age, max_age, low, high}")
    clean = []
    for i, band in enumerate(bands):
        where = f"{key}.bands[{i}]"
        if not isinstance(band, Mapping):
            _config_error(where, "must be a mapping with min_age, max_age, low, high")
        values = {k: _number(band, k, 0.0, math.inf, prefix=where) for k in ("min_age", "max_age")}
        values.update({k: _number(band, k, 0.0, math.inf, prefix=where) for k in ("low", "high")})
        if values["min_age"] >= values["max_age"]:
            _config_error(f"{where}.max_age", "must be greater than min_age")
        if values["low"] > values["high"]:
            _config_error(f"{where}.high", "must be at least low")
        label = band.get("label")
        values["label"] = str(label) if label else band_label(values["min_age"], values["max_age"])
        clean.append(values)
    clean.sort(key=lambda b: b["min_age"])
    for previous, band in zip(clean, clean[1:], strict=False):
        if band["min_age"] < previous["max_age"]:
            _config_error(
                f"{key}.bands",
                f"bands {previous['label']} and {band['label']} overlap",
            )
    return {"source": source, "unit": unit, "bands": clean}


def band_label(min_age: float, max_age: float) -> str:
    """Human label: months below one year ("3-6 mo"), years above ("12-18 y", "18+ y")."""
    if max_age <= 1.0:
        return f"{_fmt(min_age * 12)}-{_fmt(max_age * 12)} mo"
    if max_age >= 100:
        return f"{_fmt(min_age)}+ y"
    return f"{_fmt(min_age)}-{_fmt(max_age)} y"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def confirmation_rule(cfg: Mapping) -> str:
    if cfg["confirm_with_next"]:
        return (
            "first post-infusion timepoint at or above threshold after aplasia, confirmed by the "
            "next timepoint also at or above threshold; accepted unconfirmed when it is the last "
            "timepoint"
        )
    return "first post-infusion timepoint at or above threshold after aplasia (no confirmation)"


def definitions(cfg: Mapping) -> dict:
    """Every definition an output depends on, for cohort_summary.json and the reports."""
    pct, per_ul = cfg["aplasia_pct_lymphocytes"], cfg["aplasia_cells_per_ul"]
    ranges = cfg["reference_ranges"]
    return {
        "aplasia": (
            f"CD19+ B cells (b_cells) < {pct:g}% of lymphocytes, or < {per_ul:g} cells/uL when an "
            "absolute count is known (below either threshold = aplasia)"
        ),
        "aplasia_pct_lymphocytes": pct,
        "aplasia_cells_per_ul": per_ul,
        "baseline": "samples with day < 0; day 0 (infusion) counts as post-infusion",
        "reconstitution": confirmation_rule(cfg),
        "confirm_with_next": cfg["confirm_with_next"],
        "unconfirmed_blip": (
            "an at/above-threshold timepoint followed by aplasia stays in aplasia (note "
            "unconfirmed_blip)"
        ),
        "aplasia_duration": (
            "reconstitution_day - aplasia_start_day, or last follow-up - aplasia_start_day when "
            "censored"
        ),
        "phenotype_at_return": (
            "fractions of b_cells at the reconstitution timepoint: naive/transitional = b_naive "
            "(IgD+CD27-, contains transitional), memory = unswitched + switched memory, "
            "plasmablast = plasmablasts; the largest is reported, 'not evaluable' when every "
            "fraction is missing or 0"
        ),
        "memory_return_fraction": cfg["memory_return_fraction"],
        "memory_return_rule": (
            f"flag when (switched memory + plasmablasts) / b_cells > "
            f"{cfg['memory_return_fraction']:g} or > the baseline fraction at any reconstituted "
            "timepoint"
        ),
        "absolute_counts": (
            "single platform (cell events / bead events x beads per test / volume uL) when bead "
            "data is complete, else dual platform (% of lymphocytes / 100 x absolute lymphocytes)"
        ),
        "kaplan_meier": (
            "time from infusion to reconstitution; censored at last follow-up when follow-up "
            "ended in aplasia; never-depleted patients excluded"
        ),
        "reference_ranges": {
            "source": ranges["source"],
            "unit": ranges["unit"],
            "bands": [
                {k: band[k] for k in ("label", "min_age", "max_age", "low", "high")}
                for band in ranges["bands"]
            ],
            "rule": "band with min_age <= age at sampling < max_age",
        },
        "skip_failed_qc": cfg["skip_failed_qc"],
        "cytopipe_version": __version__,
    }


# ----------------------------------------------------------------------------- per timepoint


def reference_bands(age_years: np.ndarray, ranges: Mapping) -> pd.DataFrame:
    """ref_low, ref_high, ref_source_band for each age (NaN/"" outside every band or unknown)."""
    ages = np.asarray(age_years, dtype=float)
    bands = ranges["bands"]
    starts = np.array([b["min_age"] for b in bands])
    ends = np.array([b["max_age"] for b in bands])
    idx = np.searchsorted(starts, np.nan_to_num(ages, nan=-1.0), side="right") - 1
    safe = np.clip(idx, 0, len(bands) - 1)
    found = np.isfinite(ages) & (idx >= 0) & (ages < ends[safe])
    lows = np.array([b["low"] for b in bands], dtype=float)
    highs = np.array([b["high"] for b in bands], dtype=float)
    labels = np.array([b["label"] for b in bands], dtype=object)
    return pd.DataFrame(
        {
            "ref_low": np.where(found, lows[safe], np.nan),
            "ref_high": np.where(found, highs[safe], np.nan),
            "ref_source_band": np.where(found, labels[safe], ""),
        }
    )


def reference_position(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """'below' / 'within' / 'above' the band, 'unknown' when the value or the band is missing."""
    value, low, high = (np.asarray(a, dtype=float) for a in (value, low, high))
    known = np.isfinite(value) & np.isfinite(low) & np.isfinite(high)
    out = np.where(value < low, "below", np.where(value > high, "above", "within"))
    return np.where(known, out, "unknown").astype(object)


def below_threshold(
    pct_lymphocytes: np.ndarray, cells_per_ul: np.ndarray, cfg: Mapping
) -> pd.Series:
    """True/False per timepoint (pandas boolean with <NA> when neither value is known)."""
    pct, per_ul = (np.asarray(a, dtype=float) for a in (pct_lymphocytes, cells_per_ul))
    below = (pct < cfg["aplasia_pct_lymphocytes"]) | (per_ul < cfg["aplasia_cells_per_ul"])
    known = np.isfinite(pct) | np.isfinite(per_ul)
    return pd.Series(pd.array(np.where(known, below, False), dtype="boolean")).where(known)


def classify_timepoints(
    days: np.ndarray, below: list[bool | None], *, confirm_with_next: bool = True
) -> tuple[list[str], list[str]]:
    """States and notes for ONE patient's timepoints sorted by day (see module docstring)."""
    n = len(days)
    states, notes = [""] * n, [""] * n
    post = []
    for i in range(n):
        if days[i] < 0:
            states[i] = BASELINE
        elif below[i] is None:
            states[i], notes[i] = UNKNOWN, NOTE_NO_B
        else:
            post.append(i)
    phase = "before"  # before aplasia -> "aplasia" -> "reconstituted" (-> "aplasia" ...)
    for k, i in enumerate(post):
        nxt = post[k + 1] if k + 1 < len(post) else None
        if below[i]:
            states[i] = APLASIA
            if phase == "reconstituted":
                notes[i] = NOTE_AGAIN
            phase = "aplasia"
        elif phase == "before":
            states[i] = NOT_DEPLETED
        elif phase == "reconstituted":
            states[i] = RECONSTITUTED
        elif not confirm_with_next or (nxt is not None and not below[nxt]):
            states[i], phase = RECONSTITUTED, "reconstituted"
        elif nxt is None:
            states[i], notes[i], phase = RECONSTITUTED, NOTE_LAST, "reconstituted"
        else:
            states[i], notes[i] = APLASIA, NOTE_BLIP
    return states, notes


def sample_table(population_stats: pd.DataFrame) -> pd.DataFrame:
    """One row per sample with the B-cell numbers the states need (wide form of the stats)."""
    pop = population_stats
    if pop.duplicated(["sample_id", "population"]).any():
        dup = pop.loc[pop.duplicated(["sample_id", "population"]), ["sample_id", "population"]]
        first = dup.iloc[0]
        raise CytopipeError(
            f"sample statistics list population {first['population']!r} twice for sample "
            f"{first['sample_id']!r}",
            hint="regenerate tables/sample_stats.tsv from the per-sample stats",
        )
    meta = pop.groupby("sample_id", sort=False)[
        ["patient_id", "day", "age_years", "disease"]
    ].first()
    count = pop.pivot(index="sample_id", columns="population", values="count")
    pct_l = pop.pivot(index="sample_id", columns="population", values="pct_lymphocytes")
    per_ul = pop.pivot(index="sample_id", columns="population", values="cells_per_ul")
    method = pop.pivot(index="sample_id", columns="population", values="abs_method")

    def col(frame: pd.DataFrame, name: str) -> pd.Series:
        series = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        return pd.to_numeric(series, errors="coerce").reindex(meta.index)

    out = meta.copy()
    b, lymph = col(count, "b_cells"), col(count, "lymphocytes")
    out["b_cells"], out["lymphocytes"] = b, lymph
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = (b / lymph.where(lymph > 0)) * 100.0
        out["b_pct_lymphocytes"] = col(pct_l, "b_cells").fillna(computed)
        out["b_cells_per_ul"] = col(per_ul, "b_cells")
        abs_method = (
            method["b_cells"] if "b_cells" in method else pd.Series(NONE, index=method.index)
        )
        out["abs_method"] = abs_method.reindex(meta.index).fillna(NONE)
        cd20 = col(pct_l, "b_cd20pos")
        out["cd20_pct_lymphocytes"] = cd20.fillna(
            col(count, "b_cd20pos") / lymph.where(lymph > 0) * 100
        )
        b_pos = b.where(b > 0)
        out["plasmablast_pct_b"] = col(count, "plasmablasts") / b_pos * 100.0
        for column, population in SUBSETS.items():
            out[column] = col(count, population) / b_pos
    flag = pop["flag"].fillna("").astype(str) if "flag" in pop else pd.Series("", index=pop.index)
    flagged = pop[flag != ""]
    gate_flags = (
        (flagged["population"] + ":" + flag[flag != ""]).groupby(flagged["sample_id"]).agg(",".join)
    )
    out["gate_flags"] = gate_flags.reindex(out.index).fillna("")
    return out.reset_index()


def assign_states(samples: pd.DataFrame, cfg: Mapping) -> pd.DataFrame:
    """sample_states: per-sample B-cell numbers + state, threshold, reference band and position."""
    cfg = validate_config(cfg)
    frame = samples.sort_values(["patient_id", "day", "sample_id"], kind="stable").reset_index(
        drop=True
    )
    below = below_threshold(frame["b_pct_lymphocytes"], frame["b_cells_per_ul"], cfg)
    frame["below_threshold"] = below.array  # nullable: <NA> when the state is unknown
    states = pd.Series("", index=frame.index, dtype=object)
    notes = pd.Series("", index=frame.index, dtype=object)
    for _, idx in frame.groupby("patient_id", sort=False).groups.items():
        flags = [None if pd.isna(v) else bool(v) for v in below.loc[idx]]
        s, n = classify_timepoints(
            frame.loc[idx, "day"].to_numpy(dtype=float),
            flags,
            confirm_with_next=cfg["confirm_with_next"],
        )
        states.loc[idx], notes.loc[idx] = s, n
    frame["state"], frame["note"] = states, notes
    bands = reference_bands(frame["age_years"].to_numpy(dtype=float), cfg["reference_ranges"])
    frame[bands.columns] = bands.to_numpy()
    for name in ("ref_low", "ref_high"):
        frame[name] = frame[name].astype(float)
    frame["ref_position"] = reference_position(
        frame["b_cells_per_ul"], frame["ref_low"], frame["ref_high"]
    )
    for name in ("note", "gate_flags", "qc_verdict"):
        if name not in frame:
            frame[name] = ""
    return frame[SAMPLE_STATE_COLUMNS]


# ----------------------------------------------------------------------------- per patient


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
    for name in ("reconstituted", "censored", "flag_memory_return"):
        frame[name] = frame[name].astype(bool)
    return frame


def _patient_row(pid: str, group: pd.DataFrame, cfg: Mapping) -> dict:
    group = group.sort_values("day", kind="stable")
    day = group["day"].to_numpy(dtype=float)
    state = group["state"].to_numpy()
    flags: list[str] = []
    baseline = group[state == BASELINE]
    base = baseline.iloc[-1] if len(baseline) else None
    known = group[(state != UNKNOWN) & (state != BASELINE)]
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
    notes = group["note"].to_numpy()
    aplasia = np.flatnonzero((state == APLASIA) & (notes != NOTE_BLIP))
    recon = np.flatnonzero(state == RECONSTITUTED)
    start = day[aplasia[0]] if len(aplasia) else np.nan
    recon_day = day[recon[0]] if len(recon) else np.nan
    reconstituted = bool(len(recon))
    censored = bool(len(aplasia)) and not reconstituted
    end = recon_day if reconstituted else (row["last_followup_day"] if censored else np.nan)
    row.update(
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
            f"unconfirmed rise above threshold at day {_fmt(day[i])} (next timepoint in aplasia)"
        )
    if reconstituted and notes[recon[0]] == NOTE_LAST:
        flags.append("reconstitution on the last timepoint, not yet confirmed by a later sample")
    for i in np.flatnonzero(notes == NOTE_AGAIN):
        flags.append(f"B cells below threshold again at day {_fmt(day[i])} after reconstitution")
    for i in np.flatnonzero(notes == NOTE_NO_B):
        flags.append(f"B-cell state unknown at day {_fmt(day[i])} (no b_cells/lymphocytes)")
    row.update(_phenotype(group.iloc[recon[0]] if reconstituted else None))
    row["flag_memory_return"], memory_flag = _memory_return(group, base, cfg)
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


def _memory_return(group: pd.DataFrame, base: pd.Series | None, cfg: Mapping) -> tuple[bool, str]:
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
            return True, (
                f"{MEMORY_FLAG}: switched memory + plasmablasts {frac:.0%} of B cells at day "
                f"{_fmt(float(row['day']))} ({' and '.join(reasons)})"
            )
    return False, ""


# ----------------------------------------------------------------------------- Kaplan-Meier


def kaplan_meier(times: np.ndarray, observed: np.ndarray) -> pd.DataFrame:
    """Product-limit estimate at each distinct time: day, at_risk, events, censored,
    still_aplastic (= S(t), the fraction not yet reconstituted).

    Censorings tied with events count as at risk at that time (events first), the usual
    convention, so a patient censored on day t was still observed on day t.
    """
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.shape != observed.shape or not np.all(np.isfinite(times)):
        raise ValueError("times and observed must be finite arrays of the same shape")
    grid = np.unique(times)
    at_risk = len(times) - np.searchsorted(np.sort(times), grid, side="left")
    events = np.array([np.sum(observed & (times == t)) for t in grid], dtype=int)
    censored = np.array([np.sum(~observed & (times == t)) for t in grid], dtype=int)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - events / at_risk, 1.0)
    return pd.DataFrame(
        {
            "day": grid,
            "at_risk": at_risk.astype(int),
            "events": events,
            "censored": censored,
            "still_aplastic": np.cumprod(factor),
        },
        columns=KM_COLUMNS,
    )


def km_median(km: pd.DataFrame) -> float | None:
    """First time at which S(t) <= 0.5; None when the curve never gets there."""
    reached = km.loc[km["still_aplastic"] <= 0.5 + 1e-12, "day"]
    return float(reached.iloc[0]) if len(reached) else None


def km_table(patients: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """km.tsv (with an origin row at day 0, S=1) and the patients left out, with reasons."""
    included = patients["reconstituted"] | patients["censored"]
    excluded = [
        {"patient_id": row.patient_id, "reason": _exclusion_reason(row)}
        for row in patients[~included].itertuples()
    ]
    sub = patients[included]
    times = np.where(sub["reconstituted"], sub["reconstitution_day"], sub["last_followup_day"])
    km = kaplan_meier(times.astype(float), sub["reconstituted"].to_numpy(dtype=bool))
    if not len(km) or km["day"].iloc[0] > 0:
        origin = pd.DataFrame(
            [{"day": 0.0, "at_risk": len(sub), "events": 0, "censored": 0, "still_aplastic": 1.0}]
        )
        km = pd.concat([origin, km], ignore_index=True) if len(km) else origin
    return km[KM_COLUMNS], excluded


def _exclusion_reason(row: Any) -> str:
    if row.n_samples == 0:
        return "no usable samples"
    if "never depleted" in row.flags:
        return "never depleted"
    return "no classifiable post-infusion samples"


# ----------------------------------------------------------------------------- whole cohort


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
) -> LongitudinalResult:
    """All longitudinal tables from the combined sample stats, the sheet and the sample status.

    Failed samples (status "failed") never have stats and are listed in the summary; with
    `skip_failed_qc` samples whose QC verdict is "fail" are dropped from the states as well.
    """
    cfg = validate_config(cfg)
    stats = _check_stats(stats)
    status = _status_frame(status, sheet)
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
    samples["qc_verdict"] = samples["sample_id"].map(verdict).fillna("")
    states = assign_states(samples, cfg)
    patient_info = _patient_info(sheet)
    patients = summarize_patients(states, cfg, patient_info)
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
        "n_samples_used": int(len(states)),
        "excluded_from_km": excluded,
        "failed_samples": _records(failed, ["sample_id", "patient_id", "stage", "error"]),
        "excluded_failed_qc": qc_excluded,
        "samples_without_stats": missing,
        "definitions": definitions(cfg),
    }
    export = cohort_export(patients, cfg)
    return LongitudinalResult(pop_stats, states, patients, km, summary, export)


def cohort_export(patients: pd.DataFrame, cfg: Mapping) -> pd.DataFrame:
    """One row per patient for pooling across centres, definitions as def_* columns."""
    out = patients[[c for c in EXPORT_COLUMNS if c in PATIENT_COLUMNS]].copy()
    out["days_to_reconstitution_or_censoring"] = np.where(
        patients["reconstituted"],
        patients["reconstitution_day"],
        np.where(patients["censored"], patients["last_followup_day"], np.nan),
    )
    out["def_aplasia_pct_lymphocytes"] = cfg["aplasia_pct_lymphocytes"]
    out["def_aplasia_cells_per_ul"] = cfg["aplasia_cells_per_ul"]
    out["def_confirmation_rule"] = confirmation_rule(cfg)
    out["def_memory_return_fraction"] = cfg["memory_return_fraction"]
    out["def_reference_ranges_source"] = cfg["reference_ranges"]["source"]
    out["cytopipe_version"] = __version__
    return out[EXPORT_COLUMNS]


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


def _patient_info(sheet: pd.DataFrame) -> pd.DataFrame:
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


# ----------------------------------------------------------------------------- output files

# Columns holding whole days or counts: written as integers ("28", not "28.0") when whole.
_INTEGER_LIKE = {
    "day",
    "b_cells",
    "lymphocytes",
    "n_samples",
    "aplasia_start_day",
    "aplasia_end_day",
    "aplasia_duration_days",
    "reconstitution_day",
    "last_followup_day",
    "days_to_reconstitution_or_censoring",
    "at_risk",
    "events",
    "censored",
    "count",
}


def _integers_where_whole(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for name in _INTEGER_LIKE & set(frame.columns):
        values = frame[name]
        if values.dtype == bool or not pd.api.types.is_numeric_dtype(values):
            continue
        finite = values.dropna()
        if (finite == np.round(finite)).all():
            frame[name] = values.astype("Int64")
    return frame


def write_table(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sep: str = "\t",
    float_format: str | None = None,
) -> None:
    """Write a table atomically (temp file in the same folder, then os.replace), so a killed
    job never leaves a half-written table that the next rule would trust. Whole-number day and
    count columns are written as integers; empty cells mean "not known"."""
    text = _integers_where_whole(frame).to_csv(
        sep=sep, index=False, na_rep="", lineterminator="\n", float_format=float_format
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# Derived tables are read by people: 6 significant digits (0.0351, 93.9996, 12.2) is far more
# than flow cytometry resolves. population_stats keeps the upstream statistics unrounded.
DERIVED_FLOAT_FORMAT = "%.6g"


OUTPUT_FILES = (
    "population_stats.tsv",
    "sample_states.tsv",
    "patients.tsv",
    "km.tsv",
    "cohort_summary.json",
    "cohort_export.csv",
)


def write_outputs(result: LongitudinalResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write the six longitudinal outputs into `out_dir`; returns their paths."""
    out = Path(out_dir)
    paths = [out / name for name in OUTPUT_FILES]
    derived = DERIVED_FLOAT_FORMAT
    write_table(result.population_stats, paths[0])
    write_table(result.sample_states, paths[1], float_format=derived)
    write_table(result.patients, paths[2], float_format=derived)
    write_table(result.km, paths[3], float_format=derived)
    write_json(paths[4], result.summary)
    write_table(result.export, paths[5], sep=",", float_format=derived)
    return paths


# ----------------------------------------------------------------------------- CLI


def read_tsv(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """A TSV written by an earlier step; CytopipeError (not a pandas traceback) when unusable."""
    try:
        return pd.read_csv(path, sep="\t", keep_default_na=True)
    except FileNotFoundError:
        raise CytopipeError(
            f"{what} not found", path=path, hint="run the earlier workflow steps first"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CytopipeError(
            f"{what} is not a readable TSV table ({exc})", path=path, hint="regenerate it"
        ) from None


def longitudinal_settings(cfg: Mapping, source: str | os.PathLike | None = None) -> dict:
    """The validated `longitudinal` section of a whole workflow config."""
    try:
        return validate_config(cfg.get("longitudinal"))
    except ConfigError as exc:
        raise ConfigError(exc.what, path=source, hint=exc.hint) from None
