"""Is the archive there? Tell an unreachable archive from a wrong path before any job runs.

A sample's FCS file that does not exist is normally a wrong path in the sheet: that sample
fails alone, with a record the report lists. But when a file that an earlier run did read is
gone (an unmounted share, a moved folder), rerunning its sample would overwrite good results
with "file not found" records. Snakemake deletes a job's outputs before running it, so this
must be decided when the workflow is planned, not inside the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from cytopipe.errors import ConfigError

_LISTED = 10


def was_read(record_path: str | os.PathLike) -> bool:
    """True when a preprocess record says its FCS file was there when it was written."""
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError):
        return False  # no record (new sample) or a half-written one: nothing to protect
    return bool(record.get("input_found", record.get("status") == "ok"))


def unreachable_inputs(
    samples: Iterable[tuple[str, str]], record_path: str
) -> list[tuple[str, str]]:
    """(sample_id, path) of every missing FCS file whose results came from that file.

    samples: (sample_id, path) pairs; record_path: the preprocess record's path with
    `{sample}` in it.
    """
    return [
        (sid, path)
        for sid, path in samples
        if not os.path.exists(path) and was_read(record_path.format(sample=sid))
    ]


def check_reachable(samples: Iterable[tuple[str, str]], record_path: str) -> None:
    """Stop the whole run, before any output is touched, when processed files are gone."""
    missing = unreachable_inputs(samples, record_path)
    if not missing:
        return
    shown = "; ".join(f"{sid} ({path})" for sid, path in missing[:_LISTED])
    more = f"; ... and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    folders = sorted({os.path.dirname(os.path.abspath(p)) for _, p in missing})
    raise ConfigError(
        f"{len(missing)} FCS file(s) that earlier runs processed are unreachable "
        f"(archive offline or moved? folders: {', '.join(folders[:3])}): {shown}{more}. "
        "Nothing was run and no result was changed",
        hint="mount or move the archive back and run again; to drop these samples for good, "
        "remove their rows from the sample sheet",
    )
