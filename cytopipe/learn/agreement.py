"""A learned model's opinion of one sample beside the template's: what it found, where it is
unsure or outside its references, and where the two disagree.

Two independent methods (the lab's learned gating and the template) that agree on a population
make its number more credible; where they disagree, or the sample is unlike every file the model
learned from, the sample is listed to review rather than one of them silently trusted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cytopipe.gating.stats import f1_score
from cytopipe.learn.model import Model, review

MIN_COMPARED = 20  # fewer events on both sides: F1 says nothing, no disagreement is raised


def learned_summary(
    model: Model,
    labels: np.ndarray,
    confidence: np.ndarray,
    novel: np.ndarray,
    gates: Mapping[str, np.ndarray],
    compare: Mapping[str, str],
    min_f1: float,
) -> dict:
    """learned.json of one sample: the model's populations (events, mean confidence, share
    unlike the references, review), the agreement of each `compare` pair (template population
    -> model population, F1 over the same events) and the disagreements to review. `labels`,
    `confidence`, `novel` and each gate mask are over the same events (QC-kept)."""
    found = review(model, labels, confidence, novel)
    populations = [
        {
            "population": p,
            "events": info["events"],
            "mean confidence": info["confidence"],
            "unlike the references (%)": round(100 * info["unlike_share"], 1),
            "to review": "yes" if info["review"] else "",
        }
        for p, info in found["populations"].items()
    ]
    agreement, disagreements = [], []
    for gate, learned in compare.items():
        row = {"gate": gate, "model population": learned}
        if gate not in gates or learned not in model.populations:
            missing = "the sample's gates" if gate not in gates else "the model"
            agreement.append({**row, "f1": None, "note": f"not in {missing}"})
            continue
        ours, theirs = np.asarray(gates[gate], dtype=bool), labels == learned
        f1 = round(f1_score(ours, theirs), 3)
        agreement.append({**row, "gate events": int(ours.sum()), "model events": int(theirs.sum()),
                          "f1": f1})  # fmt: skip
        if ours.sum() + theirs.sum() >= MIN_COMPARED and f1 < min_f1:
            disagreements.append(f"{gate} vs the learned {learned}: F1 {f1:.2f} < {min_f1:g}")
    unlike = [p for p, info in found["populations"].items() if info["review"]]
    if unlike:
        disagreements.append(f"unlike the files the model learned from: {', '.join(unlike)}")
    elif found["review"]:
        disagreements.append(
            f"{100 * found['unlike_share']:.0f}% of the events unlike the files the model "
            "learned from"
        )
    return {
        "status": "ok",
        "learned_from": [r.get("name") for r in model.references],
        "markers": list(model.markers),
        "populations": populations,
        "agreement": agreement,
        "disagreements": disagreements,
    }
