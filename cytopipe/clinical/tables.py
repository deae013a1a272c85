"""The longitudinal tables on disk: written atomically with one number format, read back with a
clear error.

Why atomic: a killed job must never leave a half-written table that the next rule would trust.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cytopipe.atomic import atomic_path, write_json
from cytopipe.clinical.longitudinal import LongitudinalResult
from cytopipe.errors import CytopipeError
from cytopipe.results import (
    EXPORT_DICTIONARY,
    LONGITUDINAL_FILES,
    MISSING_VALUES,
    NA_REP,
    WHOLE_NUMBER_COLUMNS,
)


def _integers_where_whole(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for name in WHOLE_NUMBER_COLUMNS & set(frame.columns):
        values = frame[name]
        if values.dtype == bool or not pd.api.types.is_numeric_dtype(values):
            continue
        finite = values.dropna()
        if (finite == np.round(finite)).all():
            frame[name] = values.astype("Int64")
    return frame


def write_table(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sep: str = "\t",
    float_format: str | None = None,
) -> None:
    """Write a table atomically (temp file in the same folder, then os.replace), so a killed
    job never leaves a half-written table that the next rule would trust. Whole-number day and
    count columns are written as integers; empty cells mean "not known"."""
    text = _integers_where_whole(frame).to_csv(
        sep=sep, index=False, na_rep=NA_REP, lineterminator="\n", float_format=float_format
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# Derived tables are read by people: 6 significant digits (0.0351, 93.9996, 12.2) is far more
# than flow cytometry resolves. population_stats keeps the upstream statistics unrounded.
DERIVED_FLOAT_FORMAT = "%.6g"


def write_outputs(result: LongitudinalResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write the longitudinal outputs into `out_dir`; returns their paths."""
    out = Path(out_dir)
    paths = [out / name for name in LONGITUDINAL_FILES]
    derived = DERIVED_FLOAT_FORMAT
    write_table(result.population_stats, paths[0])
    write_table(result.sample_states, paths[1], float_format=derived)
    write_table(result.patients, paths[2], float_format=derived)
    write_table(result.km, paths[3], float_format=derived)
    write_json(paths[4], result.summary)
    write_table(result.export, paths[5], sep=",", float_format=derived)
    dictionary = pd.DataFrame(
        {"column": list(EXPORT_DICTIONARY), "meaning": list(EXPORT_DICTIONARY.values())}
    )
    write_table(dictionary, paths[6])
    return paths


def read_tsv(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """A TSV written by an earlier step; CytopipeError (not a pandas traceback) when unusable."""
    try:
        return pd.read_csv(path, sep="\t", keep_default_na=True, na_values=list(MISSING_VALUES))
    except FileNotFoundError:
        raise CytopipeError(
            f"{what} not found", path=path, hint="run the earlier workflow steps first"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CytopipeError(
            f"{what} is not a readable TSV table ({exc})", path=path, hint="regenerate it"
        ) from None
