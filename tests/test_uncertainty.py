"""Every B-cell number with how sure it is (issue 17 part 1): exact intervals that cover the
truth at the nominal rate, limits of detection and quantification per sample, "not evaluable"
when an acquisition could not have seen the aplasia threshold, and the lower-bound rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_longitudinal import cohort, run, states_of, story

from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.clinical.uncertainty import binomial_interval, poisson_interval, ratio_interval

L = 50_000


@pytest.mark.parametrize("mean", [0.5, 3.0, 20.0, 150.0])
def test_poisson_interval_covers_the_true_count_at_least_at_the_nominal_rate(mean):
    """Exact intervals are conservative: coverage >= 95%, and not far above it."""
    k = np.random.default_rng(int(mean * 10)).poisson(mean, 20_000)
    low, high = poisson_interval(k)
    coverage = np.mean((low <= mean) & (mean <= high))
    assert 0.95 <= coverage <= 0.995, coverage


@pytest.mark.parametrize("n, p", [(500, 0.002), (20_000, 0.01), (2_000, 0.1)])
def test_percentage_interval_covers_the_true_fraction(n, p):
    k = np.random.default_rng(n).binomial(n, p, 20_000)
    low, high = binomial_interval(k, np.full_like(k, n))
    coverage = np.mean((low <= p) & (p <= high))
    assert 0.95 <= coverage <= 0.995, coverage


def test_bead_ratio_interval_covers_the_true_concentration():
    """cells/uL = cells / beads x beads per test / volume: both counts are Poisson."""
    rng = np.random.default_rng(5)
    cells, beads = rng.poisson(12.0, 20_000), rng.poisson(4_000.0, 20_000)
    low, high = ratio_interval(cells, beads)
    truth = 12.0 / 4_000.0
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.95 <= coverage <= 0.995, coverage


def test_zero_in_fifty_thousand_and_zero_in_five_million_say_different_things():
    _, high_small = binomial_interval(np.array([0]), np.array([50_000]))
    _, high_large = binomial_interval(np.array([0]), np.array([5_000_000]))
    assert high_small[0] * 100 == pytest.approx(0.00738, rel=0.01)  # 3.69 / 50,000
    assert high_large[0] == pytest.approx(high_small[0] / 100, rel=0.01)


def test_each_sample_states_its_interval_and_limits():
    st = states_of(run(story("A", {-7: (5000, L), 30: (0, L), 90: (40, L), 180: (900, L)})), "A")
    assert st.loc[30, "b_cells_low"] == 0 and st.loc[30, "b_cells_high"] == pytest.approx(
        3.689, 1e-3
    )
    assert st.loc[30, "b_pct_high"] == pytest.approx(100 * 3.689 / L, rel=0.01)
    assert st.loc[30, "lod_pct"] == pytest.approx(100 * 20 / L)
    assert st.loc[30, "lloq_pct"] == pytest.approx(100 * 50 / L)
    assert bool(st.loc[90, "below_lloq"]) and not bool(st.loc[180, "below_lloq"])
    lo, hi = st.loc[180, "b_pct_low"], st.loc[180, "b_pct_high"]
    assert lo < st.loc[180, "b_pct_lymphocytes"] < hi


def test_an_acquisition_too_small_to_see_the_threshold_is_not_evaluable():
    """500 lymphocytes: 1% is 5 B cells, below the LOD of 20: 0 B cells there is not aplasia.
    30 B cells in 1,000 lymphocytes are above 1% whatever the LOD (lower bound 2%)."""
    timeline = {-7: (5000, L), 14: (0, L), 60: (0, 500), 120: (30, 1000), 180: (0, L)}
    st = states_of(run(story("B", timeline)), "B")
    assert st.loc[60, "state"] == "not_evaluable"
    assert "500 lymphocytes acquired, 2000 needed" in st.loc[60, "note"]
    assert st.loc[120, "state"] != "not_evaluable" and st.loc[14, "state"] == "aplasia"
    assert st.loc[180, "state"] == "aplasia"


def test_lower_bound_rule_needs_the_interval_above_the_threshold():
    """115 B cells in 10,000 lymphocytes: 1.15% (above 1%), 95% interval 0.95-1.38%."""
    timeline = {-7: (5000, L), 14: (0, L), 60: (115, 10_000), 120: (115, 10_000), 180: (900, L)}
    point = states_of(run(story("C", timeline)), "C")
    strict = states_of(run(story("C", timeline), cfg={"reconstitution_rule": "lower_bound"}), "C")
    assert point.loc[60, "state"] == "reconstituted"
    assert strict.loc[60, "state"] == "aplasia" and strict.loc[180, "state"] == "reconstituted"


def test_a_not_evaluable_last_sample_does_not_extend_follow_up_in_aplasia():
    timeline = {-7: (5000, L), 14: (0, L), 90: (0, L), 200: (0, 500)}
    result = run(story("D", timeline))
    patient = result.patients.set_index("patient_id").loc["D"]
    assert bool(patient["censored"]) and patient["last_followup_day"] == 90
    assert patient["last_aplastic_day"] == 90


def test_the_export_says_when_reconstitution_happened_and_what_failed():
    """Interval-censored reconstitution (between the last aplastic visit and the first one
    above), failed samples per patient, the counting method, every rule as a def_* column."""
    timeline = {-7: (5000, L), 14: (0, L), 56: (8, L), 90: (900, L), 120: (950, L)}
    stats, sheet = cohort(story("E", timeline))
    status = pd.DataFrame({
        "sample_id": [*sheet["sample_id"], "E_D200"], "patient_id": ["E"] * (len(sheet) + 1),
        "status": ["ok"] * len(sheet) + ["failed"], "stage": [""] * len(sheet) + ["ingest"],
        "error": [""] * len(sheet) + ["truncated"], "qc_verdict": ["pass"] * len(sheet) + [""],
    })  # fmt: skip
    sheet = pd.concat([sheet, sheet.iloc[[-1]].assign(sample_id="E_D200", day=200)])
    export = run_longitudinal(stats, sheet, {}, status).export.set_index("patient_id")
    row = export.loc["E"]
    assert row["last_aplastic_day"] == 56 and row["reconstitution_day"] == 90
    assert row["reconstitution_interval"] == "(56, 90]"
    assert row["n_failed_samples"] == 1 and row["counting_method"] == "none"
    assert {"def_baseline_rule", "def_phenotype_rule", "def_memory_flag_rule"} <= set(export)


def test_every_population_count_carries_the_b_cells_kind_of_interval():
    """Subsets, plasmablasts, CAR-T: population_stats gives each count its Poisson interval and
    its % of lymphocytes and cells/uL intervals, computed as the B cells' are (the B-cell rows
    equal sample_states' intervals exactly)."""
    result = run(
        story("P1", {-7: (200, 2000), 7: (3, 2000), 90: (60, 2000)}, alc={-7: 1500.0, 7: 400.0}),
        story("P2", {-7: (150, 2000), 14: (0, 2000)}),
    )
    pop, states = result.population_stats, result.sample_states.set_index("sample_id")
    b = pop[pop["population"] == "b_cells"].set_index("sample_id")
    for ours, theirs in (("count_low", "b_cells_low"), ("count_high", "b_cells_high"),
                         ("pct_lymphocytes_low", "b_pct_low"), ("pct_lymphocytes_high", "b_pct_high"),
                         ("cells_per_ul_low", "b_per_ul_low"), ("cells_per_ul_high", "b_per_ul_high")):  # fmt: skip
        np.testing.assert_allclose(
            b[ours], states.loc[b.index, theirs], equal_nan=True, err_msg=ours
        )
    pb = pop[pop["population"] == "plasmablasts"]
    low, high = poisson_interval(pb["count"].to_numpy(dtype=float))
    np.testing.assert_allclose(pb["count_low"], low)
    np.testing.assert_allclose(pb["count_high"], high)
    assert (pb["count_low"] <= pb["count"]).all() and (pb["count"] <= pb["count_high"]).all()
    known = pb["cells_per_ul"].notna()
    assert (
        known.any() and (pb.loc[known, "cells_per_ul_low"] <= pb.loc[known, "cells_per_ul"]).all()
    )
