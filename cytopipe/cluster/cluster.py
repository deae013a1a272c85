"""FlowSOM-style clustering of gated lymphocytes, shared across a cohort, annotated by rules and
cross-checked with the automated gates.

Why a cohort model: a longitudinal study asks "how much of metacluster 3 is there at day 180",
which only makes sense when metacluster 3 is the same cells at every timepoint. So one
self-organizing map (SOM) is trained on a pooled subsample of every sample's gated lymphocytes,
saved, and each sample is then mapped onto it in its own step.

Why our own implementation: the `flowsom` package (PyPI) pulls scanpy, anndata, numba, umap,
matplotlib, statsmodels, zarr and more (about 30 packages) into an environment that needs none of
them. What FlowSOM does is small and fits NumPy well:

- SOM: a batch SOM (Kohonen's batch map). Each epoch assigns every point to its best matching
  node with one matrix product, then moves each node to the neighbourhood-weighted mean of the
  points; the Gaussian neighbourhood shrinks geometrically so the last epochs are almost k-means.
  Initialised on the first two principal components, so it is deterministic for a seed.
- Metaclustering: FlowSOM's ConsensusClusterPlus step. The node codes are resampled many times,
  clustered hierarchically (scipy's linkage cut at every candidate k: the same trees scikit-learn's
  AgglomerativeClustering builds, computed once per resample instead of once per k), the fraction
  of resamples in which two nodes fall together is the consensus matrix, and the final
  metaclusters are a hierarchical clustering of 1 - consensus. k is configured, or picked as the
  k with the lowest PAC (proportion of ambiguous clustering).
- One scale: samples are pooled on a common logicle (cytopipe.cluster.common_scale), not on each file's
  own (T = $PnR), so two instruments' cells of one kind share metaclusters.
- Annotation: each metacluster's median expression is read against rules in
  config/clustering.yaml ("CD19: pos, IgD: pos, CD27: neg" -> B naive); no rule -> "unassigned".
- Agreement: per sample, each gate population vs the union of the metaclusters annotated with it
  (F1); a low F1 on enough events is flagged, because two independent methods disagreeing is
  what a reviewer should look at first.

Files: `cytopipe cluster-train` writes the model (NPZ: codes, metaclusters, medians, annotation
and a JSON record of settings and training); `cytopipe cluster-map` writes one sample's
clusters.json, the format the report's "Clustering" section reads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from scipy.cluster.hierarchy import cut_tree, linkage
from scipy.spatial.distance import squareform

from cytopipe import __version__
from cytopipe.atomic import atomic_path
from cytopipe.cluster.common_scale import parse_common, sample_scales, to_common
from cytopipe.errors import ConfigError, CytopipeError
from cytopipe.preprocess.transforms import Scale

UNASSIGNED = "unassigned"
LINKAGES = ("average", "complete", "single", "ward")
MODEL_FORMAT = "cytopipe-som/1"
CHUNK = 32_768  # events per distance block: 32k x 100 nodes float32 = 13 MB, cache friendly

DEFAULTS: dict = {
    "markers": ["CD45", "CD3", "CD19", "CD20", "CD27", "CD38", "IgD", "CD24"],
    "population": "lymphocytes",
    "scale": {"t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0},
    "training": {"events_per_sample": 5000, "min_events": 1000, "seed": 42},
    "som": {"xdim": 15, "ydim": 15, "epochs": 20, "radius": [4.0, 0.3]},
    "metaclustering": {
        "k": 35,
        "k_range": [10, 40],
        "resamples": 100,
        "node_fraction": 0.9,
        "linkage": "average",
    },
    "levels": {"default": {"pos": 0.45, "high": 0.68}},
    "annotations": [],
    "agreement": {
        "populations": [
            "t_cells",
            "b_cells",
            "b_naive",
            "b_unswitched_memory",
            "b_switched_memory",
            "b_double_negative",
            "plasmablasts",
            "b_transitional",
        ],
        "min_f1": 0.8,
        "min_events": 50,
    },
}


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Rule:
    """An annotation rule: `label` when every marker's median lies in its interval [lo, hi)."""

    label: str
    populations: tuple[str, ...]
    when: Mapping[str, tuple[float, float]]


@dataclass(frozen=True)
class Settings:
    markers: tuple[str, ...]
    population: str
    events_per_sample: int
    min_events: int
    seed: int
    xdim: int
    ydim: int
    epochs: int
    radius: tuple[float, float]
    k: int | None  # None: pick k in k_range by PAC
    k_range: tuple[int, int]
    resamples: int
    node_fraction: float
    linkage: str
    levels: Mapping[str, Mapping[str, float]]
    rules: tuple[Rule, ...]
    agreement_populations: tuple[str, ...]
    min_f1: float
    min_agreement_events: int
    scale: Scale | None = None  # the common scale samples are pooled on (None: as preprocessed)
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def n_nodes(self) -> int:
        return self.xdim * self.ydim


def load_settings(path: str | os.PathLike | None) -> Settings:
    """The clustering settings file over the built-in defaults (None: defaults only)."""
    if path is None:
        return parse_settings({}, "built-in defaults")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read clustering settings: {exc}",
            path=path,
            hint="pass a readable YAML file like config/clustering.yaml",
        ) from None
    return parse_settings(raw or {}, os.fspath(path))


def parse_settings(raw: Mapping, source: str = "clustering settings") -> Settings:
    """Validate a clustering settings mapping; every mistake names the key and the source."""
    if not isinstance(raw, Mapping):
        raise ConfigError("clustering settings must be a YAML mapping", path=source)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))}",
            path=source,
            hint=f"allowed: {', '.join(DEFAULTS)}",
        )
    cfg = _merged(DEFAULTS, raw)

    def section(name: str) -> Mapping:
        value = cfg[name]
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{name}` must be a mapping", path=source)
        extra = sorted(set(value) - set(DEFAULTS[name]))
        if extra:
            raise ConfigError(
                f"unknown key(s) in `{name}`: {', '.join(map(str, extra))}",
                path=source,
                hint=f"allowed: {', '.join(DEFAULTS[name])}",
            )
        return value

    tr, som, mc, ag = (section(s) for s in ("training", "som", "metaclustering", "agreement"))
    markers = _str_list(cfg["markers"], "markers", source)
    if not markers:
        raise ConfigError("`markers` is empty", path=source, hint="list the markers to cluster on")
    xdim, ydim = _int(som["xdim"], "som.xdim", source, 1), _int(som["ydim"], "som.ydim", source, 1)
    if xdim * ydim < 2:
        raise ConfigError("the SOM needs at least 2 nodes", path=source)
    radius = _numbers(som["radius"], "som.radius", source, 2)
    if not 0 < radius[1] <= radius[0]:
        raise ConfigError(
            f"som.radius {radius} must be [start, end] with start >= end > 0", path=source
        )
    k_range = tuple(int(v) for v in _numbers(mc["k_range"], "metaclustering.k_range", source, 2))
    k_raw = mc["k"]
    k = None if k_raw == "auto" else _int(k_raw, "metaclustering.k", source, 2)
    for value in (k, *k_range) if k is None else (k,):
        if not 2 <= value < xdim * ydim:
            raise ConfigError(
                f"metaclustering k={value} must be between 2 and the number of SOM nodes - 1 "
                f"({xdim * ydim - 1})",
                path=source,
            )
    if k_range[0] > k_range[1]:
        raise ConfigError(f"metaclustering.k_range {list(k_range)} is not [low, high]", path=source)
    fraction = float(_numbers([mc["node_fraction"]], "metaclustering.node_fraction", source, 1)[0])
    if not 0 < fraction <= 1:
        raise ConfigError("metaclustering.node_fraction must be in (0, 1]", path=source)
    if mc["linkage"] not in LINKAGES:
        raise ConfigError(
            f"metaclustering.linkage {mc['linkage']!r} is not supported",
            path=source,
            hint=f"use one of {', '.join(LINKAGES)}",
        )
    levels = _levels(cfg["levels"], source)
    rules = tuple(
        _rule(r, i, levels, source) for i, r in enumerate(_list(cfg, "annotations", source))
    )
    min_f1 = float(_numbers([ag["min_f1"]], "agreement.min_f1", source, 1)[0])
    if not 0 <= min_f1 <= 1:
        raise ConfigError("agreement.min_f1 must be between 0 and 1", path=source)
    if not isinstance(cfg["population"], str) or not cfg["population"]:
        raise ConfigError("`population` must be a gate population id", path=source)
    return Settings(
        markers=tuple(markers),
        population=cfg["population"],
        events_per_sample=_int(tr["events_per_sample"], "training.events_per_sample", source, 1),
        min_events=_int(tr["min_events"], "training.min_events", source, 0),
        seed=_int(tr["seed"], "training.seed", source, 0),
        xdim=xdim,
        ydim=ydim,
        epochs=_int(som["epochs"], "som.epochs", source, 1),
        radius=(float(radius[0]), float(radius[1])),
        k=k,
        k_range=(k_range[0], k_range[1]),
        resamples=_int(mc["resamples"], "metaclustering.resamples", source, 1),
        node_fraction=fraction,
        linkage=mc["linkage"],
        levels=levels,
        rules=rules,
        agreement_populations=tuple(_str_list(ag["populations"], "agreement.populations", source)),
        min_f1=min_f1,
        min_agreement_events=_int(ag["min_events"], "agreement.min_events", source, 0),
        scale=parse_common(cfg["scale"], source),
        raw=cfg,
    )


def _merged(base: Mapping, override: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "levels":
            out[key] = _merged(out[key], value)
        elif key == "levels" and isinstance(value, Mapping):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _int(value, key: str, source: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"`{key}` must be an integer >= {minimum}, got {value!r}", path=source)
    return int(value)


def _numbers(value, key: str, source: str, n: int) -> list[float]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        raise ConfigError(f"`{key}` must be {n} number(s), got {value!r}", path=source)
    return [float(v) for v in value]


def _str_list(value, key: str, source: str) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"`{key}` must be a list of names, got {value!r}", path=source)
    return list(value)


def _list(cfg: Mapping, key: str, source: str) -> list:
    value = cfg[key] if cfg[key] is not None else []
    if not isinstance(value, list):
        raise ConfigError(f"`{key}` must be a list", path=source)
    return value


def _levels(raw, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(raw, Mapping):
        raise ConfigError("`levels` must map markers to {pos: ..., high: ...}", path=source)
    base = {"pos": 0.45, "high": 0.68}
    default = {**base, **(raw.get("default") or {})}
    out = {}
    for marker, value in raw.items():
        merged = {**default, **(value or {})} if isinstance(value, Mapping | None) else None
        if (
            merged is None
            or set(merged) != {"pos", "high"}
            or not all(isinstance(v, int | float) for v in merged.values())
        ):
            raise ConfigError(
                f"levels.{marker} must be {{pos: NUMBER, high: NUMBER}}, got {value!r}", path=source
            )
        if merged["pos"] > merged["high"]:
            raise ConfigError(f"levels.{marker}: pos must not be above high", path=source)
        out[str(marker)] = {k: float(v) for k, v in merged.items()}
    out.setdefault("default", default)
    return out


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_CMP = re.compile(rf"^\s*(>=|>|<=|<)\s*({_NUM})\s*$")
_RANGE = re.compile(rf"^\s*({_NUM})\s*(?:-|\.\.|to)\s*({_NUM})\s*$")


def condition_interval(text: str, levels: Mapping[str, float]) -> tuple[float, float]:
    """A rule condition ("pos", "high", ">0.8", "0.4-0.6", ...) as the interval [lo, hi) of the
    median it accepts; `levels` holds the marker's pos/high cut-offs."""
    word = str(text).strip().lower()
    pos, high = levels["pos"], levels["high"]
    words = {
        "neg": (-np.inf, pos),
        "low": (-np.inf, pos),
        "pos": (pos, np.inf),
        "dim": (pos, high),
        "high": (high, np.inf),
        "bright": (high, np.inf),
        "not high": (-np.inf, high),
    }
    if word in words:
        return words[word]
    m = _CMP.match(word)
    if m:
        op, value = m.group(1), float(m.group(2))
        return (value, np.inf) if op.startswith(">") else (-np.inf, value)
    m = _RANGE.match(word)
    if m and float(m.group(1)) < float(m.group(2)):
        return float(m.group(1)), float(m.group(2))
    raise ValueError(text)


def _rule(raw, i: int, levels: Mapping[str, Mapping[str, float]], source: str) -> Rule:
    where = f"annotations[{i}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("label"), str):
        raise ConfigError(f"{where} needs a `label` and `when`", path=source)
    extra = sorted(set(raw) - {"label", "populations", "when"})
    if extra:
        raise ConfigError(
            f"{where} ({raw['label']}): unknown key(s) {', '.join(extra)}",
            path=source,
            hint="a rule has label, populations and when",
        )
    when = raw.get("when") or {}
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(
            f"{where} ({raw['label']}): `when` must map markers to levels", path=source
        )
    intervals = {}
    for marker, cond in when.items():
        try:
            intervals[str(marker)] = condition_interval(
                str(cond), levels.get(str(marker), levels["default"])
            )
        except ValueError:
            raise ConfigError(
                f"{where} ({raw['label']}): cannot read condition {marker}: {cond!r}",
                path=source,
                hint='use neg, pos, dim, high, "not high", ">0.8", "<0.3" or "0.4-0.6"',
            ) from None
    pops = _str_list(raw.get("populations") or [], f"{where}.populations", source)
    return Rule(raw["label"], tuple(pops), intervals)


# ----------------------------------------------------------------------------- SOM


def grid_coordinates(xdim: int, ydim: int) -> np.ndarray:
    """(x, y) of every node; node index = y * xdim + x."""
    y, x = np.divmod(np.arange(xdim * ydim), xdim)
    return np.column_stack([x, y]).astype(np.float64)


def initial_codes(data: np.ndarray, xdim: int, ydim: int) -> np.ndarray:
    """Nodes spread over the plane of the first two principal components (+-2 SD): a start that
    depends only on the data, so training is reproducible and the map does not twist."""
    x = np.asarray(data, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:2]
    vectors = vectors[:, order]
    vectors *= np.where(vectors[np.abs(vectors).argmax(axis=0), range(vectors.shape[1])] < 0, -1, 1)
    sd = np.sqrt(np.maximum(values[order], 0.0))
    if len(sd) < 2:  # one marker: a line
        sd = np.append(sd, 0.0)
        vectors = np.column_stack([vectors, np.zeros_like(vectors[:, 0])])
    u = np.linspace(-2, 2, xdim) if xdim > 1 else np.zeros(1)
    v = np.linspace(-2, 2, ydim) if ydim > 1 else np.zeros(1)
    grid = grid_coordinates(xdim, ydim).astype(int)
    return (
        mean
        + (u[grid[:, 0]] * sd[0])[:, None] * vectors[:, 0]
        + (v[grid[:, 1]] * sd[1])[:, None] * vectors[:, 1]
    )


def nearest_node(data: np.ndarray, codes: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Best matching node of every event: argmin |c|^2 - 2 x.c in blocks of `chunk` events, one
    float32 matrix product per block into a reused buffer."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    c = np.ascontiguousarray(codes, dtype=np.float32)
    c2 = np.einsum("ij,ij->i", c, c)
    n = x.shape[0]
    out = np.empty(n, dtype=np.int32)
    buf = np.empty((min(chunk, max(n, 1)), c.shape[0]), dtype=np.float32)
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        d = np.matmul(block, c.T, out=buf[: len(block)])
        d *= -2.0
        d += c2
        out[start : start + len(block)] = d.argmin(axis=1)
    return out


def train_som(
    data: np.ndarray,
    xdim: int,
    ydim: int,
    epochs: int,
    radius: tuple[float, float] = (4.0, 0.3),
) -> np.ndarray:
    """Batch SOM codes (xdim*ydim, n_markers), float32. Deterministic: PCA start, no sampling."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    n_nodes, n_dims = xdim * ydim, x.shape[1]
    grid = grid_coordinates(xdim, ydim)
    grid_d2 = ((grid[:, None, :] - grid[None, :, :]) ** 2).sum(axis=-1)
    codes = initial_codes(x, xdim, ydim)
    sigmas = np.geomspace(radius[0], radius[1], epochs) if epochs > 1 else np.array([radius[1]])
    sums = np.empty((n_nodes, n_dims))
    for sigma in sigmas:
        bmu = nearest_node(x, codes)
        counts = np.bincount(bmu, minlength=n_nodes).astype(np.float64)
        for j in range(n_dims):
            sums[:, j] = np.bincount(bmu, weights=x[:, j], minlength=n_nodes)
        h = np.exp(-grid_d2 / (2.0 * sigma * sigma))
        weight = h @ counts
        ok = weight > 1e-12
        codes[ok] = (h @ sums)[ok] / weight[ok, None]
    return codes.astype(np.float32)


# ----------------------------------------------------------------------------- metaclustering


def consensus_matrices(
    codes: np.ndarray,
    ks: Sequence[int],
    resamples: int,
    fraction: float,
    method: str,
    seed: int,
) -> np.ndarray:
    """(len(ks), n, n): how often two nodes fall in the same cluster when both are resampled."""
    n = len(codes)
    m = min(n, max(max(ks) + 1, round(fraction * n)))
    rng = np.random.default_rng([seed, 7])
    together = np.zeros((len(ks), n, n))
    sampled = np.zeros((n, n))
    for _ in range(resamples):
        idx = np.sort(rng.choice(n, m, replace=False))
        cuts = cut_tree(linkage(codes[idx], method=method), n_clusters=list(ks))
        block = np.ix_(idx, idx)
        sampled[block] += 1
        for j in range(len(ks)):
            lab = cuts[:, j]
            together[j][block] += lab[:, None] == lab[None, :]
    return together / np.maximum(sampled, 1)


def pac(consensus: np.ndarray, low: float = 0.1, high: float = 0.9) -> float:
    """Proportion of ambiguous clustering: node pairs together in neither (nearly) all nor
    (nearly) none of the resamples. Lower = a more stable k."""
    u = consensus[np.triu_indices(len(consensus), 1)]
    return float(np.mean((u > low) & (u < high))) if len(u) else 0.0


def consensus_metaclusters(
    codes: np.ndarray,
    k: int | None,
    k_range: tuple[int, int] = (8, 20),
    resamples: int = 100,
    fraction: float = 0.9,
    method: str = "average",
    seed: int = 0,
) -> tuple[np.ndarray, int, dict[int, float]]:
    """Metacluster (0..k-1) of every node, the k used and the PAC of every k evaluated.

    k=None picks the k in k_range with the lowest PAC, the largest of equals: merging stable
    groups is as unambiguous as keeping them apart, so the lowest PAC alone favours small k."""
    n = len(codes)
    ks = [k] if k is not None else list(range(k_range[0], min(k_range[1], n - 1) + 1))
    mats = consensus_matrices(codes, ks, resamples, fraction, method, seed)
    scores = {kk: pac(mats[i]) for i, kk in enumerate(ks)}
    # ties (typically PAC 0 for every k that only merges stable groups): the largest such k
    best = k if k is not None else min(ks, key=lambda kk: (round(scores[kk], 12), -kk))
    consensus = mats[ks.index(best)]
    dist = squareform(1.0 - consensus, checks=False)
    labels = cut_tree(linkage(dist, method="average"), n_clusters=[best])[:, 0]
    return labels.astype(np.int32), int(best), scores


# ----------------------------------------------------------------------------- annotation


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


# ----------------------------------------------------------------------------- model


@dataclass
class Model:
    """A trained cohort model. Metaclusters are numbered 0..k-1 here and 1..k in outputs."""

    markers: list[str]
    xdim: int
    ydim: int
    codes: np.ndarray  # (nodes, markers) float32
    node_metacluster: np.ndarray  # (nodes,) int
    medians: np.ndarray  # (k, markers): training events' median per metacluster
    labels: list[str]
    populations: list[tuple[str, ...]]
    info: dict = field(default_factory=dict)  # training record, settings, PAC, skipped samples

    @property
    def trained(self) -> bool:
        return len(self.codes) > 0

    @property
    def k(self) -> int:
        return len(self.medians)


def untrained_model(reason: str, info: Mapping | None = None) -> Model:
    """What cluster-train writes when the cohort has nothing to learn from: every sample's map
    step then writes "not available" with this reason instead of the workflow stopping."""
    empty = np.zeros((0, 0), dtype=np.float32)
    return Model(
        [], 0, 0, empty, np.zeros(0, np.int32), empty, [], [], {**(info or {}), "reason": reason}
    )


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


def reannotate(model: Model, settings: Settings) -> Model:
    """The same map and metaclusters named with other rules (a lab edited clustering.yaml)."""
    if not model.trained:
        return model
    labels, pops = annotate(model.medians, model.markers, settings.rules)
    info = {**model.info, "skipped_rules": skipped_rules(model.markers, settings.rules)}
    return Model(
        model.markers, model.xdim, model.ydim, model.codes, model.node_metacluster,
        model.medians, labels, pops, info,
    )  # fmt: skip


def save_model(path: str | os.PathLike, model: Model) -> None:
    """NPZ without pickles: arrays, plus the annotation and training record as one JSON string."""
    meta = {
        "format": MODEL_FORMAT,
        "markers": model.markers,
        "xdim": model.xdim,
        "ydim": model.ydim,
        "labels": model.labels,
        "populations": [list(p) for p in model.populations],
        "info": model.info,
    }
    arrays = {
        "codes": model.codes.astype(np.float32),
        "node_metacluster": model.node_metacluster.astype(np.int32),
        "medians": model.medians.astype(np.float64),
        "meta": np.array(json.dumps(meta, default=_jsonable)),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_model(path: str | os.PathLike) -> Model:
    hint = "train it again with `cytopipe cluster-train`"
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in ("codes", "node_metacluster", "medians")}
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"format {found!r}, expected {MODEL_FORMAT!r}")
        return Model(
            markers=list(meta["markers"]),
            xdim=int(meta["xdim"]),
            ydim=int(meta["ydim"]),
            codes=arrays["codes"],
            node_metacluster=arrays["node_metacluster"],
            medians=arrays["medians"],
            labels=list(meta["labels"]),
            populations=[tuple(p) for p in meta["populations"]],
            info=meta.get("info") or {},
        )
    except FileNotFoundError:
        raise CytopipeError("clustering model not found", path=path, hint=hint) from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise CytopipeError(
            f"not a cytopipe clustering model ({type(exc).__name__}: {exc})", path=path, hint=hint
        ) from None


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- one sample


@dataclass
class SampleEvents:
    """The clustered events of one sample (`data`: rows x model markers) and its gate masks
    restricted to those events, so masks and rows line up."""

    sample_id: str
    data: np.ndarray
    gates: dict[str, np.ndarray]
    n_dropped: int = 0  # events with a non-finite marker value, left out
    rescaled: dict[str, str] = field(default_factory=dict)  # marker -> its own scale


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
) -> tuple[list[dict], list[str]]:
    """F1 of each gate population vs the union of its metaclusters, and the disagreements.

    Judged only when gate or clusters hold at least min_events events; populations without a gate
    (skipped by the panel) or without an annotated metacluster are listed but not judged."""
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


def summarize(sample: SampleEvents, model: Model, settings: Settings) -> dict:
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
    rows, flags = agreement(meta, model, sample.gates, settings)
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


# ----------------------------------------------------------------------------- files (I/O)


class Unusable(CytopipeError):
    """A sample that cannot be clustered; training skips it, mapping reports it."""


def sample_id_of(events_path: str | os.PathLike) -> str:
    """results/preprocessed/{sample}.parquet -> sample."""
    return Path(events_path).name.removesuffix(".parquet")


def parquet_columns(path: str | os.PathLike) -> tuple[list[str], int]:
    try:
        meta = pq.read_metadata(path)
        return list(meta.schema.names), int(meta.num_rows)
    except FileNotFoundError:
        raise Unusable("file not found", path=path) from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise Unusable(f"not a readable Parquet file ({exc})", path=path) from None


def read_sample(
    events_path: str | os.PathLike,
    gates_path: str | os.PathLike,
    markers: Sequence[str],
    settings: Settings,
    sample_id: str | None = None,
    rows: int | None = None,
    rng: np.random.Generator | None = None,
    info_path: str | os.PathLike | None = None,
) -> SampleEvents:
    """The gated events of one sample (all of them, or a random `rows` of them for training),
    on the settings' common scale (`info_path`: the preprocessing record, default beside the
    events file).

    Raises Unusable for a failed sample (empty files), a missing population column or markers."""
    sid = sample_id or sample_id_of(events_path)
    ev_cols, n_ev = parquet_columns(events_path)
    gate_cols, n_gates = parquet_columns(gates_path)
    if n_ev == 0 or not gate_cols:
        raise Unusable("no events or no gates (the sample failed upstream)", path=events_path)
    if settings.population not in gate_cols:
        raise Unusable(f"no gate population {settings.population!r} in the gates", path=gates_path)
    if n_gates != n_ev:
        raise Unusable(
            f"{n_gates} gate rows for {n_ev} events: gates and events are from different runs",
            path=gates_path,
            hint="rerun the gate step for this sample",
        )
    missing = [m for m in markers if m not in ev_cols]
    if missing:
        raise Unusable(f"lacks the model's marker(s) {', '.join(missing)}", path=events_path)
    wanted = [p for p in {settings.population, *settings.agreement_populations} if p in gate_cols]
    try:
        gates = pd.read_parquet(gates_path, columns=sorted(wanted))
        events = pd.read_parquet(events_path, columns=list(markers))
    except (OSError, ValueError) as exc:
        raise Unusable(f"cannot read ({exc})", path=events_path) from None
    keep = gates[settings.population].to_numpy(dtype=bool)
    index = np.flatnonzero(keep)
    if not len(index):
        raise Unusable(f"no {settings.population} events in the gates", path=gates_path)
    if rows is not None and len(index) > rows:
        index = np.sort((rng or np.random.default_rng(0)).choice(index, rows, replace=False))
    data = np.empty((len(index), len(markers)), dtype=np.float32)
    for j, m in enumerate(markers):
        data[:, j] = events[m].to_numpy()[index]
    finite = np.isfinite(data).all(axis=1)
    dropped = int(len(finite) - finite.sum())
    if dropped:
        data, index = data[finite], index[finite]
    masks = {p: gates[p].to_numpy(dtype=bool)[index] for p in gates.columns}
    scales = sample_scales(info_path or Path(events_path).with_suffix(".json"))
    rescaled = to_common(data, markers, scales, settings.scale)
    return SampleEvents(sid, data, masks, dropped, rescaled)


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
    ids = list(sample_ids) if sample_ids else [sample_id_of(p) for p in events]
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


def map_files(
    events: str | os.PathLike,
    gates: str | os.PathLike,
    model: Model,
    settings: Settings,
    sample_id: str | None = None,
    info: str | os.PathLike | None = None,
) -> dict:
    """clusters.json content of one sample; "not available" with the reason when it cannot be.

    The sample is put on the scale the model was trained on, whatever `settings` say."""
    sid = sample_id or sample_id_of(events)
    if not model.trained:
        return not_available(sid, f"no clustering model: {model.info.get('reason', 'untrained')}")
    try:
        trained = parse_common((model.info.get("settings") or {}).get("scale"), "the model")
        settings = dataclasses.replace(settings, scale=trained)
        sample = read_sample(events, gates, model.markers, settings, sid, info_path=info)
    except Unusable as exc:
        return not_available(sid, str(exc))
    return summarize(sample, model, settings)


# ----------------------------------------------------------------------------- CLI


def metacluster_table(model: Model) -> pd.DataFrame:
    """Each metacluster's label, training events and median per marker."""
    table = pd.DataFrame(model.medians.round(3), columns=model.markers)
    table.insert(0, "events", model.info.get("training_events_per_metacluster"))
    table.insert(0, "label", model.labels)
    table.insert(0, "metacluster", range(1, model.k + 1))
    return table
