"""The longitudinal engine on patient stories with known answers, a textbook Kaplan-Meier
example, the `longitudinal` command end to end, and a generated cohort with hidden truth."""

from __future__ import annotations

import argparse
import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from cytopipe import __version__
from cytopipe.clinical.definitions import validate_config
from cytopipe.clinical.kaplan_meier import kaplan_meier, km_median
from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.clinical.reference_ranges import reference_bands, reference_position
from cytopipe.clinical.samplesheet import load_sample_sheet
from cytopipe.clinical.states import classify_timepoints
from cytopipe.clinical.tables import write_outputs
from cytopipe.commands.longitudinal import add_cli
from cytopipe.errors import ConfigError
from cytopipe.results import EXPORT_COLUMNS, KM_COLUMNS, PATIENT_COLUMNS, SAMPLE_STATE_COLUMNS

MARKERS = ("CD45", "CD3", "CD19", "CD20", "CD27", "CD38", "IgD", "CD24")
PARENTS = {
    "cells": None, "singlets": "cells", "live": "singlets", "leukocytes": "live",
    "lymphocytes": "leukocytes", "t_cells": "lymphocytes", "b_cells": "lymphocytes",
    "b_cd20pos": "b_cells", "b_cd20neg": "b_cells", "plasmablasts": "b_cells",
    "b_naive": "b_cd20pos", "b_unswitched_memory": "b_cd20pos", "b_switched_memory": "b_cd20pos",
    "b_double_negative": "b_cd20pos", "b_transitional": "b_cd20pos",
}  # fmt: skip
ABOVE_LYMPHOCYTES = {"cells", "singlets", "live", "leukocytes"}
# fractions of B cells; b_transitional lies inside b_naive (IgD+CD27- quadrant)
TYPICAL_SUBSETS = {"b_naive": 0.62, "b_transitional": 0.05, "b_unswitched_memory": 0.10,
                   "b_switched_memory": 0.15, "b_double_negative": 0.06, "plasmablasts": 0.02}  # fmt: skip
RETURNING_SUBSETS = {"b_naive": 0.88, "b_transitional": 0.35, "b_unswitched_memory": 0.03,
                     "b_switched_memory": 0.03, "b_double_negative": 0.04, "plasmablasts": 0.01}  # fmt: skip


def sample_stats(sample_id: str, b_cells: int, lymphocytes: int, subsets=None) -> pd.DataFrame:
    """The tidy per-sample stats table (data contract 3) for given B-cell and lymphocyte counts."""
    frac = subsets or TYPICAL_SUBSETS
    pb = round(frac["plasmablasts"] * b_cells)
    counts = {
        "cells": 5 * lymphocytes, "singlets": 4 * lymphocytes, "live": 4 * lymphocytes - 10,
        "leukocytes": 3 * lymphocytes, "lymphocytes": lymphocytes,
        "t_cells": int(0.7 * lymphocytes), "b_cells": b_cells, "b_cd20pos": b_cells - pb,
        "b_cd20neg": pb, "plasmablasts": pb,
    }  # fmt: skip
    for pop in ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative",
                "b_transitional"):  # fmt: skip
        counts[pop] = round(frac[pop] * b_cells)
    rows = []
    for pop, parent in PARENTS.items():
        den = counts[parent] if parent else 6 * lymphocytes
        rows.append(
            {
                "sample_id": sample_id, "population": pop, "parent": parent or "",
                "count": counts[pop],
                "pct_parent": 100.0 * counts[pop] / den if den else np.nan,
                "pct_lymphocytes": np.nan if pop in ABOVE_LYMPHOCYTES
                else 100.0 * counts[pop] / lymphocytes,
                "gate_method": "fixed", "confidence": 1.0, "flag": "",
                **{f"median_{m}": np.nan for m in MARKERS},
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def story(patient: str, timeline: dict, *, age: float = 35.0, disease: str = "SLE", alc=None):
    """A patient's samples: timeline {day: (b_cells, lymphocytes[, subsets])}; `alc` maps day ->
    blood-count lymphocytes/uL (dual platform) for the days that have one."""
    stats, sheet = [], []
    for day, spec in timeline.items():
        b, lymph, *rest = spec
        sid = f"{patient}_BL{-day}" if day < 0 else f"{patient}_D{day:03d}"
        stats.append(sample_stats(sid, b, lymph, rest[0] if rest else None))
        sheet.append({
            "sample_id": sid, "patient_id": patient, "path": f"{sid}.fcs", "day": day,
            "age_years": age + day / 365.25, "disease": disease,
            "abs_lymphocytes": (alc or {}).get(day, np.nan),
        })  # fmt: skip
    return stats, sheet


def cohort(*stories):
    stats = pd.concat([s for st, _ in stories for s in st], ignore_index=True)
    sheet = pd.DataFrame([r for _, sh in stories for r in sh])
    for col in ("bead_events", "beads_per_test", "volume_ul"):
        sheet[col] = np.nan
    return stats, sheet


def run(*stories, cfg=None, status=None):
    stats, sheet = cohort(*stories)
    return run_longitudinal(stats, sheet, cfg or {}, status)


def states_of(result, patient):
    s = result.sample_states
    return s[s["patient_id"] == patient].set_index("day")


def patient(result, pid) -> pd.Series:
    return result.patients.set_index("patient_id").loc[pid]


L = 2000  # lymphocytes per tube; 1 % = 20 B cells

TYPICAL = {-7: (200, L), 7: (2, L), 14: (0, L), 28: (1, L), 56: (8, L),
           90: (60, L, RETURNING_SUBSETS), 120: (150, L, RETURNING_SUBSETS),
           180: (300, L)}  # fmt: skip


def test_typical_depletion_and_confirmed_reconstitution():
    result = run(story("P1", TYPICAL))
    st = states_of(result, "P1")
    assert st.loc[-7, "state"] == "baseline"
    assert list(st.loc[[7, 14, 28, 56], "state"]) == ["aplasia"] * 4
    assert list(st.loc[[90, 120, 180], "state"]) == ["reconstituted"] * 3
    assert st.loc[56, "below_threshold"] == True and st.loc[90, "below_threshold"] == False  # noqa: E712
    assert st.loc[90, "b_pct_lymphocytes"] == pytest.approx(3.0)
    p = patient(result, "P1")
    assert p["aplasia_start_day"] == 7
    assert p["reconstitution_day"] == 90 and p["aplasia_end_day"] == 90
    assert p["aplasia_duration_days"] == 83
    assert p["reconstituted"] and not p["censored"]
    assert p["last_followup_day"] == 180
    assert p["baseline_b_pct"] == pytest.approx(10.0)
    assert p["age_at_infusion"] == pytest.approx(35.0)
    assert p["n_samples"] == 8
    # returning B cells: 88 % naive (incl. transitional), 6 % memory, 1 % plasmablasts (of 60)
    assert p["phenotype_at_return"] == "naive/transitional"
    assert p["frac_naive_transitional_at_return"] == pytest.approx(round(0.88 * 60) / 60)
    assert p["frac_memory_at_return"] == pytest.approx((2 + 2) / 60)
    assert not p["flag_memory_return"]
    assert p["flags"] == ""
    assert result.summary["n_reconstituted"] == 1 and result.summary["n_censored"] == 0


def test_unconfirmed_blip_is_not_a_reconstitution():
    timeline = {-7: (200, L), 7: (0, L), 28: (40, L), 56: (3, L), 90: (80, L), 120: (160, L)}
    result = run(story("P1", timeline))
    st = states_of(result, "P1")
    # day 28 is above threshold but day 56 is aplastic again: stays aplasia, visibly marked
    assert st.loc[28, "state"] == "aplasia"
    assert st.loc[28, "below_threshold"] == False  # noqa: E712
    assert st.loc[28, "note"] == "unconfirmed_blip"
    assert st.loc[56, "state"] == "aplasia"
    p = patient(result, "P1")
    assert p["reconstitution_day"] == 90
    assert p["aplasia_duration_days"] == 83
    assert "unconfirmed rise above threshold at day 28" in p["flags"]
    # without the confirmation rule the blip counts as reconstitution
    loose = run(story("P1", timeline), cfg={"confirm_with_next": False})
    assert patient(loose, "P1")["reconstitution_day"] == 28
    assert states_of(loose, "P1").loc[56, "note"] == "below_threshold_after_reconstitution"
    assert "below threshold again at day 56" in patient(loose, "P1")["flags"]


def test_never_reconstitutes_is_censored_at_last_followup():
    timeline = {-7: (150, L), 7: (0, L), 28: (2, L), 90: (5, L), 180: (3, L), 365: (10, L)}
    result = run(story("P1", timeline))
    assert set(states_of(result, "P1").loc[[7, 28, 90, 180, 365], "state"]) == {"aplasia"}
    p = patient(result, "P1")
    assert p["censored"] and not p["reconstituted"]
    assert math.isnan(p["reconstitution_day"])
    assert p["aplasia_end_day"] == 365 and p["aplasia_duration_days"] == 358
    assert p["phenotype_at_return"] == ""
    assert result.summary["n_censored"] == 1
    assert result.summary["median_days_to_reconstitution"] is None
    km = result.km
    assert km["still_aplastic"].tolist() == [1.0, 1.0]
    assert km["censored"].tolist() == [0, 1] and km["day"].tolist() == [0, 365]
    export = result.export.set_index("patient_id").loc["P1"]
    assert export["days_to_reconstitution_or_censoring"] == 365 and not export["reconstituted"]


def test_reconstitution_on_last_timepoint_counts_unconfirmed():
    timeline = {-7: (150, L), 14: (0, L), 90: (4, L), 180: (50, L)}
    result = run(story("P1", timeline))
    st = states_of(result, "P1")
    assert (
        st.loc[180, "state"] == "reconstituted"
        and st.loc[180, "note"] == "unconfirmed_last_timepoint"
    )
    p = patient(result, "P1")
    assert p["reconstituted"] and p["reconstitution_day"] == 180 and not p["censored"]
    assert "not yet confirmed" in p["flags"]


def test_never_depleted_patient_is_excluded_from_km():
    timeline = {-7: (200, L), 7: (60, L), 28: (100, L), 90: (180, L)}
    result = run(story("P1", timeline), story("P2", TYPICAL))
    assert set(states_of(result, "P1").loc[[7, 28, 90], "state"]) == {"not_depleted"}
    p = patient(result, "P1")
    assert not p["reconstituted"] and not p["censored"] and math.isnan(p["aplasia_start_day"])
    assert "never depleted" in p["flags"]
    assert result.summary["excluded_from_km"] == [{"patient_id": "P1", "reason": "never depleted"}]
    assert result.summary["n_never_depleted"] == 1
    assert result.km["at_risk"].iloc[0] == 1  # only P2 is in the curve
    assert result.summary["median_days_to_reconstitution"] == 90


def test_late_depletion_after_a_not_depleted_timepoint():
    timeline = {-7: (200, L), 7: (30, L), 14: (2, L), 56: (60, L), 90: (90, L)}
    result = run(story("P1", timeline))
    st = states_of(result, "P1")
    assert list(st["state"]) == [
        "baseline",
        "not_depleted",
        "aplasia",
        "reconstituted",
        "reconstituted",
    ]
    assert patient(result, "P1")["aplasia_start_day"] == 14


def test_threshold_by_cells_per_ul_or_by_percent():
    # day 28: 2 % of lymphocytes (above 1 %) but only 300 lymphocytes/uL -> 6 B cells/uL < 10
    # day 56: 0.5 % (below 1 %) although 10,000 lymphocytes/uL -> 50 B cells/uL
    # day 90: 2 % and no blood count -> not aplastic; day 120: 2 % of 1000/uL = 20/uL
    timeline = {-7: (200, L), 28: (40, L), 56: (10, L), 90: (40, L), 120: (40, L)}
    alc = {28: 300.0, 56: 10_000.0, 120: 1000.0}
    result = run(story("P1", timeline, alc=alc))
    st = states_of(result, "P1")
    assert st.loc[28, "b_cells_per_ul"] == pytest.approx(6.0)
    assert st.loc[28, "abs_method"] == "dual_platform" and st.loc[90, "abs_method"] == "none"
    assert st.loc[28, "below_threshold"] == True  # noqa: E712  (by count)
    assert st.loc[56, "below_threshold"] == True  # noqa: E712  (by percent)
    assert st.loc[90, "below_threshold"] == False  # noqa: E712
    assert st.loc[120, "below_threshold"] == False  # noqa: E712
    assert list(st.loc[[28, 56, 90, 120], "state"]) == [
        "aplasia",
        "aplasia",
        "reconstituted",
        "reconstituted",
    ]
    # with a stricter count threshold day 120 (20/uL) becomes aplastic: the blip rule applies
    strict = run(story("P1", timeline, alc=alc), cfg={"aplasia_cells_per_ul": 25})
    st = states_of(strict, "P1")
    assert st.loc[120, "below_threshold"] == True  # noqa: E712
    assert st.loc[90, "note"] == "unconfirmed_blip"


def test_child_reference_band_and_position():
    # a 4-year-old: band 2-6 y, 390-1400 B cells/uL (Shearer 2003)
    timeline = {-7: (200, L), 28: (0, L), 120: (200, L), 180: (400, L)}
    alc = {-7: 3000.0, 28: 800.0, 120: 1500.0, 180: 2000.0}
    result = run(story("C1", timeline, age=4.0, alc=alc))
    st = states_of(result, "C1")
    assert set(st["ref_source_band"]) == {"2-6 y"}
    assert st.loc[-7, "ref_low"] == 390 and st.loc[-7, "ref_high"] == 1400
    # baseline 10 % x 3000 = 300/uL: below the band; day 180: 20 % x 2000 = 400/uL: within
    assert st.loc[-7, "b_cells_per_ul"] == pytest.approx(300.0)
    assert st.loc[-7, "ref_position"] == "below"
    assert st.loc[180, "ref_position"] == "within"
    assert st.loc[28, "ref_position"] == "below"


def test_adults_are_placed_against_an_adult_study_cited_as_such():
    """Regression: adults got the 12-18 y band of a study of children (Shearer 2003) with that
    study as the source; each band now cites its own study, and every output names both."""
    cfg = validate_config({})
    bands = reference_bands(np.array([33.0, 62.0, 15.0]), cfg["reference_ranges"])
    assert bands["ref_low"].tolist() == [109.0, 109.0, 110.0]
    assert bands["ref_high"].tolist() == [802.0, 802.0, 570.0]
    source = cfg["reference_ranges"]["source"]
    assert "18+ y: Bisset" in source and "Shearer" in source.split("|")[0]
    assert "Bisset" not in source.split("|")[0]


def test_reference_bands_edges_and_unknown():
    cfg = validate_config({})
    bands = reference_bands(np.array([0.1, 0.25, 0.7, 1.0, 11.99, 12.0, 18.0, 75.0, np.nan]),
                            cfg["reference_ranges"])  # fmt: skip
    assert bands["ref_source_band"].tolist() == [
        "0-3 mo", "3-6 mo", "6-12 mo", "1-2 y", "6-12 y", "12-18 y", "18+ y", "18+ y", ""
    ]  # fmt: skip
    assert bands["ref_low"].tolist()[:3] == [300, 430, 610]
    assert np.isnan(bands["ref_low"].iloc[-1])
    pos = reference_position(
        np.array([100, 110, 570, 600, np.nan]), np.full(5, 110.0), np.full(5, 570.0)
    )
    assert pos.tolist() == ["below", "within", "within", "above", "unknown"]
    # a lab's own bands with a gap: ages in the gap are unknown, not forced into a band
    own = validate_config({"reference_ranges": {"source": "lab X 2024", "bands": [
        {"min_age": 0, "max_age": 10, "low": 200, "high": 900, "label": "kids"},
        {"min_age": 20, "max_age": 60, "low": 100, "high": 500}]}})  # fmt: skip
    bands = reference_bands(np.array([5.0, 15.0, 30.0]), own["reference_ranges"])
    assert bands["ref_source_band"].tolist() == ["kids", "", "20-60 y"]


def test_memory_return_flag_above_fraction_and_above_baseline():
    relapse = {"b_naive": 0.45, "b_transitional": 0.05, "b_unswitched_memory": 0.05,
               "b_switched_memory": 0.30, "b_double_negative": 0.05, "plasmablasts": 0.10}  # fmt: skip
    above_baseline = {"b_naive": 0.70, "b_transitional": 0.10, "b_unswitched_memory": 0.05,
                      "b_switched_memory": 0.15, "b_double_negative": 0.05, "plasmablasts": 0.03}  # fmt: skip
    low_memory_baseline = {"b_naive": 0.85, "b_transitional": 0.05, "b_unswitched_memory": 0.05,
                           "b_switched_memory": 0.06, "b_double_negative": 0.02, "plasmablasts": 0.02}  # fmt: skip
    base = {-7: (200, L), 14: (0, L), 90: (100, L, RETURNING_SUBSETS)}
    a = story("A", {**base, 180: (200, L, relapse), 270: (300, L, relapse)})
    b = story("B", {-7: (200, L, low_memory_baseline), 14: (0, L),
                    90: (100, L, RETURNING_SUBSETS), 180: (200, L, above_baseline)})  # fmt: skip
    c = story("C", {**base, 180: (200, L, RETURNING_SUBSETS)})
    result = run(a, b, c)
    pa, pb, pc = (patient(result, p) for p in "ABC")
    # A: 30 % + 10 % = 40 % of B cells > 25 % (and > baseline 17 %)
    assert pa["flag_memory_return"]
    assert "possible return of disease-driving B-cell clones" in pa["flags"]
    assert "day 180" in pa["flags"] and "> 25% threshold" in pa["flags"]
    # B: 15 % + 3 % = 18 % < 25 % but above its baseline 6 % + 2 % = 8 %
    assert pb["flag_memory_return"]
    assert "> baseline 8%" in pb["flags"] and "threshold" not in pb["flags"]
    # C: returning cells stay naive: no flag
    assert not pc["flag_memory_return"] and "disease-driving" not in pc["flags"]
    # the phenotype at return is judged at the reconstitution timepoint (day 90) for all three
    assert {pa["phenotype_at_return"], pc["phenotype_at_return"]} == {"naive/transitional"}


def test_memory_phenotype_is_dominant_when_memory_returns_first():
    memory_first = {"b_naive": 0.20, "b_transitional": 0.02, "b_unswitched_memory": 0.25,
                    "b_switched_memory": 0.40, "b_double_negative": 0.10, "plasmablasts": 0.05}  # fmt: skip
    result = run(story("P1", {-7: (200, L), 14: (0, L), 90: (100, L, memory_first), 120: (100, L)}))
    p = patient(result, "P1")
    assert p["phenotype_at_return"] == "memory"
    assert p["frac_memory_at_return"] == pytest.approx(0.65)
    assert p["frac_plasmablast_at_return"] == pytest.approx(0.05)
    assert p["flag_memory_return"]  # 40 % + 5 % > 25 %


def test_kaplan_meier_textbook_example():
    """Freireich et al. 1963, 6-MP arm (remission weeks; * = censored), as worked in Kleinbaum &
    Klein, Survival Analysis, ch. 2: 6,6,6,6*,7,9*,10,10*,11*,13,16,17*,19*,20*,22,23,25*,32*,32*,
    34*,35*. Hand-computed S(t): 0.857, 0.807, 0.753, 0.690, 0.628, 0.538, 0.448; median 23."""
    times = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
    event = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    km = kaplan_meier(np.array(times), np.array(event, dtype=bool)).set_index("day")
    expected = {6: 0.857, 7: 0.807, 10: 0.753, 13: 0.690, 16: 0.628, 22: 0.538, 23: 0.448}
    for t, s in expected.items():
        assert km.loc[t, "still_aplastic"] == pytest.approx(s, abs=0.0006), t
    assert km.loc[6, "at_risk"] == 21 and km.loc[6, "events"] == 3 and km.loc[6, "censored"] == 1
    assert km.loc[7, "at_risk"] == 17
    assert km.loc[10, "at_risk"] == 15 and km.loc[10, "events"] == 1 and km.loc[10, "censored"] == 1
    assert km.loc[35, "still_aplastic"] == pytest.approx(0.448, abs=0.0006)
    assert km_median(km.reset_index()) == 23
    assert list(km.reset_index().columns) == KM_COLUMNS


def test_km_over_patients_uses_days_since_infusion():
    early = {-7: (200, L), 7: (0, L), 28: (40, L), 56: (80, L)}  # reconstitutes day 28
    late = {-7: (200, L), 7: (0, L), 56: (0, L), 180: (90, L), 270: (100, L)}  # day 180
    censored = {-7: (200, L), 7: (0, L), 90: (1, L)}  # censored day 90
    result = run(story("E", early), story("L", late), story("C", censored))
    km = result.km.set_index("day")
    assert km.loc[0, "still_aplastic"] == 1.0 and km.loc[0, "at_risk"] == 3
    assert km.loc[28, "still_aplastic"] == pytest.approx(2 / 3)
    assert km.loc[90, "censored"] == 1 and km.loc[90, "still_aplastic"] == pytest.approx(2 / 3)
    assert km.loc[180, "at_risk"] == 1 and km.loc[180, "still_aplastic"] == 0.0
    assert result.summary["median_days_to_reconstitution"] == 180


def test_classify_timepoints_ignores_unknown_timepoints():
    states, notes = classify_timepoints(
        np.array([-7, 7, 14, 28, 56]), [False, True, None, False, False]
    )
    assert states == ["baseline", "aplasia", "unknown", "reconstituted", "reconstituted"]
    assert notes[2] == "b_cells_unavailable"


def test_failed_and_qc_failed_samples():
    stats, sheet = cohort(story("P1", TYPICAL))
    failed_id = "P1_D120"
    stats = stats[stats["sample_id"] != failed_id]  # failed samples have no stats
    status = pd.DataFrame({
        "sample_id": sheet["sample_id"], "patient_id": "P1",
        "status": np.where(sheet["sample_id"] == failed_id, "failed", "ok"),
        "stage": np.where(sheet["sample_id"] == failed_id, "ingest", ""),
        "error": np.where(sheet["sample_id"] == failed_id, "broken.fcs: truncated DATA", ""),
        "qc_verdict": np.where(sheet["sample_id"] == "P1_D090", "fail", "pass"),
    })  # fmt: skip
    kept = run_longitudinal(stats, sheet, {}, status)
    assert failed_id not in set(kept.sample_states["sample_id"])
    assert kept.summary["failed_samples"] == [
        {"sample_id": failed_id, "patient_id": "P1", "stage": "ingest",
         "error": "broken.fcs: truncated DATA"}
    ]  # fmt: skip
    assert states_of(kept, "P1").loc[90, "qc_verdict"] == "fail"
    assert patient(kept, "P1")["reconstitution_day"] == 90  # confirmed by day 180 now
    skipped = run_longitudinal(stats, sheet, {"skip_failed_qc": True}, status)
    assert skipped.summary["excluded_failed_qc"] == ["P1_D090"]
    assert 90 not in states_of(skipped, "P1").index
    assert patient(skipped, "P1")["reconstitution_day"] == 180
    assert patient(skipped, "P1")["n_samples"] == 6


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"longitudinal\.aplasia_pct_lymphocyte\b"):
        validate_config({"aplasia_pct_lymphocyte": 1.0})  # typo
    with pytest.raises(ConfigError, match=r"longitudinal\.confirm_with_next"):
        validate_config({"confirm_with_next": "yes"})
    with pytest.raises(ConfigError, match=r"longitudinal\.memory_return_fraction"):
        validate_config({"memory_return_fraction": 25})
    with pytest.raises(ConfigError, match=r"bands\[1\]\.low"):
        validate_config({"reference_ranges": {"source": "x", "bands": [
            {"min_age": 0, "max_age": 1, "low": 1, "high": 2}, {"min_age": 1, "max_age": 2, "high": 3}]}})  # fmt: skip
    with pytest.raises(ConfigError, match="overlap"):
        validate_config({"reference_ranges": {"source": "x", "bands": [
            {"min_age": 0, "max_age": 2, "low": 1, "high": 2}, {"min_age": 1, "max_age": 3, "low": 1, "high": 3}]}})  # fmt: skip
    cfg = validate_config(None)
    assert cfg["aplasia_pct_lymphocytes"] == 1.0 and cfg["aplasia_cells_per_ul"] == 10
    assert cfg["confirm_with_next"] is True and cfg["memory_return_fraction"] == 0.25
    assert "Shearer" in cfg["reference_ranges"]["source"]


def test_repo_config_matches_the_built_in_defaults(repo):
    section = yaml.safe_load((repo / "config" / "config.yaml").read_text())["longitudinal"]
    assert validate_config(section) == validate_config({})


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_every_output_with_definitions(tmp_path, repo, capsys):
    stats, sheet = cohort(
        story("P1", TYPICAL, alc={-7: 1500.0, 7: 400.0, 90: 900.0}),
        story("P2", {-7: (150, L), 7: (0, L), 90: (2, L), 365: (4, L)}, age=9.0, disease="JDM"),
    )
    stats.to_csv(tmp_path / "sample_stats.tsv", sep="\t", index=False)
    sheet_path = tmp_path / "samples.tsv"
    sheet.drop(columns=["bead_events", "beads_per_test", "volume_ul"]).to_csv(
        sheet_path, sep="\t", index=False
    )
    status = pd.DataFrame({"sample_id": sheet["sample_id"], "patient_id": sheet["patient_id"],
                           "status": "ok", "stage": "", "error": "", "qc_verdict": "pass"})  # fmt: skip
    status.to_csv(tmp_path / "sample_status.tsv", sep="\t", index=False)
    out = tmp_path / "tables"
    code = _cli(["longitudinal", "--stats", str(tmp_path / "sample_stats.tsv"),
                 "--status", str(tmp_path / "sample_status.tsv"), "--samples", str(sheet_path),
                 "--config", str(repo / "config" / "config.yaml"), "--out", str(out),
                 "--settings", json.dumps({"longitudinal": {"centre": "C07"}})])  # fmt: skip
    assert code == 0
    assert "2 patients, 1 reconstituted, 1 censored" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "population_stats.tsv",
            "sample_states.tsv",
            "patients.tsv",
            "km.tsv",
            "cohort_summary.json",
            "cohort_export.csv",
            "cohort_export_dictionary.tsv",
        ]
    )  # fmt: skip  (and no temp files left behind)
    dictionary = pd.read_csv(out / "cohort_export_dictionary.tsv", sep="\t")
    export = pd.read_csv(out / "cohort_export.csv")
    assert dictionary["column"].tolist() == export.columns.tolist()  # every column explained
    assert dictionary["meaning"].str.len().min() > 10
    states = pd.read_csv(out / "sample_states.tsv", sep="\t")
    assert list(states.columns) == SAMPLE_STATE_COLUMNS
    assert list(states["patient_id"]) == ["P1"] * 8 + ["P2"] * 4
    assert states["day"].dtype == np.int64
    assert states.loc[states["patient_id"] == "P2", "ref_source_band"].iloc[0] == "6-12 y"
    patients = pd.read_csv(out / "patients.tsv", sep="\t")
    assert list(patients.columns) == PATIENT_COLUMNS
    assert patients["reconstituted"].tolist() == [True, False]
    assert patients["censored"].tolist() == [False, True]
    assert patients["disease"].tolist() == ["SLE", "JDM"]
    assert patients["age_at_infusion"].tolist() == [35.0, 9.0]
    pop = pd.read_csv(out / "population_stats.tsv", sep="\t")
    assert len(pop) == len(stats)
    assert {"patient_id", "day", "age_years", "disease", "cells_per_ul", "abs_method"} <= set(
        pop.columns
    )
    b = pop[(pop["population"] == "b_cells") & (pop["sample_id"] == "P1_BL7")].iloc[0]
    assert b["cells_per_ul"] == pytest.approx(150.0) and b["abs_method"] == "dual_platform"
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["n_patients"] == 2 and summary["n_reconstituted"] == 1
    assert summary["median_days_to_reconstitution"] == 90  # S drops from 1 to 0.5 on day 90
    d = summary["definitions"]
    assert d["aplasia_pct_lymphocytes"] == 1.0 and d["aplasia_cells_per_ul"] == 10
    assert "confirmed by the next timepoint" in d["reconstitution"]
    assert "Shearer" in d["reference_ranges"]["source"] and len(d["reference_ranges"]["bands"]) == 8
    assert d["cytopipe_version"] == __version__
    export = pd.read_csv(out / "cohort_export.csv")
    assert list(export.columns) == EXPORT_COLUMNS
    assert export["days_to_reconstitution_or_censoring"].tolist() == [90, 365]
    assert (export["cytopipe_version"] == __version__).all()
    assert export["def_reference_ranges_source"].str.contains("Shearer").all()
    assert (export["centre"] == "C07").all()  # pooled analyses stratify by it
    template = hashlib.sha256((repo / "config" / "gating.yaml").read_bytes()).hexdigest()
    assert (export["gating_template_sha256"] == template).all()
    assert summary["definitions"]["gating_template"] == f"sha256 {template[:12]}"  # on summaries
    km = pd.read_csv(out / "km.tsv", sep="\t")
    assert list(km.columns) == KM_COLUMNS


def test_cli_reports_bad_settings_as_config_error(tmp_path):
    stats, sheet = cohort(story("P1", TYPICAL))
    stats.to_csv(tmp_path / "stats.tsv", sep="\t", index=False)
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    with pytest.raises(ConfigError, match="longitudinal.aplasia_cells_per_ul"):
        _cli(["longitudinal", "--stats", str(tmp_path / "stats.tsv"), "--samples",
              str(tmp_path / "samples.tsv"), "--out", str(tmp_path / "out"),
              "--settings", json.dumps({"longitudinal": {"aplasia_cells_per_ul": "ten"}})])  # fmt: skip


def _truth_stats(sheet: pd.DataFrame) -> pd.DataFrame:
    """Per-sample stats from the generator's per-event truth (what a perfect gating would give)."""
    from cytopipe.synth.sample_files import read_truth
    from cytopipe.synth.truth import truth_masks

    frames = []
    for row in sheet.itertuples():
        masks = truth_masks(read_truth(row.path)["population"])
        counts = {pop: int(mask.sum()) for pop, mask in masks.items()}
        lymph = counts["lymphocytes"]
        frames.append(pd.DataFrame({
            "sample_id": row.sample_id, "population": list(counts),
            "count": list(counts.values()),
            "pct_lymphocytes": [np.nan if p in ABOVE_LYMPHOCYTES else 100.0 * c / lymph
                                for p, c in counts.items()],
            "flag": "",
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_generated_cohort_finds_the_hidden_stories(tmp_path):
    from cytopipe.synth.cohort import synth_cohort

    synth_cohort(tmp_path, n_patients=5, seed=3, events_per_sample=20_000)
    sheet = load_sample_sheet(tmp_path / "samples.tsv", base_dir=tmp_path)
    truth = pd.read_csv(tmp_path / "patients.truth.tsv", sep="\t").set_index("patient_id")
    assert set(truth["role"]) == {"typical", "never", "early", "relapse"}
    # the sheet's own truth columns as the only statistics
    b = sheet[["sample_id", "true_b_cells", "true_lymphocytes"]]
    simple = pd.concat([
        pd.DataFrame({"sample_id": b["sample_id"], "population": "lymphocytes",
                      "count": b["true_lymphocytes"], "pct_lymphocytes": 100.0}),
        pd.DataFrame({"sample_id": b["sample_id"], "population": "b_cells",
                      "count": b["true_b_cells"],
                      "pct_lymphocytes": 100.0 * b["true_b_cells"] / b["true_lymphocytes"]}),
    ])  # fmt: skip
    for stats in (simple, _truth_stats(sheet)):
        result = run_longitudinal(stats, sheet, {})
        p = result.patients.set_index("patient_id").join(truth)
        assert (p["aplasia_start_day"] == 7).all()  # depleted from the first post-infusion sample
        never = p[p["role"] == "never"].iloc[0]
        assert (
            never["censored"] and not never["reconstituted"] and never["last_followup_day"] == 365
        )
        returned = p[p["role"] != "never"]
        assert returned["reconstituted"].all()
        assert (returned["reconstitution_day"] == returned["first_return_day"]).all()
        early = p[p["role"] == "early"].iloc[0]
        assert early["reconstitution_day"] <= 56
        assert result.summary["n_reconstituted"] == 4 and result.summary["n_censored"] == 1
    # with subset counts from the truth, the relapse-like patient (and only it) is flagged
    assert p.loc[p["flag_memory_return"], "role"].tolist() == ["relapse"]
    assert (returned["phenotype_at_return"] == "naive/transitional").all()
    # the children (< 18 y) get a paediatric reference band
    child = result.sample_states[result.sample_states["age_years"] < 12]
    assert set(child["ref_source_band"]) <= {"6-12 y"}


def test_tsv_helpers_reject_missing_stats(tmp_path):
    from cytopipe.clinical.tables import read_tsv
    from cytopipe.errors import CytopipeError

    with pytest.raises(CytopipeError, match="not found"):
        read_tsv(tmp_path / "nope.tsv", "sample statistics")


def test_sample_state_rows_follow_patient_and_day_order():
    result = run(story("P2", TYPICAL), story("P1", {-7: (200, L), 28: (0, L), 7: (0, L)}))
    s = result.sample_states
    assert list(s["patient_id"]) == ["P1"] * 3 + ["P2"] * 8
    assert list(s.loc[s["patient_id"] == "P1", "day"]) == [-7, 7, 28]


def test_patient_whose_samples_all_failed_is_still_listed():
    stats, sheet = cohort(
        story("P1", TYPICAL), story("P2", {-7: (200, L), 28: (0, L)}, disease="SSc")
    )
    p2 = sheet.loc[sheet["patient_id"] == "P2", "sample_id"]
    status = pd.DataFrame({"sample_id": sheet["sample_id"], "status": "ok", "qc_verdict": "pass"})
    status.loc[status["sample_id"].isin(p2), "status"] = "failed"
    result = run_longitudinal(stats[~stats["sample_id"].isin(p2)], sheet, {}, status)
    p = patient(result, "P2")
    assert p["n_samples"] == 0 and p["disease"] == "SSc"
    assert "no usable samples" in p["flags"]
    assert {"patient_id": "P2", "reason": "no usable samples"} in result.summary["excluded_from_km"]
    assert len(result.summary["failed_samples"]) == 2


def test_sample_without_b_cell_population_is_unknown_and_flagged():
    stats, sheet = cohort(story("P1", TYPICAL))
    gone = (stats["sample_id"] == "P1_D056") & stats["population"].str.startswith("b_")
    result = run_longitudinal(stats[~gone], sheet, {})
    st = states_of(result, "P1")
    assert st.loc[56, "state"] == "unknown" and pd.isna(st.loc[56, "below_threshold"])
    assert "B-cell state unknown at day 56" in patient(result, "P1")["flags"]
    assert patient(result, "P1")["reconstitution_day"] == 90


def test_infusion_day_zero_counts_as_post_infusion():
    states, _ = classify_timepoints(np.array([-1, 0, 7]), [False, True, True])
    assert states == ["baseline", "aplasia", "aplasia"]
    states, _ = classify_timepoints(np.array([-1, 0, 7]), [False, False, True])
    assert states == ["baseline", "not_depleted", "aplasia"]


def test_aplastic_baseline_is_flagged_and_not_used_as_memory_reference():
    # prior rituximab: 10 of 2000 lymphocytes at baseline (0.5 %), mostly memory by chance
    memory_rich = {"b_naive": 0.10, "b_transitional": 0.0, "b_unswitched_memory": 0.10,
                   "b_switched_memory": 0.0, "b_double_negative": 0.80, "plasmablasts": 0.0}  # fmt: skip
    returning = {**RETURNING_SUBSETS, "b_switched_memory": 0.10, "b_naive": 0.81}
    timeline = {
        -7: (10, L, memory_rich),
        14: (0, L),
        90: (100, L, returning),
        120: (120, L, returning),
    }
    p = patient(run(story("P1", timeline)), "P1")
    assert "baseline B cells already below the aplasia threshold" in p["flags"]
    # 10 % + 1 % switched memory + plasmablasts exceeds the aplastic baseline's 0 % but that
    # baseline is no reference, and 11 % < 25 %: no flag
    assert not p["flag_memory_return"]
    assert p["reconstitution_day"] == 90


NO_SUBSETS = {"b_naive": 0.0, "b_transitional": 0.0, "b_unswitched_memory": 0.0,
              "b_switched_memory": 0.0, "b_double_negative": 0.0, "plasmablasts": 0.0}  # fmt: skip


def test_phenotype_not_evaluable_when_returning_subsets_are_all_zero(tmp_path):
    # B cells return (60 of 2000 lymphocytes = 3 %) but no subset gate holds an event, e.g. a
    # panel whose IgD/CD27 staining failed: no class dominates, so none may be named
    timeline = {-7: (200, L), 14: (0, L), 90: (60, L, NO_SUBSETS), 120: (150, L, NO_SUBSETS)}
    result = run(story("P1", timeline), story("P2", TYPICAL))
    p = patient(result, "P1")
    assert p["reconstituted"] and p["reconstitution_day"] == 90
    assert p["frac_naive_transitional_at_return"] == 0 and p["frac_memory_at_return"] == 0
    assert p["phenotype_at_return"] == "not evaluable"
    assert patient(result, "P2")["phenotype_at_return"] == "naive/transitional"
    write_outputs(result, tmp_path)
    export = pd.read_csv(tmp_path / "cohort_export.csv").set_index("patient_id")
    assert export.loc["P1", "phenotype_at_return"] == "not evaluable"
    patients = pd.read_csv(tmp_path / "patients.tsv", sep="\t").set_index("patient_id")
    assert patients.loc["P1", "phenotype_at_return"] == "not evaluable"


def test_phenotype_not_evaluable_when_the_panel_has_no_subset_gates():
    stats, sheet = cohort(story("P1", TYPICAL))
    subsets = stats["population"].isin(
        ["b_naive", "b_transitional", "b_unswitched_memory", "b_switched_memory",
         "b_double_negative", "plasmablasts"]
    )  # fmt: skip
    p = patient(run_longitudinal(stats[~subsets], sheet, {}), "P1")
    assert p["reconstituted"] and np.isnan(p["frac_memory_at_return"])
    assert p["phenotype_at_return"] == "not evaluable"
    # no return at all: nothing to evaluate, the field stays empty
    censored = {-7: (150, L), 7: (0, L), 28: (2, L)}
    assert patient(run(story("P2", censored)), "P2")["phenotype_at_return"] == ""


def test_kaplan_meier_band_equals_r_survival_log_log():
    """Five patients, all reconstituting: the pointwise 95% interval on the log(-log S) scale
    as R's survfit(Surv(t, e) ~ 1, conf.type = "log-log") gives it."""
    km = kaplan_meier(np.array([1.0, 2, 3, 4, 5]), np.ones(5, dtype=bool))
    assert km["still_aplastic"].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])
    assert km["still_aplastic_low"].tolist()[:4] == pytest.approx(
        [0.2038, 0.1257, 0.0520, 0.0084], abs=1e-4
    )
    assert km["still_aplastic_high"].tolist()[:4] == pytest.approx(
        [0.9692, 0.8818, 0.7528, 0.5819], abs=1e-4
    )
    assert km_median(km) == 3.0
    assert (km_median(km, "still_aplastic_low"), km_median(km, "still_aplastic_high")) == (1.0, 5.0)


def test_a_call_on_a_doubtful_lymphocyte_gate_says_so():
    """Aplasia is a share of the lymphocytes: a lymphocyte gate placed with low confidence (a
    lymphopenic sample's gate holding debris) can make the call; the timepoint's note says so,
    beside any note it had. Confident gates and baseline samples get no such note."""
    stats, sheet = cohort(
        story("P1", {-7: (200, L), 7: (0, L), 28: (40, L), 56: (3, L), 90: (80, L)})
    )
    doubtful = stats["sample_id"].isin(["P1_BL7", "P1_D007", "P1_D028"])
    stats.loc[doubtful & (stats["population"] == "lymphocytes"), "confidence"] = 0.1
    st = states_of(run_longitudinal(stats, sheet, {}), "P1")
    assert st.loc[7, "state"] == "aplasia"
    assert st.loc[7, "note"].startswith("lymphocyte gate in doubt (confidence 0.10)")
    assert st.loc[28, "note"].startswith("unconfirmed_blip; lymphocyte gate in doubt")
    assert st.loc[-7, "note"] == "" and st.loc[56, "note"] == ""
    assert st.loc[90, "note"] == "unconfirmed_last_timepoint"


def test_the_bead_count_qc_found_gives_single_platform_counts():
    """A sheet with the beads per test and the volume but no bead events: the count of beads
    QC set apart in the file (sample_status' bead_events_found) makes the B-cell count per uL:
    8 B cells / 10,000 beads x 50,000 / 50 uL = 0.8 cells/uL, aplasia by the per-uL rule."""
    stats, sheet = cohort(story("P1", {-7: (400, 2000), 30: (8, 2000)}))
    sheet["beads_per_test"], sheet["volume_ul"] = 50_000, 50
    status = pd.DataFrame({"sample_id": sheet["sample_id"], "bead_events_found": 10_000})
    result = run_longitudinal(stats, sheet, {}, status)
    states = result.sample_states.set_index("day")
    assert states.loc[30, "b_cells_per_ul"] == pytest.approx(0.8)
    assert (states["abs_method"] == "single_platform_beads").all()


def test_a_call_on_a_b_cell_gate_unlike_the_template_is_flagged():
    """A failed CD19 stain leaves no CD19+ B cells, as aplasia does; the gate says its sample
    was unlike the template (CD3- CD20+ lymphocytes outside it), and the call carries that to
    the sample's note and the patient's flags. Fallback gates of a genuine aplasia look as the
    template expects ('yes') and carry nothing."""
    stats, sheet = cohort(story("P1", {-7: (400, 2000), 30: (2, 2000), 60: (1, 2000)}))
    stats["as_template"] = "yes"
    why = "no: 900 CD3- CD20+ lymphocytes outside the B-cell gate; check the CD19 stain"
    day60 = (stats["sample_id"] == "P1_D060") & (stats["population"] == "b_cells")
    stats.loc[day60, "as_template"] = why
    result = run_longitudinal(stats, sheet, {})
    notes = result.sample_states.set_index("day")["note"]
    assert notes[60].startswith("B-cell gate unlike the template (900 CD3- CD20+")
    assert "check the CD19 stain): the call may be off" in notes[60] and notes[30] == ""
    flags = result.patients.set_index("patient_id").loc["P1", "flags"]
    assert "day 60: B-cell gate unlike the template" in flags
    assert result.sample_states.set_index("day").loc[60, "state"] == "aplasia"


def test_subsets_cut_among_cd20_b_cells_unlike_the_template_are_flagged():
    """With CD20 masked (anti-CD20 therapy before CAR-T), the subsets are cut among the few
    CD20+ B cells left, and the gate says so (`most_of_parent:`); the phenotype at return and
    the baseline memory return is compared with read those subsets, so every such sample's
    note and the patient's flags say they are in doubt, whatever the sample's state. Samples
    whose CD20+ gate looks as expected get nothing."""
    stats, sheet = cohort(
        story("P1", {-7: (400, 2000), 30: (2, 2000), 90: (300, 2000), 120: (320, 2000)})
    )
    stats["as_template"] = "yes"
    why = "no: 150 of 400 b_cells (38%, at least 50% expected): most B cells CD20-"
    for sid in ("P1_BL7", "P1_D090"):
        row = (stats["sample_id"] == sid) & (stats["population"] == "b_cd20pos")
        stats.loc[row, "as_template"] = why
    result = run_longitudinal(stats, sheet, {})
    notes = result.sample_states.set_index("day")["note"]
    for day in (-7, 90):
        assert (
            "B-cell subsets in doubt (CD20+ B cells unlike the template: 150 of 400" in notes[day]
        )
    assert "in doubt" not in notes[30] + notes[120]
    flags = result.patients.set_index("patient_id").loc["P1", "flags"]
    assert "day -7: B-cell subsets in doubt" in flags and "day 90: B-cell subsets in doubt" in flags
