"""Per-sample preprocessing: scales per channel, real files from other instruments."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cytopipe import cli
from cytopipe.config import load_config, thaw
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess import transforms
from cytopipe.preprocess.sample import preprocess, scale_channel


def test_a_fixed_top_puts_equal_signals_at_one_place_across_ranges():
    x = np.array([-300.0, 0.0, 1000.0, 50000.0])
    tcfg = thaw(load_config(None)["transform"])  # settings are read-only: a copy to edit
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


# ----------------------------------------------------------------------------- collect: rows vs files


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    from report_fixtures import build_checked_cohort

    return build_checked_cohort(tmp_path_factory.mktemp("checked"))


def run_collect(checked, out, *options: str) -> dict[str, pd.DataFrame]:
    argv = ["collect", "--samples", str(checked.sheet), "--results", str(checked.results)]
    assert cli.main([*argv, "--out", str(out), *options]) == 0
    tables = {n: pd.read_csv(out / f"{n}.tsv", sep="\t") for n in ("sample_status", "failures")}
    tables["sample_stats"] = pd.read_csv(out / "sample_stats.tsv", sep="\t")
    for name in ("sample_status", "failures"):
        tables[name] = tables[name].fillna({"error": "", "stage": ""}).set_index("sample_id")
    return tables


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_collect_fails_every_row_whose_file_is_another_rows_file(checked, tmp_path):
    from report_fixtures import CHECKED_COPIES

    tables = run_collect(checked, tmp_path)
    status, failures = tables["sample_status"], tables["failures"]
    ((copy, source),) = CHECKED_COPIES.items()
    sha = sha256_of(checked.files[copy])
    assert sha == sha256_of(checked.files[source]) and checked.files[copy] != checked.files[source]
    for sid, other in ((copy, source), (source, copy)):
        assert status.loc[sid, "status"] == "failed"
        assert status.loc[sid, "stage"] == "sample sheet"
        error = status.loc[sid, "error"]
        assert error.startswith(f"same FCS file (SHA-256 {sha[:8]}...) as sample {other}; ")
        assert "allow_duplicate_file=yes" in error
        assert failures.loc[sid, "error"] == error
        assert failures.loc[sid, "path"] == str(checked.files[sid])  # the lab's table keeps it
    assert sorted(failures.index) == sorted([copy, source])
    # rows that declare the shared file keep it; every other row is untouched
    assert (status.drop(index=[copy, source])["status"] == "ok").all()
    used = set(tables["sample_stats"]["sample_id"])
    assert used == set(status.index) - {copy, source}


def test_collect_fails_a_shared_file_when_the_rows_do_not_allow_it(checked, tmp_path):
    sheet = pd.read_csv(checked.sheet, sep="\t", keep_default_na=False)
    sheet["allow_duplicate_file"] = ""
    own = dataclasses.replace(checked, sheet=tmp_path / "samples.tsv")
    sheet.to_csv(own.sheet, sep="\t", index=False)
    status = run_collect(own, tmp_path / "tables")["sample_status"]
    assert status.loc["P3_BL", "status"] == status.loc["P3_BL_rerun", "status"] == "failed"
    assert "as sample P3_BL_rerun;" in status.loc["P3_BL", "error"]


def test_collect_warns_when_the_file_was_acquired_far_from_the_collection_date(checked, tmp_path):
    from report_fixtures import CHECKED_ROWS

    def expected(sid: str) -> tuple[str, str, int]:
        _, _, collected, acquired, _ = CHECKED_ROWS[sid]
        apart = abs((date.fromisoformat(acquired[:10]) - date.fromisoformat(collected)).days)
        return acquired[:10], collected, apart

    status = run_collect(checked, tmp_path / "default")["sample_status"].fillna({"warnings": ""})
    acquired, collected, apart = expected("P1_D030")
    assert apart == 61
    assert status.loc["P1_D030", "warnings"] == (
        f"acquired {acquired} per $DATE, sheet collection_date {collected}: {apart} days apart; "
        "check the row's file or date"
    )
    assert status.loc["P1_D030", "status"] == "ok"  # a warning, not a failure
    # stained the next morning: within the default tolerance of one day
    assert expected("P3_D030")[2] == 1 and status.loc["P3_D030", "warnings"] == ""
    assert (status.drop(index="P1_D030")["warnings"] == "").all()
    strict = run_collect(checked, tmp_path / "strict", "--date-tolerance-days", "0")
    warned = strict["sample_status"].fillna({"warnings": ""})["warnings"]
    assert sorted(warned[warned != ""].index) == ["P1_D030", "P3_D030"]
    assert warned["P3_D030"].endswith(": 1 day apart; check the row's file or date")
