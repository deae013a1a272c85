"""The files of a simulated sample: `NAME.fcs` (FCS 3.1, float32) and `NAME.truth.parquet`
beside it, holding the true population of each event (and `anomaly` when anomalies were planted).

Why beside the FCS file: the truth travels with the file through any folder layout, and the
pipeline never reads it (only tests and benchmarks do).
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import flowio
import numpy as np
import pandas as pd

from cytopipe.errors import CytopipeError
from cytopipe.synth.simulate import SimulatedSample


def truth_path(fcs_path: str | os.PathLike) -> Path:
    """`NAME.fcs` -> `NAME.truth.parquet` beside it."""
    p = Path(fcs_path)
    return p.with_name((p.name[:-4] if p.suffix.lower() == ".fcs" else p.name) + ".truth.parquet")


def read_truth(fcs_path: str | os.PathLike) -> pd.DataFrame:
    """The per-event truth table of a synthetic FCS file (column `population`, maybe `anomaly`)."""
    path = truth_path(fcs_path)
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise CytopipeError(
            f"cannot read synthetic truth: {exc}",
            path=path,
            hint="truth files exist only beside FCS files written by cytopipe.synth.sample_files",
        ) from exc


def write_sample(path: str | os.PathLike, sample: SimulatedSample) -> Path:
    """Write `sample` as an FCS 3.1 file (float32) and its truth parquet beside it."""
    path = Path(path)
    metadata = {"$FIL": path.name, **sample.keywords}
    for i, r in enumerate(sample.pnr, start=1):
        metadata[f"p{i}r"] = format(r, ".0f")
    data = array("f")
    data.frombytes(np.ascontiguousarray(sample.events, dtype="<f4").tobytes())
    truth = pd.DataFrame({"population": sample.labels, **sample.extra_truth})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            flowio.create_fcs(fh, data, sample.pnn, sample.pns, metadata_dict=metadata)
        truth.to_parquet(truth_path(path), index=False)
    except OSError as exc:
        raise CytopipeError(
            f"cannot write synthetic sample: {exc.strerror or exc}",
            path=path,
            hint="check that the output folder is writable and the disk is not full",
        ) from exc
    return path
