"""What a folder of FCS files holds, for `cytopipe init`: panels (files with the same channels),
which canonical markers each panel has on which channel and which it lacks, whether the B-cell
analysis can run on it, and a proposed sample sheet.

Why: a core facility with its own archive should not have to read $PnN/$PnS of every file to
write samples.tsv and panel.yaml by hand. Everything here is pure: the command reads headers
(cytopipe.commands.init) and writes the files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from cytopipe.ingest.panel import Panel, match_channels, scatterless
from cytopipe.ingest.panel import lacking as panel_lacking

# The sample sheet init proposes: what the files tell (id, path, date, instrument) and the
# columns a clinic fills in (patient, day or dates, counts, age, disease).
SHEET_COLUMNS = [
    "sample_id", "patient_id", "path", "day", "collection_date", "infusion_date",
    "abs_lymphocytes", "age_years", "disease", "instrument", "panel",
]  # fmt: skip


@dataclass
class FileInfo:
    """One file's header as init needs it; `error` when it cannot be read."""

    path: str
    pnn: Sequence[str] = ()
    pns: Sequence[str] = ()
    date: str | None = None
    instrument: str = ""
    error: str = ""


@dataclass
class PanelGroup:
    """Files sharing one channel layout, and what the panel file makes of it."""

    name: str
    channels: list[tuple[str, str]]  # (PnN, PnS)
    files: list[str] = field(default_factory=list)
    markers: dict[str, str] = field(default_factory=dict)  # canonical -> channel
    missing: list[str] = field(default_factory=list)  # canonical markers without a channel
    unmatched: list[str] = field(default_factory=list)  # channels no marker claimed
    b_cells: bool = False
    why: str = ""


def panel_groups(
    infos: Sequence[FileInfo], panel: Panel, required: Sequence[str]
) -> list[PanelGroup]:
    """Readable files grouped by channel layout (in first-seen order), matched to `panel`;
    `required`: the markers the B-cell analysis needs (cytopipe.preprocess.sample.REQUIRED)."""
    groups: dict[tuple, PanelGroup] = {}
    for info in infos:
        if info.error:
            continue
        key = tuple(zip(info.pnn, info.pns, strict=True))
        if key not in groups:
            groups[key] = _describe(f"panel {len(groups) + 1}", list(key), panel, required)
        groups[key].files.append(info.path)
    return list(groups.values())


def _describe(
    name: str, channels: list[tuple[str, str]], panel: Panel, required: Sequence[str]
) -> PanelGroup:
    pnn = [n for n, _ in channels]
    pns = [s for _, s in channels]
    found = match_channels(panel, pnn, pns)
    label = [f"{n} ({s})" if s else n for n, s in channels]
    group = PanelGroup(name, channels)
    group.markers = {m: label[i] for m, i in found.items()}
    group.missing = [m for m in panel if m not in found]
    claimed = set(found.values())
    group.unmatched = [label[i] for i in range(len(channels)) if i not in claimed]
    lacking = [m for m in panel_lacking(found, required) if not _height_stands_in(m, found)]
    group.b_cells = not lacking
    group.why = (
        "B-cell analysis possible"
        + (" (no scatter channels: gated on the stains alone)" if scatterless(found) else "")
        if group.b_cells
        else f"no B-cell analysis: no channel for {', '.join(lacking)} (add the file's name "
        "for it to panel.yaml if it is there)"
    )
    return group


def _height_stands_in(marker: str, found: Mapping[str, int]) -> bool:
    """FACSCalibur-style files record pulse heights only: FSC-H stands in for FSC-A."""
    return marker.endswith("-A") and marker.replace("-A", "-H") in found


def sample_ids(paths: Sequence[str]) -> list[str]:
    """A sample id per file from its name: letters, digits, '_', '.', '-' (others become '_'),
    unique (a repeated name gets _2, _3, ...)."""
    out, seen = [], {}
    for path in paths:
        stem = re.sub(r"\.(fcs|lmd)$", "", path.replace("\\", "/").rsplit("/", 1)[-1], flags=re.I)
        sid = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "sample"
        if not sid[0].isalnum():
            sid = f"s{sid}"
        n = seen.get(sid, 0) + 1
        seen[sid] = n
        out.append(sid if n == 1 else f"{sid}_{n}")
    return out


def proposed_sheet(
    infos: Sequence[FileInfo], groups: Sequence[PanelGroup], previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per readable file: what its header tells, the columns to fill left empty. Rows
    of `previous` (an earlier init, maybe filled in by hand) are kept as they are, matched by
    path; only new files are added."""
    panel_of = {f: g.name for g in groups for f in g.files}
    readable = [i for i in infos if not i.error]
    kept = previous.copy() if previous is not None and len(previous) else None
    known = set(kept["path"].astype(str)) if kept is not None and "path" in kept else set()
    new = [i for i in readable if i.path not in known]
    taken = (
        set(kept["sample_id"].astype(str)) if kept is not None and "sample_id" in kept else set()
    )
    ids = _unused(sample_ids([i.path for i in new]), taken)
    rows = [
        {"sample_id": sid, "path": i.path, "collection_date": i.date or "",
         "instrument": i.instrument, "panel": panel_of.get(i.path, "")}
        for sid, i in zip(ids, new, strict=True)
    ]  # fmt: skip
    added = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    if kept is None:
        return added.fillna("")
    for column in SHEET_COLUMNS:
        if column not in kept:
            kept[column] = ""
    return pd.concat([kept, added], ignore_index=True).fillna("")


def _unused(ids: list[str], taken: set[str]) -> list[str]:
    out = []
    for sid in ids:
        candidate, n = sid, 1
        while candidate in taken:
            n += 1
            candidate = f"{sid}_{n}"
        taken.add(candidate)
        out.append(candidate)
    return out
