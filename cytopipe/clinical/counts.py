"""Absolute cell counts (cells/uL) for every population of every sample.

Two methods, as in DESIGN.md "Absolute counts":
- single platform with counting beads (the flow tube alone gives the count):
  cells/uL = cell events / bead events x beads per test / volume (uL)
- dual platform (flow % times a haematology analyser's lymphocyte count):
  cells/uL = (% of lymphocytes / 100) x absolute lymphocytes (cells/uL)

Single platform is preferred when the sheet gives all three bead fields (bead_events > 0,
beads_per_test > 0, volume_ul > 0) because it does not mix two instruments and two blood draws.
A sheet that gives beads_per_test and volume_ul but no bead_events takes the bead events
QC found in the file (`bead_events_found` of sample_status.tsv, cytopipe.preprocess.qc_beads):
the count of a single-platform tube no longer has to be copied from another program; a count
the sheet gives is kept.
Dual platform only applies to populations at or below lymphocytes (pct_lymphocytes is NaN above
them). The method actually used is recorded per row ("single_platform_beads", "dual_platform" or
"none" when no count could be computed), so a pooled analysis can tell the two apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cytopipe.clinical.uncertainty import binomial_interval, poisson_interval, ratio_interval
from cytopipe.errors import ConfigError

SINGLE = "single_platform_beads"
DUAL = "dual_platform"
NONE = "none"
SHEET_COLUMNS = ("patient_id", "day", "age_years", "disease")
COUNT_INPUTS = ("abs_lymphocytes", "bead_events", "beads_per_test", "volume_ul")


def single_platform(
    cell_events: np.ndarray,
    bead_events: np.ndarray,
    beads_per_test: np.ndarray,
    volume_ul: np.ndarray,
) -> np.ndarray:
    """cells/uL from bead-counted events; NaN where bead data is missing or not positive."""
    cells, beads, per_test, volume = (
        np.asarray(a, dtype=float) for a in (cell_events, bead_events, beads_per_test, volume_ul)
    )
    ok = bead_data_complete(beads, per_test, volume)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = cells / beads * per_test / volume
    return np.where(ok, value, np.nan)


def dual_platform(pct_lymphocytes: np.ndarray, abs_lymphocytes: np.ndarray) -> np.ndarray:
    """cells/uL from % of lymphocytes and a blood-count lymphocyte concentration; NaN if unknown."""
    pct, lymph = (np.asarray(a, dtype=float) for a in (pct_lymphocytes, abs_lymphocytes))
    return np.where(np.isfinite(lymph) & (lymph >= 0), pct / 100.0 * lymph, np.nan)


def bead_data_complete(
    bead_events: np.ndarray, beads_per_test: np.ndarray, volume_ul: np.ndarray
) -> np.ndarray:
    """True where single platform counting is possible (all three finite and positive)."""
    parts = [np.asarray(a, dtype=float) for a in (bead_events, beads_per_test, volume_ul)]
    ok = np.ones(np.broadcast(*parts).shape, dtype=bool)
    for part in parts:
        ok &= np.isfinite(part) & (part > 0)
    return ok


def with_beads_found(sheet: pd.DataFrame, status: pd.DataFrame | None) -> pd.DataFrame:
    """The sheet with bead_events filled from `status`'s bead_events_found where the sheet
    leaves it empty (see the module)."""
    if status is None or "bead_events_found" not in status:
        return sheet
    found = pd.to_numeric(
        sheet["sample_id"].map(status.set_index("sample_id")["bead_events_found"]),
        errors="coerce",
    )
    given = (
        pd.to_numeric(sheet["bead_events"], errors="coerce")
        if "bead_events" in sheet
        else pd.Series(np.nan, index=sheet.index)
    )
    return sheet.assign(bead_events=given.where(given.notna(), found.where(found > 0)))


def add_absolute_counts(stats: pd.DataFrame, sheet: pd.DataFrame) -> pd.DataFrame:
    """The population_stats table: stats rows + patient_id, day, age_years, disease, cells_per_ul,
    abs_method (one vectorized pass over all rows of all samples).

    Every stats sample must be in the sheet: stats from another sheet would silently attach the
    wrong patient's days and counts.
    """
    unknown = sorted(set(stats["sample_id"]) - set(sheet["sample_id"]))
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise ConfigError(
            f"{len(unknown)} sample(s) in the statistics are not in the sample sheet: {shown}",
            hint="the results come from another sample sheet; rerun the pipeline with this sheet",
        )
    info = sheet.set_index("sample_id")
    keys = stats["sample_id"]
    inputs = {
        name: keys.map(info[name]).to_numpy(dtype=float)
        if name in info
        else np.full(len(stats), np.nan)
        for name in COUNT_INPUTS
    }
    count = stats["count"].to_numpy(dtype=float)
    pct_lymph = stats["pct_lymphocytes"].to_numpy(dtype=float)
    single = single_platform(
        count, inputs["bead_events"], inputs["beads_per_test"], inputs["volume_ul"]
    )
    dual = dual_platform(pct_lymph, inputs["abs_lymphocytes"])
    use_single = bead_data_complete(
        inputs["bead_events"], inputs["beads_per_test"], inputs["volume_ul"]
    )
    cells_per_ul = np.where(use_single, single, dual)
    method = np.where(use_single, SINGLE, np.where(np.isfinite(dual), DUAL, NONE))
    out = stats.copy()
    for name in SHEET_COLUMNS:
        out[name] = keys.map(info[name]).to_numpy() if name in info else np.nan
    out["cells_per_ul"] = cells_per_ul
    out["abs_method"] = method
    return add_count_intervals(out, inputs, use_single)


def add_count_intervals(
    out: pd.DataFrame, inputs: dict[str, np.ndarray], use_single: np.ndarray
) -> pd.DataFrame:
    """Every population's count with its exact 95% interval, propagated as the B cells' are
    (cytopipe.clinical.uncertainty): Poisson on the events, Clopper-Pearson on % of the
    sample's lymphocytes, and on cells/uL the bead-count ratio (single platform) or the
    lymphocyte fraction times the blood count (dual platform). A subset, plasmablast or CAR-T
    count is as uncertain as the B-cell count of the same size."""
    count = out["count"].to_numpy(dtype=float)
    lymph_rows = out["population"] == "lymphocytes"
    lymph = out["sample_id"].map(out[lymph_rows].set_index("sample_id")["count"]).to_numpy(float)
    out["count_low"], out["count_high"] = poisson_interval(count)
    low, high = binomial_interval(count, lymph)
    pct = np.isfinite(out["pct_lymphocytes"].to_numpy(dtype=float))
    out["pct_lymphocytes_low"] = np.where(pct, 100 * low, np.nan)
    out["pct_lymphocytes_high"] = np.where(pct, 100 * high, np.nan)
    r_low, r_high = ratio_interval(count, inputs["bead_events"])
    per_test_volume = inputs["beads_per_test"] / inputs["volume_ul"]
    known = np.isfinite(out["cells_per_ul"].to_numpy(dtype=float))
    for side, ratio, frac in (("low", r_low, low), ("high", r_high, high)):
        dual = frac * inputs["abs_lymphocytes"]
        out[f"cells_per_ul_{side}"] = np.where(
            known, np.where(use_single, ratio * per_test_volume, dual), np.nan
        )
    return out
