"""Random perturbations of the real FlowCAP-I GvHD files: the T-cell panel's silent failures.

`real_fuzz.py` does this for the Lyoplate B-cell file; the GvHD files are the only real
expert-gated T-cell panel here, and `real_gating.py` changes them one way at a time (lower
voltages, a forward-scatter gain, T-cell-rich). A lab's archive differs in several ways at
once. Each file draws, from a seed nobody picks:

- one of the 9 files;
- a composition: 0-2 of the experts' populations thinned (CD4 T cells, CD8 T cells, all T
  cells, the non-T cells, the events the experts left unassigned, all events): an inverted
  CD4/CD8 ratio, lymphopenia, a T-cell-rich sample, a cleaner or smaller acquisition;
- each stain's log-amplifier channels shifted by -0.5 to +0.3 decades (another FACSCalibur's
  voltages), clipped at the range;
- forward and side scatter each x 0.6-1.5 (another scatter gain).

T cells, CD4 T cells and CD8 T cells are scored against the experts' labels on the events they
assigned (FlowCAP-I's scoring). The experts' conventions limit what any gate reaches on some
files (CD3+ events they left in 'other', CD3-dim CD8+ cells in 'other T cells'), so beside each
F1 the script prints what the best axis-parallel cuts chosen from the labels reach on that file
(`bound`: one CD3 cut for T cells; above that cut, a CD4 cut for CD4 T cells, CD8b x CD8
for CD8 T cells). A miss is an F1 below its target (T cells 0.90, files 6 and 7 0.80; CD4 and CD8 T
cells 0.90) and more than 0.03 below that bound: a cut the sample's data allowed and the gate
did not find. Each miss is printed with whether the sample listed that population or the
lymphocytes (unlike the template, a gate to review: `said_about`).

    .venv/bin/python benchmarks/gvhd_fuzz.py [--n 100] [--tsv OUT.tsv]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_gating as rg  # noqa: E402
from random_accuracy import evaluation_seeds  # noqa: E402
from real_fuzz import drawn_table  # noqa: E402

from cytopipe.gating.stats import review_rows, unlike_template  # noqa: E402
from cytopipe.ingest.fcs import read_fcs  # noqa: E402
from cytopipe.preprocess.sample import SCATTER_ONLY  # noqa: E402

SEED_LABEL = "cytopipe GvHD fuzz v1"
FILES = range(1, 10)
STAINS = ("CD4", "CD8b", "CD3", "CD8")
POOLS = ("cd4_t", "cd8_t", "t_cells", "others", "unassigned", "all")
SHIFT = (-0.5, 0.3)  # decades
SCATTER_GAIN = (0.6, 1.5)
TARGET = 0.90
# population -> (experts' labels, stains whose axis-parallel cuts bound it)
SCORED = {
    "t_cells": (rg.T_LABELS, ("CD3",)),
    "t_cd4": (("CD4 T cells",), ("CD3", "CD4")),
    "t_cd8": (("CD8 T cells",), ("CD3", "CD8b", "CD8")),
}
SLACK = 0.03
BINS = 32


def draw(rng: np.random.Generator, labels: pd.Series) -> tuple[np.ndarray, dict]:
    """Which events stay, and the perturbations of one file."""
    pools = {
        "cd4_t": (labels == "CD4 T cells").to_numpy(),
        "cd8_t": (labels == "CD8 T cells").to_numpy(),
        "t_cells": labels.isin(rg.T_LABELS).to_numpy(),
        "others": (labels == "other").to_numpy(),
        "unassigned": (labels == "unassigned").to_numpy(),
        "all": np.ones(len(labels), dtype=bool),
    }
    keep = np.ones(len(labels), dtype=bool)
    params: dict = {}
    for pool in rng.choice(POOLS, rng.integers(0, 3), replace=False):
        share = float(rng.choice([0.1, 0.3, 0.5]))
        if pool == "all":
            share = float(rng.uniform(0.3, 0.8))
        members = np.flatnonzero(pools[pool] & keep)
        keep[rng.choice(members, int(len(members) * (1 - share)), replace=False)] = False
        params[str(pool)] = round(share, 2)
    params["decades"] = {s: round(float(rng.uniform(*SHIFT)), 2) for s in STAINS}
    params["fsc"] = round(float(np.exp(rng.uniform(*np.log(SCATTER_GAIN)))), 2)
    params["ssc"] = round(float(np.exp(rng.uniform(*np.log(SCATTER_GAIN)))), 2)
    return keep, params


def perturbed(sample, keep: np.ndarray, params: dict) -> np.ndarray:
    """The file's events with the draw's voltages and scatter gains, clipped at the range."""
    events = np.array(sample.events, dtype=float)[keep]
    for stain, decades in params["decades"].items():
        events[:, sample.pns.index(stain)] += decades * rg.DECADE
    events[:, sample.pnn.index("FSC-H")] *= params["fsc"]
    events[:, sample.pnn.index("SSC-H")] *= params["ssc"]
    return np.clip(events, 0, np.asarray(sample.pnr) - 1)


def corner_f1(values: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 of every axis-parallel corner (each stain above its cut), the cuts on a grid of BINS
    channel bins per stain: what the labels allow such a gate on this file."""
    edges = [np.linspace(0, 1024, BINS + 1)] * values.shape[1]
    pos = np.histogramdd(values[truth], bins=edges)[0]
    neg = np.histogramdd(values[~truth], bins=edges)[0]
    for axis in range(values.shape[1]):  # events at or above each corner
        pos = np.flip(np.cumsum(np.flip(pos, axis), axis), axis)
        neg = np.flip(np.cumsum(np.flip(neg, axis), axis), axis)
    return 2 * pos / np.maximum(2 * pos + neg + (truth.sum() - pos), 1)


def bounds(events: np.ndarray, labels: pd.Series, pns: list[str]) -> dict[str, float]:
    """Per scored population, the best F1 of axis-parallel cuts chosen from the experts'
    labels: T cells one CD3 cut; CD4 and CD8 T cells a CD4 (CD8b x CD8) corner above that
    same CD3 cut, as our definitions require CD3 (in file 2 the experts' CD8 T cells include
    CD3- CD8+ events, which a free CD3 cut would reach)."""
    assigned = (labels != "unassigned").to_numpy()
    out, t_cut = {}, None
    for pop, (theirs, stains) in SCORED.items():
        truth = labels.isin(theirs).to_numpy()[assigned]
        f1 = corner_f1(events[assigned][:, [pns.index(s) for s in stains]], truth)
        if t_cut is None:
            t_cut = int(np.argmax(f1))
        else:
            f1 = f1[t_cut]
        out[pop] = float(f1.max())
    return out


def score(seed: int, i: int, path: Path, events, labels: pd.Series, pns) -> list[dict]:
    masks, gated = rg.gated_sample(path, SCATTER_ONLY)
    said = unlike_template(gated.stats)
    review = ",".join(review_rows(gated.stats)["population"])
    best = bounds(events, labels, pns)
    rows = []
    for pop, (theirs, _) in SCORED.items():
        row = rg._expert_row(f"gvhd_{i:02d}", pop, masks, labels, theirs, None)
        target = rg.GVHD_TARGET.get(i, TARGET) if pop == "t_cells" else TARGET
        bound = best[pop]
        miss = row["f1"] < min(target, bound - SLACK)
        rows.append({"seed": seed, "file": i, "population": pop, "ours": row["ours"],
                     "ref": row["ref"], "f1": round(row["f1"], 3), "bound": round(bound, 3),
                     "target": target, "miss": bool(miss), "unlike_template": said,
                     "to_review": review})  # fmt: skip
    return rows


def run(data: Path, seeds) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            i = int(rng.choice(FILES))
            path = data / "flowcap1_gvhd" / f"gvhd_{i:02d}.fcs"
            sample = read_fcs(path)
            labels = pd.read_csv(path.with_name(f"gvhd_{i:02d}_labels.csv"))["label"]
            keep, params = draw(rng, labels)
            events = perturbed(sample, keep, params)
            out = rg._write_like(sample, events, Path(tmp) / f"gvhd_{i:02d}.fcs",
                                 rg.declared_ranges(sample))  # fmt: skip
            kept = labels[keep].reset_index(drop=True)
            for row in score(seed, i, out, events, kept, list(sample.pns)):
                rows.append({**row, "params": params})
    return pd.DataFrame(rows)


LINEAGE = {"t_cells": ("lymphocytes", "t_cells"), "t_cd4": ("lymphocytes", "t_cells", "t_cd4"),
           "t_cd8": ("lymphocytes", "t_cells", "t_cd8")}  # fmt: skip


def said_about(row) -> bool:
    """Whether the sample listed the missed population or a gate above it (the lymphocytes):
    to review, or unlike the template. The debris gate ('cells'), to review where the
    FACSCalibur's threshold left no valley to cut at and the lineage markers could not confirm
    the template's position (3 of the 9 files as acquired), says nothing about the T cells."""
    listed = set(str(row["to_review"] or "").split(","))
    for entry in str(row["unlike_template"] or "").split(" | "):
        listed |= {p.strip() for p in entry.split(":")[0].split(",")}
    return bool(listed & set(LINEAGE[row["population"]]))


def silent(table: pd.DataFrame) -> pd.DataFrame:
    """Missed targets whose sample listed neither the population nor a gate above it."""
    missed = table[table["miss"]]
    return missed[~missed.apply(said_about, axis=1)]


def fuzz_seeds(n: int, label: str = SEED_LABEL) -> range:
    """`n` consecutive seeds from a base hashed from `label`: nobody picks them."""
    return evaluation_seeds(n, label)


def main() -> None:
    args, table = drawn_table(__doc__, run, fuzz_seeds)
    missed = table[table["miss"]]
    quiet = silent(table)
    print(f"{args.n} files, {len(table)} targets, {len(missed)} missed in "
          f"{missed['seed'].nunique()} files; {len(quiet)} with nothing said")  # fmt: skip
    summary = table.groupby("population")[["f1", "bound"]].describe(percentiles=[0.05, 0.5])
    with pd.option_context("display.width", 250, "display.max_colwidth", 160):
        print(summary.round(3).to_string())
        if len(missed):
            missed = missed.assign(said=missed.apply(said_about, axis=1))
            columns = ["seed", "file", "population", "ours", "ref", "f1", "bound", "said", "params"]
            print(f"\nmissed:\n{missed[columns].to_string(index=False)}")


if __name__ == "__main__":
    main()
