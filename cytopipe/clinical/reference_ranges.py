"""Age reference ranges of B cells/uL: the band of each sample's age and where its count lies.

Age reference band: the band of `reference_ranges.bands` with min_age <= age_years < max_age (age
at sampling); b_cells_per_ul is "below"/"within"/"above" [low, high] or "unknown". Children's
B-cell counts fall with age, so a count is only "normal" against its own age band.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

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
