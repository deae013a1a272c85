"""Planted acquisition anomalies (issue 8): clog, bubble, drift, saturation.

They plug in through `simulate_sample(..., anomalies=[...])`: each anomaly edits the raw
acquisition and returns the events it affected, which become an `anomaly` truth column, so QC can
be tested against known bad events. Positions are fractions of the acquisition time, so one
anomaly fits any event count or rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError


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
