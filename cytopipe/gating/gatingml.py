"""Gating-ML 2.0 strategies: import/export through flowkit, evaluation by cytopipe.gating.gates.

flowkit parses and writes the XML; this module turns flowkit's gate, transform and matrix
objects into plain cytopipe objects (a `Strategy`) and back. A gate dimension in Gating-ML is
(channel or ratio, compensation-ref, transformation-ref); each distinct one becomes a column
key, and `sample_columns` builds a lazy mapping that computes each key from a sample's raw
events once, only if a gate asks for it. Evaluation then runs in cytopipe.gating.gates.

Compensation follows Gating-ML and FlowKit: "uncompensated" (or none), "FCS" = the file's own
spillover (uncompensated when it has none), or the id of a spectrumMatrix in the XML, whose
dimension names may be fluorochromes that map to detectors. One deviation from FlowKit 1.3.2:
a ratio dimension's inputs are compensated as its compensation-ref says (as Gating-ML
describes the ratio dimension); FlowKit always takes them uncompensated. The reference set has
uncompensated ratios, where both agree.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.gates import (
    BooleanGate,
    EllipsoidGate,
    Gate,
    LazyColumns,
    PolygonGate,
    Quadrant,
    QuadrantGate,
    RectangleGate,
    evaluate,
    population_ids,
)
from cytopipe.preprocess import transforms as tf

UNCOMPENSATED = "uncompensated"
FCS_SPILL = "FCS"


# --------------------------------------------------------------------------- plain model


@dataclass(frozen=True)
class Scale:
    """A Gating-ML transformation: kind in logicle, asinh, hyperlog, linear, log, fratio, and
    (from FlowJo) biex; `params` are its named parameters; fratio also has `inputs`."""

    id: str
    kind: str
    params: tuple[tuple[str, float], ...]
    inputs: tuple[str, ...] = ()  # fratio: (numerator, denominator) FCS dimension names

    @property
    def p(self) -> dict[str, float]:
        return dict(self.params)

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.p
        if self.kind == "logicle":
            return tf.logicle_fast(x, p["T"], p["W"], p["M"], p["A"])
        if self.kind == "asinh":
            return tf.asinh(x, p["T"], p["M"], p["A"])
        if self.kind == "hyperlog":
            return tf.hyperlog(x, p["T"], p["W"], p["M"], p["A"])
        if self.kind == "linear":
            return tf.linear(x, p["T"], p["A"])
        if self.kind == "log":
            return tf.log(x, p["T"], p["M"])
        if self.kind == "biex":
            return tf.biex(x, p["negative"], p["width"], p["positive"], p["max_value"])
        raise GatingError(
            f"transformation {self.id!r} of kind {self.kind!r} cannot scale a channel"
        )

    def inverse(self, y: np.ndarray) -> np.ndarray:
        p = self.p
        if self.kind == "logicle":
            return tf.logicle_inverse(y, p["T"], p["W"], p["M"], p["A"])
        if self.kind == "asinh":
            return tf.asinh_inverse(y, p["T"], p["M"], p["A"])
        if self.kind == "hyperlog":
            return tf.hyperlog_inverse(y, p["T"], p["W"], p["M"], p["A"])
        if self.kind == "linear":
            return tf.linear_inverse(y, p["T"], p["A"])
        if self.kind == "log":
            return tf.log_inverse(y, p["T"], p["M"])
        if self.kind == "biex":
            return tf.biex_inverse(y, p["negative"], p["width"], p["positive"], p["max_value"])
        raise GatingError(f"transformation {self.id!r} of kind {self.kind!r} has no inverse")

    @property
    def total_order_preserving(self) -> bool:
        """True when x >= inverse(L) <=> forward(x) >= L for every real x (no NaN, no clamping),
        which lets a range on this scale be tested on linear values."""
        p = self.p
        if self.kind in ("logicle", "asinh", "hyperlog"):
            return True
        return self.kind == "linear" and p["T"] + p["A"] > 0


@dataclass(frozen=True)
class SpillMatrix:
    """A spillover (spectrum) matrix: rows = fluorochromes, columns = detectors."""

    id: str
    detectors: tuple[str, ...]
    fluorochromes: tuple[str, ...]
    matrix: np.ndarray = field(compare=False)


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
    matrices: dict[str, SpillMatrix] = field(default_factory=dict)

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
    spill: SpillMatrix | None = None  # the file's own spillover ("FCS")
    path: str | None = None


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
        return from_flowkit(gs)
    except GatingError as exc:
        raise GatingError(exc.what, path=path, hint=exc.hint) from None


def from_flowkit(gs, sample_id: str | None = None) -> Strategy:
    """Convert a flowkit GatingStrategy (template gates, or one sample's custom gates)."""
    scales = {k: scale_from_flowkit(k, v) for k, v in gs.transformations.items()}
    matrices = {k: matrix_from_flowkit(k, v) for k, v in gs.comp_matrices.items()}
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


def matrix_from_flowkit(mid: str, m) -> SpillMatrix:
    mat = np.array(m.matrix, dtype=np.float64)
    mat.setflags(write=False)
    return SpillMatrix(mid, tuple(m.detectors), tuple(m.fluorochromes or ()), mat)


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
    """Write a Gating-ML 2.0 document (flowkit's writer) that read_gatingml reads back equal."""
    import flowkit as fk

    gs = to_flowkit(strategy)
    buf = io.BytesIO()
    fk.export_gatingml(gs, buf)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- sample columns


def event_source_from_flowkit(sample) -> EventSource:
    """EventSource from a flowkit.Sample (float64 raw events, the file's spillover)."""
    spill = None
    meta = sample.get_metadata()
    text = meta.get("spillover") or meta.get("spill")
    if text:
        import flowkit as fk

        detectors = [sample.pnn_labels[i] for i in sample.fluoro_indices]
        m = fk.Matrix(text, detectors, null_channels=sample.null_channels)
        spill = SpillMatrix(FCS_SPILL, tuple(m.detectors), tuple(m.detectors), np.asarray(m.matrix))
    return EventSource(
        sample.get_events(source="raw"),
        list(sample.pnn_labels),
        [p or "" for p in sample.pns_labels],
        spill,
        getattr(sample, "original_filename", None),
    )


def event_source_from_fcs(sample) -> EventSource:
    """EventSource from cytopipe.ingest.fcs.FcsSample (its spillover via cytopipe.preprocess.compensation)."""
    from cytopipe.preprocess.compensation import spillover_from_keywords

    sp = spillover_from_keywords(sample)
    spill = None
    if sp is not None:
        mat = np.asarray(sp.matrix, dtype=np.float64)
        spill = SpillMatrix(FCS_SPILL, tuple(sp.channels), tuple(sp.channels), mat)
    return EventSource(sample.events, list(sample.pnn), list(sample.pns), spill, sample.path)


def _channel_index(name: str, src: EventSource) -> int | None:
    """PnN, then PnS, then PnN with '/' -> '_' (FlowJo's renaming), as FlowKit resolves."""
    for labels in (src.pnn, src.pns, [p.replace("/", "_") for p in src.pnn]):
        labels = list(labels)
        if name in labels:
            return labels.index(name)
    return None


class _ChannelIndex:
    """_channel_index, memoized for the many chunks of one sample."""

    def __init__(self, src: EventSource):
        self.src = src
        self.cache: dict[str, int | None] = {}

    def __call__(self, name: str) -> int | None:
        if name not in self.cache:
            self.cache[name] = _channel_index(name, self.src)
        return self.cache[name]


class _Timer:
    """Accumulates wall time per pipeline step (for the benchmark); a no-op without a dict."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings

    def run(self, step: str, fn: Callable, *args):
        if self.timings is None:
            return fn(*args)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - t0


ColumnFn = Callable[[Mapping, "np.ndarray | None"], np.ndarray]


class _Compensation:
    """Compensated values of one matrix's detectors for one slice of events, computed once.

    Only the detectors that gates use are computed (columns of the inverse), and only for the
    rows first asked for (the first compensated gate's parent); descendants' rows are a subset,
    found by binary search, so each event is compensated at most once.
    """

    def __init__(self, resolver: _Resolver, m: SpillMatrix, detector_idx: list[int]):
        # what it needs of the resolver, not the resolver: the resolver holds this object, and a
        # reference cycle would keep every chunk's events alive until the cycle collector runs
        self.events, self.timer, self.scratch = resolver.events, resolver.timer, resolver.scratch
        self.m = m
        self.idx = detector_idx
        self.needed: list[str] = []
        self.base_rows: np.ndarray | None = None  # None with a block = all rows of the slice
        self.block: dict[str, np.ndarray] | None = None
        self._pos: tuple[object, np.ndarray] | None = None
        self._where: np.ndarray | None = None

    def need(self, detector: str) -> None:
        if detector not in self.needed:
            self.needed.append(detector)

    def values(self, detector: str, rows: np.ndarray | None) -> np.ndarray:
        if self.block is not None:
            col = self.block[detector]
            if self.base_rows is None:
                return col if rows is None else col[rows]
            if rows is not None:
                pos = self._positions(rows)
                if pos is not None:
                    return col[pos]
        block = self.timer.run("compensate", self._compute, rows)
        if self.block is None or rows is None:
            self.block, self.base_rows, self._where = block, rows, None
        return block[detector]

    def _positions(self, rows: np.ndarray) -> np.ndarray | None:
        if self._pos is not None and self._pos[0] is rows:
            return self._pos[1]
        if self._where is None:  # slice row -> position in base_rows (-1: not computed)
            assert self.base_rows is not None
            self._where = np.full(len(self.events), -1, dtype=np.intp)
            self._where[self.base_rows] = np.arange(len(self.base_rows))
        pos = self._where[rows]
        if len(pos) and pos.min() < 0:
            return None  # not a subset: another branch of the hierarchy
        self._pos = (rows, pos)
        return pos

    def _compute(self, rows: np.ndarray | None) -> dict[str, np.ndarray]:
        raw = self.events if rows is None else self.events[rows]  # whole rows: contiguous gather
        return _compensate(raw, self.m, self.idx, self.needed, self.scratch)


class _Scratch:
    """Buffers reused by every chunk of a sample: fresh multi-MB arrays per chunk would be
    mapped and page-faulted anew each time, which costs more than the arithmetic here."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


class _Resolver:
    """Builds column functions for one sample (or a slice of its events).

    Each function takes (columns, rows): rows=None for all events of the slice, else an index
    array, so a gate deep in the hierarchy compensates and transforms only its parent's events.
    """

    def __init__(
        self,
        strategy: Strategy,
        src: EventSource,
        rows: slice | None = None,
        timer: _Timer | None = None,
        channel_index: _ChannelIndex | None = None,
        scratch: _Scratch | None = None,
    ):
        self.strategy = strategy
        self.src = src
        self.events = src.events if rows is None else src.events[rows]
        self.timer = timer or _Timer(None)
        self._comps: dict[str, _Compensation] = {}
        self.index = channel_index or _ChannelIndex(src)
        self.scratch = scratch or _Scratch()

    def matrix(self, comp: str) -> SpillMatrix | None:
        if comp in (UNCOMPENSATED, None):
            return None
        if comp == FCS_SPILL:
            return self.src.spill  # Gating-ML: no spillover in the file -> uncompensated
        return self.strategy.matrices[comp]

    def channel(self, name: str, comp: str) -> ColumnFn:
        """Function giving the (compensated) linear values of an FCS dimension name."""
        m = self.matrix(comp)
        idx = self.index(name)
        if idx is None and m is not None and name in m.fluorochromes:
            idx = self.index(m.detectors[m.fluorochromes.index(name)])
        if idx is None:
            raise KeyError(name)
        pnn = self.src.pnn[idx]
        if m is None or pnn not in m.detectors:

            def raw(_cols, rows, i=idx):
                return self.events[:, i] if rows is None else self.events[rows, i]

            return raw
        c = self._compensation(comp, m)
        c.need(pnn)
        return lambda _cols, rows, c=c, d=pnn: c.values(d, rows)

    def _compensation(self, comp: str, m: SpillMatrix) -> _Compensation:
        if comp not in self._comps:
            idx = []
            for d in m.detectors:
                i = self.index(d)
                if i is None:
                    raise GatingError(
                        f"spillover matrix {comp!r} needs detector {d!r} that the file lacks",
                        path=self.src.path,
                    )
                idx.append(i)
            self._comps[comp] = _Compensation(self, m, idx)
        return self._comps[comp]

    def column(self, spec: DimSpec) -> ColumnFn:
        if spec.ratio:
            scale = self.strategy.scales[spec.name]
            num = self.channel(scale.inputs[0], spec.compensation)
            den = self.channel(scale.inputs[1], spec.compensation)
            p = scale.p

            def base(cols, rows, num=num, den=den, p=p):
                x = np.asarray(num(cols, rows), dtype=np.float64)
                y = np.asarray(den(cols, rows), dtype=np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    return p["A"] * ((x - p["B"]) / (y - p["C"]))
        else:
            base = self.channel(spec.name, spec.compensation)
        if spec.transform is None:
            return base
        scale = self.strategy.scales[spec.transform]

        def scaled(cols, rows, b=base, s=scale):
            values = b(cols, rows)
            return self.timer.run("transform", s.forward, values)

        return scaled


def _compensate(
    raw: np.ndarray,
    m: SpillMatrix,
    detector_idx: list[int],
    names: list[str],
    scratch: _Scratch | None = None,
) -> dict[str, np.ndarray]:
    """Compensated values of some detectors: raw @ inverse(spillover), in float64.

    `raw` holds all channels of some events; the inverse's columns for `names` are embedded
    in a (channels x len(names)) matrix with zero rows for non-detector channels, so events
    need no column gather. The result is laid out detector-major so each column is
    contiguous. FlowKit solves the same system with np.linalg.solve; a product with the
    inverse differs from it only in the last bits (~1e-16 relative), is several times faster,
    computes just the detectors gates use and does not depend on chunking.
    """
    scratch = scratch or _Scratch()
    inv = _inverse(m)
    weights = np.zeros((len(names), raw.shape[1]))
    cols = [m.detectors.index(d) for d in names]
    weights[:, detector_idx] = inv[:, cols].T
    raw64 = scratch.get("raw64", raw.shape)
    np.copyto(raw64, raw)
    comp = scratch.get(f"comp:{m.id}", (len(names), raw.shape[0]))
    np.matmul(weights, raw64.T, out=comp)
    return {d: comp[j] for j, d in enumerate(names)}


@functools.lru_cache(maxsize=16)
def _inverse_cached(key: bytes, k: int) -> np.ndarray:
    return np.linalg.inv(np.frombuffer(key, dtype=np.float64).reshape(k, k))


def _inverse(m: SpillMatrix) -> np.ndarray:
    mat = np.ascontiguousarray(m.matrix, dtype=np.float64)
    try:
        return _inverse_cached(mat.tobytes(), mat.shape[0])
    except np.linalg.LinAlgError:
        raise GatingError(f"spillover matrix {m.id!r} is singular and cannot compensate") from None


def sample_columns(
    strategy: Strategy,
    src: EventSource,
    rows: slice | None = None,
    timings: dict[str, float] | None = None,
    channel_index: _ChannelIndex | None = None,
    scratch: _Scratch | None = None,
) -> LazyColumns:
    """Lazy columns mapping for the strategy's dims on one sample (optionally a row slice).

    A dim that the sample cannot provide raises GatingError naming the gates that need it.
    """
    resolver = _Resolver(strategy, src, rows, _Timer(timings), channel_index, scratch)
    compute: dict[str, Callable] = {}
    used: dict[str, list[str]] = {}
    for g in strategy.gates:
        for d in g.dims:
            used.setdefault(d, []).append(g.id)
    for key, gate_ids in used.items():
        spec = strategy.dims.get(key, DimSpec(key))
        try:
            compute[key] = resolver.column(spec)
        except KeyError as exc:
            raise GatingError(
                f"gate(s) {', '.join(dict.fromkeys(gate_ids))} need channel {exc.args[0]!r} "
                f"(dimension {key!r}), which the file does not have",
                path=src.path,
                hint=f"channels: {', '.join(src.pnn)}",
            ) from None
    return LazyColumns({}, compute, n_events=len(resolver.events))


def linearize(strategy: Strategy) -> Strategy:
    """Move range/rectangle/quadrant limits from transformed to linear dims where exact.

    For a transform that preserves order on all reals, forward(x) >= L <=> x >= inverse(L),
    so events need no transform at all for these gates. Polygons/ellipses keep their scale.
    """
    new_dims = dict(strategy.dims)
    gates: list[Gate] = []
    for g in strategy.gates:
        if isinstance(g, RectangleGate | QuadrantGate) and all(
            _linearizable(strategy, k) for k in g.dims
        ):
            lin = tuple(strategy.dims[k].linear().key if k in strategy.dims else k for k in g.dims)
            for k, lk in zip(g.dims, lin, strict=True):
                if k in strategy.dims:
                    new_dims[lk] = strategy.dims[k].linear()
            if isinstance(g, RectangleGate):
                mins = tuple(_inv(strategy, k, v) for k, v in zip(g.dims, g.mins, strict=True))
                maxs = tuple(_inv(strategy, k, v) for k, v in zip(g.dims, g.maxs, strict=True))
                g = RectangleGate(g.id, g.parent, lin, mins, maxs)
            else:
                cuts = tuple(
                    tuple(_inv(strategy, k, c) for c in cs)
                    for k, cs in zip(g.dims, g.dividers, strict=True)
                )
                quads = tuple(
                    Quadrant(
                        q.id,
                        tuple(
                            (_inv(strategy, k, lo), _inv(strategy, k, hi))
                            for k, (lo, hi) in zip(g.dims, q.ranges, strict=True)
                        ),
                    )
                    for q in g.quadrants
                )
                g = QuadrantGate(g.id, g.parent, lin, cuts, quads)
        gates.append(g)
    return Strategy(gates, new_dims, strategy.scales, strategy.matrices)


def _linearizable(strategy: Strategy, key: str) -> bool:
    spec = strategy.dims.get(key)
    if spec is None or spec.transform is None:
        return True
    return strategy.scales[spec.transform].total_order_preserving


def _inv(strategy: Strategy, key: str, v: float | None) -> float | None:
    spec = strategy.dims.get(key)
    if v is None or spec is None or spec.transform is None:
        return v
    return float(strategy.scales[spec.transform].inverse(np.array([v]))[0])


# --------------------------------------------------------------------------- apply


def apply_strategy(
    strategy: Strategy, src: EventSource, *, fast: bool = False
) -> dict[str, np.ndarray]:
    """Membership masks of every population of the strategy on one sample.

    `fast` tests range-type gates on linear values against inverse-transformed limits; it
    agrees with the default except for events within rounding error of a limit.
    """
    s = linearize(strategy) if fast else strategy
    cols = sample_columns(s, src)
    return evaluate(s.gates, cols, n_events=len(src.events))


DEFAULT_CHUNK_EVENTS = 1 << 16


def apply_strategy_chunked(
    strategy: Strategy,
    src: EventSource,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    *,
    fast: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """As apply_strategy, chunk by chunk of events: memory of a few chunks plus the masks.

    Chunks of ~64 K events keep every temporary a few MB, so they are recycled by the
    allocator instead of being mapped (and page-faulted) afresh; measured 3-10x faster than
    1 M-event chunks here. `timings` (if given) accumulates seconds spent in compensate,
    transform and gate.
    """
    from cytopipe.gating.gates import evaluate_chunked

    s = linearize(strategy) if fast else strategy
    n = len(src.events)
    index, scratch = _ChannelIndex(src), _Scratch()
    sample_columns(s, src, slice(0, 0), None, index)  # resolve names once: errors before work
    # each chunk is evaluated before the next is made, so chunks can share scratch buffers
    chunks = (
        sample_columns(s, src, slice(i, min(i + chunk_events, n)), timings, index, scratch)
        for i in range(0, n, chunk_events)
    )
    t0 = time.perf_counter()
    before = _inner(timings)
    with _single_threaded_blas():
        masks = evaluate_chunked(s.gates, chunks, n)
    if timings is not None:
        elapsed = time.perf_counter() - t0 - (_inner(timings) - before)
        timings["gate"] = timings.get("gate", 0.0) + elapsed
    return masks


def _inner(timings: dict[str, float] | None) -> float:
    return (
        0.0 if timings is None else timings.get("compensate", 0.0) + timings.get("transform", 0.0)
    )


def _single_threaded_blas():
    """The compensation matmul is (chunk x 16) @ (16 x 16): BLAS threads only add contention
    (measured 10x slower with 2 threads on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up (installed with scikit-learn)
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def strategy_stats(strategy: Strategy, masks: Mapping[str, np.ndarray]) -> list[dict]:
    """Rows of gate_id, parent, count, pct_parent (percent of the parent's events)."""
    n = len(next(iter(masks.values()))) if masks else 0
    rows = []
    for pid, parent in strategy.parents().items():
        count = int(np.count_nonzero(masks[pid]))
        base = n if parent is None else int(np.count_nonzero(masks[parent]))
        rows.append(
            {
                "gate_id": pid,
                "parent": parent or "",
                "count": count,
                "pct_parent": 100.0 * count / base if base else 0.0,
            }
        )
    return rows
