"""Synthetic FCS files and CAR-T cohorts with known truth, to test every stage against.

Why synthetic: real archives have no per-event truth, and B-cell aplasia (a handful of B cells
among tens of thousands of lymphocytes) is exactly where gates drawn around noise go wrong. The
generator therefore writes what a cytometer would record: log-normal marker levels in linear
units, autofluorescence, a spillover matrix that is really applied (and written to $SPILLOVER),
Poisson-like and electronic detector noise, saturation at the top of the range, a Time channel
of Poisson arrivals, debris, doublets and dead cells; and beside every `NAME.fcs` a
`NAME.truth.parquet` holding the true population of each event.

The biology and instrument numbers live in `cytopipe.synth.model`. Acquisition anomalies (issue 8)
plug in through `simulate_sample(..., anomalies=[...])`: each anomaly edits the raw acquisition
and returns the events it affected, which become an `anomaly` truth column.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import flowio
import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError, CytopipeError
from cytopipe.synth.model import (
    ADULT_DISEASES,
    AUTOFLUORESCENCE,
    AUTOFLUORESCENCE_SCALE,
    B_SUBSETS,
    BASELINE_B_SUBSETS,
    CHILD_DISEASES,
    DEAD_FSC_FACTOR,
    DEAD_STAIN_FACTOR,
    DEAD_VIABILITY,
    DEBRIS_FSC_MAX,
    DEBRIS_SCATTER,
    DOUBLET_FSC_H_FACTOR,
    FAKE_NAMES,
    INSTRUMENTS,
    LEUKOCYTES,
    LYMPHOCYTES,
    MARKERS,
    PHENOTYPES,
    POPULATIONS,
    SCATTER_BY_POPULATION,
    SINGLET_CELLS,
    SINGLET_FSC_H_RATIO,
    SINGLET_FSC_H_SIGMA,
    TIMEPOINTS,
    Instrument,
    Stain,
)

__all__ = [
    "POPULATIONS",
    "TIMEPOINTS",
    "Acquisition",
    "Anomaly",
    "Bubble",
    "Clog",
    "Drift",
    "Saturation",
    "SimulatedSample",
    "blood_composition",
    "composition_counts",
    "demo_cohort",
    "get_instrument",
    "read_truth",
    "simulate_sample",
    "synth_cohort",
    "truth_masks",
    "truth_path",
    "write_sample",
]

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
)

_M = {m: i for i, m in enumerate(MARKERS)}
_POP = {p: i for i, p in enumerate(POPULATIONS)}


# --- single sample -----------------------------------------------------------------------------


@dataclass
class SimulatedSample:
    """One simulated acquisition: what goes into the FCS file plus the truth behind it.

    `true_fluorescence` is the pre-spill signal of each fluorochrome in instrument units, in
    `spillover_channels` order: compensating `events` with `spillover` should give it back up to
    detector noise (and except where a detector saturated).
    """

    events: np.ndarray  # float32 (n_events, n_channels), file channel order
    labels: pd.Categorical  # true population per event (categories = POPULATIONS)
    pnn: list[str]
    pns: list[str]
    pnr: list[float]
    spillover_channels: list[str]  # $PnN of the spilled detectors, matrix order
    spillover: np.ndarray  # (k, k) rows = source fluorochrome, columns = detector
    keywords: dict[str, str]  # FCS keywords other than $PnX ('$CYT', '$SPILLOVER', ...)
    true_fluorescence: np.ndarray  # float32 (n_events, k)
    instrument: str
    extra_truth: dict[str, pd.Categorical] = field(default_factory=dict)  # e.g. "anomaly"

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    def column(self, pnn: str) -> np.ndarray:
        return self.events[:, self.pnn.index(pnn)]


@dataclass
class Acquisition:
    """The raw acquisition an anomaly may edit in place, before saturation and float32.

    `data` is float64 (n_events, n_channels) in file channel order (`canonical` names them as
    FSC-A, CD19, Time, ...); `time_s` is the event time in seconds (written to the Time channel
    in $TIMESTEP units afterwards, so edit `time_s`, not the Time column).
    """

    data: np.ndarray
    time_s: np.ndarray
    canonical: list[str]
    pnr: list[float]
    labels: pd.Categorical


class Anomaly(Protocol):
    """A planted acquisition problem (clog, bubble, drift, saturation): see issue 8."""

    name: str

    def __call__(self, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
        """Edit `acq` in place and return the boolean mask of the events it made anomalous."""
        ...


def get_instrument(instrument: str | Instrument) -> Instrument:
    if isinstance(instrument, Instrument):
        return instrument
    try:
        return INSTRUMENTS[instrument]
    except KeyError:
        raise ConfigError(
            f"unknown synthetic instrument {instrument!r}",
            hint=f"use one of {', '.join(INSTRUMENTS)}",
        ) from None


def blood_composition(
    *,
    lymphocytes_of_leukocytes: float = 0.30,
    monocytes_of_leukocytes: float = 0.08,
    nk_of_lymphocytes: float = 0.12,
    b_of_lymphocytes: float = 0.10,
    b_subsets: Mapping[str, float] = BASELINE_B_SUBSETS,
    debris: float = 0.05,
    doublet: float = 0.03,
    dead: float = 0.03,
    cd45_negative: float = 0.05,
) -> dict[str, float]:
    """Flat event fractions of a lysed whole-blood tube from the hierarchy a clinician thinks in.

    Granulocytes take what lymphocytes and monocytes leave of the leukocytes; T cells what NK
    and B cells leave of the lymphocytes. `b_subsets` are fractions of B cells (normalized).
    """
    shares = {
        "lymphocytes_of_leukocytes": lymphocytes_of_leukocytes,
        "monocytes_of_leukocytes": monocytes_of_leukocytes,
        "nk_of_lymphocytes": nk_of_lymphocytes,
        "b_of_lymphocytes": b_of_lymphocytes,
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
    t_cells = 1.0 - nk_of_lymphocytes - b_of_lymphocytes
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


def simulate_sample(
    n_events: int | None,
    composition: Mapping[str, float | int],
    instrument: str | Instrument = "A",
    rng: np.random.Generator | int | None = None,
    *,
    start: datetime | None = None,
    keywords: Mapping[str, str] | None = None,
    anomalies: Sequence[Anomaly] = (),
) -> SimulatedSample:
    """Simulate one tube: events in random order, with spillover, noise, saturation and Time.

    `composition` maps truth labels to fractions or exact counts (see `composition_counts`).
    `start` sets $DATE/$BTIM (and $ETIM from the acquisition length); `keywords` adds or
    overrides FCS keywords (e.g. '$SRC', '$FIL'). Deterministic for a given `rng` seed.
    """
    inst = get_instrument(instrument)
    rng = np.random.default_rng(rng)
    counts = composition_counts(n_events, composition)
    n = sum(counts.values())
    codes = rng.permutation(
        np.repeat(np.arange(len(POPULATIONS), dtype=np.int8), list(counts.values()))
    )
    labels = pd.Categorical.from_codes(codes, categories=list(POPULATIONS))

    fsc_a, fsc_h, ssc_a, fluor = _biology(codes, counts, rng)
    canonical = [c.canonical for c in inst.channels]
    fl_channels = inst.fluorescence
    fl_markers = [c.canonical for c in fl_channels]
    spill = spillover_matrix(inst)

    true_fl = np.empty((n, len(fl_markers)), dtype=np.float64)
    for j, m in enumerate(fl_markers):  # a brighter/dimmer conjugate and a detector baseline
        gain, offset = inst.fluor_gain.get(m, 1.0), inst.fluor_offset.get(m, 0.0)
        true_fl[:, j] = fluor[:, _M[m]] * gain + offset
    observed = true_fl @ spill
    noise_sd = np.sqrt(inst.photon_factor * np.maximum(observed, 0.0) + inst.electronic_sd**2)
    observed += noise_sd * rng.standard_normal(observed.shape)

    data = np.empty((n, len(canonical)), dtype=np.float64)
    scatter = {"FSC-A": fsc_a, "FSC-H": fsc_h, "SSC-A": ssc_a}
    for j, name in enumerate(canonical):
        if name in scatter:
            gain = inst.scatter_gain.get(name, 1.0)
            data[:, j] = scatter[name] * gain + rng.normal(0.0, 150.0 * gain, n)
        elif name in _M:
            data[:, j] = observed[:, fl_markers.index(name)]
    rate = rng.uniform(*inst.event_rate)
    time_s = np.cumsum(rng.exponential(1.0 / rate, n))
    pnr = [inst.time_pnr if c == "Time" else inst.pnr for c in canonical]

    acq = Acquisition(data=data, time_s=time_s, canonical=canonical, pnr=pnr, labels=labels)
    extra_truth = _apply_anomalies(acq, anomalies, rng)

    top = np.array([p - 1.0 for p in pnr])
    np.minimum(acq.data, top, out=acq.data)  # the detector saturates at the top of its range
    for j, name in enumerate(canonical):
        if name in scatter:
            np.maximum(acq.data[:, j], 0.0, out=acq.data[:, j])
        elif name == "Time":
            acq.data[:, j] = np.floor(acq.time_s / inst.timestep)
    events = np.ascontiguousarray(acq.data, dtype=np.float32)

    kw = _keywords(inst, spill, float(acq.time_s[-1]) if n else 0.0, start)
    kw.update(keywords or {})
    return SimulatedSample(
        events=events,
        labels=labels,
        pnn=[c.pnn for c in inst.channels],
        pns=[c.pns for c in inst.channels],
        pnr=pnr,
        spillover_channels=[c.pnn for c in fl_channels],
        spillover=spill,
        keywords=kw,
        true_fluorescence=true_fl.astype(np.float32),
        instrument=inst.key,
        extra_truth=extra_truth,
    )


def spillover_matrix(instrument: str | Instrument) -> np.ndarray:
    """The instrument's spillover over its fluorescence detectors, in file channel order."""
    inst = get_instrument(instrument)
    markers = [c.canonical for c in inst.fluorescence]
    spill = np.eye(len(markers))
    for (src, det), value in inst.spill.items():
        spill[markers.index(src), markers.index(det)] = value
    return spill


def _apply_anomalies(
    acq: Acquisition, anomalies: Sequence[Anomaly], rng: np.random.Generator
) -> dict[str, pd.Categorical]:
    if not anomalies:
        return {}
    names = ["none"]
    codes = np.zeros(len(acq.time_s), dtype=np.int8)
    for anomaly in anomalies:
        mask = np.asarray(anomaly(acq, rng), dtype=bool)
        if anomaly.name not in names:
            names.append(anomaly.name)
        codes[mask] = names.index(anomaly.name)
    return {"anomaly": pd.Categorical.from_codes(codes, categories=names)}


def _keywords(
    inst: Instrument, spill: np.ndarray, duration_s: float, start: datetime | None
) -> dict[str, str]:
    start = start or datetime(2024, 1, 15, 10, 0, 0)
    end = start + timedelta(seconds=math.ceil(duration_s))
    fl = [c.pnn for c in inst.fluorescence]
    spill_text = ",".join([str(len(fl)), *fl, *(format(v, "g") for v in spill.ravel())])
    kw = {
        "$CYT": inst.cytometer,
        "$DATE": start.strftime("%d-%b-%Y").upper(),
        "$BTIM": start.strftime("%H:%M:%S"),
        "$ETIM": end.strftime("%H:%M:%S"),
        "$TIMESTEP": format(inst.timestep, "g"),
        "$SPILLOVER": spill_text,
    }
    for i, c in enumerate(inst.channels, start=1):
        if c.voltage is not None:
            kw[f"$P{i}V"] = str(c.voltage)
    return kw


# --- planted acquisition anomalies (issue 8) ----------------------------------------------------
# Positions are fractions of the acquisition time, so one anomaly fits any event count or rate.


def _window(acq: Acquisition, at: float, seconds: float) -> tuple[float, float]:
    start = float(acq.time_s[-1]) * at
    return start, start + seconds


def _warp_time(acq: Acquisition, start: float, seconds: float, factor: float) -> np.ndarray:
    """The events of `seconds * factor` normal-rate seconds from `start` arrive within `seconds`
    instead (factor < 1: a clog lets few through; > 1: a burst packs many in); later events
    shift by the difference. Returns the warped events."""
    span = seconds * factor
    t = acq.time_s
    mask = (t >= start) & (t < start + span)
    after = t >= start + span
    t[mask] = start + (t[mask] - start) / factor
    t[after] += seconds - span
    return mask


def _signal_columns(acq: Acquisition) -> np.ndarray:
    return np.array([c != "Time" for c in acq.canonical])


@dataclass(frozen=True)
class Clog:
    """A partial clog: for `seconds` the flow rate falls to `residual_rate` of normal and the
    few events that get through are dimmed (a disturbed sample stream); the acquisition then
    resumes. The events acquired during the clog are the anomaly."""

    at: float = 0.4
    seconds: float = 4.0
    residual_rate: float = 0.05
    name: str = "clog"

    def __call__(self, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
        start, _ = _window(acq, self.at, self.seconds)
        mask = _warp_time(acq, start, self.seconds, self.residual_rate)
        dim = rng.uniform(0.4, 0.8, (int(mask.sum()), 1))
        cols = _signal_columns(acq)
        acq.data[np.ix_(mask, cols)] *= dim
        return mask


@dataclass(frozen=True)
class Bubble:
    """A bubble burst: for `seconds` the event rate jumps `rate_factor`-fold and the events are
    scatter garbage with little fluorescence (air and fragments, not cells)."""

    at: float = 0.7
    seconds: float = 0.5
    rate_factor: float = 3.0
    name: str = "bubble"

    def __call__(self, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
        start, _ = _window(acq, self.at, self.seconds)
        mask = _warp_time(acq, start, self.seconds, self.rate_factor)
        m = int(mask.sum())
        for j, name in enumerate(acq.canonical):
            top = acq.pnr[j]
            if name in ("FSC-A", "SSC-A"):
                acq.data[mask, j] = rng.uniform(0.01, 0.6, m) * top
            elif name == "FSC-H":
                acq.data[mask, j] = rng.uniform(0.01, 0.6, m) * top * rng.uniform(0.3, 1.0, m)
            elif name != "Time":
                acq.data[mask, j] = rng.normal(0.0, 60.0, m)
        return mask


@dataclass(frozen=True)
class Drift:
    """A gradual signal drift in one channel (laser power, fluidics): the signal is multiplied
    by a factor ramping linearly from 1 at `start` to `1 + change` at `end` (fractions of the
    acquisition). Events whose signal is off by more than `flag_above` are the anomaly."""

    channel: str = "CD19"  # canonical name
    start: float = 0.7
    end: float = 1.0
    change: float = -0.5
    flag_above: float = 0.1
    name: str = "drift"

    def __call__(self, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
        if self.channel not in acq.canonical:
            raise ConfigError(f"drift channel {self.channel!r} is not measured on this instrument")
        total = float(acq.time_s[-1])
        ramp = np.clip((acq.time_s / total - self.start) / (self.end - self.start), 0.0, 1.0)
        factor = 1.0 + self.change * ramp
        acq.data[:, acq.canonical.index(self.channel)] *= factor
        return np.abs(factor - 1.0) > self.flag_above


@dataclass(frozen=True)
class Saturation:
    """Events pinned at the top of the range ($PnR - 1 once written) in random channels."""

    fraction: float = 0.01
    name: str = "saturated"

    def __call__(self, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
        n = len(acq.time_s)
        mask = rng.random(n) < self.fraction
        cols = np.flatnonzero(_signal_columns(acq))
        which = rng.choice(cols, int(mask.sum()))
        rows = np.flatnonzero(mask)
        acq.data[rows, which] = np.asarray(acq.pnr)[which]
        return mask


# --- the biology: pre-spill signals per event ---------------------------------------------------


def _biology(
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
    for pop, code in _POP.items():
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
    return fsc_a, fsc_h, ssc_a, fluor


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
            stain[idx, _M[marker]] = _stain(st, size, rng)
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
    fluor[:, _M["CD45"]] += _stain(Stain(800, 1.2, 0.3), np.zeros(m), rng)
    for marker in MARKERS:
        fluor[:, _M[marker]] += _stain(Stain(150, 1.0, 0.2), np.zeros(m), rng)
    return fsc, fsc_h, ssc, fluor


def _dead(templates: np.ndarray, rng: np.random.Generator):
    """Dying leukocytes: smaller, surface markers fading, viability dye bright."""
    m = len(templates)
    fsc, _, ssc, fluor, stain = _cells(templates, rng)
    fsc = fsc * rng.uniform(*DEAD_FSC_FACTOR, m)
    ssc = ssc * rng.uniform(0.8, 1.3, m)
    fluor = fluor - stain * (1.0 - DEAD_STAIN_FACTOR)
    fluor[:, _M["viability"]] += _stain(DEAD_VIABILITY, np.zeros(m), rng)
    return fsc, _fsc_height(fsc, rng), ssc, fluor


def _doublets(m: int, weights: np.ndarray, rng: np.random.Generator):
    """Two coincident cells: areas add up, the pulse height barely grows."""
    first = _cells(rng.choice(SINGLET_CELLS, m, p=weights), rng)
    second = _cells(rng.choice(SINGLET_CELLS, m, p=weights), rng)
    fsc = first[0] + second[0]
    fsc_h = np.maximum(first[1], second[1]) * rng.uniform(*DOUBLET_FSC_H_FACTOR, m)
    return fsc, fsc_h, first[2] + second[2], first[3] + second[3]


# --- truth -------------------------------------------------------------------------------------

_TRUTH_GROUPS: dict[str, tuple[str, ...]] = {
    "lymphocytes": LYMPHOCYTES,
    "t_cells": ("t_cell",),
    "b_cells": B_SUBSETS,
    "b_cd20pos": tuple(s for s in B_SUBSETS if s != "plasmablast"),
    "b_cd20neg": ("plasmablast",),
    "plasmablasts": ("plasmablast",),
    "b_naive": ("b_naive",),
    "b_unswitched_memory": ("b_unswitched_memory",),
    "b_switched_memory": ("b_switched_memory",),
    "b_double_negative": ("b_double_negative",),
    "b_transitional": ("b_transitional",),
}


def truth_masks(labels: Sequence[str] | pd.Categorical | np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks per pipeline population id (DESIGN.md) from per-event truth labels.

    Cells are everything but debris; doublets and dead events belong to no population below
    them, so a dead B cell is never a B cell.
    """
    cat = pd.Categorical(labels, categories=list(POPULATIONS))
    codes = np.asarray(cat.codes)
    if (codes < 0).any():
        bad = sorted(set(pd.Series(np.asarray(labels, dtype=object)[codes < 0]).astype(str)))
        raise ConfigError(f"unknown truth label(s): {', '.join(bad[:5])}")

    def isin(pops: Sequence[str]) -> np.ndarray:
        return np.isin(codes, [_POP[p] for p in pops])

    masks = {"cells": codes != _POP["debris"]}
    masks["singlets"] = masks["cells"] & (codes != _POP["doublet"])
    masks["live"] = masks["singlets"] & (codes != _POP["dead"])
    masks["leukocytes"] = masks["live"] & (codes != _POP["cd45_negative"])
    masks.update({pid: isin(pops) for pid, pops in _TRUTH_GROUPS.items()})
    return masks


def truth_path(fcs_path: str | os.PathLike) -> Path:
    """`NAME.fcs` -> `NAME.truth.parquet` beside it."""
    p = Path(fcs_path)
    return p.with_name((p.name[:-4] if p.suffix.lower() == ".fcs" else p.name) + ".truth.parquet")


def read_truth(fcs_path: str | os.PathLike) -> pd.DataFrame:
    """The per-event truth table of a synthetic FCS file (column `population`, maybe `anomaly`)."""
    path = truth_path(fcs_path)
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise CytopipeError(
            f"cannot read synthetic truth: {exc}",
            path=path,
            hint="truth files exist only beside FCS files written by cytopipe.synth.generate",
        ) from exc


def write_sample(path: str | os.PathLike, sample: SimulatedSample) -> Path:
    """Write `sample` as an FCS 3.1 file (float32) and its truth parquet beside it."""
    path = Path(path)
    metadata = {"$FIL": path.name, **sample.keywords}
    for i, r in enumerate(sample.pnr, start=1):
        metadata[f"p{i}r"] = format(r, ".0f")
    data = array("f")
    data.frombytes(np.ascontiguousarray(sample.events, dtype="<f4").tobytes())
    truth = pd.DataFrame({"population": sample.labels, **sample.extra_truth})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            flowio.create_fcs(fh, data, sample.pnn, sample.pns, metadata_dict=metadata)
        truth.to_parquet(truth_path(path), index=False)
    except OSError as exc:
        raise CytopipeError(
            f"cannot write synthetic sample: {exc.strerror or exc}",
            path=path,
            hint="check that the output folder is writable and the disk is not full",
        ) from exc
    return path


# --- cohorts -----------------------------------------------------------------------------------


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
        plans.append(
            _plan_patient(
                i, f"P{i + 1:0{width}d}", roles[i], bool(is_child[i]), instruments[i], rng
            )
        )
    return plans


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
    fractions = blood_composition(
        lymphocytes_of_leukocytes=alc / (alc + gran + mono),
        monocytes_of_leukocytes=mono / (alc + gran + mono),
        nk_of_lymphocytes=min(nk, 0.35),
        b_of_lymphocytes=0.0 if b is None else b,
        b_subsets=b_subsets(plan, day),
        debris=rng.uniform(0.03, 0.08),
        doublet=rng.uniform(0.02, 0.05),
        dead=rng.uniform(0.01, 0.03) + (0.02 if early else 0.0),
        cd45_negative=rng.uniform(0.02, 0.07),
    )
    p = np.array([fractions[k] for k in POPULATIONS])
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
    sample = simulate_sample(None, counts, plan.instrument, rng, start=start, keywords=keywords)
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
    }


def _patient_truth(plans: Sequence[PatientPlan]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [p.patient_id for p in plans],
            "role": [p.role for p in plans],
            "recon_day": [p.recon_day for p in plans],
            "first_return_day": [p.first_return_day for p in plans],
            "b_baseline": [round(p.b_baseline, 4) for p in plans],
            "instrument": [p.instrument for p in plans],
        }
    )


DEMO = {"n_patients": 5, "seed": 1, "events_per_sample": 50_000}


def demo_cohort(out_dir: str | os.PathLike, events_per_sample: int = 50_000) -> pd.DataFrame:
    """The bundled demo: 5 patients, seed 1; patient 4 was measured on the archive instrument B,
    and one archived file was truncated in transfer, as real archives have."""
    sheet = synth_cohort(
        out_dir,
        n_patients=5,
        seed=1,
        events_per_sample=events_per_sample,
        instrument=["A", "A", "A", "B", "A"],
    )
    sheet = plant_truncated_file(Path(out_dir), sheet, source_row=len(sheet) - 1, day=400)
    sheet.to_csv(Path(out_dir) / "samples.tsv", sep="\t", index=False)
    return sheet


def plant_truncated_file(out: Path, sheet: pd.DataFrame, source_row: int, day: int) -> pd.DataFrame:
    """Add a sample whose FCS file is a copy of another cut short mid-DATA (a failed transfer),
    so a demo shows how one broken file is reported without stopping the cohort."""
    src = sheet.iloc[source_row]
    data = Path(src["path"]).read_bytes()
    pid = src["patient_id"]
    name = f"{pid}_D{day:03d}.fcs"
    (out / name).write_bytes(data[: len(data) * 2 // 3])
    infusion = date.fromisoformat(str(src["infusion_date"]))
    row = src.copy()
    row["sample_id"] = f"{pid}_D{day:03d}"
    row["path"] = str(out / name)
    row["day"] = day
    row["collection_date"] = (infusion + timedelta(days=day)).isoformat()
    row["true_b_cells"] = pd.NA
    row["true_lymphocytes"] = pd.NA
    return pd.concat([sheet, row.to_frame().T], ignore_index=True)


# --- command line ------------------------------------------------------------------------------
