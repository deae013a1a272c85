"""Expert gating as training data: each reference FCS file on cytopipe's own transform (panel,
compensation, logicle, QC) with one expert label per event.

Labels come as a CSV with one row per event in file order: a `label` column (FlowCAP-style
exports, one population per event), or one 0/1 column per population (exported gates; an
event in several is given the last, most specific, column it belongs to; in none: "other").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.errors import ConfigError
from cytopipe.ingest.panel import Panel
from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

OTHER = "other"


@dataclass(frozen=True)
class Reference:
    """One expert-gated file: events kept by QC (rows) x markers, and their labels."""

    name: str
    sha256: str
    events: np.ndarray
    labels: np.ndarray


def read_labels(path: str | os.PathLike, n_events: int) -> np.ndarray:
    """One label per event from a label CSV (see the module); ConfigError when the rows do not
    match the file's events."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read expert labels: {exc}", path=path) from None
    if len(table) != n_events:
        raise ConfigError(
            f"expert labels have {len(table)} rows for {n_events} events",
            path=path,
            hint="export one row per event, in the file's event order",
        )
    if "label" in table:
        return table["label"].to_numpy(dtype=object)
    labels = np.full(n_events, OTHER, dtype=object)
    for column in table.columns:
        member = table[column].isin(["1", "True", "true", "TRUE"]).to_numpy()
        labels[member] = column
    return labels


def load_reference(
    fcs: str | os.PathLike,
    labels_csv: str | os.PathLike,
    panel: Panel,
    cfg: Mapping,
    markers: Sequence[str],
) -> Reference:
    """The file's events (kept by QC) on the gating scale of `markers`, with their labels."""
    pre = preprocess(str(fcs), panel, cfg, required=SCATTER_ONLY)
    missing = [m for m in markers if m not in pre.columns]
    if missing:
        raise ConfigError(
            f"reference file has no channel for {', '.join(missing)}",
            path=fcs,
            hint="every reference file needs the markers the model is learned on",
        )
    keep = np.asarray(pre.qc_pass, dtype=bool)
    labels = read_labels(labels_csv, len(keep))
    events = np.column_stack([np.asarray(pre.columns[m], dtype=np.float64)[keep] for m in markers])
    digest = hashlib.sha256(Path(fcs).read_bytes()).hexdigest()
    return Reference(Path(fcs).name, digest, events, labels[keep])


def sample_events(fcs: str | os.PathLike, panel: Panel, cfg: Mapping, markers: Sequence[str]):
    """A new file's events on the gating scale (all events, file order) and its QC mask."""
    pre = preprocess(str(fcs), panel, cfg, required=SCATTER_ONLY)
    missing = [m for m in markers if m not in pre.columns]
    if missing:
        raise ConfigError(
            f"file has no channel for {', '.join(missing)}, which the model was learned on",
            path=fcs,
            hint="apply a model to files of the panel it was learned on",
        )
    events = np.column_stack([np.asarray(pre.columns[m], dtype=np.float64) for m in markers])
    return events, np.asarray(pre.qc_pass, dtype=bool)
