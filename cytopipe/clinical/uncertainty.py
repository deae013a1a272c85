"""How sure each B-cell number is: exact 95% intervals on the events behind it, and the limits of
detection and quantification of the acquisition.

A count of 0 B cells in 50,000 acquired lymphocytes and 0 in 5,000,000 are different statements:
the first cannot exclude 0.007% B cells, the second can exclude 0.00007%. So every count carries
an exact interval and every sample states its limits (defaults: `limits` under `longitudinal:`):

- B-cell events: exact (Garwood) Poisson interval of the count.
- % of lymphocytes: exact (Clopper-Pearson) binomial interval of B cells among the lymphocytes
  acquired (the B cells are part of the lymphocytes).
- cells/uL, single platform (counting beads): exact interval of the ratio of two Poisson counts
  (B-cell events / bead events, by the conditional binomial), times beads per test / volume;
  dual platform: the % interval times the absolute lymphocyte count, whose own error the
  sheet does not give (stated in the definitions).
- Limit of detection (LOD) and lower limit of quantification (LLOQ) in events [20 and 50, the
  convention of rare-event flow assays], expressed for each sample in % of lymphocytes and in
  cells/uL given the events it acquired. A value below the LLOQ is reported as "< LLOQ".
- Not evaluable: a sample whose LOD is above the aplasia threshold (too few lymphocytes
  acquired to see the threshold's number of B cells) is neither aplasia nor reconstituted;
  `events_needed` says how many lymphocytes would have been needed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95


def poisson_interval(k: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) interval of a Poisson mean from the observed counts `k` (NaN stays NaN)."""
    k = np.asarray(k, dtype=float)
    a = 1.0 - level
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.chi2.ppf(a / 2, 2 * k) / 2, 0.0)
        high = stats.chi2.ppf(1 - a / 2, 2 * (k + 1)) / 2
    nan = ~np.isfinite(k)
    return np.where(nan, np.nan, low), np.where(nan, np.nan, high)


def binomial_interval(
    k: np.ndarray, n: np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) interval of a proportion, k of n (NaN where n is not positive)."""
    k, n = (np.asarray(a, dtype=float) for a in (k, n))
    a = 1.0 - level
    ok = np.isfinite(k) & np.isfinite(n) & (n > 0) & (k >= 0) & (k <= n)
    ks, ns = np.where(ok, k, 0.0), np.where(ok, n, 1.0)
    with np.errstate(invalid="ignore"):
        low = np.where(ks > 0, stats.beta.ppf(a / 2, ks, ns - ks + 1), 0.0)
        high = np.where(ks < ns, stats.beta.ppf(1 - a / 2, ks + 1, ns - ks), 1.0)
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def ratio_interval(
    k1: np.ndarray, k2: np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Exact interval of the ratio of two Poisson means from counts k1, k2 (cells / beads): the
    conditional binomial k1 | k1 + k2, p -> p / (1 - p)."""
    k1, k2 = (np.asarray(a, dtype=float) for a in (k1, k2))
    low, high = binomial_interval(k1, k1 + k2, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        return low / (1 - low), np.where(high < 1, high / (1 - high), np.inf)


def add_uncertainty(frame: pd.DataFrame, cfg: Mapping) -> pd.DataFrame:
    """The sample_states columns of this module, from b_cells, lymphocytes, b_cells_per_ul,
    abs_method and (where the sheet gives them) bead_events, beads_per_test, volume_ul and
    abs_lymphocytes. `cfg`: the validated `longitudinal` settings."""
    out = frame.copy()
    b = pd.to_numeric(out["b_cells"], errors="coerce").to_numpy(dtype=float)
    lymph = pd.to_numeric(out["lymphocytes"], errors="coerce").to_numpy(dtype=float)
    out["b_cells_low"], out["b_cells_high"] = poisson_interval(b)
    low, high = binomial_interval(b, lymph)
    out["b_pct_low"], out["b_pct_high"] = 100 * low, 100 * high

    def col(name: str) -> np.ndarray:
        if name not in out:
            return np.full(len(out), np.nan)
        return pd.to_numeric(out[name], errors="coerce").to_numpy(dtype=float)

    per_test, volume, beads = col("beads_per_test"), col("volume_ul"), col("bead_events")
    method = out["abs_method"].astype(str).to_numpy() if "abs_method" in out else ""
    single = method == "single_platform_beads"
    with np.errstate(divide="ignore", invalid="ignore"):
        per_event_single = per_test / (beads * volume)  # cells/uL of one event
        alc = col("abs_lymphocytes")
        per_event_dual = alc / lymph
    r_low, r_high = ratio_interval(b, beads)
    per_ul = col("b_cells_per_ul")
    known = np.isfinite(per_ul)
    out["b_per_ul_low"] = np.where(
        known, np.where(single, r_low * per_test / volume, low * alc), np.nan
    )
    out["b_per_ul_high"] = np.where(
        known, np.where(single, r_high * per_test / volume, high * alc), np.nan
    )
    per_event = np.where(single, per_event_single, per_event_dual)
    limits = cfg["limits"]
    for name, events in (("lod", limits["lod_events"]), ("lloq", limits["lloq_events"])):
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{name}_pct"] = np.where(lymph > 0, 100.0 * events / lymph, np.nan)
        out[f"{name}_per_ul"] = np.where(known, events * per_event, np.nan)
    below = pd.array(b < limits["lloq_events"], dtype="boolean")
    below[~np.isfinite(b)] = pd.NA  # no count, no statement
    out["below_lloq"] = below
    # lymphocytes needed for the aplasia threshold's % to hold LOD events
    needed = np.ceil(limits["lod_events"] / (cfg["aplasia_pct_lymphocytes"] / 100.0))
    out["events_needed"] = np.where(np.isfinite(lymph), needed, np.nan)
    return out


def not_evaluable(frame: pd.DataFrame, cfg: Mapping) -> np.ndarray:
    """Samples that could not have detected the aplasia threshold: its B-cell number in this
    acquisition (threshold % of the lymphocytes acquired; threshold cells/uL in events, where
    an absolute count is known) is below the LOD on every criterion that applies, and the
    B cells found do not settle it either (their lower bound is not above the threshold: 30 B
    cells in 1,000 lymphocytes are above 1% whatever the LOD)."""
    lod = float(cfg["limits"]["lod_events"])
    lymph = pd.to_numeric(frame["lymphocytes"], errors="coerce").to_numpy(dtype=float)
    pct_events = lymph * cfg["aplasia_pct_lymphocytes"] / 100.0
    lod_per_ul = pd.to_numeric(frame["lod_per_ul"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ul_events = cfg["aplasia_cells_per_ul"] / lod_per_ul * lod  # threshold, in events
    pct_blind = np.isfinite(lymph) & (pct_events < lod)
    ul_blind = ~np.isfinite(ul_events) | (ul_events < lod)
    pct_low = pd.to_numeric(frame["b_pct_low"], errors="coerce").to_numpy(dtype=float)
    ul_low = pd.to_numeric(frame["b_per_ul_low"], errors="coerce").to_numpy(dtype=float)
    settled = (pct_low >= cfg["aplasia_pct_lymphocytes"]) & ~(ul_low < cfg["aplasia_cells_per_ul"])
    return pct_blind & ul_blind & ~settled
