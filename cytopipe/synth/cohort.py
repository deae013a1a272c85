"""A synthetic CAR-T cohort on disk: FCS + truth per tube, `samples.tsv` (the sample sheet) and
`patients.truth.tsv` (each patient's hidden story), byte-identical for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError, CytopipeError
from cytopipe.synth.cohort_plan import PatientPlan, plan_cohort, timepoint_counts
from cytopipe.synth.model import CAR_INSTRUMENTS, TIMEPOINTS
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import simulate_sample
from cytopipe.synth.truth import truth_masks

SAMPLE_SHEET_COLUMNS = (
    "sample_id",
    "patient_id",
    "path",
    "day",
    "collection_date",
    "infusion_date",
    "abs_lymphocytes",
    "age_years",
    "disease",
    "instrument",
    "true_b_cells",
    "true_lymphocytes",
    "true_car_t",
)


def synth_cohort(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int,
    events_per_sample: int = 50_000,
    instrument: str | Sequence[str] = "A",
    timepoints: Sequence[int] = TIMEPOINTS,
) -> pd.DataFrame:
    """Write a CAR-T cohort (FCS + truth per tube, `samples.tsv`) and return the sample sheet.

    `instrument` is "A", "B", "mixed" (patients spread over the instruments) or one key per
    patient. Same seed -> byte-identical files. Also writes `patients.truth.tsv`, each patient's
    hidden story (role, true reconstitution day), for tests and for judging the analysis.
    """
    if events_per_sample < 100:
        raise ConfigError(f"events_per_sample must be at least 100, got {events_per_sample}")
    out = Path(out_dir)
    plans = plan_cohort(n_patients, seed, instrument)
    rows = []
    for plan in plans:
        for t_index, day in enumerate(timepoints):
            rows.append(_write_timepoint(out, plan, t_index, int(day), seed, events_per_sample))
    sheet = pd.DataFrame(rows, columns=list(SAMPLE_SHEET_COLUMNS))
    try:
        out.mkdir(parents=True, exist_ok=True)
        sheet.to_csv(out / "samples.tsv", sep="\t", index=False)
        _patient_truth(plans).to_csv(out / "patients.truth.tsv", sep="\t", index=False)
    except OSError as exc:
        raise CytopipeError(f"cannot write the sample sheet: {exc}", path=out) from exc
    return sheet


def _write_timepoint(
    out: Path, plan: PatientPlan, t_index: int, day: int, seed: int, n_events: int
) -> dict:
    rng = np.random.default_rng([seed, 1, plan.index, t_index])
    counts, alc = timepoint_counts(plan, day, n_events, rng)
    collected = plan.infusion_date + timedelta(days=day)
    start = datetime.combine(collected, datetime.min.time()) + timedelta(
        seconds=int(rng.integers(8 * 3600, 16 * 3600))
    )
    sample_id = f"{plan.patient_id}_BL" if day < 0 else f"{plan.patient_id}_D{day:03d}"
    keywords = {
        "$SRC": f"PATIENT {plan.patient_id} {plan.name}",
        "$OP": "A. Operator",
        "$INST": "University Hospital Flow Core",
        "$COM": f"CAR-T follow-up day {day}",
        "$SMNO": sample_id,
    }
    instrument = CAR_INSTRUMENTS[plan.instrument]  # the CAR-T monitoring panel
    sample = simulate_sample(None, counts, instrument, rng, start=start, keywords=keywords)
    path = write_sample(out / f"{sample_id}.fcs", sample)
    masks = truth_masks(sample.labels)
    return {
        "sample_id": sample_id,
        "patient_id": plan.patient_id,
        "path": str(path),
        "day": day,
        "collection_date": collected.isoformat(),
        "infusion_date": plan.infusion_date.isoformat(),
        "abs_lymphocytes": int(round(alc)),
        "age_years": round(plan.age_years + day / 365.25, 2),
        "disease": plan.disease,
        "instrument": plan.instrument,
        "true_b_cells": int(masks["b_cells"].sum()),
        "true_lymphocytes": int(masks["lymphocytes"].sum()),
        "true_car_t": int(masks["car_t"].sum()),
    }


def _patient_truth(plans: Sequence[PatientPlan]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [p.patient_id for p in plans],
            "role": [p.role for p in plans],
            "recon_day": [p.recon_day for p in plans],
            "first_return_day": [p.first_return_day for p in plans],
            "b_baseline": [round(p.b_baseline, 4) for p in plans],
            "car_peak_per_ul": [round(p.car_peak, 3) for p in plans],
            "car_tmax": [round(p.car_tmax, 2) for p in plans],
            "car_persists": [p.car_floor > 0 for p in plans],
            "instrument": [p.instrument for p in plans],
        }
    )
