"""One sample mapped onto the cohort model: its clusters, their annotation, and the agreement
with the automated gates (the content of clusters.json, which the report's "Clustering" section
reads).

Agreement: per sample, each gate population vs the union of the metaclusters annotated with it
(F1); a low F1 on enough events is flagged, because two independent methods disagreeing is what a
reviewer should look at first. A population of the settings' `continuum` list (B-cell subsets)
whose gate found no valley where it was cut (`populations_found` 1 in stats.tsv: real memory B
cells in IgD and CD27) is compared but not judged: the metaclusters cut a continuum where their
nodes fall, not where the template does, and the two disagree on every such sample (the real
Lyoplate file: unswitched and switched memory F1 0.38 and 0.46, listed to review as acquired).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cytopipe.cluster.annotation import phenotype
from cytopipe.cluster.common_scale import parse_common
from cytopipe.cluster.model import Model
from cytopipe.cluster.sample_events import SampleEvents, Unusable, read_sample
from cytopipe.cluster.settings import Settings
from cytopipe.cluster.som import nearest_node
from cytopipe.results import sample_id_of_events


def assign(model: Model, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SOM node and metacluster (0-based) of every event."""
    nodes = nearest_node(data, model.codes)
    return nodes, model.node_metacluster[nodes]


def membership(model: Model, populations: Sequence[str]) -> np.ndarray:
    """(k, len(populations)) bool: which metaclusters are annotated with which population."""
    return np.array(
        [[p in pops for p in populations] for pops in model.populations], dtype=bool
    ).reshape(model.k, len(populations))


def agreement(
    meta: np.ndarray,
    model: Model,
    gates: Mapping[str, np.ndarray],
    settings: Settings,
    continuum: frozenset[str] = frozenset(),
) -> tuple[list[dict], list[str]]:
    """F1 of each gate population vs the union of its metaclusters, and the disagreements.

    Judged only when gate or clusters hold at least min_events events; populations without a gate
    (skipped by the panel), without an annotated metacluster or cut on a continuum (`continuum`,
    see the module) are listed but not judged."""
    pops = settings.agreement_populations
    member = membership(model, pops)
    rows, flags = [], []
    for j, pop in enumerate(pops):
        gate = gates.get(pop)
        in_clusters = member[:, j][meta]
        row = {"population": pop, "gate_events": None, "cluster_events": int(in_clusters.sum())}
        row.update({"both_events": None, "f1": None})
        if gate is None:
            rows.append({**row, "status": "no gate"})
            continue
        n_gate = int(np.count_nonzero(gate))
        row["gate_events"] = n_gate
        if not member[:, j].any():
            rows.append({**row, "status": "no metacluster"})
            continue
        both = int(np.count_nonzero(gate & in_clusters))
        n_clu = row["cluster_events"]
        f1 = 2.0 * both / (n_gate + n_clu) if n_gate + n_clu else 1.0
        row.update({"both_events": both, "f1": round(f1, 4)})
        if max(n_gate, n_clu) < settings.min_agreement_events:
            status = "too few events"
        elif pop in continuum and pop in settings.continuum_populations:
            status = "continuum: not judged"
        elif f1 < settings.min_f1:
            status = "disagree"
            flags.append(
                f"{pop}: F1 {f1:.2f} < {settings.min_f1:g} (gate {n_gate} events, "
                f"clusters {n_clu}, {both} in both)"
            )
        else:
            status = "agree"
        rows.append({**row, "status": status})
    return rows, flags


def summarize(
    sample: SampleEvents, model: Model, settings: Settings, continuum: frozenset[str] = frozenset()
) -> dict:
    """The clusters.json content of one mapped sample."""
    nodes, meta = assign(model, sample.data)
    n = len(nodes)
    node_counts = np.bincount(nodes, minlength=len(model.codes))
    meta_counts = np.bincount(meta, minlength=model.k)
    nodes_per_meta = np.bincount(model.node_metacluster, minlength=model.k)
    pct_key = f"% of {settings.population}"
    levels = settings.levels
    clusters = [
        {
            "metacluster": g + 1,
            "label": model.labels[g],
            "events": int(meta_counts[g]),
            pct_key: round(100.0 * meta_counts[g] / n, 2) if n else None,
            "nodes": int(nodes_per_meta[g]),
            "phenotype": phenotype(model.medians[g], model.markers, levels),
        }
        for g in range(model.k)
    ]
    by_label: dict[str, int] = {}
    for g in range(model.k):
        by_label[model.labels[g]] = by_label.get(model.labels[g], 0) + int(meta_counts[g])
    rows, flags = agreement(meta, model, sample.gates, settings, continuum)
    return {
        "sample_id": sample.sample_id,
        "status": "ok",
        "population": settings.population,
        "events": n,
        "events_not_finite": sample.n_dropped,
        "rescaled_from": sample.rescaled,
        "model": _model_summary(model),
        "clusters": clusters,
        "labels": [
            {"label": lab, "events": c, pct_key: round(100.0 * c / n, 2) if n else None}
            for lab, c in by_label.items()
        ],
        "nodes": {
            "metacluster": [int(m) + 1 for m in model.node_metacluster],
            "events": [int(c) for c in node_counts],
            "fraction": [round(float(c) / n, 6) if n else 0.0 for c in node_counts],
        },
        "agreement": rows,
        "disagreements": flags,
    }


def not_available(sample_id: str, reason: str) -> dict:
    """clusters.json of a sample that could not be clustered (failed upstream, no events...)."""
    return {"sample_id": sample_id, "status": "not available", "reason": reason}


def _model_summary(model: Model) -> dict:
    info = model.info
    return {
        "markers": model.markers,
        "grid": f"{model.xdim}x{model.ydim}",
        "metaclusters": model.k,
        "training_samples": len(info.get("samples") or []),
        "training_events": info.get("training_events"),
    }


def map_files(
    events: str | os.PathLike,
    gates: str | os.PathLike,
    model: Model,
    settings: Settings,
    sample_id: str | None = None,
    info: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
) -> dict:
    """clusters.json content of one sample; "not available" with the reason when it cannot be.

    The sample is put on the scale the model was trained on, whatever `settings` say. `stats`:
    the sample's stats.tsv, which says which gates were cut on a continuum."""
    sid = sample_id or sample_id_of_events(events)
    if not model.trained:
        return not_available(sid, f"no clustering model: {model.info.get('reason', 'untrained')}")
    try:
        trained = parse_common((model.info.get("settings") or {}).get("scale"), "the model")
        settings = dataclasses.replace(settings, scale=trained)
        sample = read_sample(events, gates, model.markers, settings, sid, info_path=info)
    except Unusable as exc:
        return not_available(sid, str(exc))
    return summarize(sample, model, settings, cut_on_continuum(stats) if stats else frozenset())


def cut_on_continuum(stats: str | os.PathLike) -> frozenset[str]:
    """The populations of a stats.tsv whose gate found one population where it was cut (none
    for stats written before the column existed)."""
    table = pd.read_csv(stats, sep="\t")
    if not {"population", "populations_found"} <= set(table.columns):
        return frozenset()
    return frozenset(table.loc[table["populations_found"] == 1, "population"].astype(str))
