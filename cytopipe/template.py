"""The gating template (config/gating.yaml): which populations to gate, where, and what to do
when a file's panel lacks a marker.

The template is data so a core facility can adjust gates without code; this module turns it
into gate objects of cytopipe.gating for one sample's set of available markers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigError
from .gating import Gate, PolygonGate, RectangleGate


@dataclass(frozen=True)
class PopulationSpec:
    id: str
    parent: str | None
    dims: tuple[str, ...]
    gate: dict = field(hash=False)
    optional: str | None = None  # "pass": missing markers -> all parent events pass (flagged)


@dataclass
class TemplateGates:
    gates: list[Gate]
    plotted: dict[str, tuple[str, str]]  # population -> (x, y) markers of its density plot
    flags: dict[str, str]  # population -> why it was not gated as the template says
    skipped: dict[str, str]  # population -> why it is absent


def load_template(path: str | os.PathLike) -> list[PopulationSpec]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read gating template: {exc}", path=path) from None
    pops = raw.get("populations") if isinstance(raw, dict) else None
    if not isinstance(pops, list) or not pops:
        raise ConfigError("gating template needs a non-empty 'populations' list", path=path)
    specs: list[PopulationSpec] = []
    seen: set[str] = set()
    for i, p in enumerate(pops, 1):
        where = f"population #{i}"
        if not isinstance(p, dict) or "id" not in p:
            raise ConfigError(f"{where} needs an 'id'", path=path)
        pid = str(p["id"])
        parent = p.get("parent")
        if parent is not None and parent not in seen:
            raise ConfigError(f"{pid}: parent {parent!r} must be defined above it", path=path)
        dims = tuple(str(d) for d in p.get("dims") or ())
        gate = p.get("gate") or {}
        if gate.get("kind") not in ("rectangle", "polygon") or not dims:
            raise ConfigError(f"{pid}: needs dims and a gate of kind rectangle or polygon", path=path)
        if gate["kind"] == "rectangle" and not (
            len(gate.get("min", ())) == len(dims) == len(gate.get("max", ()))
        ):
            raise ConfigError(f"{pid}: rectangle min/max need one value per dim {dims}", path=path)
        if gate["kind"] == "polygon" and (len(dims) != 2 or len(gate.get("vertices", ())) < 3):
            raise ConfigError(f"{pid}: polygon needs 2 dims and at least 3 vertices", path=path)
        specs.append(PopulationSpec(pid, parent, dims, gate, p.get("optional")))
        seen.add(pid)
    return specs


def _gate(spec: PopulationSpec) -> Gate:
    g = spec.gate
    if g["kind"] == "rectangle":
        return RectangleGate(spec.id, spec.parent, spec.dims, tuple(g["min"]), tuple(g["max"]))
    return PolygonGate(spec.id, spec.parent, spec.dims, np.asarray(g["vertices"], dtype=float))


def build_gates(specs: Iterable[PopulationSpec], available: set[str]) -> TemplateGates:
    """Gates for a sample whose panel has `available` markers."""
    out = TemplateGates([], {}, {}, {})
    for spec in specs:
        if spec.parent in out.skipped:
            out.skipped[spec.id] = f"parent {spec.parent} not gated"
            continue
        missing = [d for d in spec.dims if d not in available]
        if not missing:
            out.gates.append(_gate(spec))
            out.plotted[spec.id] = (spec.dims[0], spec.dims[1] if len(spec.dims) > 1 else "SSC-A")
        elif spec.optional == "pass":
            anchor = next(iter(sorted(available)))
            out.gates.append(RectangleGate(spec.id, spec.parent, (anchor,), (None,), (None,)))
            out.flags[spec.id] = f"not gated: no {', '.join(missing)} channel"
        else:
            out.skipped[spec.id] = f"no {', '.join(missing)} channel"
    return out
