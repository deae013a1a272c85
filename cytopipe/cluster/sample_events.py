"""The gated events of one sample, read for clustering, on the cohort's common scale.

One scale: samples are pooled on a common logicle (cytopipe.cluster.common_scale), not on each
file's own (T = $PnR), so two instruments' cells of one kind share metaclusters. A sample that
cannot be clustered (failed upstream, no gates, missing markers) raises Unusable: training skips
it, mapping reports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cytopipe.cluster.common_scale import sample_scales, to_common
from cytopipe.cluster.settings import Settings
from cytopipe.errors import CytopipeError
from cytopipe.results import record_path_beside, sample_id_of_events


@dataclass
class SampleEvents:
    """The clustered events of one sample (`data`: rows x model markers) and its gate masks
    restricted to those events, so masks and rows line up."""

    sample_id: str
    data: np.ndarray
    gates: dict[str, np.ndarray]
    n_dropped: int = 0  # events with a non-finite marker value, left out
    rescaled: dict[str, str] = field(default_factory=dict)  # marker -> its own scale


class Unusable(CytopipeError):
    """A sample that cannot be clustered; training skips it, mapping reports it."""


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
    sid = sample_id or sample_id_of_events(events_path)
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
    scales = sample_scales(info_path or record_path_beside(events_path))
    rescaled = to_common(data, markers, scales, settings.scale)
    return SampleEvents(sid, data, masks, dropped, rescaled)
