"""The gating template (config/gating.yaml): which populations to gate, where, how each gate is
placed per sample, and what to do when a file's panel lacks a marker.

The template is data so a core facility can adjust gates without code. It has two sections:

- `thresholds`: named 1-D cut-offs (e.g. `cd19`) placed per sample by `cytopipe.gating.placer` from
  the events of a reference population, with hard limits and a `fixed` position. A name is shared
  by every gate that uses it, so the four IgD/CD27 quadrants are cut by the same two lines.
- `populations`: the hierarchy. Rectangle bounds are numbers, null (open side) or threshold
  names; polygons carry fixed vertices and optionally a `place` block (e.g. a Gaussian mixture).
  A rectangle's `or:` list adds rectangles whose events join it (CD19-dim plasmablasts into
  the B cells), used when the panel has their markers.
  `alternatives` list other dims/gates for panels that lack the first choice (lymphocytes on
  FSC-A/SSC-A when there is no CD45).

Every key, what it allows and what it does: cytopipe/schemas/gating.schema.yaml (the file's
schema, documented in config/README.md); `load_template` adds the checks a schema cannot make.
`build_gates` turns the template into the fixed gates (every threshold at its `fixed` value);
`cytopipe.gating.autogate.autogate` places them per sample.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cytopipe.config import load_file, thaw
from cytopipe.errors import ConfigError
from cytopipe.gating.gates import Gate, PolygonGate, RectangleGate
from cytopipe.ingest.panel import SCATTER

# threshold params that name another threshold
NAMED = ("reference", "same_as", "not_below", "probe")
# ... and one a threshold consults where the panel has its markers, and goes without elsewhere
SOFT_NAMED = ("straddled_by",)
# ... and those that list thresholds the panel may lack: each used where it has its markers
OPTIONAL_NAMED = ("upper_above",)
CONDITIONS = ("where_if_present", "spares")  # params of [threshold, below|above] pairs, as `where`


@dataclass(frozen=True)
class ThresholdSpec:
    """A 1-D cut-off on `dim`, placed on the events of population `on` (None: all events),
    optionally restricted by `where` = ((threshold name, "below" | "above"), ...)."""

    name: str
    dim: str
    method: str
    fixed: float
    on: str | None = None
    where: tuple[tuple[ThresholdSpec, str], ...] = ()
    params: Mapping = field(default_factory=dict, hash=False, compare=False)

    @property
    def bandwidth(self) -> float:
        """The smoothing its densities are read with (`bandwidth`, default 0.02): also the
        step its cut moves by in a count's range (cytopipe.gating.cut_moves)."""
        return float(self.params.get("bandwidth", 0.02))

    def dims(self) -> set[str]:
        """Markers needed to place it: its own, its `where`'s and the thresholds it names."""
        out = {self.dim}
        for t, _ in self.where:
            out |= t.dims()
        for key in NAMED:
            ref = self.params.get(key)
            if isinstance(ref, ThresholdSpec):
                out |= ref.dims()
        return out


Bound = float | ThresholdSpec | None


@dataclass(frozen=True)
class UnionPart:
    """One extra rectangle of a rectangle gate's `or:` list: its events join the population.
    Used only when the panel has all its dims (the main rectangle alone otherwise)."""

    dims: tuple[str, ...]
    mins: tuple[Bound, ...]
    maxs: tuple[Bound, ...]
    label: str = ""
    share: float = 0.0  # `missed:` parts: of the parent's events, beyond which to review
    of_gate: float = 1.0  # ... and of the gate's own events
    only_without: frozenset[str] = frozenset()  # used only in a panel without these markers
    instead: str = ""  # `contradicted:` parts: the population their events may be instead
    within: str = ""  # `missed:` parts: the population searched instead of the parent
    check: str = ""  # `missed:` parts: what to check, instead of the markers the part leaves out

    def applies(self, available: set[str]) -> bool:
        """The panel has the part's markers and none it stands in for."""
        return self.needed() <= available and not self.only_without & available

    def needed(self) -> set[str]:
        need = set(self.dims)
        for b in (*self.mins, *self.maxs):
            if isinstance(b, ThresholdSpec):
                need |= b.dims()
        return need


@dataclass(frozen=True)
class PopulationSpec:
    id: str
    parent: str | None
    dims: tuple[str, ...]
    gate: dict = field(hash=False)  # fixed gate: thresholds already replaced by their `fixed`
    optional: str | None = None  # "pass": missing markers -> all parent events pass (flagged)
    # How the gate is placed per sample: rectangle bounds as ThresholdSpec/float/None
    # ({"min": [...], "max": [...]}) or a polygon's `place` block ({"method": "gmm", ...}).
    place: Mapping | None = field(default=None, hash=False, compare=False)
    alternatives: tuple[PopulationSpec, ...] = field(default=(), hash=False, compare=False)
    # `rescue:` rectangles on the parent's events outside the gate, whose thresholds are placed
    # on populations below it; their events join the population after the whole pass
    rescue: tuple[UnionPart, ...] = field(default=(), hash=False, compare=False)
    # `missed:` rectangles on the parent's events outside the gate that another marker of the
    # population's lineage marks: more than their `share` of the parent -> to review
    missed: tuple[UnionPart, ...] = field(default=(), hash=False, compare=False)
    # `contradicted:` rectangles on the gate's own events where another marker says they cannot
    # be of this population: more than their `share` of the gate -> to review
    contradicted: tuple[UnionPart, ...] = field(default=(), hash=False, compare=False)
    # markers the population needs beyond its gate's (plasmablasts are CD19-dim: without CD3
    # they cannot be told from NK cells, so they are absent with that reason, not undercounted)
    requires: tuple[str, ...] = ()
    # `most_of_parent:` (share, why): holding less of a large parent is a stain problem, not
    # biology (CD20+ B cells: CD20 masked by anti-CD20 therapy); None: not checked
    most_of_parent: tuple[float, str] | None = None
    # `stained:` (dim, in, than, share, net): stains the population `in` (this one, or another
    # whose stain this one's cuts rely on) must show against a population without them (IgD
    # on B cells against T cells; `net`: beyond that population's own share); fewer: the
    # stain failed
    stained: tuple[tuple[str, str, str, float, bool], ...] = ()
    # `independent:` (markers, but_not, max_rho, min_rho, against): stains the population's
    # cells (less those of `but_not`) carry independently; two whose rank correlation reaches
    # max_rho (or falls to min_rho) is spillover left; `against`: only pairs with one of these
    independent: tuple[tuple[str, ...], str | None, float, float, tuple[str, ...]] | None = None

    def thresholds(self) -> list[ThresholdSpec]:
        """Thresholds this gate's bounds use, in dims order (min before max)."""
        if not self.place or "min" not in self.place:
            return []
        out = []
        for b in (*self.place["min"], *self.place["max"]):
            if isinstance(b, ThresholdSpec) and b not in out:
                out.append(b)
        return out

    def variant_for(self, available: set[str]) -> PopulationSpec | None:
        """This spec or the first alternative whose dims the panel has (None: none has); a
        rectangle's open scatter dims (no bound either side: only the density plot's axis, such
        as SSC-A beside viability) are dropped where the panel lacks them, so a file without
        scatter (mass cytometry, a scatterless export) still gets its viability and CD45 gates.
        An open stain dim stays needed: plasmablasts are CD19-dim, CD20+ B cells are CD19+."""
        for variant in (self, *self.alternatives):
            variant = variant.without_open(available)
            if all(d in available for d in variant.needed()):
                return variant
        return None

    def without_open(self, available: set[str]) -> PopulationSpec:
        if self.gate["kind"] != "rectangle" or not self.place:
            return self
        keep = [
            i
            for i, d in enumerate(self.dims)
            if d in available
            or d not in SCATTER
            or self.place["min"][i] is not None
            or self.place["max"][i] is not None
        ]
        if len(keep) == len(self.dims):
            return self

        def pick(values):
            return [values[i] for i in keep]

        return replace(
            self,
            dims=tuple(pick(self.dims)),
            gate={**self.gate, "min": pick(self.gate["min"]), "max": pick(self.gate["max"])},
            place={**self.place, "min": pick(self.place["min"]), "max": pick(self.place["max"])},
        )

    def needed(self) -> set[str]:
        """Markers the gate, the placement of its thresholds and `requires` need."""
        need = set(self.dims) | set(self.requires)
        for t in self.thresholds():
            need |= t.dims()
        return need


@dataclass
class TemplateGates:
    gates: list[Gate]
    plotted: dict[str, tuple[str, str]]  # population -> (x, y) markers of its density plot
    flags: dict[str, str]  # population -> why it was not gated as the template says
    skipped: dict[str, str]  # population -> why it is absent


def _number_pair(value: Sequence[float], what: str, path) -> tuple[float, float]:
    """A [low, high] pair (two numbers: the schema) with low below high."""
    lo, hi = (float(v) for v in value)
    if not lo < hi:
        raise ConfigError(f"{what}: low must be below high, got [{lo}, {hi}]", path=path)
    return lo, hi


def lenders(specs: Sequence[PopulationSpec], markers: Iterable[str]) -> dict[str, ThresholdSpec]:
    """Threshold name -> the threshold that `lends` it its valley (one `same_as` it), where
    the panel has that one's `markers` (a panel without IgD has no IgD- B cells to look at)."""
    have = set(markers)
    return {
        t.params["same_as"].name: t
        for s in specs
        for t in s.thresholds()
        if t.params.get("lends") and t.params.get("same_as") is not None and t.dims() <= have
    }


def _load_thresholds(raw: Mapping | None, path) -> dict[str, ThresholdSpec]:
    """Thresholds by name; `where` and `reference` may name thresholds in any order (no cycles)."""
    raw = {str(k): v for k, v in (raw or {}).items()}
    out: dict[str, ThresholdSpec] = {}
    for name in raw:
        _threshold(name, raw, out, (), path)
    return out


def _threshold(
    name: str, raw: Mapping, out: dict[str, ThresholdSpec], chain: tuple[str, ...], path
) -> ThresholdSpec:
    if name in out:
        return out[name]
    where = f"threshold {name}"
    if name in chain:
        raise ConfigError(f"{where}: refers to itself via {' -> '.join(chain)}", path=path)
    t = raw[name]
    method, fixed = t["method"], float(t["fixed"])
    if method != "fixed":
        lo, hi = _number_pair(t["search"], f"{where}: search", path)
        if not lo <= fixed <= hi:
            raise ConfigError(f"{where}: fixed {fixed} outside search [{lo}, {hi}]", path=path)

    def named(ref: object, what: str) -> ThresholdSpec:
        if str(ref) not in raw:
            raise ConfigError(f"{where}: {what} {ref!r} is not a threshold", path=path)
        return _threshold(str(ref), raw, out, (*chain, name), path)

    conds = tuple((named(ref, "where"), str(side)) for ref, side in t.get("where") or ())
    on = t.get("on")
    params = {k: v for k, v in t.items() if k not in ("dim", "method", "fixed", "on", "where")}
    for key in (*NAMED, *SOFT_NAMED):
        if t.get(key) is not None:
            params[key] = named(t[key], key)
    for key in OPTIONAL_NAMED:
        if t.get(key) is not None:
            params[key] = tuple(named(ref, key) for ref in t[key])
    for key in CONDITIONS:
        if t.get(key):
            params[key] = tuple((named(ref, key), str(side)) for ref, side in t[key])
    spec = ThresholdSpec(
        name, str(t["dim"]), method, fixed, None if on is None else str(on), conds, params
    )
    out[name] = spec
    return spec


def _bound(value: object, thresholds: Mapping[str, ThresholdSpec], pid: str, path) -> Bound:
    if value is None or isinstance(value, int | float):
        return value
    if value in thresholds:
        return thresholds[value]
    raise ConfigError(
        f"{pid}: bound {value!r} is neither a number, null nor a threshold", path=path
    )


def _rectangle_bounds(
    gate: Mapping, dims: tuple[str, ...], thresholds, seen: set[str], pid: str, path
) -> tuple[list[Bound], list[Bound]]:
    if not len(gate["min"]) == len(dims) == len(gate["max"]):
        raise ConfigError(f"{pid}: rectangle min/max need one value per dim {dims}", path=path)
    mins = [_bound(v, thresholds, pid, path) for v in gate["min"]]
    maxs = [_bound(v, thresholds, pid, path) for v in gate["max"]]
    for d, b in zip(dims * 2, mins + maxs, strict=True):
        if isinstance(b, ThresholdSpec):
            if b.dim != d:
                raise ConfigError(f"{pid}: threshold {b.name} is on {b.dim}, not {d}", path=path)
            if b.on is not None and b.on not in seen:
                raise ConfigError(
                    f"{pid}: threshold {b.name} is placed on {b.on}, which must be defined "
                    "above this population",
                    path=path,
                )
    return mins, maxs


def _union_parts(raw: list | None, thresholds, seen: set[str], pid: str, path) -> list[UnionPart]:
    """`or:` rectangles whose events join the gate's (e.g. CD19-dim plasmablasts, below the
    B-cell CD19 cut but brighter in CD27 and CD38 than any T cell); `rescue:`, `missed:` and
    `contradicted:` parts have the same form."""
    parts = []
    for part in raw or ():
        dims = tuple(str(d) for d in part["dims"])
        mins, maxs = _rectangle_bounds(part, dims, thresholds, seen, pid, path)
        label, share = str(part.get("label") or ""), float(part.get("share") or 0.0)
        of_gate = float(part.get("of_gate", 1.0))
        only_without = frozenset(str(m) for m in part.get("only_without") or ())
        named = {k: str(part.get(k) or "") for k in ("instead", "within")}
        for key, name in named.items():
            if name and name not in seen:
                raise ConfigError(f"{pid}: '{key}: {name}' names no population", path=path)
        parts.append(
            UnionPart(
                dims, tuple(mins), tuple(maxs), label, share, of_gate, only_without,
                check=str(part.get("check") or ""), **named,
            )
        )  # fmt: skip
    return parts


def _population(
    p: Mapping, pid: str, parent, thresholds: Mapping[str, ThresholdSpec], seen: set[str], path
) -> PopulationSpec:
    dims = tuple(str(d) for d in p["dims"])
    gate = thaw(p["gate"])
    place: dict | None = None
    if gate["kind"] == "rectangle":
        mins, maxs = _rectangle_bounds(gate, dims, thresholds, seen, pid, path)
        fixed = {
            "min": [b.fixed if isinstance(b, ThresholdSpec) else b for b in mins],
            "max": [b.fixed if isinstance(b, ThresholdSpec) else b for b in maxs],
        }
        gate.update(fixed)
        place = {
            "min": mins,
            "max": maxs,
            "or": _union_parts(p.get("or"), thresholds, seen, pid, path),
        }
    else:
        if p.get("or") is not None:
            raise ConfigError(f"{pid}: 'or' rectangles extend rectangle gates only", path=path)
        if len(dims) != 2:
            raise ConfigError(f"{pid}: polygon needs 2 dims and at least 3 vertices", path=path)
        if p.get("place") is not None:
            place = thaw(p["place"])
            if place["method"] == "ratio":
                _number_pair(place["search"], f"{pid}: place search", path)
    requires = tuple(str(m) for m in p.get("requires") or ())
    most = p.get("most_of_parent")
    most = (float(most["share"]), str(most["why"])) if most else None
    stained = []
    for check in p.get("stained") or ():
        inside = str(check.get("in") or pid)
        for name in (check["than"], inside):
            if name not in seen | {pid}:
                raise ConfigError(
                    f"{pid}: stained: {name!r} must be defined above this population", path=path
                )
        stained.append(
            (str(check["dim"]), inside, str(check["than"]), float(check["share"]),
             bool(check.get("net", False)))
        )  # fmt: skip
    return PopulationSpec(
        pid, parent, dims, gate, p.get("optional"), place, requires=requires,
        most_of_parent=most, stained=tuple(stained),
    )  # fmt: skip


def _independent(check: Mapping, every_id: set[str], pid: str, path):
    """`independent:` as (markers, but_not, max_rho, min_rho, against); `but_not` may be
    defined below."""
    but_not = check.get("but_not")
    if but_not is not None and str(but_not) not in every_id:
        raise ConfigError(f"{pid}: independent: but_not {but_not!r} is no population", path=path)
    markers = tuple(str(m) for m in check["markers"])
    high = float(check["max_rho"])
    low = float(check.get("min_rho", -high))
    against = tuple(str(m) for m in check.get("against") or ())
    return markers, None if but_not is None else str(but_not), high, low, against


def load_template(path: str | os.PathLike) -> list[PopulationSpec]:
    """The template file, checked: its schema (cytopipe/schemas/gating.schema.yaml) checks the
    structure and each value; the names it refers to (parents, thresholds) and the rules
    relating values (one bound per dim, fixed inside search) are checked here."""
    raw = load_file(path, "gating")
    thresholds = _load_thresholds(raw["thresholds"], path)
    specs: list[PopulationSpec] = []
    seen: set[str] = set()
    every_id = {str(p["id"]) for p in raw["populations"]}
    for p in raw["populations"]:
        pid = str(p["id"])
        parent = p.get("parent")
        if parent is not None and parent not in seen:
            raise ConfigError(f"{pid}: parent {parent!r} must be defined above it", path=path)
        spec = _population(p, pid, parent, thresholds, seen, path)
        alts = tuple(
            _population(alt, pid, parent, thresholds, seen, path)
            for alt in p.get("alternatives") or ()
        )
        rescue = _union_parts(p.get("rescue"), thresholds, every_id, pid, path)
        missed = _union_parts(p.get("missed"), thresholds, every_id, pid, path)
        against = _union_parts(p.get("contradicted"), thresholds, every_id, pid, path)
        if alts or rescue or missed or against:
            spec = replace(spec, alternatives=alts, rescue=tuple(rescue), missed=tuple(missed),
                           contradicted=tuple(against))  # fmt: skip
        if p.get("independent"):
            spec = replace(spec, independent=_independent(p["independent"], every_id, pid, path))
        specs.append(spec)
        seen.add(pid)
    return specs


def fixed_gate(spec: PopulationSpec) -> Gate:
    """The template's own gate of `spec`, thresholds at their `fixed` positions."""
    g = spec.gate
    if g["kind"] == "rectangle":
        return RectangleGate(spec.id, spec.parent, spec.dims, tuple(g["min"]), tuple(g["max"]))
    return PolygonGate(spec.id, spec.parent, spec.dims, np.asarray(g["vertices"], dtype=float))


def pass_gate(spec: PopulationSpec, available: set[str]) -> Gate:
    """A gate every parent event passes (open rectangle on any available marker)."""
    anchor = next(iter(sorted(available)))
    return RectangleGate(spec.id, spec.parent, (anchor,), (None,), (None,))


# the second axis of a one-marker gate's density plot: side scatter, or without scatter the
# first of these the file has
SECOND_AXES = ("SSC-A", "FSC-A", "CD45", "CD3", "CD19", "CD20")


def plot_axes(spec: PopulationSpec, available: Iterable[str] = SECOND_AXES) -> tuple[str, str]:
    if len(spec.dims) > 1:
        return spec.dims[0], spec.dims[1]
    others = [m for m in SECOND_AXES if m in set(available) and m != spec.dims[0]]
    return spec.dims[0], others[0] if others else spec.dims[0]


def build_gates(specs: Iterable[PopulationSpec], available: set[str]) -> TemplateGates:
    """Fixed gates (no per-sample placement) for a sample whose panel has `available` markers."""
    out = TemplateGates([], {}, {}, {})
    for spec in specs:
        if spec.parent in out.skipped:
            out.skipped[spec.id] = f"parent {spec.parent} not gated"
            continue
        variant = spec.variant_for(available)
        if variant is not None:
            out.gates.append(fixed_gate(variant))
            out.plotted[spec.id] = plot_axes(variant, available)
            continue
        missing = sorted(spec.without_open(available).needed() - available)
        if spec.optional == "pass":
            out.gates.append(pass_gate(spec, available))
            out.flags[spec.id] = f"not gated: no {', '.join(missing)} channel"
        else:
            out.skipped[spec.id] = f"no {', '.join(missing)} channel"
    return out
