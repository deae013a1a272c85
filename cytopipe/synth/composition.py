"""What a simulated tube holds: event fractions from the blood hierarchy a clinician thinks in
(lymphocytes of leukocytes, B cells of lymphocytes, subsets of B cells), and exact event counts
per truth population.

Why exact counts: tests of aplasia need them (a requested 0.0002 of 50,000 events is exactly 10
events), so fractions are rounded by largest remainder; cohorts draw their own multinomial counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.errors import ConfigError
from cytopipe.synth.model import B_SUBSETS, BASELINE_B_SUBSETS, POPULATIONS


def blood_composition(
    *,
    lymphocytes_of_leukocytes: float = 0.30,
    monocytes_of_leukocytes: float = 0.08,
    nk_of_lymphocytes: float = 0.12,
    b_of_lymphocytes: float = 0.10,
    b_subsets: Mapping[str, float] = BASELINE_B_SUBSETS,
    car_t_of_lymphocytes: float = 0.0,
    debris: float = 0.05,
    doublet: float = 0.03,
    dead: float = 0.03,
    cd45_negative: float = 0.05,
) -> dict[str, float]:
    """Flat event fractions of a lysed whole-blood tube from the hierarchy a clinician thinks in.

    Granulocytes take what lymphocytes and monocytes leave of the leukocytes; T cells what NK
    and B cells leave of the lymphocytes (CAR+ T cells, after CAR-T infusion, are taken from
    them). `b_subsets` are fractions of B cells (normalized).
    """
    shares = {
        "lymphocytes_of_leukocytes": lymphocytes_of_leukocytes,
        "monocytes_of_leukocytes": monocytes_of_leukocytes,
        "nk_of_lymphocytes": nk_of_lymphocytes,
        "b_of_lymphocytes": b_of_lymphocytes,
        "car_t_of_lymphocytes": car_t_of_lymphocytes,
        "debris": debris,
        "doublet": doublet,
        "dead": dead,
        "cd45_negative": cd45_negative,
    }
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"blood_composition: {name}={value} is not a fraction in [0, 1]")
    leukocytes = 1.0 - debris - doublet - dead - cd45_negative
    granulocytes = 1.0 - lymphocytes_of_leukocytes - monocytes_of_leukocytes
    t_cells = 1.0 - nk_of_lymphocytes - b_of_lymphocytes - car_t_of_lymphocytes
    if leukocytes < 0 or granulocytes < 0 or t_cells < 0:
        raise ConfigError("blood_composition: fractions at one level add up to more than 1")
    subsets = _normalized(b_subsets, B_SUBSETS, "b_subsets")
    lymph = leukocytes * lymphocytes_of_leukocytes
    comp = {
        "debris": debris,
        "doublet": doublet,
        "dead": dead,
        "cd45_negative": cd45_negative,
        "granulocyte": leukocytes * granulocytes,
        "monocyte": leukocytes * monocytes_of_leukocytes,
        "nk": lymph * nk_of_lymphocytes,
        "t_cell": lymph * t_cells,
    }
    comp.update({s: lymph * b_of_lymphocytes * subsets[s] for s in B_SUBSETS})
    comp["car_t"] = lymph * car_t_of_lymphocytes
    return comp


def _normalized(values: Mapping[str, float], keys: Sequence[str], what: str) -> dict[str, float]:
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ConfigError(
            f"{what}: unknown key(s) {', '.join(unknown)}", hint=f"use {', '.join(keys)}"
        )
    arr = np.array([float(values.get(k, 0.0)) for k in keys])
    if (arr < 0).any() or arr.sum() <= 0:
        raise ConfigError(f"{what}: fractions must be non-negative and not all zero")
    return dict(zip(keys, (float(v) for v in arr / arr.sum()), strict=True))


def composition_counts(
    n_events: int | None, composition: Mapping[str, float | int]
) -> dict[str, int]:
    """Event count per population, exact: integer values are counts, floats are fractions.

    Fractions are rounded by largest remainder, so a requested 0.0002 of 50,000 events is exactly
    10 events (tests of aplasia need exact counts; cohorts draw their own multinomial counts).
    """
    unknown = sorted(set(composition) - set(POPULATIONS))
    if unknown:
        raise ConfigError(
            f"unknown population(s) {', '.join(unknown)} in composition",
            hint=f"use the truth labels {', '.join(POPULATIONS)}",
        )
    values = {p: composition.get(p, 0) for p in POPULATIONS}
    if any(v < 0 for v in values.values()):
        raise ConfigError("composition has negative entries")
    if all(isinstance(v, int | np.integer) for v in composition.values()):
        counts = {p: int(v) for p, v in values.items()}
        total = sum(counts.values())
        if n_events is not None and total != n_events:
            raise ConfigError(
                f"composition counts add up to {total} events, not n_events={n_events}",
                hint="pass fractions, or counts that add up to n_events (or n_events=None)",
            )
        if total == 0:
            raise ConfigError("composition has no events")
        return counts
    if n_events is None or n_events <= 0:
        raise ConfigError("n_events must be a positive number when composition holds fractions")
    frac = np.array([float(values[p]) for p in POPULATIONS])
    if frac.sum() <= 0:
        raise ConfigError("composition fractions add up to zero")
    exact = frac / frac.sum() * n_events
    counts = np.floor(exact).astype(np.int64)
    short = n_events - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return {p: int(c) for p, c in zip(POPULATIONS, counts, strict=True)}
