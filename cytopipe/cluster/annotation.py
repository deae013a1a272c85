"""Annotation of metaclusters by rules, and their phenotype in words.

Each metacluster's median expression is read against rules in config/clustering.yaml
("CD19: pos, IgD: pos, CD27: neg" -> B naive); no rule -> "unassigned".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.cluster.settings import Rule

UNASSIGNED = "unassigned"


def annotate(
    medians: np.ndarray, markers: Sequence[str], rules: Sequence[Rule]
) -> tuple[list[str], list[tuple[str, ...]]]:
    """Label and populations of every metacluster: the first rule all of whose markers the model
    has and whose intervals hold every median; otherwise "unassigned"."""
    col = {m: j for j, m in enumerate(markers)}
    n = len(medians)
    labels: list[str | None] = [None] * n
    pops: list[tuple[str, ...]] = [()] * n
    for rule in rules:
        if not set(rule.when) <= set(col):
            continue
        ok = np.ones(n, dtype=bool)
        for marker, (lo, hi) in rule.when.items():
            v = medians[:, col[marker]]
            ok &= (v >= lo) & (v < hi)
        for i in np.flatnonzero(ok):
            if labels[i] is None:
                labels[i], pops[i] = rule.label, rule.populations
    return [lab or UNASSIGNED for lab in labels], pops


def skipped_rules(markers: Sequence[str], rules: Sequence[Rule]) -> dict[str, list[str]]:
    """Rules that cannot apply because the model lacks some of their markers."""
    return {
        r.label: sorted(set(r.when) - set(markers))
        for r in rules
        if not set(r.when) <= set(markers)
    }


def phenotype(values: np.ndarray, markers: Sequence[str], levels: Mapping) -> str:
    """'CD3- CD19+ CD38hi ...': the median of each marker read against its levels."""
    parts = []
    for marker, v in zip(markers, values, strict=True):
        lv = levels.get(marker, levels["default"])
        parts.append(f"{marker}{'hi' if v >= lv['high'] else '+' if v >= lv['pos'] else '-'}")
    return " ".join(parts)
