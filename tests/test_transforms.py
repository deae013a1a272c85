"""Scales against their references: flowutils' C code (FlowKit's reference) and FlowJo's own
biexponential lookup table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from flowutils import transforms as fu

from cytopipe.preprocess import transforms as tf
from cytopipe.preprocess.sample import logicle_w

X = np.concatenate([np.linspace(-5000, 5000, 20001), np.geomspace(1, 262144 * 2, 5000)])
LOGICLE_PARAMS = [
    (262144, 0.5, 4.5, 0),
    (10000, 1.0, 4.0, 0.5),
    (262144, 0.0, 4.5, 0),
    (1e5, 2, 5, 1),
]


@pytest.mark.parametrize("t, w, m, a", LOGICLE_PARAMS)
def test_logicle_equals_flowutils(t, w, m, a):
    ref = fu.logicle(X.copy(), None, t=t, w=w, m=m, a=a)
    got = tf.logicle(X, t, w, m, a)
    assert np.max(np.abs(got - ref)) < 1e-6
    back = tf.logicle_inverse(got, t, w, m, a)
    assert np.allclose(back, X, rtol=1e-9, atol=1e-6)
    assert np.all(np.diff(tf.logicle(np.sort(X), t, w, m, a)) >= 0)


@pytest.mark.parametrize(
    "t, w, m, a", [*LOGICLE_PARAMS, (262144, 2.25, 4.5, 0), (262144, 1.5, 4.5, 0.3)]
)
def test_fast_logicle_equals_flowutils_to_rounding(t, w, m, a):
    rng = np.random.default_rng(int(t * 10 + w * 100 + a * 1000))
    x = np.concatenate(
        [
            X,
            rng.normal(0, 300, 50_000),
            10 ** rng.uniform(-6, 6.5, 50_000) * rng.choice([-1, 1], 50_000),
            [0.0, -0.0, 1e-9, t, -t, t * 1e4],  # t * 1e4 is beyond the table: reference path
        ]
    )
    ref = tf.logicle(x, t, w, m, a)
    got = tf.logicle_fast(x, t, w, m, a)
    if w == 0:
        # flowutils' solver gives up (returns -1) for 0 < |x| < ~1e-8 when W = 0; the scale is
        # linear there, which is what we return
        tiny = (np.abs(x) < 1e-6) & (x != 0)
        assert np.all(ref[tiny & (np.abs(x) < 1e-8)] == -1)
        assert np.allclose(got[tiny], x[tiny] * (got[x == 1e-9][0] / 1e-9), rtol=1e-4)
        ref, got = ref[~tiny], got[~tiny]
    assert np.max(np.abs(got - ref)) < 1e-12  # the brief asks 1e-6; we get ~1 ulp
    assert (
        np.isnan(tf.logicle_fast(np.array([np.nan]), t, w, m, a)).all()
        == np.isnan(tf.logicle(np.array([np.nan]), t, w, m, a)).all()
    )


def test_fast_logicle_keeps_float32_input_and_shape():
    x = X[:1000].astype(np.float32)
    keep = x.copy()
    y = tf.logicle_fast(x)
    assert y.dtype == np.float64 and y.shape == (1000,) and np.array_equal(x, keep)


def test_logicle_accepts_float32_and_keeps_input():
    x = X.astype(np.float32)
    keep = x.copy()
    y = tf.logicle(x)
    assert y.dtype == np.float64 and np.array_equal(x, keep)
    assert tf.logicle(np.array([262144.0]))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("t, w, m, a", [(10000, 1, 4.5, 0), (262144, 0.5, 4.5, 0)])
def test_hyperlog_equals_flowutils(t, w, m, a):
    ref = fu.hyperlog(X.copy(), None, t=t, w=w, m=m, a=a)
    got = tf.hyperlog(X, t, w, m, a)
    assert np.max(np.abs(got - ref)) < 1e-9
    assert np.allclose(tf.hyperlog_inverse(got, t, w, m, a), X, rtol=1e-7, atol=1e-4)


def test_asinh_log_linear_definitions_and_inverses():
    t, m, a = 10000.0, 4.0, 1.0
    assert np.allclose(tf.asinh(X, t, m, a), fu.asinh(X, None, t=t, m=m, a=a))
    assert np.allclose(tf.asinh_inverse(tf.asinh(X, t, m, a), t, m, a), X, atol=1e-6)
    pos = X[X > 0]
    assert np.allclose(tf.log(pos, 10000, 5), np.log10(pos / 10000) / 5 + 1)
    below = tf.log(np.array([-1.0, 0.0]), 10000, 5)  # off scale: never inside a range
    assert np.isnan(below[0]) and np.isneginf(below[1])
    assert np.allclose(tf.log_inverse(tf.log(pos, 10000, 5), 10000, 5), pos)
    assert np.allclose(tf.linear(X, 10000, 500), (X + 500) / 10500)
    assert np.allclose(tf.linear_inverse(tf.linear(X, 10000, 500), 10000, 500), X)
    assert tf.arcsinh(np.array([150.0]), 150)[0] == pytest.approx(np.arcsinh(1.0))
    assert np.allclose(tf.arcsinh_inverse(tf.arcsinh(X, 5), 5), X)


def test_flowjo_biex_matches_flowjo_lookup_table(shared_data):
    path = (
        shared_data
        / "flowkit"
        / "flowjo_xforms"
        / "tr_biex_l256_w-7.943282_n1.000000_m4.418540_r262144.000029.csv"
    )
    table = pd.read_csv(path)
    channel = table.iloc[:, 0].to_numpy(dtype=float)
    value = table.iloc[:, 1].to_numpy(dtype=float)
    lx, ly = tf.biex_lut(negative=1.0, width=-7.943282, positive=4.418540, max_value=262144.000029)
    # FlowJo printed 6 significant digits (and whole numbers above 1e5)
    tol = np.maximum(np.abs(value) * 5e-6, 0.5)
    assert np.array_equal(ly[: len(channel)], channel)
    assert np.all(np.abs(lx[: len(value)] - value) <= tol)
    # the forward scale maps FlowJo's table values back to their channels
    got = tf.biex(value, 1.0, -7.943282, 4.418540, 262144.000029)
    assert np.max(np.abs(got - channel)) < 0.01
    back = tf.biex_inverse(channel, 1.0, -7.943282, 4.418540, 262144.000029)
    assert np.all(np.abs(back - value) <= tol)


def test_estimate_logicle_w_follows_parks():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 300, 50_000), rng.lognormal(8, 1, 50_000)])
    t, m = 262144.0, 4.5
    r = np.percentile(values[values < 0], 5)
    expect = (m - np.log10(t / abs(r))) / 2
    assert 0 < expect < m / 2
    assert tf.estimate_logicle_w(values, t, m) == pytest.approx(expect)
    # wider negative spread -> wider linear region
    wider = tf.estimate_logicle_w(values * np.where(values < 0, 10, 1), t, m)
    assert wider > expect
    assert tf.estimate_logicle_w(np.abs(values) + 1, t, m) == 0.0  # no negatives
    assert tf.estimate_logicle_w(np.array([-1e9, -2e9]), t, m) == m / 2  # clipped


@pytest.mark.parametrize(
    "scale",
    [
        tf.Scale.logicle(262144.0, 0.5, 4.5, 0.0),
        tf.Scale.linear(1024.0),
        tf.Scale.arcsinh(150.0),
        tf.Scale("h", "hyperlog", (("T", 1e5), ("W", 1.0), ("M", 4.5), ("A", 0.0))),
    ],
    ids=str,
)
def test_one_scale_type_round_trips_and_records(scale):
    """One Scale serves the pipeline and Gating-ML: forward/inverse undo each other and the
    provenance record reads back equal, so clustering undoes exactly what preprocessing did."""
    assert np.allclose(scale.inverse(scale.forward(X)), X, rtol=1e-6, atol=1e-3)
    assert tf.Scale.from_record(scale.to_record()) == dataclasses.replace(scale, id=scale.kind)


def test_scale_reads_records_written_before_the_type_was_unified():
    old = {"kind": "logicle", "t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0, "cofactor": 150.0}
    assert tf.Scale.from_record(old) == tf.Scale.logicle(262144.0, 0.5, 4.5, 0.0)
    old_asinh = {**old, "kind": "arcsinh", "cofactor": 5.0}
    assert tf.Scale.from_record(old_asinh) == tf.Scale.arcsinh(5.0)
    assert str(tf.Scale.from_record({**old, "kind": "linear"})) == "linear/262144"


def _centre_height(x: np.ndarray, w: float) -> float:
    """Density at zero's position on logicle(W) over the highest density: 1 where the
    negatives show as one population, low where they split in two humps."""
    counts, edges = np.histogram(tf.logicle(x, 262144.0, w, 4.5, 0.0), bins=60)
    zero = tf.logicle(np.zeros(1), 262144.0, w, 4.5, 0.0)[0]
    return counts[np.searchsorted(edges, zero) - 1] / counts.max()


@pytest.mark.parametrize("sd, widened", [(50, False), (150, False), (250, True), (600, True)])
def test_w_widens_only_where_the_negatives_split_at_the_configured_one(sd, widened):
    """Zero-centred negatives of SD 600 split in two humps at W 0.5 (the density at zero 0.26
    of the humps'); their own estimate (1.08) shows one population. From SD 250 the dip at zero
    is under 0.7 (0.64); narrower ones keep the one configured W (SD 150: 0.96), so the
    template's limits stay on one scale."""
    x = np.random.default_rng(0).normal(0.0, sd, 200_000)
    w = logicle_w(x, 262144.0, 4.5, 0.5, True)
    assert (w > 0.5) is widened
    assert logicle_w(x, 262144.0, 4.5, 0.5, False) == 0.5
    if widened:
        assert _centre_height(x, 0.5) < 0.8 < _centre_height(x, w)


def test_a_few_events_far_below_zero_do_not_widen_w():
    """The W estimate reads the 5th percentile of the negative values: negatives just above
    zero with a few events far below it (0.25%) estimate wide (here 1.26), yet show as one
    population at W 0.5, and keep it (the Lyoplate file under-compensated: CD20 1.03)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(400.0, 150.0, 200_000), rng.normal(-2000.0, 600.0, 500)])
    assert tf.estimate_logicle_w(x) > 1.0
    assert tf.zero_dip(x, 262144.0, 0.5, 4.5) >= 1.0
    assert logicle_w(x, 262144.0, 4.5, 0.5, True) == 0.5
