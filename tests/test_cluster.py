"""FlowSOM-style clustering (cytopipe.cluster) on a generated cohort with per-event truth: the
annotated metaclusters recover the known populations, identities are shared across timepoints,
clusters are cross-checked with the gates (a deliberately broken CD27 gate is flagged), training
is deterministic, failed samples are handled, and the commands write what the report reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cytopipe import cli
from cytopipe.atomic import write_json
from cytopipe.cluster.annotation import UNASSIGNED, annotate, skipped_rules
from cytopipe.cluster.mapping import agreement, assign, cut_on_continuum, map_files, membership
from cytopipe.cluster.metaclustering import consensus_metaclusters
from cytopipe.cluster.model import load_model, reannotate, save_model
from cytopipe.cluster.sample_events import read_sample
from cytopipe.cluster.settings import condition_interval, load_settings, parse_settings
from cytopipe.cluster.som import nearest_node, train_som
from cytopipe.cluster.training import train_files
from cytopipe.config import load_config
from cytopipe.errors import ConfigError
from cytopipe.gating.sample import event_masks, gate
from cytopipe.gating.stats import f1_score
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import QC_COLUMN, Preprocessed, preprocess
from cytopipe.report.data import load_sample
from cytopipe.report.sample_page import clustering_section as _clustering_section
from cytopipe.synth import sample_files
from cytopipe.synth.cohort import synth_cohort
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.model import B_SUBSETS
from cytopipe.synth.sample_files import read_truth
from cytopipe.synth.simulate import simulate_sample

N_EVENTS = 30_000
TIMEPOINTS = (-7, 14, 180, 365)  # baseline, aplasia, reconstitution, late
FAILED = "P09_FAILED"
# truth labels per annotated population; the gates' naive quadrant (IgD+CD27-) holds the
# transitional B cells too, and so do the clusters annotated b_naive
TRUTH = {
    "t_cells": ("t_cell",),
    "nk": ("nk",),
    "b_cells": B_SUBSETS,
    "b_naive": ("b_naive", "b_transitional"),
    "b_transitional": ("b_transitional",),
    "b_unswitched_memory": ("b_unswitched_memory",),
    "b_switched_memory": ("b_switched_memory",),
    "b_double_negative": ("b_double_negative",),
    "plasmablasts": ("plasmablast",),
}


def write_sample(out, sample_id: str, pre: Preprocessed, masks) -> tuple[str, str]:
    """The workflow's files for one sample: preprocessed events and their record (beside them),
    per-event gate masks."""
    events, gates = out / f"{sample_id}.parquet", out / sample_id / "gates.parquet"
    gates.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(pre.columns)
    df[QC_COLUMN] = pre.qc_pass
    df.to_parquet(events, index=False)
    write_json(events.with_suffix(".json"), {"sample_id": sample_id, "status": "ok", **pre.info})
    event_masks(masks, pre.qc_pass).to_parquet(gates, index=False)
    return str(events), str(gates)


def gated_cohort(out, sheet, repo) -> tuple[list[str], list[str], list[str], dict, dict]:
    """Preprocess and autogate every sample of a sheet; ids, events, gates, truth labels of the
    gated lymphocytes and the preprocessed samples."""
    cfg, panel_map = load_config(None), load_panel(repo / "config" / "panel.yaml")
    specs = load_template(repo / "config" / "gating.yaml")
    ids, events, gates, truth, pres = [], [], [], {}, {}
    for row in sheet.itertuples(index=False):
        pre = preprocess(row.path, panel_map, cfg)
        kept = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
        masks = gate(row.sample_id, kept, specs).masks
        ev, gt = write_sample(out, row.sample_id, pre, masks)
        labels = np.asarray(read_truth(row.path)["population"]).astype(str)
        lymph = pd.read_parquet(gt)["lymphocytes"].to_numpy()
        ids.append(row.sample_id), events.append(ev), gates.append(gt)
        truth[row.sample_id], pres[row.sample_id] = labels[lymph], pre
    return ids, events, gates, truth, pres


def write_failed(out, sample_id: str) -> tuple[str, str]:
    """What preprocess/gate write for a sample that failed: no events, no gate columns."""
    events, gates = out / f"{sample_id}.parquet", out / sample_id / "gates.parquet"
    gates.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({QC_COLUMN: pd.Series([], dtype=bool)}).to_parquet(events)
    pd.DataFrame().to_parquet(gates)
    return str(events), str(gates)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, repo):
    """Two patients x 4 timepoints through preprocess + automated gating, plus a failed sample.

    Returns sample ids, files, per-sample truth labels of the gated lymphocytes, and the
    preprocessed columns (for regating)."""
    out = tmp_path_factory.mktemp("cluster")
    sheet = synth_cohort(
        out / "fcs", n_patients=2, seed=21, events_per_sample=N_EVENTS, timepoints=TIMEPOINTS
    )
    ids, events, gates, truth, pres = gated_cohort(out, sheet, repo)
    ev, gt = write_failed(out, FAILED)
    ids.append(FAILED), events.append(ev), gates.append(gt)
    return {"dir": out, "ids": ids, "events": events, "gates": gates, "truth": truth, "pre": pres}


@pytest.fixture(scope="module")
def settings(repo):
    return load_settings(repo / "config" / "clustering.yaml")


@pytest.fixture(scope="module")
def model(cohort, settings):
    return train_files(cohort["events"], cohort["gates"], settings, cohort["ids"])


def files_of(cohort, sample_id: str) -> tuple[str, str]:
    i = cohort["ids"].index(sample_id)
    return cohort["events"][i], cohort["gates"][i]


def metaclusters_of(cohort, model, settings, sample_id: str) -> np.ndarray:
    sample = read_sample(*files_of(cohort, sample_id), model.markers, settings)
    return assign(model, sample.data)[1]


def found_mask(model, meta: np.ndarray, population: str) -> np.ndarray:
    if population == "nk":  # no gate population: the metaclusters labelled NK
        return np.isin(np.asarray(model.labels)[meta], ["NK"])
    return membership(model, [population])[:, 0][meta]


# ----------------------------------------------------------------------------- accuracy


def test_metaclusters_recover_the_known_populations(cohort, model, settings):
    ok = [s for s in cohort["ids"] if s != FAILED]
    metas = np.concatenate([metaclusters_of(cohort, model, settings, s) for s in ok])
    labels = np.concatenate([cohort["truth"][s] for s in ok])
    scores = {}
    for pop, group in TRUTH.items():
        truth = np.isin(labels, group)
        scores[pop] = (round(f1_score(found_mask(model, metas, pop), truth), 4), int(truth.sum()))
    print("\nF1 of annotated metaclusters vs truth (pooled, events):")
    for pop, (score, n) in scores.items():
        print(f"  {pop:22s} F1 {score:.4f}  ({n} true events)")
    print("  metaclusters:", ", ".join(f"{i + 1}={lab}" for i, lab in enumerate(model.labels)))
    for pop in ("t_cells", "b_cells", "nk"):
        assert scores[pop][0] >= 0.9, (pop, scores[pop])
    for pop in ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert scores[pop][0] >= 0.8, (pop, scores[pop])
    assert model.k == settings.k and len(model.labels) == model.k


def test_identities_are_shared_across_timepoints(cohort, model, settings):
    """A metacluster holds the same truth population at baseline and one year later."""
    b_labels = set()
    for patient in ("P01", "P02"):
        early, late = f"{patient}_BL", f"{patient}_D365"
        majority = {}
        for sid in (early, late):
            meta = metaclusters_of(cohort, model, settings, sid)
            table = pd.crosstab(meta, cohort["truth"][sid])
            big = table.sum(axis=1) >= 30
            majority[sid] = table[big].idxmax(axis=1)
        common = majority[early].index.intersection(majority[late].index)
        assert len(common) >= 10, common
        pd.testing.assert_series_equal(
            majority[early][common], majority[late][common], check_names=False
        )
        b_labels |= {model.labels[g] for g in common if majority[early][g] in B_SUBSETS}
    assert {"B naive", "B switched memory"} <= b_labels, b_labels


def test_aplasia_sample_has_almost_no_b_cell_clusters(cohort, model, settings):
    sid = "P01_D014"
    meta = metaclusters_of(cohort, model, settings, sid)
    found = int(found_mask(model, meta, "b_cells").sum())
    true_b = int(np.isin(cohort["truth"][sid], B_SUBSETS).sum())
    assert found <= 2 * true_b + 5, (found, true_b)


# ----------------------------------------------------------------------------- agreement with gates


def test_clusters_agree_with_good_gates(cohort, model, settings):
    for sid in ("P01_BL", "P02_D365"):
        result = map_files(*files_of(cohort, sid), model, settings)
        rows = {r["population"]: r for r in result["agreement"]}
        assert set(rows) == set(settings.agreement_populations)
        assert result["disagreements"] == [], result["disagreements"]
        judged = [r for r in rows.values() if r["status"] in ("agree", "disagree")]
        assert {"t_cells", "b_cells", "b_naive"} <= {r["population"] for r in judged}
        for r in judged:
            assert r["f1"] >= settings.min_f1 and r["both_events"] <= r["gate_events"]


def test_a_shifted_cd27_gate_is_flagged(cohort, model, settings, repo, tmp_path):
    """CD27 cut fixed at 0.70 (memory B cells sit near 0.63): switched memory falls into the
    double-negative quadrant and unswitched memory into naive, which the clusters contradict.
    The IgD- B cells' CD27 cut (cd27_switched) is fixed there too: placed by the template, it
    would leave a cut through their switched memory B cells for their own valley
    (`own_through`), and those two subsets would agree."""
    template = yaml.safe_load((repo / "config" / "gating.yaml").read_text())
    broken = {"dim": "CD27", "on": "b_cd20pos", "method": "fixed", "fixed": 0.70}
    template["thresholds"]["cd27"] = broken
    template["thresholds"]["cd27_switched"] = {**broken, "where": [["igd", "below"]]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(template))
    specs = load_template(tmp_path / "broken.yaml")
    truth = cohort["truth"]
    sid = max(truth, key=lambda s: np.count_nonzero(truth[s] == "b_switched_memory"))
    pre = cohort["pre"][sid]
    kept = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    masks = gate(sid, kept, specs).masks
    events, gates = write_sample(tmp_path, sid, pre, masks)
    result = map_files(events, gates, model, settings)
    status = {r["population"]: r["status"] for r in result["agreement"]}
    flagged = {d.split(":")[0] for d in result["disagreements"]}
    print("\nbroken CD27 gate:", result["disagreements"])
    assert {"b_switched_memory", "b_double_negative"} <= flagged, result["agreement"]
    assert status["b_switched_memory"] == "disagree"
    assert status["t_cells"] == status["b_cells"] == "agree"  # the rest still agrees


@pytest.fixture(scope="module")
def two_instruments(tmp_path_factory, repo):
    """The same patient (same seed) measured on instrument A (range 2^18) and B (2^20, other
    gains, offsets and spillover): baseline and reconstitution."""
    out = tmp_path_factory.mktemp("instruments")
    parts = []
    for key in ("A", "B"):
        sheet = synth_cohort(out / key, 1, 5, 20_000, key, (-7, 180))
        sheet["sample_id"] = sheet["sample_id"] + "_" + key
        parts.append(gated_cohort(out / f"gated_{key}", sheet, repo))
    return [sum((list(p[i]) for p in parts), []) for i in range(3)]


@pytest.mark.parametrize("common", [True, False])
def test_one_model_across_instruments_on_the_common_scale(two_instruments, settings, common):
    """On the common scale instrument B's cells fall in the same metaclusters as A's and agree
    with B's gates; pooled on each file's own scale (T = $PnR) they do not."""
    ids, events, gates = two_instruments
    chosen = settings if common else parse_settings({**settings.raw, "scale": None})
    model = train_files(events, gates, chosen, ids)
    b_ids = [i for i in ids if i.endswith("_B")]
    flagged = []
    for sid in b_ids:
        i = ids.index(sid)
        result = map_files(events[i], gates[i], model, chosen, sid)
        flagged += result["disagreements"]
        assert bool(result["rescaled_from"]) == common
        if common:
            assert set(result["rescaled_from"]) == set(model.markers)
            assert "T=1.04858e+06" in result["rescaled_from"]["CD19"]
    if common:
        assert flagged == [], flagged
    else:
        print("\non their own scales:", flagged)
        assert flagged, "pooling two scales should break agreement on instrument B"


def test_the_preprocessing_record_can_live_elsewhere(two_instruments, settings, tmp_path):
    """The scales come from the record beside the events file, or from --info; without either
    the events are pooled as they are (and clusters.json says nothing was rescaled)."""
    ids, events, gates = two_instruments
    i = next(k for k, sid in enumerate(ids) if sid.endswith("_B"))
    model = train_files(events[:1], gates[:1], settings, ids[:1])
    moved = tmp_path / "elsewhere.parquet"
    moved.write_bytes(Path(events[i]).read_bytes())
    record = Path(events[i]).with_suffix(".json")
    alone = map_files(str(moved), gates[i], model, settings, ids[i])
    given = map_files(str(moved), gates[i], model, settings, ids[i], str(record))
    beside = map_files(events[i], gates[i], model, settings, ids[i])
    assert alone["rescaled_from"] == {}
    assert given["rescaled_from"] == beside["rescaled_from"] != {}
    assert given["clusters"] == beside["clusters"]
    trained = [  # training reads the same records: --info or beside
        train_files(e, [gates[i]], settings, [ids[i]], r).codes
        for e, r in (([str(moved)], [str(record)]), ([events[i]], None), ([str(moved)], None))
    ]
    assert np.array_equal(trained[0], trained[1]) and not np.array_equal(trained[0], trained[2])


def test_too_few_events_are_not_judged(model, settings):
    """Aplasia: 3 gated B cells that the clusters miss are no evidence of a disagreement."""
    b_meta = [g for g, pops in enumerate(model.populations) if "b_cells" in pops]
    t_meta = [g for g, pops in enumerate(model.populations) if "t_cells" in pops]
    meta = np.array([t_meta[0]] * 1000 + [b_meta[0]] * 2)
    gate_b = np.zeros(1002, dtype=bool)
    gate_b[:3] = True
    rows, flags = agreement(meta, model, {"b_cells": gate_b}, settings)
    row = {r["population"]: r for r in rows}
    assert row["b_cells"]["status"] == "too few events" and row["b_cells"]["f1"] == 0.0
    assert row["t_cells"]["status"] == "no gate" and not flags


def test_a_subset_cut_on_a_continuum_is_compared_but_not_judged(model, settings, tmp_path):
    """Real memory B cells are a continuum in IgD and CD27: the gate cuts where the density
    turns, the metaclusters where their nodes fall, and the real Lyoplate file as acquired was
    listed to review for it (unswitched and switched memory F1 0.38 and 0.46). A subset of the
    settings' `continuum` list whose gate found one population (stats.tsv) is compared but not
    judged; the same disagreement with a valley found is flagged, and the B cells (not on the
    list: a dim CD19 stain, cut at a shoulder, must still be caught) are judged either way."""
    pops = {p for pops in model.populations for p in pops}
    subset = next(p for p in settings.continuum_populations if p in pops)
    other = [g for g, p in enumerate(model.populations) if subset not in p and "b_cells" not in p]
    meta = np.array([other[0]] * 1000)
    wrong = np.zeros(1000, dtype=bool)
    wrong[:200] = True  # 200 events gated where no metacluster of that population is
    gates = {subset: wrong, "b_cells": wrong}
    stats = tmp_path / "stats.tsv"
    pd.DataFrame({"population": [subset, "b_cells", "t_cells"], "populations_found": [1, 1, 2]}
                 ).to_csv(stats, sep="\t", index=False)  # fmt: skip
    continuum = cut_on_continuum(stats)
    assert continuum == {subset, "b_cells"}
    rows, flags = agreement(meta, model, gates, settings, continuum)
    status = {r["population"]: r["status"] for r in rows}
    assert status[subset] == "continuum: not judged"
    assert status["b_cells"] == "disagree" and [f.split(":")[0] for f in flags] == ["b_cells"]
    rows, flags = agreement(meta, model, gates, settings)  # valleys found: judged
    assert {r["population"]: r["status"] for r in rows}[subset] == "disagree"


# ----------------------------------------------------------------------------- determinism, failures


def test_training_is_deterministic_for_a_seed(cohort, model, settings):
    again = train_files(cohort["events"], cohort["gates"], settings, cohort["ids"])
    np.testing.assert_array_equal(again.codes, model.codes)
    np.testing.assert_array_equal(again.node_metacluster, model.node_metacluster)
    assert again.labels == model.labels
    other = parse_settings({**settings.raw, "training": {**settings.raw["training"], "seed": 7}})
    reseeded = train_files(cohort["events"], cohort["gates"], other, cohort["ids"])
    assert not np.array_equal(reseeded.codes, model.codes)  # the seed does drive the subsample


def test_failed_sample_is_skipped_and_reported_not_available(cohort, model, settings):
    assert FAILED in model.info["skipped_samples"]
    assert FAILED not in model.info["samples"]
    assert len(model.info["samples"]) == len(cohort["ids"]) - 1
    result = map_files(*files_of(cohort, FAILED), model, settings)
    assert result["status"] == "not available" and "failed upstream" in result["reason"]


def test_untrained_model_when_nothing_to_learn(cohort, settings):
    events, gates = files_of(cohort, FAILED)
    model = train_files([events], [gates], settings)
    assert not model.trained and "training needs" in model.info["reason"]
    ev, gt = files_of(cohort, "P01_BL")
    result = map_files(ev, gt, model, settings)
    assert result["status"] == "not available" and "no clustering model" in result["reason"]


# ----------------------------------------------------------------------------- building blocks


def test_chunked_nearest_node_equals_brute_force():
    rng = np.random.default_rng(0)
    x = rng.random((5000, 6), dtype=np.float32)
    codes = rng.random((49, 6), dtype=np.float32)
    brute = ((x[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)
    got = nearest_node(x, codes, chunk=777)
    assert np.mean(got == brute) > 0.999  # float32 ties only


def test_som_and_consensus_separate_distinct_blobs():
    rng = np.random.default_rng(1)
    centres = np.array([[0.1, 0.1, 0.8], [0.8, 0.2, 0.2], [0.3, 0.9, 0.5]])
    truth = rng.integers(0, 3, 6000)
    x = (centres[truth] + rng.normal(0, 0.03, (6000, 3))).astype(np.float32)
    codes = train_som(x, 6, 6, epochs=15)
    meta, k, scores = consensus_metaclusters(codes, 3, resamples=30, seed=0)
    assert k == 3 and set(scores) == {3}
    found = meta[nearest_node(x, codes)]
    assert pd.crosstab(found, truth).gt(0).sum(axis=1).eq(1).all()  # every metacluster pure


def test_consensus_auto_k_picks_the_stable_number_of_groups():
    """Node codes in 4 tight, distant groups: k > 4 splits a group arbitrarily (PAC > 0), k < 4
    merges groups stably (PAC 0 too), so the largest k of lowest PAC is the answer."""
    rng = np.random.default_rng(2)
    centres = rng.random((4, 5)) * 3
    group = np.repeat(np.arange(4), [30, 20, 15, 35])
    codes = centres[group] + rng.normal(0, 0.05, (100, 5))
    meta, k, pacs = consensus_metaclusters(codes, None, (2, 8), resamples=40, seed=0)
    assert k == 4 and pacs[4] == 0.0 and min(v for kk, v in pacs.items() if kk > 4) > 0
    assert pd.crosstab(meta, group).gt(0).sum(axis=1).eq(1).all()


def test_annotation_rules_first_match_missing_marker_and_unassigned(settings):
    markers = ["CD3", "CD19", "CD20", "IgD", "CD27", "CD38"]  # no CD24: transitional rule skipped
    medians = np.array(
        [
            [0.75, 0.15, 0.15, 0.2, 0.6, 0.2],  # T
            [0.25, 0.66, 0.78, 0.75, 0.15, 0.75],  # transitional-like, but no CD24 -> naive
            [0.25, 0.66, 0.78, 0.2, 0.63, 0.4],  # switched memory
            [0.25, 0.56, 0.15, 0.2, 0.86, 0.89],  # plasmablast
            [0.25, 0.15, 0.15, 0.2, 0.2, 0.2],  # CD3- CD19- CD38-: nothing
        ]
    )
    labels, pops = annotate(medians, markers, settings.rules)
    assert labels == ["T", "B naive", "B switched memory", "Plasmablast", UNASSIGNED]
    assert "b_cells" in pops[2] and pops[4] == ()
    assert skipped_rules(markers, settings.rules) == {"B transitional": ["CD24"]}
    assert condition_interval("0.4-0.6", settings.levels["default"]) == (0.4, 0.6)
    assert condition_interval(">=0.8", settings.levels["default"]) == (0.8, np.inf)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"colour": 1}, "unknown key"),
        ({"som": {"xdim": 0}}, "som.xdim"),
        ({"metaclustering": {"k": 500}}, "number of SOM nodes"),
        ({"metaclustering": {"linkage": "centroid"}}, "linkage"),
        ({"annotations": [{"label": "X", "when": {"CD3": "sort of"}}]}, "cannot read condition"),
        ({"annotations": [{"label": "X", "when": {"CD3": "pos"}, "colour": "red"}]}, "unknown key"),
        ({"levels": {"CD3": {"pos": 0.9, "high": 0.5}}}, "pos must not be above high"),
        ({"scale": {"t": "full range"}}, "numeric t, w, m and a"),
        ({"scale": {"w": 3.0}}, "not a valid logicle"),
    ],
)
def test_bad_settings_are_refused_with_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(edit, "clustering.yaml")


def test_gates_of_another_run_are_not_mapped(cohort, model, settings, tmp_path):
    ev, gt = files_of(cohort, "P01_BL")
    pd.read_parquet(gt).iloc[:-10].to_parquet(tmp_path / "gates.parquet")
    result = map_files(ev, tmp_path / "gates.parquet", model, settings, "P01_BL")
    assert result["status"] == "not available" and "different runs" in result["reason"]


# ----------------------------------------------------------------------------- files and CLI


def run_cli(argv: list[str]) -> int:
    return cli.main(argv)


def test_commands_write_model_and_clusters_json_the_report_renders(
    cohort, settings, repo, tmp_path, capsys
):
    model_path = tmp_path / "model" / "som.npz"
    argv = ["cluster-train", "--events", *cohort["events"], "--gates", *cohort["gates"]]
    argv += ["--config", str(repo / "config" / "clustering.yaml"), "--out", str(model_path)]
    assert run_cli(argv) == 0
    printed = capsys.readouterr()
    assert f"{settings.k} metaclusters" in printed.out and FAILED in printed.err
    saved = load_model(model_path)
    assert saved.trained and saved.k == settings.k and saved.info["skipped_samples"]

    sid = "P01_D180"
    ev, gt = files_of(cohort, sid)
    folder = tmp_path / "samples" / sid
    out = folder / "clusters.json"
    assert (
        run_cli(["cluster-map", ev, "--gates", gt, "--model", str(model_path), "--out", str(out)])
        == 0
    )
    data = json.loads(out.read_text())
    assert data["sample_id"] == sid and data["status"] == "ok"
    rows = data["clusters"]
    assert [r["metacluster"] for r in rows] == list(range(1, settings.k + 1))
    assert sum(r["events"] for r in rows) == data["events"] == sum(data["nodes"]["events"])
    assert abs(sum(r["% of lymphocytes"] for r in rows) - 100) <= 0.005 * len(rows)
    assert len(data["nodes"]["metacluster"]) == settings.n_nodes

    (folder / "sample.json").write_text(json.dumps({"sample_id": sid, "status": "ok"}))
    html = _clustering_section(load_sample(sid, folder))
    assert "B naive" in html and "phenotype" in html and "No clustering results" not in html

    failed_out = tmp_path / "failed.json"
    ev, gt = files_of(cohort, FAILED)
    argv = ["cluster-map", ev, "--gates", gt, "--model", str(model_path), "--out", str(failed_out)]
    assert run_cli(argv) == 0
    assert json.loads(failed_out.read_text())["status"] == "not available"

    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a model")
    argv = ["cluster-map", ev, "--gates", gt, "--model", str(broken), "--out", str(failed_out)]
    assert run_cli(argv) == 2
    cap = capsys.readouterr()
    assert "not a cytopipe clustering model" in cap.out + cap.err


def test_map_with_edited_rules_reannotates_without_retraining(cohort, model, settings, tmp_path):
    raw = {
        **settings.raw,
        "annotations": [r for r in settings.raw["annotations"] if r["label"] != "NK"],
    }
    edited = parse_settings(raw)
    relabelled = reannotate(model, edited)
    assert "NK" in model.labels and "NK" not in relabelled.labels
    np.testing.assert_array_equal(relabelled.codes, model.codes)
    save_model(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.labels == model.labels and loaded.populations == model.populations
    np.testing.assert_array_equal(loaded.node_metacluster, model.node_metacluster)


# ----------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_one_million_events_cluster_in_under_a_minute(tmp_path, repo, settings):
    """Training on a pooled subsample (100,000 events, as from 20 samples) + mapping every gated
    lymphocyte of a 1,000,000-event sample, with file I/O: what cluster-train + cluster-map do."""
    comp = blood_composition(lymphocytes_of_leukocytes=0.9, debris=0.02, dead=0.01)
    sim = simulate_sample(1_000_000, comp, "A", rng=5)
    path = sample_files.write_sample(tmp_path / "big.fcs", sim)
    pre = preprocess(str(path), load_panel(repo / "config" / "panel.yaml"), load_config(None))
    kept = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    masks = gate("big", kept, load_template(repo / "config" / "gating.yaml")).masks
    events, gates = write_sample(tmp_path, "big", pre, masks)
    n_lymph = int(masks["lymphocytes"].sum())
    pooled = parse_settings(
        {**settings.raw, "training": {**settings.raw["training"], "events_per_sample": 100_000}}
    )
    t0 = time.perf_counter()
    model = train_files([events], [gates], pooled)
    save_model(tmp_path / "som.npz", model)
    t1 = time.perf_counter()
    result = map_files(events, gates, load_model(tmp_path / "som.npz"), pooled)
    write_json(tmp_path / "clusters.json", result)
    t2 = time.perf_counter()
    print(
        f"\n1M-event sample ({n_lymph} gated lymphocytes): train on "
        f"{model.info['training_events']} pooled events {t1 - t0:.1f} s, map {t2 - t1:.1f} s, "
        f"total {t2 - t0:.1f} s"
    )
    assert result["events"] == n_lymph > 700_000
    assert t2 - t0 < 60
