"""A lab's gating learned from its expert-gated files: a nearest-neighbour model of the expert's
populations on cytopipe's own transform, small, deterministic for a seed, saved as versioned JSON.

Why nearest neighbours: expert gates have every shape (polygons, quadrants, boolean gates), and
a vote among the closest reference events follows any of them without choosing a gate type; the
model is just reference events and their labels, which JSON holds without pickle. Per class at
most `per_class` events are kept (class-balanced, so rare populations have neighbours), and each
vote is weighted back by the class's true share of the reference events, so the balance does
not inflate rare populations.

Each event gets the winning population and a confidence (its share of the weighted vote). A new
event farther from the references than REACH_Q of the reference events are from their own
neighbours is "unlike the references": a population with many such events, or a file where
many are, is listed for review (a different panel brightness, an instrument change, an unusual
composition).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cytopipe.atomic import atomic_path
from cytopipe.errors import ConfigError
from cytopipe.learn.references import Reference

FORMAT = "cytopipe gating model"
VERSION = 1
REACH_Q = 0.99  # novelty: beyond the 99th percentile of the references' own neighbour distance
UNLIKE_SHARE = 0.10  # a population (or file) with more novel events than this is unlike


@dataclass(frozen=True)
class Model:
    markers: tuple[str, ...]
    populations: tuple[str, ...]
    center: np.ndarray  # per marker: median of the reference events
    scale: np.ndarray  # per marker: IQR (events are compared in these units)
    events: np.ndarray  # kept reference events, standardized
    labels: np.ndarray  # population index of each kept event
    weights: np.ndarray  # per population: true share / kept share (vote weight)
    k: int
    reach: float  # novelty distance (standardized units)
    references: tuple[dict, ...] = ()  # the files learned from: name, sha256, counts
    settings: dict = field(default_factory=dict)  # the config sections the events were made with
    # population -> parent in the expert's hierarchy (from the references' memberships): an
    # event labelled with a population is a member of its ancestors too
    parents: dict = field(default_factory=dict)


def fit(
    refs: Sequence[Reference],
    markers: Sequence[str],
    *,
    per_class: int = 3000,
    k: int = 15,
    seed: int = 0,
    settings: Mapping | None = None,
) -> Model:
    """Learn the expert's populations from reference files (see the module)."""
    if not refs:
        raise ConfigError("no reference files to learn from")
    events = np.vstack([r.events for r in refs])
    labels = np.concatenate([r.labels for r in refs]).astype(str)
    populations = tuple(sorted(set(labels)))
    index = np.searchsorted(populations, labels)
    center = np.median(events, axis=0)
    q1, q3 = np.percentile(events, [25, 75], axis=0)
    scale = np.where(q3 - q1 > 0, q3 - q1, 1.0)
    z = (events - center) / scale
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(len(populations)):
        rows = np.flatnonzero(index == c)
        kept.append(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False))
    keep = np.sort(np.concatenate(kept))
    true_share = np.bincount(index, minlength=len(populations)) / len(index)
    kept_share = np.bincount(index[keep], minlength=len(populations)) / len(keep)
    weights = np.where(kept_share > 0, true_share / np.maximum(kept_share, 1e-12), 0.0)
    k = min(k, len(keep) - 1)
    reach = _reach(z[keep], k)
    files = tuple(
        {
            "name": r.name,
            "sha256": r.sha256,
            "events": int(len(r.labels)),
            "populations": {p: int(np.sum(r.labels.astype(str) == p)) for p in populations},
        }
        for r in refs
    )
    parents = {p: q for r in refs for p, q in r.parents.items()}  # every level of it
    return Model(
        tuple(markers), populations, center, scale, z[keep], index[keep], weights, k, reach,
        files, dict(settings or {}), parents,
    )  # fmt: skip


def _neighbours(reference: np.ndarray, k: int):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k).fit(reference)


def _reach(z: np.ndarray, k: int) -> float:
    dist, _ = _neighbours(z, k + 1).kneighbors(z)  # the first neighbour is the event itself
    return float(np.quantile(dist[:, 1:].mean(axis=1), REACH_Q))


def predict(model: Model, events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(population name, confidence 0-1, unlike the references) per event."""
    z = (np.asarray(events, dtype=np.float64) - model.center) / model.scale
    n_pop = len(model.populations)
    names = np.array(model.populations, dtype=object)
    if len(z) == 0:
        return names[:0], np.zeros(0), np.zeros(0, dtype=bool)
    dist, idx = _neighbours(model.events, model.k).kneighbors(z)
    votes = np.zeros((len(z), n_pop))
    neighbour_labels = model.labels[idx]
    w = model.weights[neighbour_labels] / np.maximum(dist, 1e-9)  # distance-weighted
    for c in range(n_pop):
        votes[:, c] = np.where(neighbour_labels == c, w, 0.0).sum(axis=1)
    winner = votes.argmax(axis=1)
    confidence = votes[np.arange(len(z)), winner] / np.maximum(votes.sum(axis=1), 1e-12)
    novel = dist.mean(axis=1) > model.reach
    return names[winner], confidence, novel


def members(model: Model, labels: np.ndarray, population: str) -> np.ndarray:
    """Events in `population`: labelled with it or with any population below it in the
    expert's hierarchy (each event carries only its most specific label)."""
    inside = {population}
    grew = True
    while grew:
        below = {p for p, q in model.parents.items() if q in inside} - inside
        inside |= below
        grew = bool(below)
    return np.isin(labels, sorted(inside))


def review(model: Model, labels: np.ndarray, confidence: np.ndarray, novel: np.ndarray) -> dict:
    """Per population of a new file: events, mean confidence, share unlike the references, and
    whether the population (or the file) is to review."""
    out: dict = {"populations": {}, "unlike_share": float(novel.mean()) if len(novel) else 0.0}
    for pop in model.populations:
        mine = labels == pop
        n = int(mine.sum())
        share = float(novel[mine].mean()) if n else 0.0
        out["populations"][pop] = {
            "events": n,
            "confidence": round(float(confidence[mine].mean()), 3) if n else None,
            "unlike_share": round(share, 4),
            "review": bool(n and share > UNLIKE_SHARE),
        }
    out["review"] = out["unlike_share"] > UNLIKE_SHARE or any(
        p["review"] for p in out["populations"].values()
    )
    return out


# ---------------------------------------------------------------------------------------- file


def save(model: Model, path: str | os.PathLike) -> Path:
    """Versioned JSON: the format, the markers and scaling, the kept reference events (4 decimals
    of the standardized scale) and labels, the files learned from and the settings used."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "markers": list(model.markers),
        "populations": list(model.populations),
        "center": model.center.tolist(),
        "scale": model.scale.tolist(),
        "k": model.k,
        "reach": model.reach,
        "weights": model.weights.tolist(),
        "labels": model.labels.astype(int).tolist(),
        "events": np.round(model.events, 4).tolist(),
        "references": list(model.references),
        "settings": model.settings,
        "parents": model.parents,
    }
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, separators=(",", ":")))
    return Path(path)


def load(path: str | os.PathLike) -> Model:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read gating model: {exc}", path=path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(
            "not a cytopipe gating model", path=path, hint="make one with learn-gates"
        )
    if doc.get("version") != VERSION:
        raise ConfigError(
            f"gating model version {doc.get('version')} (this cytopipe reads {VERSION})",
            path=path,
            hint="learn the model again with this cytopipe",
        )
    return Model(
        tuple(doc["markers"]),
        tuple(doc["populations"]),
        np.asarray(doc["center"], dtype=float),
        np.asarray(doc["scale"], dtype=float),
        np.asarray(doc["events"], dtype=float),
        np.asarray(doc["labels"], dtype=int),
        np.asarray(doc["weights"], dtype=float),
        int(doc["k"]),
        float(doc["reach"]),
        tuple(doc.get("references") or ()),
        dict(doc.get("settings") or {}),
        dict(doc.get("parents") or {}),  # absent in models of flat labels
    )
