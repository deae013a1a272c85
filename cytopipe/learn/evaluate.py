"""How close a learned model gets to the lab's experts on the lab's own files, before the lab
trusts it: leave one reference file out, learn from the others, gate the one left out, and
score each population against the expert's labels (F1, and the count error).

Events an expert labelled as not gated (`unscored`, e.g. FlowCAP-I's 'unassigned' debris,
doublets and outliers) are unknown, not negatives: the F1 leaves them out, as FlowCAP-I scored
its challenge and as benchmarks/real_gating.py scores the template on the same files; the F1
counting them as negatives is kept beside it (`f1_all_events`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from cytopipe.gating.stats import f1_score
from cytopipe.learn.model import fit, predict
from cytopipe.learn.references import Reference

COLUMNS = ["file", "population", "expert", "model", "f1", "f1_all_events", "count_error_pct",
           "unlike_share"]  # fmt: skip


def leave_one_file_out(
    refs: Sequence[Reference], markers: Sequence[str], unscored: Collection[str] = (), **fit_args
) -> pd.DataFrame:
    """One row per (file left out, population); needs at least two reference files.
    `expert`/`model` counts and the count error are on the scored events."""
    if len(refs) < 2:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for i, held in enumerate(refs):
        model = fit([r for j, r in enumerate(refs) if j != i], markers, **fit_args)
        found, _, novel = predict(model, held.events)
        truth = held.labels.astype(str)
        scored = ~np.isin(truth, list(unscored))
        for pop in sorted((set(model.populations) | set(truth)) - set(unscored)):
            mine, theirs = found == pop, truth == pop
            n_t, n_m = int(theirs[scored].sum()), int(mine[scored].sum())
            rows.append({
                "file": held.name, "population": pop, "expert": n_t, "model": n_m,
                "f1": round(f1_score(mine[scored], theirs[scored]), 4),
                "f1_all_events": round(f1_score(mine, theirs), 4),
                "count_error_pct": round(100 * (n_m - n_t) / n_t, 2) if n_t else np.nan,
                "unlike_share": round(float(novel.mean()), 4),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
