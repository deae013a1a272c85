"""The vectorized gating core on generated data with known truth.

References: brute-force definitions written here in the plainest form, and flowutils'
C kernels (what FlowKit uses) for polygon and ellipsoid membership.
"""

from __future__ import annotations

import numpy as np
import pytest
from flowutils import gating as fu_gating
from hypothesis import given, settings
from hypothesis import strategies as st

from cytopipe.errors import GatingError
from cytopipe.gating.chunked import evaluate_chunked
from cytopipe.gating.gates import (
    BooleanGate,
    EllipsoidGate,
    PolygonGate,
    QuadrantGate,
    RectangleGate,
    evaluate,
    gate_outline,
)
from cytopipe.gating.geometry import points_in_polygon
from cytopipe.gating.lazy_columns import LazyColumns, RatioDimension, with_ratios


@pytest.fixture(scope="module")
def events() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 20_000
    return {
        "x": rng.normal(0, 1, n),
        "y": rng.normal(0, 1, n),
        "z": rng.normal(0, 1, n),
        "x32": rng.normal(0, 1, n).astype(np.float32),
    }


class Recording(LazyColumns):
    """Columns that remember which keys were read."""

    def __init__(self, base):
        super().__init__(base)
        self.read: list[str] = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)

    def take(self, key, rows):
        self.read.append(f"{key}[{len(rows)} rows]")
        return super().take(key, rows)


# --------------------------------------------------------------------------- rectangles


def test_rectangle_is_half_open_and_open_sides(events):
    x, y = events["x"], events["y"]
    gates = [
        RectangleGate("box", None, ("x", "y"), (-0.5, None), (0.5, 1.0)),
        RectangleGate("all", None, ("x",), (None,), (None,)),
    ]
    m = evaluate(gates, events)
    assert np.array_equal(m["box"], (x >= -0.5) & (x < 0.5) & (y < 1.0))
    assert m["all"].all()
    # boundary values: min included, max excluded
    edge = {"x": np.array([-0.5, 0.5, 0.0]), "y": np.zeros(3)}
    assert evaluate(gates[:1], edge)["box"].tolist() == [True, False, True]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=50),
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
)
def test_float32_columns_compare_like_float64(values, lo, hi):
    """Limits are not rounded to float32: a float32 column gives float64's answer."""
    col = np.array(values, dtype=np.float32)
    got = evaluate([RectangleGate("r", None, ("a",), (lo,), (hi,))], {"a": col})["r"]
    wide = col.astype(np.float64)
    assert np.array_equal(got, (wide >= lo) & (wide < hi))


def test_nan_events_are_never_inside():
    cols = {"a": np.array([np.nan, 1.0]), "b": np.array([1.0, np.nan])}
    gates = [
        RectangleGate("r", None, ("a",), (0.0,), (None,)),
        PolygonGate("p", None, ("a", "b"), [[0, 0], [2, 0], [2, 2], [0, 2]]),
    ]
    m = evaluate(gates, cols)
    assert m["r"].tolist() == [False, True]
    assert m["p"].tolist() == [False, False]


# --------------------------------------------------------------------------- polygons


def _random_polygon_case(rng, integer: bool):
    k = int(rng.integers(3, 9))
    v = rng.uniform(0, 100, (k, 2))
    if integer:
        v = np.round(v)
    pts = [rng.uniform(-5, 105, (300, 2)), v]
    for i in range(k):  # points on every edge, as the same float formula makes them
        a, b = v[i], v[(i + 1) % k]
        pts.append(a + rng.uniform(0, 1, (20, 1)) * (b - a))
    return v, np.vstack(pts)


@pytest.mark.parametrize("seed", range(40))
def test_polygon_matches_flowutils_including_edges(seed):
    rng = np.random.default_rng(seed)
    v, pts = _random_polygon_case(rng, integer=seed % 2 == 0)
    ours = points_in_polygon(pts[:, 0], pts[:, 1], v)
    ref = fu_gating.points_in_polygon(v, pts)
    assert np.array_equal(ours, ref)


def test_self_intersecting_polygon_uses_even_odd_rule():
    # pentagram drawn in one stroke: its centre pentagon is covered twice -> outside
    ang = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.c_[np.cos(ang), np.sin(ang)]
    pts = np.array([[0.0, 0.0], [0.0, 0.7], [0.0, -1.5]])
    m = evaluate([PolygonGate("s", None, ("x", "y"), star)], {"x": pts[:, 0], "y": pts[:, 1]})
    assert m["s"].tolist() == [False, True, False]


def test_polygon_on_float32_columns(events):
    v = np.array([[-1, -1], [1.5, -0.5], [0.3, 1.2], [-0.8, 0.4]])
    y32 = events["y"].astype(np.float32)
    got = evaluate([PolygonGate("p", None, ("x32", "y32"), v)], {**events, "y32": y32})["p"]
    pts = np.c_[events["x32"].astype(np.float64), y32.astype(np.float64)]
    assert np.array_equal(got, fu_gating.points_in_polygon(v, pts))


# --------------------------------------------------------------------------- ellipsoids


def test_ellipse_and_ellipsoid_match_flowutils(events):
    cov2 = np.array([[1.0, 0.6], [0.6, 2.0]])
    cov3 = np.array([[1.0, 0.2, 0.1], [0.2, 0.5, -0.1], [0.1, -0.1, 2.0]])
    gates = [
        EllipsoidGate("e2", None, ("x", "y"), (0.3, -0.2), cov2, 1.5),
        EllipsoidGate("e3", None, ("x", "y", "z"), (0.0, 0.1, 0.2), cov3, 2.0),
    ]
    m = evaluate(gates, events)
    p2 = np.c_[events["x"], events["y"]]
    p3 = np.c_[events["x"], events["y"], events["z"]]
    assert np.array_equal(m["e2"], fu_gating.points_in_ellipsoid(cov2, [0.3, -0.2], 1.5, p2))
    assert np.array_equal(m["e3"], fu_gating.points_in_ellipsoid(cov3, [0, 0.1, 0.2], 2.0, p3))
    assert 0 < m["e2"].sum() < len(p2)


def test_singular_ellipse_is_refused():
    with pytest.raises(GatingError, match="singular"):
        EllipsoidGate("e", None, ("x", "y"), (0, 0), [[1, 1], [1, 1]], 1.0)


# --------------------------------------------------------------------------- quadrants, booleans


def test_quadrants_partition_the_parent(events):
    x, y = events["x"], events["y"]
    q = QuadrantGate.from_locations(
        "Q",
        "pos",
        ("x", "y"),
        ((0.0,), (0.5,)),
        {"pp": (1, 1), "pn": (1, 0), "np": (-1, 1), "nn": (-1, 0)},
    )
    parent = RectangleGate("pos", None, ("z",), (-1.0,), (None,))
    m = evaluate([q, parent], events)
    par = events["z"] >= -1.0
    assert np.array_equal(m["pp"], par & (x >= 0) & (y >= 0.5))
    assert np.array_equal(m["nn"], par & (x < 0) & (y < 0.5))
    total = m["pp"].astype(int) + m["pn"] + m["np"] + m["nn"]
    assert np.array_equal(total, par.astype(int))  # disjoint and covering the parent
    assert np.array_equal(m["Q"], par)


def test_boolean_gates_with_complements_and_parent(events):
    x, y, z = events["x"], events["y"], events["z"]
    gates = [
        BooleanGate("and_not", "zpos", "and", ("a", "b"), (False, True)),
        BooleanGate("or", None, "or", ("a", "b")),
        BooleanGate("not", None, "not", ("a",)),
        RectangleGate("a", None, ("x",), (0.0,), (None,)),
        RectangleGate("b", None, ("y",), (0.0,), (None,)),
        RectangleGate("zpos", None, ("z",), (0.0,), (None,)),
    ]
    m = evaluate(gates, events)
    assert np.array_equal(m["and_not"], (x >= 0) & ~(y >= 0) & (z >= 0))
    assert np.array_equal(m["or"], (x >= 0) | (y >= 0))
    assert np.array_equal(m["not"], ~(x >= 0))


def test_boolean_not_takes_one_reference():
    with pytest.raises(GatingError, match="exactly one"):
        BooleanGate("n", None, "not", ("a", "b"))
    with pytest.raises(GatingError, match="and, or or not"):
        BooleanGate("n", None, "xor", ("a", "b"))


# --------------------------------------------------------------------------- hierarchy


def _chain(depth: int) -> list:
    gates = [RectangleGate("g0", None, ("x",), (-3.0,), (None,))]
    for i in range(1, depth):
        dim = ("x", "y", "z")[i % 3]
        gates.append(RectangleGate(f"g{i}", f"g{i - 1}", (dim,), (-3.0 + 0.3 * i,), (None,)))
    return gates


def test_masks_include_ancestry_in_any_input_order(events):
    gates = _chain(8)
    shuffled = [gates[i] for i in np.random.default_rng(0).permutation(len(gates))]
    m1, m2 = evaluate(gates, events), evaluate(shuffled, events)
    expect = np.ones(len(events["x"]), dtype=bool)
    for g in gates:
        col = events[g.dims[0]]
        expect = expect & (col >= g.mins[0])
        assert np.array_equal(m1[g.id], expect)
        assert np.array_equal(m2[g.id], expect)


def test_only_needed_dims_are_read_once(events):
    cols = Recording(events)
    gates = [
        RectangleGate("a", None, ("x",), (0.0,), (None,)),
        PolygonGate("p", "a", ("x", "y"), [[0, 0], [2, 0], [2, 2]]),
        RectangleGate("b", "a", ("y",), (0.0,), (None,)),
    ]
    m = evaluate(gates, cols)
    # x whole for the root gate (then reused), y only for the parent's events, z never
    assert cols.read == ["x", f"y[{m['a'].sum()} rows]"]


def test_costly_columns_are_computed_for_parent_events_only(events):
    calls = []

    def logicle_like(cols, rows):
        calls.append(None if rows is None else len(rows))
        x = events["y"] if rows is None else events["y"][rows]
        return np.arcsinh(x)

    cols = LazyColumns(events, {"ty": logicle_like})
    gates = [
        RectangleGate("a", None, ("x",), (1.0,), (None,)),
        PolygonGate("p", "a", ("x", "ty"), [[0, -2], [4, -2], [4, 2]]),
        EllipsoidGate("e", "a", ("x", "ty"), (1.5, 0), np.eye(2), 1.0),
    ]
    m = evaluate(gates, cols)
    assert calls == [int(m["a"].sum())]  # once, for a's events, shared by both children
    ty = np.arcsinh(events["y"])
    expect = fu_gating.points_in_polygon(
        np.array([[0, -2], [4, -2], [4, 2]], float), np.c_[events["x"], ty]
    )
    assert np.array_equal(m["p"], expect & (events["x"] >= 1.0))


def test_ratio_dims_are_computed_lazily(events):
    ratio = RatioDimension("x_over_y", "x", "y", a=2.0, b=0.5, c=-0.1)
    cols = with_ratios(events, [ratio])
    m = evaluate([RectangleGate("r", None, ("x_over_y",), (0.0,), (1.0,))], cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 2.0 * (events["x"] - 0.5) / (events["y"] + 0.1)
    assert np.array_equal(m["r"], (r >= 0.0) & (r < 1.0))


def test_chunked_equals_whole(events):
    gates = [
        *_chain(4),
        PolygonGate("p", "g2", ("x", "y"), [[-1, -1], [2, -1], [0, 2]]),
        EllipsoidGate("e", "g1", ("y", "z"), (0, 0), np.eye(2), 1.0),
        BooleanGate("b", "g0", "or", ("p", "e"), (False, True)),
    ]
    whole = evaluate(gates, events)
    n = len(events["x"])
    chunks = [{k: v[i : i + 3000] for k, v in events.items()} for i in range(0, n, 3000)]
    chunked = evaluate_chunked(gates, chunks, n)
    assert set(whole) == set(chunked)
    for k in whole:
        assert np.array_equal(whole[k], chunked[k]), k


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "gates, message",
    [
        ([RectangleGate("a", "nope", ("x",), (0,), (1,))], "'a': parent 'nope'"),
        ([BooleanGate("b", None, "or", ("ghost",))], "'b': references 'ghost'"),
        (
            [
                RectangleGate("a", "b", ("x",), (0,), (1,)),
                RectangleGate("b", "a", ("x",), (0,), (1,)),
            ],
            "depends on itself",
        ),
        ([RectangleGate("a", None, ("CD19",), (0,), (1,))], "'a' needs dimension.*'CD19'"),
        (
            [
                RectangleGate("a", None, ("x",), (0,), (1,)),
                RectangleGate("a", None, ("y",), (0,), (1,)),
            ],
            "defined twice",
        ),
    ],
)
def test_broken_strategies_name_the_gate(events, gates, message):
    with pytest.raises(GatingError, match=message):
        evaluate(gates, events)


def test_malformed_gates_are_refused():
    with pytest.raises(GatingError, match="one min and one max"):
        RectangleGate("r", None, ("x", "y"), (0,), (1, 2))
    with pytest.raises(GatingError, match="3 \\(x, y\\) vertices"):
        PolygonGate("p", None, ("x", "y"), [[0, 0], [1, 1]])


# --------------------------------------------------------------------------- outlines


def test_outlines():
    rect = RectangleGate("r", None, ("x", "y"), (1.0, None), (None, 3.0))
    out = gate_outline(rect, ((0.0, 10.0), (-1.0, 5.0)))
    assert out[0].tolist() == out[-1].tolist()  # closed
    assert out.min(axis=0).tolist() == [1.0, -1.0] and out.max(axis=0).tolist() == [10.0, 3.0]
    band = gate_outline(RectangleGate("b", None, ("x",), (2.0,), (4.0,)), ((0, 10), (0, 1)))
    assert band.min(axis=0).tolist() == [2.0, 0.0] and band.max(axis=0).tolist() == [4.0, 1.0]

    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    ell = EllipsoidGate("e", None, ("x", "y"), (1.0, -1.0), cov, 3.0)
    pts = gate_outline(ell)
    assert len(pts) == 100
    d = pts - ell.mean
    dist = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
    assert np.allclose(dist, 3.0)  # every outline point is on the boundary

    poly = PolygonGate("p", None, ("x", "y"), [[0, 0], [1, 0], [0, 1]])
    assert gate_outline(poly).shape == (4, 2)

    quad = QuadrantGate.from_locations("q", None, ("x", "y"), ((2.0,), (3.0,)), {"a": (0, 0)})
    lines = gate_outline(quad, ((0, 10), (0, 5)))  # divider lines, NaN-separated for Plotly
    segments = [seg for seg in np.split(lines, np.flatnonzero(np.isnan(lines[:, 0]))) if len(seg)]
    pts = [s[~np.isnan(s[:, 0])] for s in segments]
    assert [p.tolist() for p in pts if len(p)] == [[[2, 0], [2, 5]], [[0, 3], [10, 3]]]
