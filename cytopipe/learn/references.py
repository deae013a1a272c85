"""Expert gating as training data: each reference FCS file on cytopipe's own transform (panel,
compensation, logicle, QC) with one expert label per event.

Labels come from one of:
- a CSV with one row per event in file order: a `label` column (FlowCAP-style exports, one
  population per event), or one 0/1 column per population (exported gates);
- a Gating-ML 2.0 file applied to each reference file (cytopipe's exact evaluation);
- a FlowJo 10 workspace, its samples matched to the files by name.
With gates, an event in several populations takes the last (most specific) one of the
hierarchy it belongs to; in none: "other". Unsupported gate types are GatingErrors that name
them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    # population -> its parent in the expert's hierarchy (None: a top population); empty when
    # the expert's labels are flat (one `label` column)
    parents: dict = field(default_factory=dict)


TRUTHY = ("1", "True", "true", "TRUE")


def _label_table(path: str | os.PathLike, n_events: int) -> pd.DataFrame:
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
    return table


def read_labels(path: str | os.PathLike, n_events: int) -> np.ndarray:
    """One label per event from a label CSV (see the module); ConfigError when the rows do not
    match the file's events."""
    table = _label_table(path, n_events)
    if "label" in table:
        return table["label"].to_numpy(dtype=object)
    return labels_from_masks({c: table[c].isin(TRUTHY).to_numpy() for c in table.columns}, n_events)


def labels_from_masks(masks: Mapping[str, np.ndarray], n_events: int) -> np.ndarray:
    """The most specific population of each event (masks in hierarchy order, parents first)."""
    labels = np.full(n_events, OTHER, dtype=object)
    for population, member in masks.items():
        labels[np.asarray(member, dtype=bool)] = population
    return labels


def expert_masks(
    source: str | os.PathLike, fcs: str | os.PathLike, n_events: int
) -> dict[str, np.ndarray]:
    """Membership of every population of the expert's gating of `fcs` (all events, file order):
    a FlowJo workspace (.wsp), a Gating-ML file (.xml) or a label CSV (a `label` column: one
    population per event; or one 0/1 column per population, parents included)."""
    suffix = Path(source).suffix.lower()
    if suffix == ".wsp":
        from cytopipe.gating.flowjo import apply_flowjo_workspace

        masks = apply_flowjo_workspace(source, fcs)
    elif suffix == ".xml":
        from cytopipe.gating.apply import apply_strategy
        from cytopipe.gating.gatingml import read_gatingml
        from cytopipe.gating.sample_columns import event_source_from_fcs
        from cytopipe.ingest.fcs import open_fcs

        strategy = read_gatingml(source)
        masks = apply_strategy(strategy, event_source_from_fcs(open_fcs(fcs, sha256=False)))
    else:
        table = _label_table(source, n_events)
        if "label" in table:
            labels = table["label"].to_numpy(dtype=object)
            return {p: labels == p for p in dict.fromkeys(labels) if p not in ("", OTHER)}
        return {c: table[c].isin(TRUTHY).to_numpy() for c in table.columns}
    first = next(iter(masks.values()), np.zeros(0))
    if len(first) != n_events:
        raise ConfigError(
            f"expert gates gave {len(first)} events for {n_events}", path=source,
            hint="apply the gates to the same FCS file",
        )  # fmt: skip
    return {p: np.asarray(m, dtype=bool) for p, m in masks.items()}


def hierarchy(masks: dict[str, np.ndarray]) -> dict[str, str | None]:
    """Each population's parent, read from the events: the smallest other population holding
    all of its events (None: no other does). Exported gates name no hierarchy (a CSV of 0/1
    columns), but membership shows it; a population of no events has no parent to find."""
    sizes = {p: int(m.sum()) for p, m in masks.items()}
    parents: dict[str, str | None] = {}
    for p, m in masks.items():
        holders = [
            q for q, n in masks.items()
            if q != p and sizes[q] >= sizes[p] > 0 and not (m & ~n).any()
        ]  # fmt: skip
        parents[p] = min(holders, key=lambda q: (sizes[q], q)) if holders else None
    return parents


def expert_labels(source: str | os.PathLike, fcs: str | os.PathLike, n_events: int) -> np.ndarray:
    """One label per event of `fcs` (its most specific expert population) from a label CSV, a
    Gating-ML file (.xml) or a FlowJo workspace (.wsp), by the file's suffix."""
    if Path(source).suffix.lower() not in (".wsp", ".xml"):
        return read_labels(source, n_events)
    return labels_from_masks(expert_masks(source, fcs, n_events), n_events)


def load_reference(
    fcs: str | os.PathLike,
    labels_csv: str | os.PathLike,  # a label CSV, Gating-ML (.xml) or FlowJo workspace (.wsp)
    panel: Panel,
    cfg: Mapping,
    markers: Sequence[str],
) -> Reference:
    """The file's events (kept by QC) on the gating scale of `markers`, with their labels."""
    events, keep, _ = sample_events(fcs, panel, cfg, markers)
    if _flat_csv(labels_csv):
        labels, parents = read_labels(labels_csv, len(keep)), {}
    else:  # each event's most specific population: larger (parent) populations first
        masks = expert_masks(labels_csv, fcs, len(keep))
        by_size = dict(sorted(masks.items(), key=lambda pm: -int(pm[1].sum())))
        labels = labels_from_masks(by_size, len(keep))
        parents = hierarchy({p: m[keep] for p, m in masks.items()})
    digest = hashlib.sha256(Path(fcs).read_bytes()).hexdigest()
    return Reference(Path(fcs).name, digest, events[keep], labels[keep], parents)


def _flat_csv(source: str | os.PathLike) -> bool:
    """A label CSV with one `label` column: one population per event, no hierarchy."""
    if Path(source).suffix.lower() in (".wsp", ".xml"):
        return False
    try:
        header = pd.read_csv(source, nrows=0, dtype=str).columns
    except (OSError, ValueError):
        return True  # read_labels names the problem
    return "label" in header


def sample_events(fcs: str | os.PathLike, panel: Panel, cfg: Mapping, markers: Sequence[str]):
    """A file's events on the gating scale of `markers` (all events, file order), its QC mask
    and its preprocessing record (channels, scales, spillover); ConfigError naming the markers
    the file lacks."""
    pre = preprocess(str(fcs), panel, cfg, required=SCATTER_ONLY)
    missing = [m for m in markers if m not in pre.columns]
    if missing:
        raise ConfigError(
            f"file has no channel for {', '.join(missing)}, which the model is learned on",
            path=fcs,
            hint="reference files and the files a model gates need the same panel",
        )
    events = np.column_stack([np.asarray(pre.columns[m], dtype=np.float64) for m in markers])
    return events, np.asarray(pre.qc_pass, dtype=bool), pre.info
