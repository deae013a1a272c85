"""CAR-T expansion and persistence beside the B cells (issue 17 part 2): the generator's CAR+ T
cells follow each patient's planned kinetics, the car_t gate finds them without inventing any,
and Cmax, Tmax, AUC 0-28 and the last detected day come back from the pipeline's own tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cytopipe.clinical.car_kinetics import auc_0_28, car_kinetics
from cytopipe.clinical.longitudinal import run_longitudinal
from cytopipe.config import defaults, load_config
from cytopipe.gating.sample import gate
from cytopipe.gating.stats import f1_score
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import preprocess
from cytopipe.report.patient_figures import car_t_figure
from cytopipe.synth.cohort import synth_cohort
from cytopipe.synth.cohort_plan import car_per_ul, plan_cohort
from cytopipe.synth.model import TIMEPOINTS
from cytopipe.synth.sample_files import read_truth
from cytopipe.synth.truth import gate_truth

SEED, N_PATIENTS, EVENTS = 11, 4, 50_000


def test_kinetics_from_a_hand_made_table():
    rows = [(-7, 0, 0.0), (7, 400, 80.0), (14, 900, 150.0), (28, 60, 10.0), (56, 12, 2.0),
            (90, 25, 4.0), (180, 5, 1.0)]  # fmt: skip
    stats = pd.DataFrame(
        [
            {
                "patient_id": "P1",
                "sample_id": f"S{d}",
                "day": d,
                "population": "car_t",
                "count": n,
                "cells_per_ul": v,
            }
            for d, n, v in rows
        ]  # fmt: skip
    )
    row = car_kinetics(stats, lod_events=20).iloc[0]
    assert row["car_t_cmax_per_ul"] == 150.0 and row["car_t_tmax_day"] == 14
    # (0,0)-(7,80)-(14,150)-(28,10): 280 + 805 + 1120
    assert row["car_t_auc_0_28"] == pytest.approx(2205.0) and row["car_t_auc_end_day"] == 28
    assert row["car_t_last_detected_day"] == 90  # day 180 has 5 events < LOD 20
    assert row["car_t_samples"] == 6
    # day 28 not sampled: interpolated between day 14 and 56
    area, end = auc_0_28(np.array([7.0, 14.0, 56.0]), np.array([80.0, 150.0, 2.0]))
    assert end == 28 and area == pytest.approx(280 + 805 + 14 * (150 + 150 - 148 * 14 / 42) / 2)
    # ends at the last sample when follow-up stops before day 28
    assert auc_0_28(np.array([7.0, 14.0]), np.array([80.0, 150.0]))[1] == 14
    none = car_kinetics(stats.assign(population="b_cells"), lod_events=20)
    assert none.empty  # no CAR channel: no kinetics, not zeros


@pytest.fixture(scope="module")
def cohort_tables(tmp_path_factory):
    """A generated cohort (both instruments) gated with the template and run through the
    longitudinal step, as the workflow does."""
    out = tmp_path_factory.mktemp("cart")
    sheet = synth_cohort(out, N_PATIENTS, SEED, EVENTS, "mixed")
    specs = load_template("config/gating.yaml")
    panel = load_panel("config/panel.yaml")
    stats, scores = [], []
    for row in sheet.itertuples():
        pre = preprocess(row.path, panel, load_config(None))
        keep = pre.qc_pass
        gated = gate(row.sample_id, {m: v[keep] for m, v in pre.columns.items()}, specs)
        stats.append(gated.stats)
        truth = gate_truth(np.asarray(read_truth(row.path)["population"])[keep])
        found = gated.masks["car_t"]
        scores.append({"sample_id": row.sample_id, "day": row.day, "truth": int(truth["car_t"].sum()),
                       "found": int(found.sum()), "f1": f1_score(found, truth["car_t"])})  # fmt: skip
    result = run_longitudinal(
        pd.concat(stats, ignore_index=True), sheet, defaults("config")["longitudinal"]
    )
    return sheet, pd.DataFrame(scores), result


def test_the_gate_finds_car_t_cells_and_invents_none(cohort_tables):
    _, scores, _ = cohort_tables
    big = scores[scores["truth"] >= 50]
    assert len(big) >= N_PATIENTS and (big["f1"] >= 0.95).all(), big.to_string()
    small = scores[scores["truth"] < 20]
    assert (small["found"] <= 2 * small["truth"] + 5).all(), small.to_string()
    before = scores[scores["day"] < 0]
    assert (before["truth"] == 0).all() and (before["found"] == 0).all(), before.to_string()


def test_kinetics_recover_the_planned_peak_and_its_day(cohort_tables):
    """Cmax within 20% of the planned cells/µL at the sampled day of the peak, Tmax that day
    (or a day whose planned level is within 20% of it)."""
    _, scores, result = cohort_tables
    patients = result.patients.set_index("patient_id")
    truth = scores.assign(patient_id=scores["sample_id"].str.split("_").str[0])
    for plan in plan_cohort(N_PATIENTS, SEED, "mixed"):
        planned = {d: car_per_ul(plan, d) for d in TIMEPOINTS if d > 0}
        peak_day = max(planned, key=planned.get)
        row = patients.loc[plan.patient_id]
        assert row["car_t_cmax_per_ul"] == pytest.approx(planned[peak_day], rel=0.20), plan
        assert planned[int(row["car_t_tmax_day"])] >= 0.8 * planned[peak_day], plan
        assert row["car_t_auc_end_day"] == 28
        # persistence: the last day with at least the LOD (20) in CAR+ events, as the truth
        # has it (a count near the LOD may fall either side of it)
        mine = truth[(truth["patient_id"] == plan.patient_id) & (truth["day"] > 0)]
        last = row["car_t_last_detected_day"]
        assert mine.loc[mine["day"] == last, "truth"].iloc[0] >= 10, (plan, mine)
        assert (mine.loc[mine["day"] > last, "truth"] < 40).all(), (plan, mine)
    export = result.export.set_index("patient_id")
    assert export["car_t_cmax_per_ul"].equals(patients["car_t_cmax_per_ul"])


def test_patient_figure_shows_car_t_above_the_b_cells(cohort_tables):
    _, _, result = cohort_tables
    pid = result.patients["patient_id"].iloc[0]
    pop, states = result.population_stats, result.sample_states
    car = pop[(pop["patient_id"] == pid) & (pop["population"] == "car_t")]
    fig = car_t_figure(car, states[states["patient_id"] == pid], lod_events=20,
                       patient=result.patients.iloc[0].to_dict(), threshold_per_ul=10)  # fmt: skip
    go.Figure(fig)
    assert [tr.name for tr in fig.data] == ["CAR+ T cells/µL", "B cells/µL"]
    assert fig.data[0].xaxis == "x" and fig.data[1].xaxis == "x2"
    assert fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"  # one time axis
    assert any("Cmax" in (a.text or "") for a in fig.layout.annotations)


def test_car_t_cells_split_into_cd4_and_cd8_where_the_panel_has_them():
    """A panel with CD4 and CD8 (built directly on the gating scale): CAR+ T cells split by the
    same CD4/CD8 valleys as all T cells."""
    rng = np.random.default_rng(3)
    n_t, n_other = 20_000, 6_000
    is_cd4 = rng.random(n_t) < 0.6
    car = rng.random(n_t) < 0.1
    cd4 = np.where(is_cd4, rng.normal(0.65, 0.05, n_t), rng.normal(0.2, 0.05, n_t))
    cd8 = np.where(is_cd4, rng.normal(0.2, 0.05, n_t), rng.normal(0.7, 0.05, n_t))
    columns = {
        "FSC-A": np.concatenate([rng.normal(0.35, 0.03, n_t), rng.normal(0.36, 0.03, n_other)]),
        "SSC-A": np.exp(rng.normal(-2.6, 0.2, n_t + n_other)),
        "CD3": np.concatenate([rng.normal(0.65, 0.05, n_t), rng.normal(0.15, 0.05, n_other)]),
        "CAR": np.concatenate(
            [
                np.where(car, rng.normal(0.7, 0.05, n_t), rng.normal(0.2, 0.05, n_t)),
                rng.normal(0.2, 0.05, n_other),
            ]
        ),  # fmt: skip
        "CD4": np.concatenate([cd4, rng.normal(0.2, 0.05, n_other)]),
        "CD8": np.concatenate([cd8, rng.normal(0.2, 0.05, n_other)]),
    }
    from cytopipe.gating.autogate import autogate

    result = autogate(
        load_template("config/gating.yaml"), {k: v.astype(np.float32) for k, v in columns.items()}
    )
    pad = np.zeros(n_other, dtype=bool)
    assert f1_score(result.masks["car_t"], np.concatenate([car, pad])) > 0.98
    assert f1_score(result.masks["car_t_cd4"], np.concatenate([car & is_cd4, pad])) > 0.97
    assert f1_score(result.masks["car_t_cd8"], np.concatenate([car & ~is_cd4, pad])) > 0.97
    assert f1_score(result.masks["t_cd4"], np.concatenate([is_cd4, pad])) > 0.98
