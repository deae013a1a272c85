"""Pooling centres' cohort exports (cytopipe.clinical.pooling, `cytopipe pool`): definitions
checked field by field, a pooled analysis equal to one analysis of the combined cohort, the
log-rank test against a published example, and the command's files and page."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_longitudinal import L, cohort, story

from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.clinical.pooling import (
    check_definitions,
    km_by_centre,
    km_input,
    log_rank,
    medians,
    pool_exports,
)
from cytopipe.config import defaults, merge, validated
from cytopipe.errors import CytopipeError


def _settings(**longitudinal) -> dict:
    cfg = validated(merge(defaults("config"), {"longitudinal": longitudinal}), "config", source="t")
    return cfg["longitudinal"]


def _centre_stories(seed: int, n: int, prefix: str = "") -> list:
    """n patients with random reconstitution days (or none: censored at the last visit)."""
    rng = np.random.default_rng(seed)
    days = [7, 14, 28, 56, 90, 120, 180, 270, 365]
    out = []
    for i in range(n):
        back = rng.choice([*days[3:], None])  # the first visit at/above 1%
        timeline = {-7: (200, L)}
        for d in days[: int(rng.integers(5, len(days) + 1))]:
            timeline[d] = (
                (60, L) if back is not None and d >= back else (int(rng.integers(0, 6)), L)
            )
        out.append(story(f"{prefix}P{i:02d}", timeline, age=float(rng.uniform(5, 60))))
    return out


def _export(stories, **longitudinal) -> pd.DataFrame:
    stats, sheet = cohort(*stories)
    return run_longitudinal(stats, sheet, _settings(**longitudinal)).export


@pytest.fixture(scope="module")
def centres():
    return {f"C{k}": _centre_stories(k, 6 + 2 * k) for k in (1, 2, 3)}


def test_pooled_analysis_equals_one_analysis_of_the_combined_cohort(centres):
    exports = {f"{c}.csv": _export(s, centre=c) for c, s in centres.items()}
    pooled = pool_exports(exports)
    curves = km_by_centre(pooled)
    assert set(curves) == {"C1", "C2", "C3", "all centres"}
    combined = [st for c, s in centres.items() for st in _centre_stories(int(c[1]), len(s), c)]
    stats, sheet = cohort(*combined)
    one = run_longitudinal(stats, sheet, _settings())
    km = one.km[one.km["day"] > 0].reset_index(drop=True)  # its table starts with day 0
    all_km = curves["all centres"]
    np.testing.assert_array_equal(all_km["day"], km["day"])
    np.testing.assert_array_equal(all_km["at_risk"], km["at_risk"])
    np.testing.assert_allclose(all_km["still_aplastic"], km["still_aplastic"])
    np.testing.assert_allclose(all_km["still_aplastic_low"], km["still_aplastic_low"])
    row = medians(curves).set_index("centre").loc["all centres"]
    assert row["median_days"] == one.summary["median_days_to_reconstitution"]
    assert [row["median_low"], row["median_high"]] == one.summary[
        "median_days_to_reconstitution_ci"
    ]
    assert len(pooled) == sum(len(s) for s in centres.values())
    assert pooled.groupby("centre").size().to_dict() == {c: len(s) for c, s in centres.items()}


def test_differing_definitions_are_refused_naming_the_field(centres):
    exports = {
        "C1.csv": _export(centres["C1"], centre="C1"),
        "C2.csv": _export(centres["C2"], centre="C2", aplasia_pct_lymphocytes=0.5),
    }
    with pytest.raises(CytopipeError, match="def_aplasia_pct_lymphocytes") as err:
        check_definitions(exports)
    assert "C1.csv: '1.0'" in str(err.value) and "C2.csv: '0.5'" in str(err.value)
    exports["C2.csv"] = _export(centres["C2"], centre="C2", reconstitution_rule="lower_bound")
    with pytest.raises(CytopipeError, match="def_reconstitution_rule"):
        pool_exports(exports)
    with pytest.raises(CytopipeError, match="not a cytopipe cohort export"):
        check_definitions({"x.csv": pd.DataFrame({"patient_id": ["a"]})})


def test_same_patient_ids_in_two_centres_stay_two_patients(centres):
    a = _export(centres["C1"], centre="C1")
    b = _export(centres["C1"], centre="C9")  # the same pseudonymous ids elsewhere
    pooled = pool_exports({"a.csv": a, "b.csv": b})
    assert len(pooled) == 2 * len(a)
    with pytest.raises(CytopipeError, match="centre code 'C1' is in both"):
        pool_exports({"a.csv": a, "b.csv": a})
    unnamed = pool_exports({"north.csv": a.assign(centre=""), "south.csv": b})
    assert set(unnamed["centre"]) == {"north.csv", "C9"}  # named by its file when it has no code


def test_log_rank_matches_the_published_leukaemia_example():
    """Freireich et al. 1963 (6-MP vs placebo remission times; + = censored): R's survdiff
    gives chi-square 16.8 on 1 df, p = 4e-05."""
    mp = [6, 6, 6, 7, 10, 13, 16, 22, 23, 6, 9, 10, 11, 17, 19, 20, 25, 32, 32, 34, 35]
    mp_event = [True] * 9 + [False] * 12
    placebo = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]
    test = log_rank(np.array(mp + placebo), np.array(mp_event + [True] * 21),
                    np.array(["6-MP"] * 21 + ["placebo"] * 21))  # fmt: skip
    assert test["chi2"] == pytest.approx(16.79, abs=0.01) and test["df"] == 1
    assert test["p"] == pytest.approx(4.17e-5, rel=0.02)
    same = log_rank(np.array(mp + mp), np.array(mp_event * 2), np.array(["a"] * 21 + ["b"] * 21))
    assert same["chi2"] == pytest.approx(0.0, abs=1e-9) and same["p"] == pytest.approx(1.0)


def test_pool_command_writes_export_medians_and_page(centres, tmp_path):
    paths = []
    for c, s in centres.items():
        path = tmp_path / f"{c}_cohort_export.csv"
        _export(s, centre=c).to_csv(path, index=False)
        paths.append(str(path))
    cli = [sys.executable, "-m", "cytopipe.cli", "pool"]
    done = subprocess.run([*cli, *paths, "--out", str(tmp_path / "pooled")], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 centres" in done.stdout
    pooled = pd.read_csv(tmp_path / "pooled" / "pooled_export.csv")
    assert set(pooled["centre"]) == {"C1", "C2", "C3"}
    table = pd.read_csv(tmp_path / "pooled" / "pooled_medians.tsv", sep="\t")
    assert table["centre"].tolist() == ["C1", "C2", "C3", "all centres"]
    data = km_input(pool_exports({p: pd.read_csv(p) for p in paths}))
    assert table["log_rank_p"].iloc[0] == pytest.approx(
        log_rank(data["time"], data["observed"], data["centre"])["p"]
    )
    page = (tmp_path / "pooled" / "pooled.html").read_text()
    assert "log-rank test" in page and "By centre" in page and "By age group" in page
    assert (tmp_path / "pooled" / "assets" / "plotly.min.js").exists()
    other = tmp_path / "other.csv"
    _export(centres["C2"], centre="C4", aplasia_cells_per_ul=5).to_csv(other, index=False)
    refused = subprocess.run([*cli, paths[0], str(other), "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "def_aplasia_cells_per_ul" in refused.stderr
    assert "Traceback" not in refused.stderr
