"""Gating-ML 2.0 documents: import/export through flowkit.

flowkit parses and writes the XML; this module turns flowkit's gate, transform and matrix
objects into plain cytopipe objects (a `Strategy`, cytopipe.gating.strategy) and back. A gate
dimension in Gating-ML is (channel or ratio, compensation-ref, transformation-ref); each
distinct one becomes a column key, and `sample_columns` (cytopipe.gating.sample_columns) builds
a lazy mapping that computes each key from a sample's raw events once, only if a gate asks for
it. Evaluation then runs in cytopipe.gating.gates, driven by cytopipe.gating.apply.
"""

from __future__ import annotations

import io
import os

import numpy as np

from cytopipe.atomic import atomic_path
from cytopipe.errors import GatingError
from cytopipe.gating.gates import (
    BooleanGate,
    EllipsoidGate,
    Gate,
    PolygonGate,
    Quadrant,
    QuadrantGate,
    RectangleGate,
    population_ids,
)
from cytopipe.gating.strategy import FCS_SPILL, UNCOMPENSATED, DimSpec, Strategy
from cytopipe.preprocess.compensation import Spillover
from cytopipe.preprocess.transforms import Scale

# --------------------------------------------------------------------------- import


def read_gatingml(path: str | os.PathLike) -> Strategy:
    """Parse a Gating-ML 2.0 file into a Strategy; unreadable XML -> GatingError."""
    import flowkit as fk

    if not os.path.isfile(path):
        raise GatingError("Gating-ML file not found", path=path, hint="check the path")
    try:
        gs = fk.parse_gating_xml(os.fspath(path))
    except Exception as exc:  # flowkit raises lxml, ValueError, KeyError, ... on bad XML
        raise GatingError(
            f"not a valid Gating-ML 2.0 document: {type(exc).__name__}: {exc}",
            path=path,
            hint="check the XML against the Gating-ML 2.0 schema",
        ) from None
    try:
        return from_flowkit(gs, path=os.fspath(path))
    except GatingError as exc:
        raise GatingError(exc.what, path=path, hint=exc.hint) from None


def from_flowkit(gs, sample_id: str | None = None, path: str | None = None) -> Strategy:
    """Convert a flowkit GatingStrategy (template gates, or one sample's custom gates);
    `path` is the document's, named by errors about its matrices."""
    scales = {k: scale_from_flowkit(k, v) for k, v in gs.transformations.items()}
    matrices = {k: matrix_from_flowkit(k, v, path) for k, v in gs.comp_matrices.items()}
    strategy = Strategy([], {}, scales, matrices)
    ids = gs.get_gate_ids()
    names = [gid for gid, _ in ids]
    unique = len(set(names)) == len(names)
    quadrant_ids = _quadrant_ids(gs, ids, sample_id)
    for gid, path in ids:
        if (gid, path) in quadrant_ids:
            continue
        gate = gs.get_gate(gid, path, sample_id=sample_id)
        parent = None if path[-1] == "root" else path[-1]
        if not unique:  # FlowJo allows one name at several places: use paths as ids
            gid = "/".join((*path[1:], gid))
            parent = None if len(path) == 1 else "/".join(path[1:])
        strategy.gates.append(_gate_from_flowkit(gate, gid, parent, strategy, path, unique))
    return strategy


def _quadrant_ids(gs, ids, sample_id) -> set[tuple[str, tuple[str, ...]]]:
    import flowkit as fk
    from flowkit.exceptions import QuadrantReferenceError

    out = set()
    for gid, path in ids:
        try:
            gate = gs.get_gate(gid, path, sample_id=sample_id)
        except QuadrantReferenceError:
            out.add((gid, path))
            continue
        if isinstance(gate, fk.gates.QuadrantGate):
            out.update((q, (*path, gid)) for q in gate.quadrants)
    return out


def scale_from_flowkit(xid: str, x) -> Scale:
    import flowkit as fk

    t = fk.transforms
    if isinstance(x, t.LogicleTransform):
        return Scale(xid, "logicle", _params(T=x.param_t, W=x.param_w, M=x.param_m, A=x.param_a))
    if isinstance(x, t.AsinhTransform):
        return Scale(xid, "asinh", _params(T=x.param_t, M=x.param_m, A=x.param_a))
    if isinstance(x, t.HyperlogTransform):
        return Scale(xid, "hyperlog", _params(T=x.param_t, W=x.param_w, M=x.param_m, A=x.param_a))
    if isinstance(x, t.LinearTransform):
        return Scale(xid, "linear", _params(T=x.param_t, A=x.param_a))
    if isinstance(x, t.LogTransform):
        return Scale(xid, "log", _params(T=x.param_t, M=x.param_m))
    if isinstance(x, t.RatioTransform):
        return Scale(
            xid, "fratio", _params(A=x.param_a, B=x.param_b, C=x.param_c), tuple(x.dimensions)
        )
    if isinstance(x, t.WSPBiexTransform):
        return Scale(
            xid,
            "biex",
            _params(negative=x.negative, width=x.width, positive=x.positive, max_value=x.max_value),
        )
    raise GatingError(f"transformation {xid!r}: {type(x).__name__} is not supported")


def _params(**kw: float) -> tuple[tuple[str, float], ...]:
    return tuple((k, float(v)) for k, v in kw.items())


def matrix_from_flowkit(mid: str, m, path: str | None = None) -> Spillover:
    mat = np.array(m.matrix, dtype=np.float64)
    mat.setflags(write=False)
    source = f"spectrumMatrix {mid!r}"
    fluorochromes = tuple(m.fluorochromes or ())
    return Spillover(list(m.detectors), mat, source, path=path, id=mid, fluorochromes=fluorochromes)


def _dim_from_flowkit(d, strategy: Strategy) -> str:
    import flowkit as fk

    comp = d.compensation_ref or UNCOMPENSATED
    if isinstance(d, fk.RatioDimension):
        spec = DimSpec(d.ratio_ref, comp, d.transformation_ref, ratio=True)
    elif isinstance(d, fk.QuadrantDivider):
        spec = DimSpec(d.dimension_ref, comp, d.transformation_ref)
    else:
        spec = DimSpec(d.id, comp, d.transformation_ref)
    for ref in (spec.transform, spec.name if spec.ratio else None):
        if ref is not None and ref not in strategy.scales:
            raise GatingError(f"dimension {spec.key!r} refers to undefined transformation {ref!r}")
    if comp not in (UNCOMPENSATED, FCS_SPILL) and comp not in strategy.matrices:
        raise GatingError(f"dimension {spec.key!r} refers to undefined spillover matrix {comp!r}")
    strategy.dims[spec.key] = spec
    return spec.key


def _gate_from_flowkit(g, gid: str, parent: str | None, strategy: Strategy, path, unique) -> Gate:
    import flowkit as fk

    G = fk.gates
    try:
        if isinstance(g, G.RectangleGate):
            dims = tuple(_dim_from_flowkit(d, strategy) for d in g.dimensions)
            mins = tuple(getattr(d, "min", None) for d in g.dimensions)
            maxs = tuple(getattr(d, "max", None) for d in g.dimensions)
            gate: Gate = RectangleGate(gid, parent, dims, mins, maxs)
            complement = g.use_complement
        elif isinstance(g, G.PolygonGate):
            dims = tuple(_dim_from_flowkit(d, strategy) for d in g.dimensions)
            gate = PolygonGate(gid, parent, dims, np.asarray(g.vertices, dtype=np.float64))
            complement = g.use_complement
        elif isinstance(g, G.EllipsoidGate):
            dims = tuple(_dim_from_flowkit(d, strategy) for d in g.dimensions)
            gate = EllipsoidGate(
                gid, parent, dims, g.coordinates, g.covariance_matrix, g.distance_square
            )
            complement = False
        elif isinstance(g, G.QuadrantGate):
            gate = _quadrant_from_flowkit(g, gid, parent, strategy, path, unique)
            complement = False
        elif isinstance(g, G.BooleanGate):
            refs, comps = [], []
            for r in g.gate_refs:
                ref = r["ref"] if unique else "/".join((*r["path"][1:], r["ref"]))
                refs.append(ref)
                comps.append(bool(r.get("complement", False)))
            gate = BooleanGate(gid, parent, g.type, tuple(refs), tuple(comps))
            complement = False
        else:
            raise GatingError(f"gate {gid!r}: {type(g).__name__} is not supported")
    except GatingError as exc:
        if gid in exc.what:
            raise
        raise GatingError(f"gate {gid!r}: {exc.what}", hint=exc.hint) from None
    if complement:  # FlowJo "NOT" gates: membership is the parent minus the shape
        raise GatingError(f"gate {gid!r}: complemented ('use_complement') shapes are not supported")
    return gate


def _quadrant_from_flowkit(g, gid, parent, strategy, path, unique) -> QuadrantGate:
    dividers = list(g.dimensions)
    dims = tuple(_dim_from_flowkit(d, strategy) for d in dividers)
    cuts = tuple(tuple(float(v) for v in (d.values or ())) for d in dividers)
    quadrants = []
    for qid, q in g.quadrants.items():
        ranges = []
        for d in dividers:
            if d.id in q.divider_refs:
                lo, hi = q.get_divider_range(d.id)
                ranges.append((lo, hi))
            else:
                ranges.append((None, None))
        name = qid if unique else "/".join((*path[1:], gid.split("/")[-1], qid))
        quadrants.append(Quadrant(name, tuple(ranges)))
    return QuadrantGate(gid, parent, dims, cuts, tuple(quadrants))


# --------------------------------------------------------------------------- export


def to_flowkit(strategy: Strategy):
    """A flowkit GatingStrategy equal to `strategy` (for writing Gating-ML or FlowJo)."""
    import flowkit as fk

    gs = fk.GatingStrategy()
    for sid, s in strategy.scales.items():
        gs.add_transform(sid, scale_to_flowkit(s))
    for mid, m in strategy.matrices.items():
        gs.add_comp_matrix(
            mid, fk.Matrix(np.array(m.matrix), list(m.detectors), list(m.fluorochromes) or None)
        )
    paths = _paths(strategy)
    from cytopipe.gating.gates import dependency_order

    for g in dependency_order(strategy.gates):
        gs.add_gate(_gate_to_flowkit(g, strategy, paths), paths[g.id])
    return gs


def _paths(strategy: Strategy) -> dict[str, tuple[str, ...]]:
    """Gate path (ancestors from 'root') of every population."""
    parents = strategy.parents()
    owner = {p: g.id for g in strategy.gates for p in population_ids(g)}
    paths: dict[str, tuple[str, ...]] = {}

    def path(pid: str) -> tuple[str, ...]:
        if pid not in paths:
            par = parents[pid]
            if owner[pid] != pid:  # a quadrant: its path is the quadrant gate's
                paths[pid] = (*path(owner[pid]), owner[pid])
            else:
                paths[pid] = ("root",) if par is None else (*path(par), par)
        return paths[pid]

    for pid in parents:
        path(pid)
    return paths


def scale_to_flowkit(s: Scale):
    import flowkit as fk

    t, p = fk.transforms, s.p
    if s.kind == "logicle":
        return t.LogicleTransform(p["T"], p["W"], p["M"], p["A"])
    if s.kind == "asinh":
        return t.AsinhTransform(p["T"], p["M"], p["A"])
    if s.kind == "hyperlog":
        return t.HyperlogTransform(p["T"], p["W"], p["M"], p["A"])
    if s.kind == "linear":
        return t.LinearTransform(p["T"], p["A"])
    if s.kind == "log":
        return t.LogTransform(p["T"], p["M"])
    if s.kind == "fratio":
        return t.RatioTransform(list(s.inputs), p["A"], p["B"], p["C"])
    if s.kind == "biex":
        return t.WSPBiexTransform(p["negative"], p["width"], p["positive"], p["max_value"])
    raise GatingError(f"transformation {s.id!r}: kind {s.kind!r} cannot be exported")


def _dim_to_flowkit(key: str, strategy: Strategy, lo=None, hi=None):
    import flowkit as fk

    spec = strategy.dims.get(key, DimSpec(key))
    if spec.ratio:
        return fk.RatioDimension(spec.name, spec.compensation, spec.transform, lo, hi)
    return fk.Dimension(spec.name, spec.compensation, spec.transform, lo, hi)


def _gate_to_flowkit(g: Gate, strategy: Strategy, paths):
    import flowkit as fk

    G = fk.gates
    if isinstance(g, RectangleGate):
        dims = [
            _dim_to_flowkit(k, strategy, lo, hi)
            for k, lo, hi in zip(g.dims, g.mins, g.maxs, strict=True)
        ]
        return G.RectangleGate(g.id, dims)
    if isinstance(g, PolygonGate):
        dims = [_dim_to_flowkit(k, strategy) for k in g.dims]
        return G.PolygonGate(g.id, dims, g.vertices.tolist())
    if isinstance(g, EllipsoidGate):
        dims = [_dim_to_flowkit(k, strategy) for k in g.dims]
        return G.EllipsoidGate(
            g.id, dims, g.mean.tolist(), g.covariance.tolist(), g.distance_square
        )
    if isinstance(g, QuadrantGate):
        dividers = []
        for i, (key, cuts) in enumerate(zip(g.dims, g.dividers, strict=True)):
            spec = strategy.dims.get(key, DimSpec(key))
            dividers.append(
                fk.QuadrantDivider(
                    f"{g.id}_div{i}", spec.name, spec.compensation, list(cuts), spec.transform
                )
            )
        quads = []
        for q in g.quadrants:
            refs = [d.id for d, r in zip(dividers, q.ranges, strict=True) if r != (None, None)]
            rngs = [list(r) for r in q.ranges if r != (None, None)]
            quads.append(G.Quadrant(q.id, refs, rngs))
        return G.QuadrantGate(g.id, dividers, quads)
    if isinstance(g, BooleanGate):
        refs = [
            {"ref": r, "path": paths[r], "complement": c}
            for r, c in zip(g.refs, g.complements, strict=True)
        ]
        return G.BooleanGate(g.id, g.op, refs)
    raise GatingError(f"gate {g.id!r}: {type(g).__name__} cannot be exported")


def write_gatingml(strategy: Strategy, path: str | os.PathLike) -> None:
    """Write a Gating-ML 2.0 document (flowkit's writer) that read_gatingml reads back equal; a
    strategy without gates (a sample that failed) is an empty document flowkit cannot write."""
    import flowkit as fk

    if strategy.gates:
        gs = to_flowkit(strategy)
        buf = io.BytesIO()
        fk.export_gatingml(gs, buf)
        data = buf.getvalue()
    else:
        data = EMPTY_DOCUMENT
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


EMPTY_DOCUMENT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
    b'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
    b'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"/>\n'
)
