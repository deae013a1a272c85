"""Training the cohort model: pool a subsample of every usable sample's gated events, fit the SOM
and its consensus metaclusters, number and annotate them.

Why a cohort model: a longitudinal study asks "how much of metacluster 3 is there at day 180",
which only makes sense when metacluster 3 is the same cells at every timepoint. So one SOM is
trained on a pooled subsample of every sample's gated lymphocytes, saved, and each sample is then
mapped onto it in its own step (cytopipe.cluster.mapping).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from cytopipe import __version__
from cytopipe.cluster.annotation import annotate, skipped_rules
from cytopipe.cluster.metaclustering import consensus_metaclusters
from cytopipe.cluster.model import Model, untrained_model
from cytopipe.cluster.sample_events import Unusable, parquet_columns, read_sample
from cytopipe.cluster.settings import Settings
from cytopipe.cluster.som import nearest_node, train_som
from cytopipe.errors import ConfigError
from cytopipe.results import sample_id_of_events


def group_medians(data: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of every column per group (NaN for an empty group); one sort, no per-event loop."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    out = np.full((n_groups, data.shape[1]), np.nan)
    sorted_data = data[order]
    for g in range(n_groups):
        if bounds[g + 1] > bounds[g]:
            out[g] = np.median(sorted_data[bounds[g] : bounds[g + 1]], axis=0)
    return out


def fit(data: np.ndarray, markers: Sequence[str], settings: Settings) -> Model:
    """Train the SOM and its metaclusters on pooled events (rows) of `markers` (columns)."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    codes = train_som(x, settings.xdim, settings.ydim, settings.epochs, settings.radius)
    node_of = nearest_node(x, codes)
    # Nodes no training event maps to sit between populations (the map's interpolation); left in,
    # they chain populations together and form phantom metaclusters. They join the metacluster of
    # the nearest node that holds events instead.
    live = np.bincount(node_of, minlength=len(codes)) > 0
    if live.sum() <= max(settings.k or settings.k_range[1], 2):
        live[:] = True
    meta_live, k, scores = consensus_metaclusters(
        codes[live].astype(np.float64),
        settings.k,
        settings.k_range,
        settings.resamples,
        settings.node_fraction,
        settings.linkage,
        settings.seed,
    )
    meta = np.empty(len(codes), dtype=np.int32)
    meta[live] = meta_live
    if not live.all():
        meta[~live] = meta_live[nearest_node(codes[~live], codes[live])]
    # metacluster 1 = the largest in the training data: stable, readable numbering
    sizes = np.bincount(meta[node_of], minlength=k)
    rank = np.empty(k, dtype=np.int32)
    rank[np.lexsort((np.arange(k), -sizes))] = np.arange(k)
    meta = rank[meta]
    medians = group_medians(x, meta[node_of], k)
    for g in np.flatnonzero(np.isnan(medians[:, 0])):  # only empty nodes (tiny training set)
        medians[g] = codes[meta == g].mean(axis=0)
    labels, pops = annotate(medians, markers, settings.rules)
    info = {
        "k": k,
        "pac": {str(kk): round(v, 6) for kk, v in scores.items()},
        "training_events": int(len(x)),
        "empty_nodes": int((~live).sum()),
        "training_events_per_metacluster": [
            int(c) for c in np.bincount(meta[node_of], minlength=k)
        ],
        "skipped_rules": skipped_rules(markers, settings.rules),
    }
    return Model(
        list(markers), settings.xdim, settings.ydim, codes, meta, medians, labels, pops, info
    )


def train_files(
    events: Sequence[str | os.PathLike],
    gates: Sequence[str | os.PathLike],
    settings: Settings,
    sample_ids: Sequence[str] | None = None,
    infos: Sequence[str | os.PathLike] | None = None,
) -> Model:
    """Pool up to events_per_sample gated events of every usable sample and fit the model.

    Markers: the configured ones present in every usable sample. Unusable samples (failed
    upstream, no gates) are skipped and listed in the model's info."""
    if len(events) != len(gates) or (infos is not None and len(infos) != len(events)):
        raise ConfigError(
            f"{len(events)} events files, {len(gates)} gates files and "
            f"{len(infos) if infos is not None else len(events)} preprocessing records",
            hint="give one gates.parquet (and --info record) per events file, in the same order",
        )
    ids = list(sample_ids) if sample_ids else [sample_id_of_events(p) for p in events]
    skipped: dict[str, str] = {}
    usable: list[int] = []
    columns: list[set[str]] = []
    for i, (ev, gt) in enumerate(zip(events, gates, strict=True)):
        try:
            ev_cols, n_ev = parquet_columns(ev)
            gate_cols, _ = parquet_columns(gt)
        except Unusable as exc:
            skipped[ids[i]] = str(exc)
            continue
        if n_ev == 0 or settings.population not in gate_cols:
            skipped[ids[i]] = "no events or no gates (the sample failed upstream)"
            continue
        usable.append(i)
        columns.append(set(ev_cols))
    markers = [m for m in settings.markers if all(m in c for c in columns)]
    dropped = {
        m: sorted(ids[i] for i, c in zip(usable, columns, strict=True) if m not in c)
        for m in settings.markers
        if m not in markers
    }
    info: dict = {"skipped_samples": skipped, "dropped_markers": dropped}
    parts, used = [], []
    for i in usable:
        rng = np.random.default_rng([settings.seed, i])
        try:
            s = read_sample(
                events[i],
                gates[i],
                markers,
                settings,
                ids[i],
                settings.events_per_sample,
                rng,
                infos[i] if infos is not None else None,
            )
        except Unusable as exc:
            skipped[ids[i]] = str(exc)
            continue
        if len(s.data):
            parts.append(s.data)
            used.append(ids[i])
    pooled = np.concatenate(parts) if parts else np.zeros((0, len(markers)), np.float32)
    info.update(
        {
            "samples": used,
            "events_per_sample": settings.events_per_sample,
            "scale": str(settings.scale) if settings.scale else "as preprocessed",
            "settings": settings.raw,
            "cytopipe_version": __version__,
        }
    )
    need = max(settings.min_events, settings.n_nodes)
    if not markers:
        return untrained_model("no clustering marker is present in every usable sample", info)
    if len(pooled) < need:
        return untrained_model(
            f"only {len(pooled)} gated {settings.population} events in {len(used)} usable "
            f"sample(s); training needs at least {need}",
            info,
        )
    model = fit(pooled, markers, settings)
    model.info = {**info, **model.info}
    return model
