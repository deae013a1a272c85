"""Gate types and their vectorized evaluation as boolean masks (Gating-ML 2.0 semantics).

A gating strategy is a flat list of frozen gate objects linked by `parent` ids. `evaluate`
sorts them by dependency, evaluates each gate only on the rows its parent selected (gather,
test, scatter back), and returns one full-length mask per population: member of the gate AND
of all its ancestors. Deep hierarchies therefore cost roughly the size of each parent, not of
the whole file, and a lazy `columns` mapping is asked only for the dimensions gates use; a
mapping with `take(key, rows)` (cytopipe.gating.lazy_columns.LazyColumns) computes a costly column (compensation, logicle)
for the parent's rows only. `evaluate_chunked` (cytopipe.gating.chunked) runs the same over
chunks of events into preallocated masks, for files larger than memory. The membership tests
themselves are the kernels of cytopipe.gating.geometry.

The semantics follow Gating-ML 2.0 as FlowKit implements them, because FlowKit's results on
the Gating-ML compliance data are our reference:
- rectangle / range / quadrant: min <= x < max, an absent limit is open;
- polygon: even-odd rule (crossing parity), so self-intersecting polygons get "holes";
- ellipsoid: Mahalanobis distance squared <= distance_square (boundary included);
- boolean: and / or over the referenced populations' full masks (each optionally
  complemented), not of the first reference; the result is then restricted to the parent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.geometry import Limit, _in_ranges, points_in_ellipsoid, points_in_polygon
from cytopipe.gating.lazy_columns import _take

# --------------------------------------------------------------------------- gate types


@dataclass(frozen=True)
class RectangleGate:
    """Axis-aligned box in any number of dims; with one dim it is Gating-ML's range gate."""

    id: str
    parent: str | None
    dims: tuple[str, ...]
    mins: tuple[Limit, ...]
    maxs: tuple[Limit, ...]

    def __post_init__(self) -> None:
        _check_dims(self)
        if not (len(self.mins) == len(self.maxs) == len(self.dims)):
            raise GatingError(
                f"gate {self.id!r}: needs one min and one max per dimension "
                f"({len(self.dims)} dims, {len(self.mins)} mins, {len(self.maxs)} maxs)",
                hint="use None for an open side",
            )
        object.__setattr__(self, "mins", tuple(_limit(v) for v in self.mins))
        object.__setattr__(self, "maxs", tuple(_limit(v) for v in self.maxs))


@dataclass(frozen=True, eq=False)
class PolygonGate:
    """2-D polygon; self-intersecting outlines follow the even-odd rule like FlowKit."""

    id: str
    parent: str | None
    dims: tuple[str, ...]
    vertices: np.ndarray

    def __post_init__(self) -> None:
        _check_dims(self)
        v = np.array(self.vertices, dtype=np.float64)
        if len(self.dims) != 2 or v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise GatingError(
                f"gate {self.id!r}: a polygon needs 2 dims and at least 3 (x, y) vertices",
                hint=f"got dims {self.dims} and vertices of shape {v.shape}",
            )
        v.setflags(write=False)
        object.__setattr__(self, "vertices", v)


@dataclass(frozen=True, eq=False)
class EllipsoidGate:
    """Ellipse (2 dims) or ellipsoid: (x - mean)' inv(covariance) (x - mean) <= distance_square."""

    id: str
    parent: str | None
    dims: tuple[str, ...]
    mean: np.ndarray
    covariance: np.ndarray
    distance_square: float

    def __post_init__(self) -> None:
        _check_dims(self)
        k = len(self.dims)
        mean = np.array(self.mean, dtype=np.float64).reshape(-1)
        cov = np.array(self.covariance, dtype=np.float64)
        if mean.shape != (k,) or cov.shape != (k, k):
            raise GatingError(
                f"gate {self.id!r}: ellipsoid over {k} dims needs a mean of {k} values "
                f"and a {k}x{k} covariance (got {mean.shape} and {cov.shape})"
            )
        try:
            inv = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            raise GatingError(
                f"gate {self.id!r}: the ellipsoid covariance matrix is singular",
                hint="the ellipse has no area; check its definition",
            ) from None
        for a in (mean, cov, inv):
            a.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "distance_square", float(self.distance_square))
        object.__setattr__(self, "_inverse", inv)

    @property
    def inverse_covariance(self) -> np.ndarray:
        return self._inverse  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Quadrant:
    """One named region of a QuadrantGate: a (min, max) range per gate dim, None = open."""

    id: str
    ranges: tuple[tuple[Limit, Limit], ...]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "ranges", tuple((_limit(lo), _limit(hi)) for lo, hi in self.ranges)
        )


@dataclass(frozen=True)
class QuadrantGate:
    """Gating-ML quadrant gate: dividers cut each dim; every named quadrant is a population.

    `dividers[i]` are the cut values on `dims[i]`. A dim may appear twice when two dividers
    cut the same dimension. The gate's own id is the union of its quadrants.
    """

    id: str
    parent: str | None
    dims: tuple[str, ...]
    dividers: tuple[tuple[float, ...], ...]
    quadrants: tuple[Quadrant, ...]

    def __post_init__(self) -> None:
        _check_dims(self)
        object.__setattr__(
            self, "dividers", tuple(tuple(float(c) for c in d) for d in self.dividers)
        )
        object.__setattr__(self, "quadrants", tuple(self.quadrants))
        if len(self.dividers) != len(self.dims) or not self.quadrants:
            raise GatingError(
                f"gate {self.id!r}: a quadrant gate needs one divider list per dim and quadrants"
            )
        for q in self.quadrants:
            if len(q.ranges) != len(self.dims):
                raise GatingError(
                    f"gate {self.id!r}: quadrant {q.id!r} needs one range per dim "
                    f"({len(self.dims)}), got {len(q.ranges)}"
                )

    @classmethod
    def from_locations(
        cls,
        id: str,
        parent: str | None,
        dims: Sequence[str],
        dividers: Sequence[Sequence[float]],
        locations: Mapping[str, Sequence[float | None]],
    ) -> QuadrantGate:
        """Quadrants named by a point inside each (Gating-ML's `Position location=`).

        A location of None leaves that dim unconstrained for the quadrant.
        """
        quadrants = []
        for qid, loc in locations.items():
            ranges = []
            for cuts, x in zip(dividers, loc, strict=True):
                if x is None:
                    ranges.append((None, None))
                    continue
                cuts = sorted(float(c) for c in cuts)
                i = int(np.searchsorted(cuts, x, side="right"))
                ranges.append((cuts[i - 1] if i > 0 else None, cuts[i] if i < len(cuts) else None))
            quadrants.append(Quadrant(qid, tuple(ranges)))
        return cls(id, parent, tuple(dims), tuple(tuple(d) for d in dividers), tuple(quadrants))


@dataclass(frozen=True)
class BooleanGate:
    """and / or / not over other populations; `complements[i]` negates `refs[i]` first."""

    id: str
    parent: str | None
    op: str
    refs: tuple[str, ...]
    complements: tuple[bool, ...] = ()
    dims: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        op = str(self.op).lower()
        refs = tuple(self.refs)
        comps = tuple(bool(c) for c in self.complements) or (False,) * len(refs)
        if op not in ("and", "or", "not"):
            raise GatingError(f"gate {self.id!r}: boolean op must be and, or or not, not {op!r}")
        if not refs or len(comps) != len(refs):
            raise GatingError(
                f"gate {self.id!r}: a boolean gate needs references (and one complement flag each)"
            )
        if op == "not" and len(refs) != 1:
            raise GatingError(f"gate {self.id!r}: a 'not' gate takes exactly one reference")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "refs", refs)
        object.__setattr__(self, "complements", comps)


Gate = Union[RectangleGate, PolygonGate, EllipsoidGate, QuadrantGate, BooleanGate]  # noqa: UP007


def _limit(v: object) -> Limit:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    return None if np.isnan(f) else f


def _check_dims(gate: Gate) -> None:
    dims = tuple(str(d) for d in gate.dims)
    if not dims:
        raise GatingError(f"gate {gate.id!r}: needs at least one dimension")
    object.__setattr__(gate, "dims", dims)


def population_ids(gate: Gate) -> tuple[str, ...]:
    """Ids the gate defines as populations: its own id, plus each quadrant's."""
    if isinstance(gate, QuadrantGate):
        return (gate.id, *(q.id for q in gate.quadrants))
    return (gate.id,)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    gates: Sequence[Gate],
    columns: Mapping[str, np.ndarray],
    n_events: int | None = None,
) -> dict[str, np.ndarray]:
    """Full-length boolean mask per population id (gate ids and quadrant ids), in event order.

    Masks include the ancestry: a population's mask is a subset of its parent's.
    """
    order = dependency_order(gates)
    _check_columns(order, columns)
    columns = _ReadOnce(columns)
    n = _n_events(order, columns, n_events)
    masks: dict[str, np.ndarray] = {}
    rows: dict[str | None, np.ndarray | None] = {None: None}  # parent -> selected row indices
    remaining = _children_left(order)
    subsets: dict[tuple[str | None, str], np.ndarray] = {}
    for gate in order:
        if isinstance(gate, BooleanGate):
            mask = _boolean_mask(gate, masks, n)
            if gate.parent is not None:
                mask &= masks[gate.parent]
            masks[gate.id] = mask
        else:
            parent_rows = _parent_rows(gate.parent, masks, rows)
            cols = [_subset(columns, d, gate.parent, parent_rows, subsets, n) for d in gate.dims]
            for pid, sub in _test(gate, cols).items():
                masks[pid] = _scatter(sub, parent_rows, n)
        remaining[gate.parent] -= 1
        if remaining[gate.parent] == 0:  # no sibling left: free the parent's gathered columns
            for key in [k for k in subsets if k[0] == gate.parent]:
                del subsets[key]
            if gate.parent is not None:
                rows.pop(gate.parent, None)
    return masks


class _ReadOnce(Mapping):
    """Each column is fetched from the caller's (maybe computing) mapping at most once."""

    def __init__(self, columns: Mapping[str, np.ndarray]):
        self._columns = columns
        self._seen: dict[str, np.ndarray] = {}
        self.n_events = getattr(columns, "n_events", None)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._seen:
            self._seen[key] = self._columns[key]
        return self._seen[key]

    def take(self, key: str, rows: np.ndarray) -> np.ndarray:
        if key in self._seen:
            return self._seen[key][rows]
        return _take(self._columns, key, rows)

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def counts(masks: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {k: int(np.count_nonzero(v)) for k, v in masks.items()}


def dependency_order(gates: Sequence[Gate]) -> list[Gate]:
    """Gates sorted so parents and boolean refs come first; errors name the broken link."""
    by_pop: dict[str, Gate] = {}
    for g in gates:
        for pid in population_ids(g):
            if pid in by_pop:
                raise GatingError(
                    f"population id {pid!r} is defined twice", hint="ids must be unique"
                )
            by_pop[pid] = g
    for g in gates:
        if g.parent is not None and g.parent not in by_pop:
            raise GatingError(f"gate {g.id!r}: parent {g.parent!r} is not defined in the strategy")
        for r in getattr(g, "refs", ()):
            if r not in by_pop:
                raise GatingError(f"gate {g.id!r}: references {r!r}, which is not defined")
    order: list[Gate] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    for g in gates:
        _visit(g, by_pop, state, order, [])
    return order


def _visit(
    g: Gate, by_pop: dict[str, Gate], state: dict[str, int], order: list, path: list
) -> None:
    # Iterative DFS would avoid recursion limits, but strategies are at most a few hundred deep.
    if state.get(g.id) == 2:
        return
    if state.get(g.id) == 1:
        cycle = " -> ".join([*path[path.index(g.id) :], g.id])
        raise GatingError(f"gate {g.id!r} depends on itself: {cycle}")
    state[g.id] = 1
    path.append(g.id)
    deps = [g.parent] if g.parent is not None else []
    deps += list(getattr(g, "refs", ()))
    for d in deps:
        _visit(by_pop[d], by_pop, state, order, path)
    path.pop()
    state[g.id] = 2
    order.append(g)


def _check_columns(order: Sequence[Gate], columns: Mapping[str, np.ndarray]) -> None:
    for g in order:
        missing = [d for d in g.dims if d not in columns]
        if missing:
            raise GatingError(
                f"gate {g.id!r} needs dimension(s) {', '.join(map(repr, missing))} "
                "that the data does not have",
                hint=f"available: {', '.join(sorted(map(str, columns)))[:300]}",
            )


def _n_events(order: Sequence[Gate], columns: Mapping[str, np.ndarray], n: int | None) -> int:
    if n is not None:
        return int(n)
    known = getattr(columns, "n_events", None)
    if known is not None:
        return int(known)
    for g in order:
        if g.dims:
            return len(columns[g.dims[0]])
    if order:
        raise GatingError(
            "cannot tell the number of events: no gate has a dimension", hint="pass n_events"
        )
    return 0


def _children_left(order: Sequence[Gate]) -> dict[str | None, int]:
    left: dict[str | None, int] = {}
    for g in order:
        left[g.parent] = left.get(g.parent, 0) + 1
    return left


def _parent_rows(
    parent: str | None, masks: dict[str, np.ndarray], rows: dict[str | None, np.ndarray | None]
) -> np.ndarray | None:
    if parent not in rows:
        rows[parent] = np.flatnonzero(masks[parent])  # type: ignore[index]
    return rows[parent]


def _subset(
    columns: _ReadOnce,
    dim: str,
    parent: str | None,
    parent_rows: np.ndarray | None,
    cache: dict[tuple[str | None, str], np.ndarray],
    n: int,
) -> np.ndarray:
    key = (parent, dim)
    if key not in cache:
        col = np.asarray(columns[dim] if parent_rows is None else columns.take(dim, parent_rows))
        expect = n if parent_rows is None else len(parent_rows)
        if col.ndim != 1 or len(col) != expect:
            raise GatingError(
                f"dimension {dim!r} has {col.shape} values, expected a column of {expect} events"
            )
        cache[key] = col
    return cache[key]


def _scatter(sub: np.ndarray, parent_rows: np.ndarray | None, n: int) -> np.ndarray:
    if parent_rows is None:
        return sub
    full = np.zeros(n, dtype=bool)
    full[parent_rows[sub]] = True
    return full


def _boolean_mask(gate: BooleanGate, masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    parts = (~masks[r] if c else masks[r] for r, c in zip(gate.refs, gate.complements, strict=True))
    if gate.op == "not":
        return ~next(parts)
    result = np.array(next(parts), dtype=bool, copy=True)
    combine = np.logical_and if gate.op == "and" else np.logical_or
    for p in parts:
        combine(result, p, out=result)
    return result


def _test(gate: Gate, cols: list[np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(gate, RectangleGate):
        return {gate.id: _in_ranges(cols, list(zip(gate.mins, gate.maxs, strict=True)))}
    if isinstance(gate, PolygonGate):
        return {gate.id: points_in_polygon(cols[0], cols[1], gate.vertices)}
    if isinstance(gate, EllipsoidGate):
        return {
            gate.id: points_in_ellipsoid(
                cols, gate.mean, gate.inverse_covariance, gate.distance_square
            )
        }
    if isinstance(gate, QuadrantGate):
        out: dict[str, np.ndarray] = {}
        union = np.zeros(len(cols[0]), dtype=bool)
        for q in gate.quadrants:
            out[q.id] = _in_ranges(cols, list(q.ranges))
            union |= out[q.id]
        out[gate.id] = union
        return out
    raise GatingError(
        f"gate {getattr(gate, 'id', gate)!r}: unknown gate type {type(gate).__name__}"
    )


# --------------------------------------------------------------------------- plotting


def gate_outline(
    gate: Gate,
    display_range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    n_points: int = 100,
) -> np.ndarray:
    """Closed (k, 2) outline of a gate on its first two dims, for drawing over a density plot.

    Open rectangle sides are clipped to `display_range` ((xmin, xmax), (ymin, ymax)); a 1-D
    range gate is drawn as a band over the whole y range. Ellipses are sampled at `n_points`.
    """
    if isinstance(gate, PolygonGate):
        return np.vstack([gate.vertices, gate.vertices[:1]])
    if isinstance(gate, EllipsoidGate):
        if len(gate.dims) != 2:
            raise GatingError(f"gate {gate.id!r}: only a 2-D ellipse has an outline to draw")
        return _ellipse_outline(gate, n_points)
    if isinstance(gate, RectangleGate):
        (x0, x1), (y0, y1) = _display(gate, display_range)
        xlo = x0 if gate.mins[0] is None else gate.mins[0]
        xhi = x1 if gate.maxs[0] is None else gate.maxs[0]
        if len(gate.dims) >= 2:
            ylo = y0 if gate.mins[1] is None else gate.mins[1]
            yhi = y1 if gate.maxs[1] is None else gate.maxs[1]
        else:
            ylo, yhi = y0, y1
        return np.array([[xlo, ylo], [xhi, ylo], [xhi, yhi], [xlo, yhi], [xlo, ylo]], dtype=float)
    if isinstance(gate, QuadrantGate):
        # the divider lines as one path broken by NaN rows (Plotly draws gaps at NaN)
        (x0, x1), (y0, y1) = _display(gate, display_range)
        segs = []
        for c in gate.dividers[0]:
            segs += [[c, y0], [c, y1], [np.nan, np.nan]]
        for c in gate.dividers[1] if len(gate.dividers) > 1 else ():
            segs += [[x0, c], [x1, c], [np.nan, np.nan]]
        return np.array(segs, dtype=float)
    raise GatingError(f"gate {gate.id!r}: a {type(gate).__name__} has no outline to draw")


def _display(gate: Gate, display_range) -> tuple[tuple[float, float], tuple[float, float]]:
    if display_range is None:
        limits = [
            v for v in (*getattr(gate, "mins", ()), *getattr(gate, "maxs", ())) if v is not None
        ]
        lo, hi = (min(limits), max(limits)) if limits else (0.0, 1.0)
        return (lo, hi), (lo, hi)
    (x0, x1), (y0, y1) = display_range
    return (float(x0), float(x1)), (float(y0), float(y1))


def _ellipse_outline(gate: EllipsoidGate, n_points: int) -> np.ndarray:
    # boundary: x = mean + sqrt(d2) * L u, with L L' = covariance and u on the unit circle
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=True)
    u = np.stack([np.cos(t), np.sin(t)])
    vals, vecs = np.linalg.eigh(gate.covariance)
    scale = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return (gate.mean[:, None] + np.sqrt(gate.distance_square) * scale @ u).T
