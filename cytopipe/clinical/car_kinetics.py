"""CAR-T expansion and persistence per patient, read beside the B cells.

Why: clinicians read B-cell aplasia next to the CAR-T kinetics (expansion to a peak around days
7-14, contraction, persistence varying by patient). From the CAR+ T cells gated in each sample
(population car_t, when the panel has a CAR detection marker) and their cells/uL:

- Cmax: the highest cells/uL of a post-infusion sample, Tmax its day (the first of ties);
- AUC 0-28: the area under cells/uL from day 0 (no CAR-T cells yet) to day 28 by the
  trapezoidal rule over the samples taken, the value at day 28 interpolated between the samples
  around it (not extrapolated past the last sample: then the area ends there, and says so);
- last detected day: the last post-infusion sample with at least the LOD in CAR+ events
  (`longitudinal.limits.lod_events`; a validated CAR-T assay reported LOD 13 and LLOQ 22
  events, Peinelt et al. 2022): persistence. Fewer events than the LOD is "not detected",
  whatever a gate counted.
Patients without a CAR channel (no car_t rows) get empty values, not zeros.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cytopipe.results import CAR_T_COLUMNS as COLUMNS

POPULATION = "car_t"
AUC_END = 28.0


def car_kinetics(pop_stats: pd.DataFrame, lod_events: float) -> pd.DataFrame:
    """One row per patient with CAR+ T-cell rows: COLUMNS (see the module)."""
    rows = []
    need = {"patient_id", "day", "population", "count", "cells_per_ul"}
    if not need <= set(pop_stats) or not (pop_stats["population"] == POPULATION).any():
        return pd.DataFrame(columns=["patient_id", *COLUMNS])
    car = pop_stats[(pop_stats["population"] == POPULATION) & (pop_stats["day"] >= 0)]
    for pid, part in car.groupby("patient_id", sort=False):
        part = part.sort_values("day")
        day = part["day"].to_numpy(dtype=float)
        events = pd.to_numeric(part["count"], errors="coerce").to_numpy(dtype=float)
        per_ul = pd.to_numeric(part["cells_per_ul"], errors="coerce").to_numpy(dtype=float)
        detected = day[events >= lod_events]
        row = {"patient_id": pid, "car_t_samples": int(len(part))}
        row["car_t_last_detected_day"] = float(detected[-1]) if detected.size else np.nan
        known = np.isfinite(per_ul)
        if known.any():
            i = int(np.flatnonzero(known)[np.argmax(per_ul[known])])
            row["car_t_cmax_per_ul"] = float(per_ul[i])
            row["car_t_tmax_day"] = float(day[i])
            row["car_t_auc_0_28"], row["car_t_auc_end_day"] = auc_0_28(day[known], per_ul[known])
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=["patient_id", *COLUMNS])


def auc_0_28(day: np.ndarray, per_ul: np.ndarray) -> tuple[float, float]:
    """Trapezoidal area from (0, 0) over the samples to day 28 (interpolated when a sample lies
    beyond it), and the day the area ends (28, or the last sample before it)."""
    x = np.concatenate([[0.0], day[day > 0]])
    y = np.concatenate([[0.0], per_ul[day > 0]])
    if x[-1] > AUC_END:
        y_end = float(np.interp(AUC_END, x, y))
        keep = x < AUC_END
        x, y = np.append(x[keep], AUC_END), np.append(y[keep], y_end)
    end = float(min(x[-1], AUC_END))
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return round(area, 3), end
