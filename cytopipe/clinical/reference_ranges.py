"""Age reference ranges of B cells/uL: the band of each sample's age and where its count lies.

Age reference band: the band of `reference_ranges.bands` with min_age <= age_years < max_age (age
at sampling); b_cells_per_ul is "below"/"within"/"above" [low, high] or "unknown". Children's
B-cell counts fall with age, so a count is only "normal" against its own age band. The default
bands (Shearer et al. 2003) are the default of `longitudinal.reference_ranges` in the config
schema (cytopipe/schemas/config.schema.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


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
