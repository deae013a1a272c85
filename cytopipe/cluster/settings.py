"""Clustering settings (config/clustering.yaml) over built-in defaults, and the annotation rules
they hold.

Why validated up front: a typo in a marker name, k or a rule condition would otherwise surface as
a silently different model after minutes of training; every mistake names the key and the file.
Annotation rules read "CD19: pos, IgD: pos, CD27: neg" as intervals of a metacluster's median
expression, with per-marker pos/high levels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cytopipe.cluster.common_scale import parse_common
from cytopipe.config import read_yaml, validated
from cytopipe.errors import ConfigError
from cytopipe.preprocess.transforms import Scale


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
    # populations not judged where their gate found one population (a continuum: see mapping)
    continuum_populations: tuple[str, ...] = ()
    scale: Scale | None = None  # the common scale samples are pooled on (None: as preprocessed)
    raw: Mapping = field(default_factory=dict, compare=False)  # the settings, defaults filled

    @property
    def n_nodes(self) -> int:
        return self.xdim * self.ydim


def load_settings(path: str | os.PathLike | None) -> Settings:
    """The clustering settings file over the built-in defaults (None: defaults only)."""
    if path is None:
        return parse_settings({}, "built-in defaults")
    return parse_settings(read_yaml(path, "clustering"), os.fspath(path))


def parse_settings(raw: Mapping, source: str = "clustering settings") -> Settings:
    """Validate a clustering settings mapping; every mistake names the key and the source.

    The schema (cytopipe/schemas/clustering.schema.yaml) checks each value and fills the
    defaults; the rules relating values (k below the number of SOM nodes, radius start >= end,
    pos <= high, the wording of a rule's conditions) are checked here."""
    cfg = validated(raw, "clustering", source=source)
    som, mc, ag, tr = cfg["som"], cfg["metaclustering"], cfg["agreement"], cfg["training"]
    xdim, ydim = som["xdim"], som["ydim"]
    if xdim * ydim < 2:
        raise ConfigError("the SOM needs at least 2 nodes", path=source)
    radius = (float(som["radius"][0]), float(som["radius"][1]))
    if not 0 < radius[1] <= radius[0]:
        raise ConfigError(
            f"som.radius {list(radius)} must be [start, end] with start >= end > 0", path=source
        )
    k_range = (int(mc["k_range"][0]), int(mc["k_range"][1]))
    k = None if mc["k"] == "auto" else int(mc["k"])
    for value in (k, *k_range) if k is None else (k,):
        if not 2 <= value < xdim * ydim:
            raise ConfigError(
                f"metaclustering k={value} must be between 2 and the number of SOM nodes - 1 "
                f"({xdim * ydim - 1})",
                path=source,
            )
    if k_range[0] > k_range[1]:
        raise ConfigError(f"metaclustering.k_range {list(k_range)} is not [low, high]", path=source)
    levels = _levels(cfg["levels"], source)
    rules = tuple(_rule(r, i, levels, source) for i, r in enumerate(cfg["annotations"] or ()))
    return Settings(
        markers=tuple(cfg["markers"]),
        population=cfg["population"],
        events_per_sample=int(tr["events_per_sample"]),
        min_events=int(tr["min_events"]),
        seed=int(tr["seed"]),
        xdim=int(xdim),
        ydim=int(ydim),
        epochs=int(som["epochs"]),
        radius=radius,
        k=k,
        k_range=k_range,
        resamples=int(mc["resamples"]),
        node_fraction=float(mc["node_fraction"]),
        linkage=mc["linkage"],
        levels=levels,
        rules=rules,
        agreement_populations=tuple(ag["populations"]),
        min_f1=float(ag["min_f1"]),
        min_agreement_events=int(ag["min_events"]),
        continuum_populations=tuple(ag["continuum"]),
        scale=parse_common(cfg["scale"], source),
        raw=cfg,
    )


def _levels(raw: Mapping, source: str) -> dict[str, dict[str, float]]:
    """Each marker's pos/high, keys not given taken from `default`; pos must not be above high."""
    default = raw["default"]
    out = {}
    for marker, value in raw.items():
        merged = {**default, **(value or {})}
        if merged["pos"] > merged["high"]:
            raise ConfigError(f"levels.{marker}: pos must not be above high", path=source)
        out[str(marker)] = {k: float(v) for k, v in merged.items()}
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


def _rule(raw: Mapping, i: int, levels: Mapping[str, Mapping[str, float]], source: str) -> Rule:
    where = f"annotations[{i}] ({raw['label']})"
    intervals = {}
    for marker, cond in raw["when"].items():
        try:
            intervals[str(marker)] = condition_interval(
                str(cond), levels.get(str(marker), levels["default"])
            )
        except ValueError:
            raise ConfigError(
                f"{where}: cannot read condition {marker}: {cond!r}",
                path=source,
                hint='use neg, pos, dim, high, "not high", ">0.8", "<0.3" or "0.4-0.6"',
            ) from None
    return Rule(raw["label"], tuple(raw.get("populations") or ()), intervals)
