"""Automated gating on real, reference-gated files (../shared/data/real, see its README).

Our generator is not evidence: this script gates real acquisitions with the unedited template
and prints, per population, F1 against the reference and the issue's target, so every change
to the gating is measured on data we did not write.

- Lyoplate B-cell panel (BD LSRFortessa, human PBMC) against openCyto's automated gates (a peer
  tool, not truth).
- FlowCAP-I GvHD (FACSCalibur, a T-cell panel without CD19 or CD45) against expert labels.

    .venv/bin/python benchmarks/real_gating.py [--data ../shared/data/real]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.config import load_config
from cytopipe.gating.sample import event_masks, gate
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (
    Path(os.environ.get("CYTOPIPE_SHARED_DATA", REPO.parent / "shared" / "data")) / "real"
)

# our population -> (openCyto gate, target F1 of the issue)
LYOPLATE = {
    "b_cells": ("Live/CD19andCD20", 0.95),
    "b_naive": ("Live/CD19andCD20/IgD+CD27-", 0.90),
    "b_unswitched_memory": ("Live/CD19andCD20/IgD+CD27+", 0.70),
    "b_switched_memory": ("Live/CD19andCD20/IgD-CD27+", 0.70),
    "b_double_negative": ("Live/CD19andCD20/IgD-CD27-", 0.70),
    "b_transitional": ("Live/CD19andCD20/Transitional", 0.70),
    "plasmablasts": ("Live/CD19and!CD20/Plasmablasts", 0.70),
    "t_cells": ("Live/CD3", None),
    "lymphocytes": ("lymph", None),
}
T_LABELS = ("CD4 T cells", "CD8 T cells", "other T cells")
GVHD_TARGET = {6: 0.80, 7: 0.80}  # the experts left CD3+ events outside their T populations


def f1(ours: np.ndarray, ref: np.ndarray) -> float:
    total = int(ours.sum() + ref.sum())
    return 2.0 * int((ours & ref).sum()) / total if total else float("nan")


def gated(path: Path, required=None) -> pd.DataFrame:
    """One boolean column per population, file event order (QC-removed events False)."""
    cfg = load_config(REPO / "config" / "config.yaml")
    kwargs = {"required": required} if required else {}
    pre = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg, **kwargs)
    keep = pre.qc_pass
    columns = {m: v[keep] for m, v in pre.columns.items()}
    result = gate(path.stem, columns, load_template(REPO / "config" / "gating.yaml"))
    return event_masks(result.masks, keep)


def lyoplate(data: Path) -> list[dict]:
    masks = gated(data / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    ref = pd.read_csv(data / "lyoplate_bcell" / "lyoplate_bcell_C01_opencyto_gates.csv")
    rows = []
    for ours, (theirs, target) in LYOPLATE.items():
        mask = masks[ours].to_numpy() if ours in masks else np.zeros(len(ref), dtype=bool)
        rows.append({"file": "lyoplate C01", "population": ours, "reference": f"openCyto {theirs}",
                     "ours": int(mask.sum()), "ref": int(ref[theirs].sum()),
                     "f1": f1(mask, ref[theirs].to_numpy(bool)), "target": target})  # fmt: skip
    return rows


def gvhd(data: Path) -> list[dict]:
    rows = []
    for i in range(1, 10):
        path = data / "flowcap1_gvhd" / f"gvhd_{i:02d}.fcs"
        masks = gated(path, required=SCATTER_ONLY)
        labels = pd.read_csv(path.with_name(f"gvhd_{i:02d}_labels.csv"))["label"]
        t = labels.isin(T_LABELS).to_numpy()
        mask = masks["t_cells"].to_numpy() if "t_cells" in masks else np.zeros(len(t), dtype=bool)
        rows.append({"file": path.stem, "population": "t_cells", "reference": "experts' T cells",
                     "ours": int(mask.sum()), "ref": int(t.sum()), "f1": f1(mask, t),
                     "target": GVHD_TARGET.get(i, 0.90)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    table = pd.DataFrame([*lyoplate(args.data), *gvhd(args.data)])
    table["meets"] = np.where(
        table["target"].isna(), "", np.where(table["f1"] >= table["target"], "yes", "NO")
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    scored = table.dropna(subset=["target"])
    print(
        f"\nreal_gating targets_met={int((scored['f1'] >= scored['target']).sum())}/{len(scored)}"
    )


if __name__ == "__main__":
    main()
