"""A gating strategy in plain cytopipe objects: gates, their dimensions (channel or ratio,
compensation, scale), the scales and spillover matrices they refer to, and the events a sample
provides.

Gating-ML (cytopipe.gating.gatingml) and FlowJo (cytopipe.gating.flowjo) documents are read into
these objects and written from them; evaluation (cytopipe.gating.apply) works on them only, so
neither flowkit nor XML is needed to gate. Spillover matrices are the pipeline's own type
(cytopipe.preprocess.compensation.Spillover), checked and inverted as the pipeline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cytopipe.gating.gates import Gate, population_ids
from cytopipe.preprocess.compensation import Spillover
from cytopipe.preprocess.transforms import Scale

UNCOMPENSATED = "uncompensated"
FCS_SPILL = "FCS"


# --------------------------------------------------------------------------- plain model


@dataclass(frozen=True)
class DimSpec:
    """One gate dimension: an FCS channel (or a ratio transform id) + compensation + scale."""

    name: str
    compensation: str = UNCOMPENSATED
    transform: str | None = None
    ratio: bool = False

    @property
    def key(self) -> str:
        key = f"ratio:{self.name}" if self.ratio else self.name
        if self.compensation not in (UNCOMPENSATED, None):
            key += f"@{self.compensation}"
        if self.transform:
            key += f"~{self.transform}"
        return key

    def linear(self) -> DimSpec:
        return replace(self, transform=None)


@dataclass
class Strategy:
    """A gating strategy in plain cytopipe objects; gate dims are keys of `dims`."""

    gates: list[Gate]
    dims: dict[str, DimSpec] = field(default_factory=dict)
    scales: dict[str, Scale] = field(default_factory=dict)
    matrices: dict[str, Spillover] = field(default_factory=dict)

    def gate(self, gate_id: str) -> Gate:
        for g in self.gates:
            if gate_id in population_ids(g):
                return g
        raise KeyError(gate_id)

    def population_ids(self) -> list[str]:
        return [p for g in self.gates for p in population_ids(g)]

    def parents(self) -> dict[str, str | None]:
        return {p: g.parent for g in self.gates for p in population_ids(g)}


@dataclass
class EventSource:
    """A sample's raw (uncompensated, linear) events and the names gates refer to."""

    events: np.ndarray  # (n_events, n_channels), file order
    pnn: Sequence[str]
    pns: Sequence[str] = ()
    spill: Spillover | None = None  # the file's own spillover ("FCS")
    path: str | None = None
