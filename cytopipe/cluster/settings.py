"""Clustering settings (config/clustering.yaml) over built-in defaults, and the annotation rules
they hold.

Why validated up front: a typo in a marker name, k or a rule condition would otherwise surface as
a silently different model after minutes of training; every mistake names the key and the file.
Annotation rules read "CD19: pos, IgD: pos, CD27: neg" as intervals of a metacluster's median
expression, with per-marker pos/high levels.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cytopipe.cluster.common_scale import parse_common
from cytopipe.errors import ConfigError
from cytopipe.preprocess.transforms import Scale

LINKAGES = ("average", "complete", "single", "ward")


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
