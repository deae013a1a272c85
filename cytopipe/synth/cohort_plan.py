"""Each synthetic patient's hidden story, and the tube it gives at each timepoint.

Why stories: a CAR-T cohort is judged by how it finds aplasia and reconstitution, so each patient
gets a role (typical, never reconstituted, early, relapse with memory B cells), an age, disease,
instrument, B-cell levels and reconstitution speed; the sample sheet shows only what a clinic
would know, the plan is the truth to judge the analysis against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np

from cytopipe.errors import ConfigError
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.model import (
    ADULT_DISEASES,
    B_SUBSETS,
    CHILD_DISEASES,
    FAKE_NAMES,
    INSTRUMENTS,
    LYMPHOCYTES,
    POPULATIONS,
    TIMEPOINTS,
)
from cytopipe.synth.simulate import get_instrument


@dataclass(frozen=True)
class PatientPlan:
    """One patient's hidden story; `samples.tsv` shows only what a clinic would know."""

    patient_id: str
    index: int
    role: str  # typical | never | early | relapse
    name: str
    age_years: float
    disease: str
    instrument: str
    infusion_date: date
    recon_day: float | None  # B cells come back from this day on (None: not within follow-up)
    b_baseline: float  # B cells / lymphocytes before infusion
    b_first: float  # ... at the first timepoint after return
    b_final: float  # ... long after return
    tau_b: float  # days; speed of reconstitution
    nk_baseline: float
    subsets_baseline: Mapping[str, float]
    alc_baseline: float
    alc_early: float
    alc_late: float
    tau_alc: float
    granulocytes: float  # cells/uL
    monocytes: float
    aplasia_rate: float  # mean residual B events in an aplastic 50k-event file
    # CAR-T kinetics (cells/uL): expansion to car_peak on day car_tmax, contraction with
    # car_tau days, then persistence at car_floor decaying with car_tau_persist (0: none)
    car_peak: float = 0.0
    car_tmax: float = 10.0
    car_tau: float = 8.0
    car_floor: float = 0.0
    car_tau_persist: float = 120.0

    @property
    def first_return_day(self) -> int | None:
        if self.recon_day is None:
            return None
        return next((d for d in TIMEPOINTS if d > 0 and d >= self.recon_day), None)


def plan_cohort(
    n_patients: int, seed: int, instrument: str | Sequence[str] = "A"
) -> list[PatientPlan]:
    """Draw each patient's story: roles, age, disease, B-cell levels and reconstitution speed."""
    if n_patients < 1:
        raise ConfigError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng([seed, 0])
    car_rng = np.random.default_rng([seed, 2])  # its own stream: the other draws stay as they were
    roles = ["typical"] * n_patients
    special = (["never", "early"] if n_patients >= 3 else []) + (
        ["relapse"] if n_patients >= 5 else []
    )
    roles[: len(special)] = special
    roles = [roles[i] for i in rng.permutation(n_patients)]
    n_children = round(0.4 * n_patients) if n_patients >= 2 else 0
    is_child = np.zeros(n_patients, dtype=bool)
    is_child[rng.permutation(n_patients)[:n_children]] = True
    instruments = _patient_instruments(instrument, n_patients, rng)
    width = max(2, len(str(n_patients)))
    plans = []
    for i in range(n_patients):
        plan = _plan_patient(
            i, f"P{i + 1:0{width}d}", roles[i], bool(is_child[i]), instruments[i], rng
        )
        plans.append(replace(plan, **_car_kinetics(car_rng)))
    return plans


def _car_kinetics(rng: np.random.Generator) -> dict[str, float]:
    """A patient's CAR-T kinetics: peak 5-300 cells/uL (log-uniform; a paediatric JDM case
    peaked at 32.7 cells/uL on day 7, Nicolai et al. 2024) on day 7-14, contraction over about
    a week, and in half the patients persistence at 0.3-3 cells/uL fading over months."""
    persists = rng.random() < 0.5
    return {
        "car_peak": float(np.exp(rng.uniform(np.log(5.0), np.log(300.0)))),
        "car_tmax": float(rng.uniform(7.0, 14.0)),
        "car_tau": float(rng.uniform(4.0, 12.0)),
        "car_floor": float(rng.uniform(0.3, 3.0)) if persists else 0.0,
        "car_tau_persist": float(rng.uniform(60.0, 300.0)),
    }


def car_per_ul(plan: PatientPlan, day: float) -> float:
    """CAR+ T cells/uL on a day: none before infusion, a rise to the peak (quadratic in time),
    exponential contraction, then the persisting level."""
    if day <= 0 or plan.car_peak <= 0:
        return 0.0
    if day <= plan.car_tmax:
        return plan.car_peak * (day / plan.car_tmax) ** 2
    since = day - plan.car_tmax
    floor = plan.car_floor * math.exp(-since / plan.car_tau_persist)
    return max(plan.car_peak * math.exp(-since / plan.car_tau), floor)


def _patient_instruments(
    instrument: str | Sequence[str], n: int, rng: np.random.Generator
) -> list[str]:
    if isinstance(instrument, str) and instrument != "mixed":
        get_instrument(instrument)
        return [instrument] * n
    if isinstance(instrument, str):  # mixed: both instruments, in random order
        keys = list(INSTRUMENTS)
        chosen = [keys[i % len(keys)] for i in range(n)]
        return [chosen[i] for i in rng.permutation(n)]
    chosen = list(instrument)
    if len(chosen) != n:
        raise ConfigError(f"{len(chosen)} instruments given for {n} patients")
    for key in chosen:
        get_instrument(key)
    return chosen


def _plan_patient(
    index: int, pid: str, role: str, child: bool, instrument: str, rng: np.random.Generator
) -> PatientPlan:
    age = rng.uniform(6.0, 17.9) if child else rng.uniform(18.0, 72.0)
    disease = str(rng.choice(CHILD_DISEASES if child else ADULT_DISEASES))
    recon = {
        "never": None,
        "early": rng.uniform(21.0, 56.0),
        "relapse": rng.uniform(60.0, 120.0),
        "typical": rng.uniform(60.0, 180.0),
    }[role]
    b_baseline = rng.uniform(0.05, 0.20)
    subsets = {
        "b_transitional": rng.uniform(0.03, 0.08),
        "b_unswitched_memory": rng.uniform(0.08, 0.12),
        "b_switched_memory": rng.uniform(0.10, 0.18),
        "b_double_negative": rng.uniform(0.03, 0.08),
        "plasmablast": rng.uniform(0.01, 0.04),
    }
    subsets["b_naive"] = 1.0 - sum(subsets.values())
    return PatientPlan(
        patient_id=pid,
        index=index,
        role=role,
        name=FAKE_NAMES[index % len(FAKE_NAMES)],
        age_years=round(float(age), 1),
        disease=disease,
        instrument=instrument,
        infusion_date=date(2022, 1, 10) + timedelta(days=int(rng.integers(0, 1000))),
        recon_day=None if recon is None else float(recon),
        b_baseline=float(b_baseline),
        b_first=float(rng.uniform(0.02, 0.05)),
        b_final=float(np.clip(b_baseline * rng.uniform(1.0, 1.6), 0.06, 0.30)),
        tau_b=float(rng.uniform(30.0, 120.0)),
        nk_baseline=float(rng.uniform(0.08, 0.15)),
        subsets_baseline={s: float(subsets[s]) for s in B_SUBSETS},
        alc_baseline=float(rng.uniform(900.0, 2200.0)),
        alc_early=float(rng.uniform(280.0, 650.0)),
        alc_late=float(rng.uniform(1000.0, 2500.0)),
        tau_alc=float(rng.uniform(40.0, 90.0)),
        granulocytes=float(rng.uniform(2500.0, 5500.0)),
        monocytes=float(rng.uniform(250.0, 650.0)),
        aplasia_rate=float(rng.uniform(0.5, 8.0)),
    )


def abs_lymphocytes(plan: PatientPlan, day: int, rng: np.random.Generator) -> float:
    """Blood-count lymphocytes/uL: lymphodepletion nadir after infusion, then recovery."""
    if day < 0:
        level = plan.alc_baseline
    else:
        recovery = math.exp(-max(day - 21, 0) / plan.tau_alc)  # nadir lasts about 3 weeks
        level = plan.alc_late - (plan.alc_late - plan.alc_early) * recovery
    return level * math.exp(rng.normal(0.0, 0.06))


def b_fraction(plan: PatientPlan, day: int, alc: float) -> float | None:
    """B cells / lymphocytes at a timepoint, or None while the patient is B-cell aplastic."""
    if day < 0:
        return plan.b_baseline
    first = plan.first_return_day
    if first is None or day < first:
        return None
    frac = plan.b_final - (plan.b_final - plan.b_first) * math.exp(-(day - first) / plan.tau_b)
    return max(frac, 20.0 / alc)  # returning B cells are unmistakably above aplasia thresholds


def b_subsets(plan: PatientPlan, day: int) -> dict[str, float]:
    """B-cell subset fractions: returning B cells are transitional/naive, memory comes slowly."""
    first = plan.first_return_day
    if day < 0 or first is None or day < first:
        return dict(plan.subsets_baseline)
    s = day - first
    base = plan.subsets_baseline
    slow = 1.0 - math.exp(-s / 400.0)
    out = {
        "b_transitional": 0.05 + 0.35 * math.exp(-s / 120.0),
        "b_unswitched_memory": 0.01 + (base["b_unswitched_memory"] - 0.01) * slow,
        "b_switched_memory": 0.015 + (base["b_switched_memory"] - 0.015) * slow,
        "b_double_negative": 0.02 + (base["b_double_negative"] - 0.02) * slow,
        "plasmablast": 0.01,
    }
    if plan.role == "relapse" and s >= 90:
        out["b_switched_memory"] = max(2.0 * base["b_switched_memory"], 0.30)
        out["plasmablast"] = max(3.0 * base["plasmablast"], 0.08)
    out["b_naive"] = 1.0 - sum(out.values())
    return {k: out[k] for k in B_SUBSETS}


def timepoint_counts(
    plan: PatientPlan, day: int, n_events: int, rng: np.random.Generator
) -> tuple[dict[str, int], float]:
    """Event counts per population in one tube, and the blood-count lymphocytes/uL."""
    alc = abs_lymphocytes(plan, day, rng)
    early = 0 <= day <= 14
    gran = plan.granulocytes * (0.5 if early else 1.0) * math.exp(rng.normal(0.0, 0.1))
    mono = plan.monocytes * math.exp(rng.normal(0.0, 0.1))
    nk = plan.nk_baseline * (1.0 + (0.8 * math.exp(-(day - 7) / 45.0) if day > 0 else 0.0))
    b = b_fraction(plan, day, alc)
    car = min(car_per_ul(plan, day) / alc, 0.6)  # CAR+ T cells of lymphocytes
    fractions = blood_composition(
        lymphocytes_of_leukocytes=alc / (alc + gran + mono),
        monocytes_of_leukocytes=mono / (alc + gran + mono),
        nk_of_lymphocytes=min(nk, 0.35),
        b_of_lymphocytes=0.0 if b is None else b,
        b_subsets=b_subsets(plan, day),
        car_t_of_lymphocytes=car,
        debris=rng.uniform(0.03, 0.08),
        doublet=rng.uniform(0.02, 0.05),
        dead=rng.uniform(0.01, 0.03) + (0.02 if early else 0.0),
        cd45_negative=rng.uniform(0.02, 0.07),
    )
    p = np.array([fractions.get(k, 0.0) for k in POPULATIONS])
    counts = dict(
        zip(POPULATIONS, (int(c) for c in rng.multinomial(n_events, p / p.sum())), strict=True)
    )
    if b is None:  # aplasia: a few residual B cells (0-20 in a 50k tube), taken from the T cells
        n_lymph = sum(counts[k] for k in LYMPHOCYTES)
        n_res = min(
            int(rng.poisson(plan.aplasia_rate * n_events / 50_000)), 20, int(0.003 * n_lymph)
        )
        n_res = min(n_res, counts["t_cell"])
        sub = np.array([plan.subsets_baseline[s] for s in B_SUBSETS])
        residual = rng.multinomial(n_res, sub / sub.sum())
        counts.update({s: int(r) for s, r in zip(B_SUBSETS, residual, strict=True)})
        counts["t_cell"] -= n_res
    return counts, alc
