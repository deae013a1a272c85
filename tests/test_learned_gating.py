"""A lab's learned gating in the workflow (issue 16, config gating_model): each sample labelled
by the model beside the template, their agreement per population, and what to review."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cytopipe import cli
from cytopipe.gating.stats import f1_score
from cytopipe.report.data import load_sample
from cytopipe.report.render import render
from cytopipe.report.sample_page import _learned
from cytopipe.synth.cohort import synth_cohort
from cytopipe.synth.model import B_SUBSETS
from cytopipe.synth.sample_files import read_truth

MARKERS = ["CD45", "SSC-A", "CD3", "CD19", "CD20"]
COMPARE = {"t_cells": "T cells", "b_cells": "B cells"}


def expert_labels(fcs: str, out: Path) -> Path:
    """What an expert's export would hold: one label per event, from the generator's truth."""
    truth = np.asarray(read_truth(fcs)["population"])
    b = np.isin(truth, [*B_SUBSETS, "plasmablast"])
    label = np.where(truth == "t_cell", "T cells", np.where(b, "B cells", "other"))
    pd.DataFrame({"label": label}).to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A model learned from three generated files with an expert's labels; a fourth sample
    preprocessed and gated as the workflow does."""
    out = tmp_path_factory.mktemp("learned")
    sheet = synth_cohort(out / "cohort", 2, 5, 20_000, "A", timepoints=(-7, 90))
    files = list(sheet["path"])
    refs, new = files[:3], files[3]
    labels = [str(expert_labels(f, out / f"labels{i}.csv")) for i, f in enumerate(refs)]
    model = out / "model.json"
    assert cli.main(["learn-gates", "--fcs", *refs, "--labels", *labels, "--markers", *MARKERS,
                     "--out", str(model), "--per-class", "10000"]) == 0  # fmt: skip
    events, info, folder = out / "e.parquet", out / "info.json", out / "sample"
    assert cli.main(["preprocess", new, "--sample-id", "s", "--out-events", str(events),
                     "--out-info", str(info)]) == 0  # fmt: skip
    assert cli.main(["gate", str(events), "--info", str(info), "--out-dir", str(folder)]) == 0
    return out, model, events, folder, new


def model_map(mapped, compare, name, **extra) -> dict:
    out, model, events, folder, _ = mapped
    settings = {"gating_model": {"path": str(model), "compare": compare, **extra}}
    target = out / name
    assert cli.main(["model-map", str(events), "--gates", str(folder / "gates.parquet"),
                     "--model", str(model), "--settings", json.dumps(settings),
                     "--sample-id", "s", "--out", str(target)]) == 0  # fmt: skip
    return json.loads(target.read_text())


def test_the_learned_gating_agrees_with_the_template_where_both_are_right(mapped):
    doc = model_map(mapped, COMPARE, "learned.json")
    assert doc["status"] == "ok" and len(doc["learned_from"]) == 3
    rows = {r["gate"]: r for r in doc["agreement"]}
    assert rows["t_cells"]["f1"] >= 0.95, rows
    b = rows["b_cells"]  # this sample is in aplasia (3 B cells): counts, not an F1 of 3 events
    assert b["gate events"] < 20 and b["model events"] <= 2 * b["gate events"] + 5, b
    assert doc["disagreements"] == []
    # the F1 is the events' own: our gates against the model's labels on the QC-kept events
    out, model, events, folder, new = mapped
    keep = pd.read_parquet(events)["qc_pass"].to_numpy()
    ours = pd.read_parquet(folder / "gates.parquet")["t_cells"].to_numpy()[keep]
    truth = np.asarray(read_truth(new)["population"])[keep] == "t_cell"
    assert abs(f1_score(ours, truth) - rows["t_cells"]["f1"]) < 0.05
    populations = {p["population"]: p for p in doc["populations"]}
    assert set(populations) == {"T cells", "B cells", "other"}
    assert populations["T cells"]["mean confidence"] > 0.8


def test_a_population_the_two_methods_disagree_on_is_listed_to_review(mapped):
    doc = model_map(mapped, {"t_cells": "T cells", "b_cells": "other", "nk": "B cells"}, "d.json")
    rows = {r["gate"]: r for r in doc["agreement"]}
    assert rows["b_cells"]["f1"] < 0.2
    assert any(d.startswith("b_cells vs the learned other") for d in doc["disagreements"])
    assert not any(d.startswith("t_cells") for d in doc["disagreements"])
    assert rows["nk"]["note"] == "not in the sample's gates"


def test_a_model_learned_on_another_scale_is_refused_with_the_reason(mapped):
    out, model, events, folder, _ = mapped
    other = json.loads(model.read_text())
    other["settings"]["transform"] = {"fluorescence": "arcsinh"}
    (out / "arcsinh.json").write_text(json.dumps(other))
    settings = {"gating_model": {"path": "x"}}
    assert cli.main(["model-map", str(events), "--gates", str(folder / "gates.parquet"),
                     "--model", str(out / "arcsinh.json"), "--settings", json.dumps(settings),
                     "--out", str(out / "refused.json")]) == 0  # fmt: skip
    doc = json.loads((out / "refused.json").read_text())
    assert doc["status"] == "not available" and "another transform" in doc["reason"]


def test_the_sample_page_shows_the_learned_opinion_and_what_to_review(mapped):
    out, _, _, folder, _ = mapped
    doc = model_map(mapped, {"t_cells": "T cells", "b_cells": "other"}, "learned.json")
    (folder / "learned.json").write_text(json.dumps(doc))
    html = render("learned.html", learned=_learned(load_sample("s", folder)))
    assert "Learned gating" in html and "model.json" in html
    assert "Agreement with the template" in html and "b_cells vs the learned other" in html
    assert "3 reference files" in html and ".fcs" not in html  # file names may name patients
    shown = render("learned.html", learned=_learned(load_sample("s", folder), True))
    assert all(Path(f).name in shown for f in doc["learned_from"])


def test_the_workflow_runs_the_model_only_when_configured(tmp_path, repo):
    """Dry runs: with gating_model.path every sample gets a model_map job feeding the report;
    a sample with expert gates (sheet column expert_gates) gets an expert_map job."""
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    sheet = synth_cohort(tmp_path / "cohort", 1, 3, 3000, "A", timepoints=(-7, 28))
    (tmp_path / "expert.csv").write_text("label\n")
    sheet["expert_gates"] = [str(tmp_path / "expert.csv"), ""]  # an expert gated one file
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    model = tmp_path / "model.json"
    model.write_text("{}")

    def jobs(extra: dict) -> str:
        cfg = {**config, "samples": str(tmp_path / "samples.tsv"),
               "panel": str(repo / config["panel"]), "gating": str(repo / config["gating"]),
               "clustering": str(repo / config["clustering"]), "results": str(tmp_path / "r"),
               **extra}  # fmt: skip
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n",
             "--configfile", str(path), "--directory", str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    plain = jobs({})
    assert "model_map" not in plain
    assert dict(
        line.split()[:2] for line in plain.splitlines() if line.startswith("expert_map")
    ) == {"expert_map": "1"}
    planned = jobs({"gating_model": {"path": str(model), "compare": COMPARE}})
    counts = dict(line.split()[:2] for line in planned.splitlines() if line.startswith("model_map"))
    assert counts == {"model_map": str(len(sheet))}, planned[-2000:]
    assert "learned.json" in planned


# ------------------------------------------------------------ an expert's gating of the same file

EXPERT_COMPARE = {"lymphocytes": "Lymphocytes", "t_cells": "T cells", "b_cells": "B cells"}


def expert_masks_csv(fcs: str, out: Path) -> Path:
    """An expert's exported gates: one 0/1 column per population, parents included."""
    truth = np.asarray(read_truth(fcs)["population"])
    lymph = np.isin(truth, ["t_cell", "nk", "car_t", *B_SUBSETS, "plasmablast"])
    b = np.isin(truth, [*B_SUBSETS, "plasmablast"])
    table = {"Lymphocytes": lymph, "T cells": truth == "t_cell", "B cells": b}
    pd.DataFrame({k: v.astype(int) for k, v in table.items()}).to_csv(out, index=False)
    return out


def expert_map(mapped, compare, expert: Path, name: str) -> dict:
    out, _, events, folder, fcs = mapped
    settings = {"expert_gates": {"compare": compare}}
    assert cli.main(["expert-map", str(events), "--gates", str(folder / "gates.parquet"),
                     "--plots", str(folder / "plots.json"), "--fcs", fcs, "--expert", str(expert),
                     "--settings", json.dumps(settings), "--out", str(out / name)]) == 0  # fmt: skip
    return json.loads((out / name).read_text())


def test_the_experts_populations_agree_and_are_outlined_on_our_plots(mapped):
    from cytopipe.gating.gates import points_in_polygon

    out, _, events, folder, fcs = mapped
    doc = expert_map(mapped, EXPERT_COMPARE, expert_masks_csv(fcs, out / "expert.csv"), "e.json")
    assert doc["status"] == "ok" and doc["disagreements"] == []
    rows = {r["gate"]: r for r in doc["agreement"]}
    assert all(rows[g]["f1"] >= 0.95 for g in EXPERT_COMPARE), rows
    # the expert's T cells, outlined on our t_cells plot (CD3 x CD19), hold our T cells
    plots = {p["population"]: p for p in json.loads((folder / "plots.json").read_text())["plots"]}
    outline = np.asarray(doc["outlines"]["t_cells"])
    ev = pd.read_parquet(events)
    ours = pd.read_parquet(folder / "gates.parquet")["t_cells"].to_numpy() & ev["qc_pass"]
    x, y = ev[plots["t_cells"]["x"]][ours], ev[plots["t_cells"]["y"]][ours]
    assert points_in_polygon(x.to_numpy(), y.to_numpy(), outline).mean() > 0.9


def test_a_population_we_and_the_expert_disagree_on_is_listed_to_review(mapped):
    out, _, _, _, fcs = mapped
    expert = expert_masks_csv(fcs, out / "expert.csv")
    doc = expert_map(mapped, {"b_cells": "T cells", "t_cells": "T cells"}, expert, "d.json")
    assert [d.split(":")[0] for d in doc["disagreements"]] == ["b_cells vs the expert's T cells"]


def test_an_unreadable_expert_file_is_not_available_not_a_failed_run(mapped):
    out = mapped[0]
    (out / "short.csv").write_text("B cells\n1\n0\n")
    doc = expert_map(mapped, EXPERT_COMPARE, out / "short.csv", "bad.json")
    assert doc["status"] == "not available" and "2 rows for" in doc["reason"]
    (out / "broken.xml").write_text("<not gating-ml")
    doc = expert_map(mapped, EXPERT_COMPARE, out / "broken.xml", "bad2.json")
    assert doc["status"] == "not available" and doc["reason"]


def test_the_sample_page_draws_the_experts_outline_beside_our_gate(mapped):
    from cytopipe.report.sample_figures import density_figure
    from cytopipe.report.sample_page import _expert

    out, _, _, folder, fcs = mapped
    doc = expert_map(mapped, EXPERT_COMPARE, expert_masks_csv(fcs, out / "expert.csv"), "x.json")
    (folder / "expert.json").write_text(json.dumps(doc))
    sample = load_sample("s", folder)
    plot = next(p for p in sample.plots if p["population"] == "t_cells")
    names = [t["name"] for t in density_figure(plot)["data"]]
    assert "the expert's population" in names and "gate" in names
    html = render("expert.html", expert=_expert(sample))
    assert "Agreement with the expert" in html and "t_cells" in html
    (folder / "expert.json").unlink()


def test_the_experts_hierarchy_is_read_from_membership():
    from cytopipe.learn.references import hierarchy

    lymph = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    t = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    b = np.array([0, 0, 1, 0, 0, 0], dtype=bool)
    naive = np.array([0, 0, 1, 0, 0, 0], dtype=bool)  # all of the B cells: still below them
    found = hierarchy({"B cells": b, "naive": naive, "Lymphocytes": lymph, "T cells": t})
    assert found["T cells"] == "Lymphocytes" and found["Lymphocytes"] is None
    assert {found["B cells"], found["naive"]} <= {"Lymphocytes", "B cells", "naive"}


def test_a_parent_population_of_the_expert_is_compared_with_all_its_events(mapped):
    """Exported gates with parents (Lymphocytes holding T and B cells): each event is learned
    with its most specific population, and the model's Lymphocytes are all events below them,
    not only those labelled Lymphocytes (the NK cells)."""
    out, _, events, folder, new = mapped
    refs = sorted(str(p) for p in (out / "cohort").rglob("*.fcs") if p.name != Path(new).name)[:3]
    labels = [str(expert_masks_csv(f, out / f"h{i}.csv")) for i, f in enumerate(refs)]
    model = out / "hmodel.json"
    assert cli.main(["learn-gates", "--fcs", *refs, "--labels", *labels, "--markers", *MARKERS,
                     "--out", str(model), "--per-class", "10000"]) == 0  # fmt: skip
    parents = json.loads(model.read_text())["parents"]
    assert parents["T cells"] == parents["B cells"] == "Lymphocytes"
    settings = {"gating_model": {"path": str(model), "compare": {"lymphocytes": "Lymphocytes"}}}
    assert cli.main(["model-map", str(events), "--gates", str(folder / "gates.parquet"),
                     "--model", str(model), "--settings", json.dumps(settings),
                     "--out", str(out / "h.json")]) == 0  # fmt: skip
    (row,) = json.loads((out / "h.json").read_text())["agreement"]
    assert row["f1"] >= 0.95, row
