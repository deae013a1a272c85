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
        # Greenwood's variance of log S, summed over the event times so far
        greenwood = np.cumsum(
            np.where(at_risk > events, events / (at_risk * (at_risk - events)), 0.0)
        )
    surv = np.cumprod(factor)
    low, high = _log_log_interval(surv, greenwood)
    return pd.DataFrame(
        {
            "day": grid,
            "at_risk": at_risk.astype(int),
            "events": events,
            "censored": censored,
            "still_aplastic": surv,
            "still_aplastic_low": low,
            "still_aplastic_high": high,
        },
        columns=KM_COLUMNS,
    )


def _log_log_interval(surv: np.ndarray, greenwood: np.ndarray, z: float = 1.959964):
    """Pointwise 95% interval of S(t) on the log(-log S) scale (Kalbfleisch-Prentice; R
    survival's conf.type "log-log"): stays within 0-1 and is sensible with few patients. S = 1
    has no interval width yet (1, 1); S = 0 is (0, 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(surv)
        se = np.sqrt(greenwood) / np.abs(log_s)
        low = surv ** np.exp(z * se)
        high = surv ** np.exp(-z * se)
    inner = (surv > 0) & (surv < 1)
    return np.where(inner, low, surv), np.where(inner, high, surv)


def km_median(km: pd.DataFrame, column: str = "still_aplastic") -> float | None:
    """First time at which S(t) <= 0.5; None when the curve never gets there. With the
    interval's columns: the median's 95% interval (Brookmeyer-Crowley style, from the band)."""
    if column not in km:
        return None
    reached = km.loc[km[column] <= 0.5 + 1e-12, "day"]
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
            [
                {
                    "day": 0.0,
                    "at_risk": len(sub),
                    "events": 0,
                    "censored": 0,
                    "still_aplastic": 1.0,
                    "still_aplastic_low": 1.0,
                    "still_aplastic_high": 1.0,
                }
            ]  # fmt: skip
        )
        km = pd.concat([origin, km], ignore_index=True) if len(km) else origin
    return km[KM_COLUMNS], excluded


def _exclusion_reason(row: Any) -> str:
    if row.n_samples == 0:
        return "no usable samples"
    if "never depleted" in row.flags:
        return "never depleted"
    return "no classifiable post-infusion samples"
