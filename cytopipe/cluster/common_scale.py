"""One fluorescence scale for every sample before events of different samples are pooled.

The gating scale follows each file: logicle T is the channel's $PnR, so a Navios file (range
2^20) sits about 0.13 lower on the logicle axis than a Fortessa file (2^18) for the same cells.
Per-sample gates do not mind (they are placed on each sample's own events), but a clustering
model trained on pooled samples would give each instrument its own metaclusters. So before
clustering, each sample's values are taken back to the instrument's linear units with the scale
recorded at preprocessing (`provenance.scales` of preprocessed/{sample}.json) and re-expressed
on one common logicle scale (clustering setting `scale`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cytopipe.errors import ConfigError
from cytopipe.preprocess.transforms import Scale


def parse_common(raw: Mapping | None, source: str) -> Scale | None:
    """The clustering setting `scale: {t, w, m, a}` (None: pool values as preprocessed)."""
    if raw is None:
        return None
    try:
        t, w, m, a = (float(raw[k]) for k in ("t", "w", "m", "a"))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "`scale` needs numeric t, w, m and a (logicle parameters), or null",
            path=source,
        ) from None
    if not (t > 0 and m > 0 and 0 <= 2 * w <= m and a >= 0):
        raise ConfigError(
            f"`scale` {raw} is not a valid logicle (T > 0, 0 <= 2W <= M)", path=source
        )
    return Scale.logicle(t, w, m, a)


def sample_scales(info_path: str | os.PathLike) -> dict[str, Scale]:
    """Per-marker scales a sample was preprocessed with; {} when the record has none (a failed
    sample, or one preprocessed by an older cytopipe: its values are pooled as they are)."""
    try:
        info = json.loads(Path(info_path).read_text())
    except (OSError, ValueError):
        return {}
    scales = (info.get("provenance") or {}).get("scales") or {}
    return {m: Scale.from_record(p) for m, p in scales.items() if isinstance(p, Mapping)}


def to_common(
    data: np.ndarray, markers: Sequence[str], scales: Mapping[str, Scale], common: Scale | None
) -> dict[str, str]:
    """Re-express `data` (events x markers, in place) on `common`; returns marker -> the scale it
    came from, for the markers that changed."""
    changed: dict[str, str] = {}
    if common is None:
        return changed
    for j, marker in enumerate(markers):
        own = scales.get(marker)
        if own is None or own == common or own.kind == "linear":
            continue
        data[:, j] = common.forward(own.inverse(data[:, j]))
        changed[marker] = str(own)
    return changed
