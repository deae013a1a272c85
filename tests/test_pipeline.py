"""Per-sample preprocessing: scales per channel, real files from other instruments."""

from __future__ import annotations

import numpy as np
import pytest

from cytopipe import transforms
from cytopipe.config import load_config
from cytopipe.panel import load_panel
from cytopipe.pipeline import preprocess, scale_channel


def test_a_fixed_top_puts_equal_signals_at_one_place_across_ranges():
    x = np.array([-300.0, 0.0, 1000.0, 50000.0])
    tcfg = load_config(None)["transform"]
    tcfg["logicle"]["t"] = 262144
    a, _ = scale_channel("CD19", x, 262144.0, tcfg)
    b, desc = scale_channel("CD19", x, 4 * 262144.0, tcfg)
    np.testing.assert_array_equal(a, b)
    assert str(desc) == "logicle(T=262144, W=0.5, M=4.5, A=0)"


def test_logicle_top_can_follow_the_channel_range():
    x = np.array([-300.0, 0.0, 1000.0, 50000.0])
    tcfg = load_config(None)["transform"]  # default: T follows each channel's range
    a, _ = scale_channel("CD19", x, 262144.0, tcfg)
    b, desc = scale_channel("CD19", 4 * x, 4 * 262144.0, tcfg)
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert str(desc) == "logicle(T=1.04858e+06, W=0.5, M=4.5, A=0)"


def test_per_marker_parameters_and_w_estimated_from_the_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 400, 5000), rng.lognormal(9, 0.5, 5000)])
    tcfg = {
        **load_config(None)["transform"],
        "per_marker": {"CD38": {"w": "auto"}, "CD24": {"scale": "arcsinh", "cofactor": 500}},
    }
    y, desc = scale_channel("CD38", x, 262144.0, tcfg)
    w = transforms.estimate_logicle_w(x, 262144.0, 4.5)
    assert 0.5 < w < 2.25 and str(desc) == f"logicle(T=262144, W={w:.4g}, M=4.5, A=0)"
    np.testing.assert_allclose(y, transforms.logicle(x, t=262144.0, w=w), atol=1e-6)
    z, desc = scale_channel("CD24", x, 262144.0, tcfg)
    np.testing.assert_allclose(z, np.arcsinh(x / 500), rtol=1e-6)
    assert str(desc) == "arcsinh(cofactor=500)"
    s, desc = scale_channel("SSC-A", x, 262144.0, tcfg)
    np.testing.assert_allclose(s, x / 262144.0, rtol=1e-6)
    for marker, values in (("CD38", y), ("CD24", z), ("SSC-A", s)):  # every scale undoes itself
        back = scale_channel(marker, x, 262144.0, tcfg)[1].inverse(values)
        np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-2)


def test_real_human_lymphocyte_file_is_preprocessed(shared_data, repo):
    pre = preprocess(
        str(shared_data / "flowio/fcs_files/100715.fcs"),
        load_panel(repo / "config/panel.yaml"),
        load_config(repo / "config/config.yaml"),
    )
    assert {"CD3", "CD19", "CD27", "FSC-A", "SSC-A"} <= set(pre.columns)
    assert pre.info["provenance"]["spillover_source"].startswith("SPILL")
    assert pre.info["qc"]["events_in"] == 65016
    cd19 = pre.columns["CD19"]
    assert cd19.dtype == np.float32 and np.isfinite(cd19).all()
    # logicle scale: the bulk sits within the display range
    assert -0.2 < np.median(cd19) < 1.0


@pytest.mark.parametrize("bad", [{"fluorescence": "logicle", "logicle": {"w": "wide"}}])
def test_bad_transform_setting_is_refused(bad):
    with pytest.raises(ValueError):
        scale_channel("CD19", np.ones(3), 262144.0, bad)
