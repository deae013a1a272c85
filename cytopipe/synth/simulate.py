"""One simulated acquisition: what a cytometer would record for a tube of known composition.

Why synthetic: real archives have no per-event truth, and B-cell aplasia (a handful of B cells
among tens of thousands of lymphocytes) is exactly where gates drawn around noise go wrong. So a
sample holds log-normal marker levels in linear units, autofluorescence, a spillover matrix that
is really applied (and written to $SPILLOVER), Poisson-like and electronic detector noise,
saturation at the top of the range, a Time channel of Poisson arrivals, debris, doublets and dead
cells, and the true population of each event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError
from cytopipe.synth.anomalies import Acquisition, Anomaly
from cytopipe.synth.biology import pre_spill_signals
from cytopipe.synth.composition import composition_counts
from cytopipe.synth.model import INSTRUMENTS, MARKER_COLUMN, POPULATIONS, Instrument

# (truth codes, counts per population, rng) -> FSC-A, FSC-H, SSC-A, (n, MARKERS) fluorescence,
# pre-spill in instrument-A units: the biology of a tube (`pre_spill_signals` by default).
SignalModel = Callable[
    [np.ndarray, Mapping[str, int], np.random.Generator],
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
]


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


def simulate_sample(
    n_events: int | None,
    composition: Mapping[str, float | int],
    instrument: str | Instrument = "A",
    rng: np.random.Generator | int | None = None,
    *,
    start: datetime | None = None,
    keywords: Mapping[str, str] | None = None,
    anomalies: Sequence[Anomaly] = (),
    signals: SignalModel = pre_spill_signals,
) -> SimulatedSample:
    """Simulate one tube: events in random order, with spillover, noise, saturation and Time.

    `composition` maps truth labels to fractions or exact counts (see `composition_counts`).
    `start` sets $DATE/$BTIM (and $ETIM from the acquisition length); `keywords` adds or
    overrides FCS keywords (e.g. '$SRC', '$FIL'). `signals` replaces the biology (randomized
    variants in `cytopipe.synth.variants` reshape scatter and stains). Deterministic for a given
    `rng` seed.
    """
    inst = get_instrument(instrument)
    rng = np.random.default_rng(rng)
    counts = composition_counts(n_events, composition)
    n = sum(counts.values())
    codes = rng.permutation(
        np.repeat(np.arange(len(POPULATIONS), dtype=np.int8), list(counts.values()))
    )
    labels = pd.Categorical.from_codes(codes, categories=list(POPULATIONS))

    fsc_a, fsc_h, ssc_a, fluor = signals(codes, counts, rng)
    canonical = [c.canonical for c in inst.channels]
    fl_channels = inst.fluorescence
    fl_markers = [c.canonical for c in fl_channels]
    spill = spillover_matrix(inst)

    true_fl = np.empty((n, len(fl_markers)), dtype=np.float64)
    for j, m in enumerate(fl_markers):  # a brighter/dimmer conjugate and a detector baseline
        gain, offset = inst.fluor_gain.get(m, 1.0), inst.fluor_offset.get(m, 0.0)
        true_fl[:, j] = fluor[:, MARKER_COLUMN[m]] * gain + offset
    observed = true_fl @ spill
    noise_sd = np.sqrt(inst.photon_factor * np.maximum(observed, 0.0) + inst.electronic_sd**2)
    observed += noise_sd * rng.standard_normal(observed.shape)

    data = np.empty((n, len(canonical)), dtype=np.float64)
    scatter = {"FSC-A": fsc_a, "FSC-H": fsc_h, "SSC-A": ssc_a}
    for j, name in enumerate(canonical):
        if name in scatter:
            gain = inst.scatter_gain.get(name, 1.0)
            data[:, j] = scatter[name] * gain + rng.normal(0.0, 150.0 * gain, n)
        elif name in MARKER_COLUMN:
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
