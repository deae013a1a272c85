"""Kaplan-Meier of time to reconstitution (km.tsv).

Time origin = infusion (day 0): event = reconstitution at reconstitution_day, censored at last
follow-up when follow-up ended in aplasia. Patients never depleted (or without post-infusion
data) are excluded and listed in cohort_summary.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cytopipe.results import KM_COLUMNS


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
