"""The trained cohort model: its record, renaming it with other rules, and its file.

The file is an NPZ without pickles (codes, metaclusters, medians) plus the annotation and the
training record (settings, PAC, skipped samples) as one JSON string, so a model is safe to load
and readable without this code.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytopipe.atomic import atomic_path
from cytopipe.cluster.annotation import annotate, skipped_rules
from cytopipe.cluster.settings import Settings
from cytopipe.errors import CytopipeError

MODEL_FORMAT = "cytopipe-som/1"


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


def metacluster_table(model: Model) -> pd.DataFrame:
    """Each metacluster's label, training events and median per marker."""
    table = pd.DataFrame(model.medians.round(3), columns=model.markers)
    table.insert(0, "events", model.info.get("training_events_per_metacluster"))
    table.insert(0, "label", model.labels)
    table.insert(0, "metacluster", range(1, model.k + 1))
    return table
