"""A lab's gating learned from its expert-gated files: a small neural network ensemble of the
expert's populations on cytopipe's own transform, deterministic for a seed, saved as versioned
JSON (weight matrices, no pickle).

Why a network: expert gates have every shape (polygons, quadrants, boolean gates); a classifier
on all markers at once follows any of them without choosing a gate type, as GateNet does. Chosen
by measurement on the real FlowCAP-I GvHD files (benchmarks/bench_learn.py, leave one file
out): three two-layer networks (32 units, early stopping) averaged, and gate 1 M events in
seconds where the neighbour search this replaced took 90 s. Each population keeps at most
`per_class` events (class-balanced, so rare populations are learned) and the probabilities are
weighted back by each population's true share of the reference events, so the balance does not
inflate rare populations. PER_CLASS 10,000, chosen on the same files (FlowCAP-I's scoring, CD4
/ CD8 T median F1): 1,000 -> 0.976 / 0.948, 3,000 -> 0.975 / 0.946, 10,000 -> 0.979 / 0.951;
the larger samples follow the CD4 T cells' dim edge better (file 5: 0.904 -> 0.979). Where the
references hold few populations, the larger ones keep more events while all stay within
BUDGET: a catch-all population (the experts' 'other': every cell that is not a T cell) has
many regions to learn (file 5 CD4, 4 seeds: 0.980 -> 0.993 with 33,000 of its 108,000 events;
all of them: 0.994). Many populations stay at 10,000 each, so 10 files of 100,000 events are
still learned in well under a minute.

Each event gets the winning population and a confidence (its probability). An event where a
Gaussian mixture of that population's reference events has less density than at 99% of them
(NOVELTY_Q) is "unlike the references": a population with many such events, or a file where
many are, is listed for review (a different panel brightness, an instrument change, an unusual
composition).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cytopipe.atomic import atomic_path
from cytopipe.errors import ConfigError
from cytopipe.learn.references import Reference

FORMAT = "cytopipe gating model"
VERSION = 2  # 1: nearest-neighbour vote (reference events); 2: network ensemble
NETS = 3  # networks averaged (seeds seed, seed + 1, ...): one net's result moves with its seed
HIDDEN = (32, 32)  # measured: (64, 64) and 5 nets were no better on GvHD, 3x slower to learn
BATCH = 200
NOVELTY_Q = 0.01  # unlike the references: density below that of 99% of the reference events
NOVELTY_COMPONENTS = 4  # per population
MIN_NOVELTY_EVENTS = 50  # a population with fewer reference events is not judged
# events per population the novelty mixture is fitted on: more (10,000) spread it over every
# reference file's own shifts, and GvHD file 4 with CD4 and CD3 shifted by 0.25 (a voltage
# change) then looked like the references (4% of its events unlike, not listed; 7% and listed
# from 1,000)
NOVELTY_EVENTS = 1000
EVENTS_PER_COMPONENT = 200  # a full covariance in ~10 markers needs this many not to overfit
MIN_UNLIKE_EVENTS = 20  # ... and a population needs at least this many such events
UNLIKE_SHARE = 0.10  # a population (or file) with more novel events than this is unlike
CHUNK = 200_000  # events per block in prediction (bounds memory at 10 M events)


@dataclass(frozen=True)
class Model:
    markers: tuple[str, ...]
    populations: tuple[str, ...]
    center: np.ndarray  # per marker: median of the reference events
    scale: np.ndarray  # per marker: IQR (events are compared in these units)
    # networks: each a list of (weights, bias) layers; ReLU inside, softmax (or logistic for
    # two populations) out
    nets: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]
    weights: np.ndarray  # per population: true share / kept share (probability weight)
    # per population: a Gaussian mixture of its reference events (weights, means, precision
    # Cholesky factors) and the log density below which an event is unlike them; {} when the
    # population has too few events to judge
    novelty: tuple[dict, ...]
    references: tuple[dict, ...] = ()  # the files learned from: name, sha256, counts
    settings: dict = field(default_factory=dict)  # the config sections the events were made with
    # population -> parent in the expert's hierarchy (from the references' memberships): an
    # event labelled with a population is a member of its ancestors too
    parents: dict = field(default_factory=dict)
    # population -> reference events the networks learned from (the class balance: at most
    # `per_class`, or more within the budget), so a lab sees what each population rests on
    learned: dict = field(default_factory=dict)


PER_CLASS = 10_000  # reference events learned per population at least (see the module)
# ... and more of the larger populations while the total stays within this (see the module)
BUDGET = 60_000


def per_population_cap(counts: Sequence[int], per_class: int, budget: int) -> int:
    """Events kept of each population: the largest cap whose kept total stays within `budget`
    (water filling), never below `per_class`."""
    counts = sorted(int(n) for n in counts)
    left = budget
    for i, n in enumerate(counts):  # smallest first: what they leave is shared by the others
        share = left // (len(counts) - i)
        if n > share:
            return max(per_class, share)
        left -= n
    return max([per_class, *counts])


def fit(
    refs: Sequence[Reference],
    markers: Sequence[str],
    *,
    per_class: int = PER_CLASS,
    budget: int = BUDGET,
    seed: int = 0,
    settings: Mapping | None = None,
) -> Model:
    """Learn the expert's populations from reference files (see the module)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    if not refs:
        raise ConfigError("no reference files to learn from")
    events = np.vstack([r.events for r in refs])
    labels = np.concatenate([r.labels for r in refs]).astype(str)
    populations = tuple(sorted(set(labels)))
    if len(populations) < 2:
        raise ConfigError(
            f"the reference files hold one population only ({populations[0]})",
            hint="label at least two populations (the rest can be 'other')",
        )
    index = np.searchsorted(populations, labels)
    center = np.median(events, axis=0)
    q1, q3 = np.percentile(events, [25, 75], axis=0)
    scale = np.where(q3 - q1 > 0, q3 - q1, 1.0)
    z = (events - center) / scale
    rng = np.random.default_rng(seed)
    counts = np.bincount(index, minlength=len(populations))
    cap = per_population_cap(counts, per_class, budget)
    kept = []
    for c in range(len(populations)):
        rows = np.flatnonzero(index == c)
        kept.append(rows if len(rows) <= cap else rng.choice(rows, cap, replace=False))
    keep = np.sort(np.concatenate(kept))
    kept_counts = np.bincount(index[keep], minlength=len(populations))
    true_share, kept_share = counts / len(index), kept_counts / len(keep)
    weights = np.where(kept_share > 0, true_share / np.maximum(kept_share, 1e-12), 0.0)
    # early stopping holds out 10% stratified: every population needs a few events for it
    early = int(kept_counts.min()) >= 20
    nets = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(NETS):
            net = MLPClassifier(HIDDEN, random_state=seed + i, max_iter=200, batch_size=BATCH,
                                early_stopping=early, n_iter_no_change=10)  # fmt: skip
            net.fit(z[keep], index[keep])
            nets.append(tuple(zip(net.coefs_, net.intercepts_, strict=True)))
    novelty = [_class_mixture(_at_most(z[keep][index[keep] == c], NOVELTY_EVENTS, rng), seed)
               for c in range(len(populations))]  # fmt: skip
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
        tuple(markers), populations, center, scale, tuple(nets), weights, tuple(novelty), files,
        dict(settings or {}), parents, dict(zip(populations, map(int, kept_counts), strict=True)),
    )  # fmt: skip


def _at_most(z: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return z if len(z) <= n else z[np.sort(rng.choice(len(z), n, replace=False))]


def _class_mixture(z: np.ndarray, seed: int) -> dict:
    """A population's reference events as a small Gaussian mixture, and the log density that
    NOVELTY_Q of them fall below."""
    from sklearn.mixture import GaussianMixture

    if len(z) < MIN_NOVELTY_EVENTS:
        return {}
    fitted = GaussianMixture(
        max(1, min(NOVELTY_COMPONENTS, len(z) // EVENTS_PER_COMPONENT)), covariance_type="full",
        random_state=seed, reg_covar=1e-3,
    ).fit(z)  # fmt: skip
    mixture = {
        "weights": fitted.weights_,
        "means": fitted.means_,
        "precisions_cholesky": fitted.precisions_cholesky_,
    }
    mixture["threshold"] = float(np.quantile(_log_density(mixture, z), NOVELTY_Q))
    return mixture


def _log_density(novelty: Mapping, z: np.ndarray) -> np.ndarray:
    """Log density of a full-covariance Gaussian mixture (sklearn's parameters) at `z`."""
    w, means, chol = (np.asarray(novelty[k]) for k in ("weights", "means", "precisions_cholesky"))
    d = z.shape[1]
    per = np.empty((len(z), len(w)), dtype=np.float32)
    for j in range(len(w)):
        y = (z - means[j]).astype(np.float32) @ chol[j].astype(np.float32)
        const = np.log(w[j]) + np.sum(np.log(np.diag(chol[j]))) - 0.5 * d * np.log(2 * np.pi)
        per[:, j] = const - 0.5 * np.einsum("ij,ij->i", y, y)
    top = per.max(axis=1)
    return top + np.log(np.exp(per - top[:, None]).sum(axis=1))


def _probabilities(model: Model, z: np.ndarray) -> np.ndarray:
    """Mean over the networks of each population's probability, weighted back to the true
    shares and normalised."""
    z = z.astype(np.float32)  # single precision: a probability needs no more, twice as fast
    total = np.zeros((len(z), len(model.populations)), dtype=np.float32)
    for layers in model.nets:
        a = z
        for w, b in layers[:-1]:
            a = a @ w.astype(np.float32) + b.astype(np.float32)
            np.maximum(a, 0.0, out=a)
        out = a @ layers[-1][0].astype(np.float32) + layers[-1][1].astype(np.float32)
        if out.shape[1] == 1:  # two populations: one logistic unit
            p1 = 1.0 / (1.0 + np.exp(-out[:, 0]))
            total += np.column_stack([1 - p1, p1])
        else:
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            total += out / out.sum(axis=1, keepdims=True)
    total *= model.weights.astype(np.float32)
    return total / np.maximum(total.sum(axis=1, keepdims=True), 1e-12)


def predict(model: Model, events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(population name, confidence 0-1, unlike the references) per event."""
    names = np.array(model.populations, dtype=object)
    n = len(events)
    winner, confidence = np.zeros(n, dtype=np.int64), np.zeros(n)
    novel = np.zeros(n, dtype=bool)
    for start in range(0, n, CHUNK):
        block = slice(start, start + CHUNK)
        z = (np.asarray(events[block], dtype=np.float64) - model.center) / model.scale
        p = _probabilities(model, z)
        winner[block] = p.argmax(axis=1)
        confidence[block] = p.max(axis=1)
        for c in np.unique(winner[block]):
            mixture = model.novelty[c]
            if mixture:
                rows = np.flatnonzero(winner[block] == c)
                novel[start + rows] = _log_density(mixture, z[rows]) < mixture["threshold"]
    return names[winner], confidence, novel


def parents_first(model: Model) -> list[tuple[str, str | None]]:
    """Every population of the model (labels, and populations known only as someone's parent or
    child in the expert's hierarchy) with its parent, every parent before its children."""
    names = {*model.populations, *model.parents, *model.parents.values()} - {None}
    order, placed = [], set()
    while len(order) < len(names):
        ready = sorted(
            p for p in names - placed if model.parents.get(p) in placed | {None}
        ) or sorted(names - placed)  # a cycle cannot come from membership; never loop
        for p in ready:
            order.append((p, model.parents.get(p) if model.parents.get(p) in placed else None))
            placed.add(p)
    return order


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
    whether the population (or the file) is to review (more than UNLIKE_SHARE of its events and
    at least MIN_UNLIKE_EVENTS: a few odd events of a small population are not a pattern)."""
    out: dict = {"populations": {}, "unlike_share": float(novel.mean()) if len(novel) else 0.0}
    for pop in model.populations:
        mine = labels == pop
        n = int(mine.sum())
        share = float(novel[mine].mean()) if n else 0.0
        out["populations"][pop] = {
            "events": n,
            "confidence": round(float(confidence[mine].mean()), 3) if n else None,
            "unlike_share": round(share, 4),
            "review": bool(share > UNLIKE_SHARE and novel[mine].sum() >= MIN_UNLIKE_EVENTS),
        }
    out["review"] = out["unlike_share"] > UNLIKE_SHARE or any(
        p["review"] for p in out["populations"].values()
    )
    return out


# ---------------------------------------------------------------------------------------- file


def save(model: Model, path: str | os.PathLike) -> Path:
    """Versioned JSON: the format, the markers and scaling, each network's layers (weights and
    biases), the population weights, each population's novelty mixture and threshold, the files
    learned from, the settings used and the events learned from per population."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "markers": list(model.markers),
        "populations": list(model.populations),
        "center": model.center.tolist(),
        "scale": model.scale.tolist(),
        "nets": [
            [{"weights": w.tolist(), "bias": b.tolist()} for w, b in net] for net in model.nets
        ],
        "weights": model.weights.tolist(),
        "novelty": [{k: np.asarray(v).tolist() for k, v in m.items()} for m in model.novelty],
        "references": list(model.references),
        "settings": model.settings,
        "parents": model.parents,
        "learned": model.learned,
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
    nets = tuple(
        tuple((np.asarray(layer["weights"], float), np.asarray(layer["bias"], float))
              for layer in net)
        for net in doc["nets"]
    )  # fmt: skip
    return Model(
        tuple(doc["markers"]),
        tuple(doc["populations"]),
        np.asarray(doc["center"], dtype=float),
        np.asarray(doc["scale"], dtype=float),
        nets,
        np.asarray(doc["weights"], dtype=float),
        tuple({k: np.asarray(v, dtype=float) for k, v in m.items()} for m in doc["novelty"]),
        tuple(doc.get("references") or ()),
        dict(doc.get("settings") or {}),
        dict(doc.get("parents") or {}),  # absent in models of flat labels
        dict(doc.get("learned") or {}),  # absent in models of session 19 and before
    )
