"""Gate dimensions of a Gating-ML strategy computed from one sample's raw events: channel
lookup, compensation and scale, each computed once and only if a gate asks for it.

Compensation follows Gating-ML and FlowKit: "uncompensated" (or none), "FCS" = the file's own
spillover (uncompensated when it has none), or the id of a spectrumMatrix in the XML, whose
dimension names may be fluorochromes that map to detectors. One deviation from FlowKit 1.3.2:
a ratio dimension's inputs are compensated as its compensation-ref says (as Gating-ML
describes the ratio dimension); FlowKit always takes them uncompensated. The reference set has
uncompensated ratios, where both agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.lazy_columns import LazyColumns
from cytopipe.gating.strategy import (
    FCS_SPILL,
    UNCOMPENSATED,
    DimSpec,
    EventSource,
    Strategy,
)
from cytopipe.preprocess.compensation import Spillover, spill_product, spillover_from_keywords

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
        source = "$SPILLOVER keyword" if meta.get("spillover") else "SPILL keyword"
        path = getattr(sample, "original_filename", None)
        spill = Spillover(
            list(m.detectors),
            np.asarray(m.matrix),
            source,
            path=path,
            id=FCS_SPILL,
            fluorochromes=tuple(m.detectors),
        )
    return EventSource(
        sample.get_events(source="raw"),
        list(sample.pnn_labels),
        [p or "" for p in sample.pns_labels],
        spill,
        getattr(sample, "original_filename", None),
    )


def event_source_from_fcs(sample) -> EventSource:
    """EventSource from cytopipe.ingest.fcs.FcsSample (its spillover via cytopipe.preprocess.compensation)."""
    sp = spillover_from_keywords(sample)
    spill = None
    if sp is not None:
        spill = replace(sp, id=FCS_SPILL, fluorochromes=tuple(sp.channels))
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

    def __init__(self, resolver: _Resolver, m: Spillover, detector_idx: list[int]):
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
        scratch = self.scratch or _Scratch()
        raw64 = scratch.get("raw64", raw.shape)
        comp = scratch.get(f"comp:{self.m.id}", (len(self.needed), raw.shape[0]))
        spill_product(raw, self.m, self.idx, self.needed, raw64, comp)
        return {d: comp[j] for j, d in enumerate(self.needed)}


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

    def matrix(self, comp: str) -> Spillover | None:
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

    def _compensation(self, comp: str, m: Spillover) -> _Compensation:
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
