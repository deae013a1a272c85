"""The biology of a simulated tube: pre-spill signals per event (scatter, autofluorescence,
specific stain), for singlet cells, debris, dead cells and doublets.

Why events are built from cells: doublets are two coincident cells of the sample's own mix (areas
add up, the pulse height barely grows) and dead events are dying leukocytes (smaller, surface
markers fading, viability dye bright), so singlet and viability gates face what they face in a
real tube. The numbers live in `cytopipe.synth.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.synth.composition import blood_composition
from cytopipe.synth.model import (
    AUTOFLUORESCENCE,
    AUTOFLUORESCENCE_SCALE,
    CAR,
    DEAD_FSC_FACTOR,
    DEAD_STAIN_FACTOR,
    DEAD_VIABILITY,
    DEBRIS_FSC_MAX,
    DEBRIS_SCATTER,
    DOUBLET_FSC_H_FACTOR,
    LEUKOCYTES,
    MARKER_COLUMN,
    MARKERS,
    PHENOTYPES,
    POPULATION_CODE,
    SCATTER_BY_POPULATION,
    SINGLET_CELLS,
    SINGLET_FSC_H_RATIO,
    SINGLET_FSC_H_SIGMA,
    Stain,
)


def pre_spill_signals(
    codes: np.ndarray, counts: Mapping[str, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FSC-A, FSC-H, SSC-A and (n, markers) fluorescence in instrument-A units, pre-spill."""
    n = len(codes)
    fsc_a = np.empty(n)
    fsc_h = np.empty(n)
    ssc_a = np.empty(n)
    fluor = np.empty((n, len(MARKERS)))
    cells_w = _weights(counts, SINGLET_CELLS)
    leuko_w = _weights(counts, LEUKOCYTES)
    for pop, code in POPULATION_CODE.items():
        idx = np.flatnonzero(codes == code)
        if idx.size == 0:
            continue
        if pop == "debris":
            cells = _debris(idx.size, rng)
        elif pop == "dead":
            cells = _dead(rng.choice(LEUKOCYTES, idx.size, p=leuko_w), rng)
        elif pop == "doublet":
            cells = _doublets(idx.size, cells_w, rng)
        else:
            cells = _cells(np.full(idx.size, pop), rng)
        fsc_a[idx], fsc_h[idx], ssc_a[idx], fluor[idx] = cells[:4]
    return fsc_a, fsc_h, ssc_a, np.column_stack([fluor, _car_signal(codes, rng)])


def _car_signal(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The CAR detection channel: autofluorescence for every event, the reagent's stain on CAR+
    T cells. Drawn from a child stream (rng.spawn leaves rng's own sequence untouched), so the
    other channels of every file are what they were before the CAR channel existed."""
    child = rng.spawn(1)[0]
    scale = np.ones(len(codes))
    for pop, factor in AUTOFLUORESCENCE_SCALE.items():
        scale[codes == POPULATION_CODE[pop]] = factor
    scale[codes == POPULATION_CODE["debris"]] = 0.5
    car = AUTOFLUORESCENCE[CAR] * scale * np.exp(0.35 * child.standard_normal(len(codes)))
    positive = np.flatnonzero(codes == POPULATION_CODE["car_t"])
    if positive.size:
        car[positive] += _stain(PHENOTYPES["car_t"][CAR], np.zeros(positive.size), child)
    return car


def _weights(counts: Mapping[str, int], pops: Sequence[str]) -> np.ndarray:
    """Which cells doublets and dead events are made of: the sample's own mix of cells."""
    w = np.array([counts.get(p, 0) for p in pops], dtype=float)
    if w.sum() == 0:
        default = blood_composition()
        w = np.array([default.get(p, 0.0) for p in pops])
    return w / w.sum()


def _cells(pops: np.ndarray, rng: np.random.Generator):
    """Singlet cells of the given populations: scatter, total fluorescence, specific stain."""
    n = len(pops)
    fsc = np.empty(n)
    ssc = np.empty(n)
    auto = np.empty((n, len(MARKERS)))
    stain = np.zeros((n, len(MARKERS)))
    for pop in np.unique(pops):
        idx = np.flatnonzero(pops == pop)
        m = idx.size
        size = rng.standard_normal(m)  # one cell-size factor shared by scatter and brightness
        sc = SCATTER_BY_POPULATION[pop]
        fsc[idx] = sc.fsc * np.exp(sc.fsc_sigma * size)
        ssc[idx] = sc.ssc * np.exp(sc.ssc_sigma * (0.5 * size + 0.87 * rng.standard_normal(m)))
        auto[idx] = _autofluorescence(m, AUTOFLUORESCENCE_SCALE.get(pop, 1.0), size, rng)
        for marker, st in PHENOTYPES[pop].items():
            if marker != CAR:  # the CAR channel is drawn on its own stream (_car_signal)
                stain[idx, MARKER_COLUMN[marker]] = _stain(st, size, rng)
    fsc_h = _fsc_height(fsc, rng)
    return fsc, fsc_h, ssc, auto + stain, stain


def _autofluorescence(
    m: int, scale: float, size: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    base = np.array([AUTOFLUORESCENCE[mk] for mk in MARKERS]) * scale
    return base * np.exp(0.35 * rng.standard_normal((m, len(MARKERS))) + 0.2 * size[:, None])


def _stain(st: Stain, size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = st.median * np.exp(st.sigma * rng.standard_normal(size.size) + 0.1 * size)
    if st.positive_fraction < 1.0:
        values *= rng.random(size.size) < st.positive_fraction
    return values


def _fsc_height(fsc_a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = np.exp(SINGLET_FSC_H_SIGMA * rng.standard_normal(fsc_a.size))
    return fsc_a * SINGLET_FSC_H_RATIO * noise


def _debris(m: int, rng: np.random.Generator):
    sc = DEBRIS_SCATTER
    fsc = np.minimum(sc.fsc * np.exp(sc.fsc_sigma * rng.standard_normal(m)), DEBRIS_FSC_MAX)
    ssc = sc.ssc * np.exp(sc.ssc_sigma * rng.standard_normal(m))
    fsc_h = fsc * 0.8 * np.exp(0.10 * rng.standard_normal(m))
    fluor = _autofluorescence(m, 0.5, np.zeros(m), rng)
    # Membrane fragments carry a little of everything, but are not viability-dye bright.
    fluor[:, MARKER_COLUMN["CD45"]] += _stain(Stain(800, 1.2, 0.3), np.zeros(m), rng)
    for marker in MARKERS:
        fluor[:, MARKER_COLUMN[marker]] += _stain(Stain(150, 1.0, 0.2), np.zeros(m), rng)
    return fsc, fsc_h, ssc, fluor


def _dead(templates: np.ndarray, rng: np.random.Generator):
    """Dying leukocytes: smaller, surface markers fading, viability dye bright."""
    m = len(templates)
    fsc, _, ssc, fluor, stain = _cells(templates, rng)
    fsc = fsc * rng.uniform(*DEAD_FSC_FACTOR, m)
    ssc = ssc * rng.uniform(0.8, 1.3, m)
    fluor = fluor - stain * (1.0 - DEAD_STAIN_FACTOR)
    fluor[:, MARKER_COLUMN["viability"]] += _stain(DEAD_VIABILITY, np.zeros(m), rng)
    return fsc, _fsc_height(fsc, rng), ssc, fluor


def _doublets(m: int, weights: np.ndarray, rng: np.random.Generator):
    """Two coincident cells: areas add up, the pulse height barely grows."""
    first = _cells(rng.choice(SINGLET_CELLS, m, p=weights), rng)
    second = _cells(rng.choice(SINGLET_CELLS, m, p=weights), rng)
    fsc = first[0] + second[0]
    fsc_h = np.maximum(first[1], second[1]) * rng.uniform(*DOUBLET_FSC_H_FACTOR, m)
    return fsc, fsc_h, first[2] + second[2], first[3] + second[3]
