"""Learned gating (cytopipe learn-gates / apply-model) measured side by side with its baselines.

    .venv/bin/python benchmarks/bench_learn.py [--part gvhd|synthetic|speed|all] [--seeds N]

- gvhd: the 9 real FlowCAP-I GvHD files with their experts' labels, leave one file out. Ours
  (the network ensemble on cytopipe's transform) beside a plain gradient-boosting
  classifier (scikit-learn HistGradientBoostingClassifier, default settings) on the six raw
  channels, the baseline the data's README describes; both learn from the same 8 files and
  are scored on the same events (those cytopipe's QC keeps). F1 per file for CD4 T and CD8 T,
  on the events the experts assigned (FlowCAP-I's scoring: 'unassigned' is unknown) and on
  all events (their 'unassigned' counted as negatives). `--seeds N`: both learn again with
  seeds 0..N-1 and each file shows the mean and range (a seed moves file 5's CD4 F1 by 0.02).
- synthetic: a generated cohort on both instruments (aplasia included); references = 5 files
  labelled by their truth, the model gates the 55 others; F1 per population against truth
  and the aplasia rule for B cells (truth < 20: found <= 2 x truth + 5).
- speed: learning from 10 generated files of 100,000 events (reading them included), and
  gating one file of 1,000,000 events with the model beside the template's autogate on the
  same preprocessed events.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.config import defaults, load_config
from cytopipe.gating.autogate import autogate
from cytopipe.gating.stats import f1_score
from cytopipe.gating.template import load_template
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.panel import load_panel
from cytopipe.learn.evaluate import leave_one_file_out
from cytopipe.learn.model import fit, predict
from cytopipe.learn.references import Reference, load_reference, read_labels, sample_events
from cytopipe.preprocess.sample import preprocess
from cytopipe.synth.cohort import synth_cohort
from cytopipe.synth.sample_files import read_truth
from cytopipe.synth.truth import truth_masks

REPO = Path(__file__).resolve().parent.parent
DATA = (
    Path(os.environ.get("CYTOPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "real"
    / "flowcap1_gvhd"
)
GVHD_MARKERS = ["FSC-A", "SSC-A", "CD4", "CD8b", "CD3", "CD8"]
T_SUBSETS = ("CD4 T cells", "CD8 T cells")
SYNTH_MARKERS = ["FSC-A", "SSC-A", "viability", "CD45", "CD3", "CD19", "CD20", "IgD", "CD27",
                 "CD38", "CD24"]  # fmt: skip
SCORED = {"lymphocytes": 0.95, "t_cells": 0.95, "b_cells": 0.95, "b_naive": 0.90,
          "b_unswitched_memory": 0.90, "b_switched_memory": 0.90, "b_double_negative": 0.90,
          "b_transitional": 0.90}  # fmt: skip
MIN_TRUTH_FOR_F1 = 50


UNSCORED = ("unassigned",)  # the experts' debris, doublets and outliers: unknown, not negatives


def gvhd(seeds: int = 1) -> pd.DataFrame:
    """`seeds` > 1: both methods learn again with seeds 0..seeds-1 (the networks' initial
    weights and sampling; boosting's early-stopping split), and each file shows the mean and
    the range, so a difference within what a seed moves is seen as one."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    cfg, panel = defaults("config"), load_panel(REPO / "config" / "panel.yaml")
    files = [DATA / f"gvhd_{i:02d}.fcs" for i in range(1, 10)]
    refs, raw = [], []
    for f in files:
        labels_csv = f.with_name(f"{f.stem}_labels.csv")
        refs.append(load_reference(f, labels_csv, panel, cfg, GVHD_MARKERS))
        _, keep, _ = sample_events(f, panel, cfg, GVHD_MARKERS)
        sample = read_fcs(f)
        raw.append((sample.events[keep], read_labels(labels_csv, len(keep))[keep].astype(str)))
    rows = []
    for seed in range(seeds):
        ours = leave_one_file_out(refs, GVHD_MARKERS, UNSCORED, seed=seed)
        for i, f in enumerate(files):
            x = np.vstack([r[0] for j, r in enumerate(raw) if j != i])
            y = np.concatenate([r[1] for j, r in enumerate(raw) if j != i])
            gbm = HistGradientBoostingClassifier(random_state=seed).fit(x, y)
            found, truth = gbm.predict(raw[i][0]), raw[i][1]
            scored = ~np.isin(truth, UNSCORED)
            for pop in T_SUBSETS:
                mine = ours[(ours["file"] == f.name) & (ours["population"] == pop)].iloc[0]
                for events, f1_ours, where in (
                    ("assigned", mine["f1"], scored),
                    ("all", mine["f1_all_events"], np.ones(len(truth), dtype=bool)),
                ):
                    theirs = f1_score((found == pop)[where], (truth == pop)[where])
                    rows.append({"file": f.stem, "population": pop, "events": events,
                                 "seed": seed, "cytopipe": float(f1_ours), "gbm": theirs})  # fmt: skip
    table = pd.DataFrame(rows)
    for events, title in (
        ("assigned", "the events the experts assigned (FlowCAP-I's scoring)"),
        ("all", "all QC-kept events, the experts' unassigned counted as negatives"),
    ):
        t = table[table["events"] == events]
        per_file = t.groupby(["file", "population"])[["cytopipe", "gbm"]]
        mean = per_file.mean().round(3)
        print(f"GvHD leave one file out, F1 on {title}"
              f"{f', mean [min-max] over seeds 0-{seeds - 1}' if seeds > 1 else ''}:")  # fmt: skip
        shown = mean.astype(str)
        if seeds > 1:
            low, high = per_file.min().round(3), per_file.max().round(3)
            shown = mean.astype(str) + " [" + low.astype(str) + "-" + high.astype(str) + "]"
        print(shown.unstack("population").to_string())
        for pop in T_SUBSETS:
            p = mean.xs(pop, level="population")
            beaten = int((p["cytopipe"] > p["gbm"]).sum())
            print(f"{pop}: median {p['cytopipe'].median():.3f} vs {p['gbm'].median():.3f}; "
                  f"cytopipe better on {beaten}/{len(p)} files")  # fmt: skip
    return table


def _truth_reference(path: str, cfg, panel, markers) -> Reference:
    events, keep, _ = sample_events(path, panel, cfg, markers)
    labels = np.asarray(read_truth(path)["population"]).astype(str)
    return Reference(Path(path).name, "", events[keep], labels[keep])


def synthetic(events: int = 30_000) -> pd.DataFrame:
    cfg, panel = load_config(None), load_panel(REPO / "config" / "panel.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        sheet = synth_cohort(Path(tmp) / "c", 6, 11, events, "mixed")
        paths = list(sheet["path"])
        ref_paths = paths[::12][:5]  # spread over patients, timepoints and both instruments
        model = fit([_truth_reference(p, cfg, panel, SYNTH_MARKERS) for p in ref_paths],
                    SYNTH_MARKERS)  # fmt: skip
        rows = []
        for p in paths:
            if p in ref_paths:
                continue
            ev, keep, _ = sample_events(p, panel, cfg, SYNTH_MARKERS)
            found, _, _ = predict(model, ev[keep])
            truth = truth_masks(np.asarray(read_truth(p)["population"])[keep])
            ours = truth_masks(found)
            for pop in SCORED:
                rows.append({"file": Path(p).stem, "population": pop,
                             "truth": int(truth[pop].sum()), "found": int(ours[pop].sum()),
                             "f1": f1_score(ours[pop], truth[pop])})  # fmt: skip
    table = pd.DataFrame(rows)
    scored = table[table["truth"] >= MIN_TRUTH_FOR_F1]
    summary = scored.groupby("population")["f1"].agg(["min", "median", "count"]).round(3)
    summary["target"] = [SCORED[p] for p in summary.index]
    print(f"\nsynthetic cohort ({len(set(table['file']))} files, 5 references by truth), F1:")
    print(summary.to_string())
    b = table[(table["population"] == "b_cells") & (table["truth"] < 20)]
    ok = b["found"] <= 2 * b["truth"] + 5
    print(f"aplasia rule (B cells, truth < 20): {int(ok.sum())}/{len(b)} files hold")
    return table


def speed() -> None:
    cfg, panel = load_config(None), load_panel(REPO / "config" / "panel.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        sheet = synth_cohort(Path(tmp) / "train", 5, 12, 100_000, "mixed", timepoints=(-7, 90))
        start = time.perf_counter()
        refs = [_truth_reference(p, cfg, panel, SYNTH_MARKERS) for p in sheet["path"]]
        model = fit(refs, SYNTH_MARKERS)
        learn_s = time.perf_counter() - start
        print(f"\nlearning from {len(refs)} files of 100,000 events (reading included): "
              f"{learn_s:.1f} s")  # fmt: skip
        big = synth_cohort(Path(tmp) / "big", 1, 13, 1_000_000, "A", timepoints=(90,))
        pre = preprocess(str(big["path"][0]), panel, cfg)
        keep = pre.qc_pass
        columns = {m: v[keep] for m, v in pre.columns.items()}
        ev = np.column_stack([np.asarray(columns[m], dtype=np.float64) for m in SYNTH_MARKERS])
        template = load_template(REPO / "config" / "gating.yaml")
        start = time.perf_counter()
        autogate(template, columns)
        t_gate = time.perf_counter() - start
        start = time.perf_counter()
        predict(model, ev)
        t_model = time.perf_counter() - start
        print(f"gating {int(keep.sum())} events: model {t_model:.1f} s, template autogate "
              f"{t_gate:.1f} s (ratio {t_model / t_gate:.2f})")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["gvhd", "synthetic", "speed", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=1, help="gvhd: learn with seeds 0..N-1")
    args = parser.parse_args(argv)
    if args.part in ("gvhd", "all"):
        gvhd(args.seeds)
    if args.part in ("synthetic", "all"):
        synthetic()
    if args.part in ("speed", "all"):
        speed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
