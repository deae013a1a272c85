"""How close a learned model gets to the lab's experts on the lab's own files, before the lab
trusts it: leave one reference file out, learn from the others, gate the one left out, and
score each population against the expert's labels (F1, and the count error)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cytopipe.gating.stats import f1_score
from cytopipe.learn.model import fit, predict
from cytopipe.learn.references import Reference

COLUMNS = ["file", "population", "expert", "model", "f1", "count_error_pct", "unlike_share"]


def leave_one_file_out(
    refs: Sequence[Reference], markers: Sequence[str], **fit_args
) -> pd.DataFrame:
    """One row per (file left out, population); needs at least two reference files."""
    if len(refs) < 2:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for i, held in enumerate(refs):
        model = fit([r for j, r in enumerate(refs) if j != i], markers, **fit_args)
        found, _, novel = predict(model, held.events)
        truth = held.labels.astype(str)
        for pop in sorted(set(model.populations) | set(truth)):
            mine, theirs = found == pop, truth == pop
            n_t, n_m = int(theirs.sum()), int(mine.sum())
            rows.append({
                "file": held.name, "population": pop, "expert": n_t, "model": n_m,
                "f1": round(f1_score(mine, theirs), 4),
                "count_error_pct": round(100 * (n_m - n_t) / n_t, 2) if n_t else np.nan,
                "unlike_share": round(float(novel.mean()), 4),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
