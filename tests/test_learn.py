"""Learning a lab's gating from expert-gated files (issue 16), on the real FlowCAP-I GvHD files
and their experts' per-event labels: how close the learned model gets file by file (leave one
file out), the model file, and files unlike the references."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import benchmark

from cytopipe.config import defaults
from cytopipe.errors import ConfigError
from cytopipe.ingest.panel import load_panel
from cytopipe.learn.evaluate import leave_one_file_out
from cytopipe.learn.model import fit, load, per_population_cap, predict, review, save
from cytopipe.learn.references import load_reference, read_labels

MARKERS = ["FSC-A", "SSC-A", "CD4", "CD8b", "CD3", "CD8"]  # the six channels
LINEAR = {"transform": {"fluorescence": "linear"}}  # FlowCAP-I: log-amplifier channel numbers


@pytest.fixture(scope="module")
def refs(shared_data, repo):
    folder = shared_data / "real" / "flowcap1_gvhd"
    cfg = defaults("config")  # FlowCAP-I channel numbers are recognised (log_channels)
    panel = load_panel(repo / "config" / "panel.yaml")
    return [
        load_reference(
            folder / f"gvhd_{i:02d}.fcs", folder / f"gvhd_{i:02d}_labels.csv", panel, cfg, MARKERS
        )  # fmt: skip
        for i in range(1, 10)
    ]


LOFO_PER_CLASS = 1000  # the default (at least 10,000; 10,000 took 5x as long): CI's time


@pytest.fixture(scope="module")
def lofo(refs):
    table = leave_one_file_out(refs, MARKERS, ("unassigned",), per_class=LOFO_PER_CLASS, budget=0)
    print("\n" + table.pivot(index="file", columns="population", values="f1").to_string())
    return table


def test_learned_t_cell_subsets_match_the_experts_file_by_file(lofo):
    """Leave one file out on 9 real files, scored as FlowCAP-I scored them (the experts'
    'unassigned' debris, doublets and outliers are unknown, not negatives), learning from
    1,000 events per population. The issue's targets: median F1 >= 0.95 for CD4 T, >= 0.92 for
    CD8 T. Measured (2026-12-01): CD4 T 0.87-0.99 (median 0.976), CD8 T 0.75-0.99 (median
    0.948); with the default 10,000 per population 0.978 and 0.939 (benchmarks/bench_learn.py,
    beside a gradient-boosting classifier on the raw channels: medians 0.972 and 0.935; 0.979
    and 0.951 before QC kept the cells at the top of forward scatter).
    File 7's CD8 is where the experts' 'other T cells' are CD3-dim CD8+ cells: another file's
    labels cannot teach that."""
    f1 = lofo.pivot(index="file", columns="population", values="f1")
    assert f1["CD4 T cells"].median() >= 0.95 and f1["CD8 T cells"].median() >= 0.92
    assert f1["CD4 T cells"].min() >= 0.83 and f1["CD8 T cells"].min() >= 0.55
    assert f1["other"].min() >= 0.90
    # counting the unassigned events as negatives can only lower the F1 of a population
    assert (lofo["f1_all_events"] <= lofo["f1"] + 1e-9).all()
    errors = lofo[lofo["population"] == "CD4 T cells"]["count_error_pct"].abs()
    assert errors.median() <= 10


def test_model_file_round_trips_and_is_deterministic(refs, tmp_path):
    model = fit(refs[:3], MARKERS, per_class=500, budget=0, seed=1)
    path = save(model, tmp_path / "m.json")
    again = save(fit(refs[:3], MARKERS, per_class=500, budget=0, seed=1), tmp_path / "m2.json")
    assert path.read_bytes() == again.read_bytes()
    doc = json.loads(path.read_text())
    assert doc["format"] == "cytopipe gating model" and doc["version"] == 2
    assert [r["name"] for r in doc["references"]] == ["gvhd_01.fcs", "gvhd_02.fcs", "gvhd_03.fcs"]
    loaded = load(path)
    a, b = predict(model, refs[4].events), predict(loaded, refs[4].events)
    assert (a[0] == b[0]).all() and np.allclose(a[1], b[1], atol=1e-6) and (a[2] == b[2]).all()
    doc["version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="version 99"):
        load(tmp_path / "future.json")


def test_larger_populations_are_learned_from_more_events_within_the_budget():
    """Every population keeps at least `per_class` events; a large one (the experts' 'other':
    every cell that is not a T cell) keeps more while all stay within the budget."""
    gvhd = [108_447, 10_376, 7_436, 6_968, 1_504]  # GvHD files 1-9: other, CD4 T, CD8 T, ...
    cap = per_population_cap(gvhd, 10_000, 60_000)
    assert sum(min(n, cap) for n in gvhd) <= 60_000 < sum(min(n, cap + 1) for n in gvhd)
    many = [400_000, 300_000, 100_000, 50_000, 40_000, 30_000, 20_000, 10_000, 5_000]
    assert per_population_cap(many, 10_000, 60_000) == 10_000  # the floor holds
    assert per_population_cap([500, 300], 10_000, 60_000) >= 500  # everything kept
    assert per_population_cap(gvhd, 1_000, 0) == 1_000  # budget 0: per_class exactly


def test_a_file_unlike_the_references_is_flagged(refs):
    """The same file with CD4 and CD3 shifted (a voltage or reagent change) is listed for
    review; the file as acquired is not."""
    model = fit(
        [r for i, r in enumerate(refs) if i != 3], MARKERS, per_class=LOFO_PER_CLASS, budget=0
    )
    held = refs[3].events
    acquired = review(model, *predict(model, held))
    assert not acquired["review"]
    shifted = held.copy()
    shifted[:, [2, 4]] += 0.25
    found = review(model, *predict(model, shifted))
    # measured (session 65): 0.9% of the events unlike as acquired, 9.0% shifted, learned from
    # 1,000 events per population (CI's time: 4 s); with the default 10,000 (23 s) 1.1% and 4.9%
    assert found["review"] and found["unlike_share"] > 3 * acquired["unlike_share"], found


def test_labels_as_one_column_per_gate(shared_data):
    """openCyto's per-event gate columns: each event takes its last (most specific) gate."""
    csv = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01_opencyto_gates.csv"
    table = pd.read_csv(csv)
    labels = read_labels(csv, len(table))
    pb = table["Live/CD19and!CD20/Plasmablasts"].astype(bool).to_numpy()
    assert (labels[pb] == "Live/CD19and!CD20/Plasmablasts").all()
    with pytest.raises(ConfigError, match="rows for"):
        read_labels(csv, len(table) + 1)


def test_learn_and_apply_from_the_command_line(shared_data, tmp_path):
    folder = shared_data / "real" / "flowcap1_gvhd"
    files = [folder / f"gvhd_{i:02d}.fcs" for i in (1, 2, 3)]
    labels = [folder / f"gvhd_{i:02d}_labels.csv" for i in (1, 2, 3)]
    settings = json.dumps(LINEAR)
    cli = [sys.executable, "-m", "cytopipe.cli"]
    learn = subprocess.run(
        [*cli, "learn-gates", "--fcs", *map(str, files), "--labels", *map(str, labels),
         "--markers", *MARKERS, "--out", str(tmp_path / "m.json"), "--settings", settings,
         "--evaluate", str(tmp_path / "lofo.tsv"), "--unscored", "unassigned",
         "--per-class", "1000"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert learn.returncode == 0, learn.stderr
    assert (tmp_path / "lofo.tsv").exists() and "CD4 T cells" in learn.stdout
    # --per-class N: exactly N events of each population (all of a smaller one), no budget
    doc = json.loads((tmp_path / "m.json").read_text())
    totals = {p: sum(r["populations"][p] for r in doc["references"]) for p in doc["populations"]}
    assert doc["learned"] == {p: min(n, 1000) for p, n in totals.items()}, (doc["learned"], totals)
    assert max(totals.values()) > 1000
    lofo = pd.read_csv(tmp_path / "lofo.tsv", sep="\t")
    assert "unassigned" not in set(lofo["population"]) and "f1_all_events" in lofo
    apply = subprocess.run(
        [*cli, "apply-model", str(folder / "gvhd_04.fcs"), "--model", str(tmp_path / "m.json"),
         "--out", str(tmp_path / "g4.tsv"), "--review", str(tmp_path / "g4.json"),
         "--gatingml", str(tmp_path / "g4.xml"), "--flowjo", str(tmp_path / "g4.wsp"),
         "--gate-counts", str(tmp_path / "g4_gates.tsv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert apply.returncode == 0, apply.stderr
    out = pd.read_csv(tmp_path / "g4.tsv", sep="\t")
    truth = pd.read_csv(folder / "gvhd_04_labels.csv")["label"]
    assert len(out) == len(truth)
    assert json.loads((tmp_path / "g4.json").read_text())["learned_from"][0] == "gvhd_01.fcs"
    _learned_gates_round_trip(folder / "gvhd_04.fcs", out, tmp_path)
    auto = subprocess.run(  # the same model through `autogate --model`: membership columns
        [*cli, "autogate", str(folder / "gvhd_04.fcs"), "--model", str(tmp_path / "m.json"),
         "--out", str(tmp_path / "g4.parquet"), "--stats", str(tmp_path / "g4_stats.tsv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert auto.returncode == 0, auto.stderr
    members = pd.read_parquet(tmp_path / "g4.parquet")
    assert len(members) == len(out)
    for pop in ("CD4 T cells", "CD8 T cells"):
        assert members[pop].sum() == (out["label"] == pop).sum() > 0
    stats = pd.read_csv(tmp_path / "g4_stats.tsv", sep="\t").set_index("population")
    assert stats.loc["CD4 T cells", "count"] == members["CD4 T cells"].sum()
    again = subprocess.run(  # the workspace (as an expert corrects it) is a reference again
        [*cli, "learn-gates", "--fcs", str(folder / "gvhd_04.fcs"), "--labels",
         str(tmp_path / "g4.wsp"), "--markers", *MARKERS, "--out", str(tmp_path / "m4.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0 and "CD4_T_cells" in again.stdout, again.stderr
    bad = subprocess.run(
        [*cli, "learn-gates", "--fcs", str(files[0]), "--labels", str(labels[1]),
         "--markers", *MARKERS, "--out", str(tmp_path / "x.json"), "--settings", settings],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "rows for" in bad.stderr and "Traceback" not in bad.stderr
    assert np.isfinite(out["confidence"].dropna()).all()


def _learned_gates_round_trip(fcs, out: pd.DataFrame, tmp_path) -> None:
    """The model's populations as polygons (Gating-ML and a FlowJo workspace): applied again by
    cytopipe and by FlowKit they give the counts the gate table states, on the events the model
    labelled (QC-kept), and the T-cell gates hold the model's T cells."""
    import warnings

    import flowkit as fk

    from cytopipe.gating.apply import apply_strategy
    from cytopipe.gating.gatingml import read_gatingml
    from cytopipe.ingest.fcs import read_fcs

    table = pd.read_csv(tmp_path / "g4_gates.tsv", sep="\t").set_index("population")
    kept = out["label"].notna().to_numpy()  # QC-removed events have no label
    ours = apply_strategy(read_gatingml(tmp_path / "g4.xml"), read_fcs(fcs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(tmp_path / "g4.wsp"), fcs_samples=str(fcs))
        ws.analyze_samples()
        (sample_id,) = ws.get_sample_ids()
        flowjo = ws.get_gating_results(sample_id)
    for pop in ("CD4 T cells", "CD8 T cells"):
        gid = table.loc[pop, "gate"]
        assert int(ours[gid][kept].sum()) == table.loc[pop, "gate_events"], pop
        theirs = np.asarray(flowjo.get_gate_membership(gid))
        assert int(theirs[kept].sum()) == table.loc[pop, "gate_events"], pop
        assert table.loc[pop, "f1"] >= 0.9, table  # measured: 0.97 and 0.93


def test_expert_gates_from_gating_ml_and_a_flowjo_workspace_become_labels(shared_data):
    """The expert's gating as training data straight from their gate files: each event takes
    the most specific population it is in (cytopipe's exact Gating-ML and FlowJo evaluation)."""
    from cytopipe.gating.apply import apply_strategy
    from cytopipe.gating.flowjo import apply_flowjo_workspace
    from cytopipe.gating.gatingml import read_gatingml
    from cytopipe.gating.sample_columns import event_source_from_fcs
    from cytopipe.ingest.fcs import open_fcs
    from cytopipe.learn.references import expert_labels

    ref = shared_data / "flowkit" / "gate_ref"
    gml, fcs = ref / "gml" / "gml_ellipse1_gate.xml", ref / "data1.fcs"
    masks = apply_strategy(read_gatingml(gml), event_source_from_fcs(open_fcs(fcs)))
    gate, member = next(iter(masks.items()))
    labels = expert_labels(gml, fcs, len(member))
    assert ((labels == gate) == member).all() and (labels[~member] == "other").all()
    folder = shared_data / "flowkit" / "simple_line_example"
    wsp, fcs = folder / "simple_poly_and_rect.wsp", folder / "data_set_simple_line_100.fcs"
    masks = apply_flowjo_workspace(wsp, fcs)
    labels = expert_labels(wsp, fcs, 100)
    last = list(masks)[-1]
    assert ((labels == last) == masks[last]).all()
    with pytest.raises(ConfigError, match="gave 100 events for 99"):
        expert_labels(wsp, fcs, 99)


def test_learned_populations_become_polygons_in_the_experts_hierarchy():
    """approximate(): every population gets a polygon on the marker pair that holds it, hung
    from its parent's polygon, so counts follow the hierarchy as in FlowJo."""
    from cytopipe.gating.gates import evaluate
    from cytopipe.learn.approximate import approximate
    from cytopipe.learn.model import Model

    rng = np.random.default_rng(3)
    centres = {"other": (0, 0, 0), "Lymphocytes": (3, 0, 0), "T cells": (3, 3, 0),
               "CD4 T": (3, 3, 3)}  # fmt: skip
    labels = np.repeat(list(centres), 2000)
    events = np.vstack([rng.normal(centres[p], 0.4, size=(2000, 3)) for p in centres])
    parents = {"T cells": "Lymphocytes", "CD4 T": "T cells"}
    model = Model(("a", "b", "c"), tuple(sorted(centres)), np.zeros(3), np.ones(3), (),
                  np.ones(4), {}, 0.0, parents=parents)  # only the hierarchy is used  # fmt: skip
    gates, rows = approximate(model, events, labels)
    by_id = {g.id: g for g in gates}
    assert by_id["CD4_T"].parent == "T_cells" and by_id["T_cells"].parent == "Lymphocytes"
    assert by_id["CD4_T"].dims[-1] == "c" and "b" in by_id["T_cells"].dims
    masks = evaluate(gates, {m: events[:, i] for i, m in enumerate("abc")})
    table = {r["population"]: r for r in rows}
    assert table["Lymphocytes"]["model_events"] == 6000  # its own events and all below it
    for row in table.values():
        assert row["gate_events"] == masks[row["gate"]].sum()
        assert row["f1"] >= 0.97, row


def test_a_hierarchy_of_gates_is_learned_from_half_a_real_file_and_applied_to_the_other(
    shared_data, repo, tmp_path
):
    """openCyto's gates of the Lyoplate B-cell file (0/1 per event per gate) as the expert's:
    learned on the even events, applied to the odd ones (written as two FCS files). The
    hierarchy is read from membership; measured (2026-11-30): lymphocytes 0.983, B cells 0.987,
    T cells 0.993, naive 0.937, unswitched 0.884, switched 0.918, double negative 0.893,
    transitional 0.801; 3% of the events unlike the references, no population to review (the
    memory populations' mixtures, from ~250 events each, flagged 12% before one component per
    200 events)."""
    real_gating = benchmark("real_gating")
    gates = ["lymph", "Live", "Live/CD3", "Live/CD19andCD20", "Live/CD19andCD20/IgD+CD27-",
             "Live/CD19andCD20/IgD-CD27+", "Live/CD19andCD20/Transitional"]  # fmt: skip
    markers = ["FSC-A", "SSC-A", "viability", "CD3", "CD19", "CD20", "IgD", "CD27", "CD38", "CD24"]
    sample, ref, metadata = real_gating._lyoplate_source(shared_data / "real")
    halves = []
    for h in (0, 1):
        rows = np.arange(h, len(ref), 2)
        fcs = real_gating._write_like(sample, sample.events[rows], tmp_path / f"{h}.fcs", metadata)
        ref.iloc[rows][gates].astype(int).to_csv(tmp_path / f"{h}.csv", index=False)
        halves.append((fcs, tmp_path / f"{h}.csv"))
    cfg, panel = defaults("config"), load_panel(repo / "config" / "panel.yaml")
    # 1,000 events per population, as measured above (the default 10,000 takes 3x as long)
    model = fit(
        [load_reference(*halves[0], panel, cfg, markers)], markers, per_class=1000, budget=0
    )
    assert model.parents["Live/CD19andCD20/IgD-CD27+"] == "Live/CD19andCD20"
    assert model.parents["Live"] == "lymph"
    from cytopipe.gating.stats import f1_score
    from cytopipe.learn.model import members
    from cytopipe.learn.references import sample_events

    events, keep, _ = sample_events(halves[1][0], panel, cfg, markers)
    labels, confidence, novel = predict(model, events[keep])
    truth = pd.read_csv(halves[1][1]).loc[keep]
    floor = {"Live/CD19andCD20/IgD-CD27+": 0.85, "Live/CD19andCD20/Transitional": 0.75}
    for gate in gates:
        f1 = f1_score(members(model, labels, gate), truth[gate].to_numpy(bool))
        assert f1 >= floor.get(gate, 0.90), (gate, f1)
    found = review(model, labels, confidence, novel)
    assert not found["review"], found
