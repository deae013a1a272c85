"""Atomic output files: a killed job must never leave a half-written file that a later run
(or Snakemake, which only checks existence and mtime) would trust."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from cytopipe.errors import ConfigError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    A folder given where a file goes is said as such (it read as a system error: "Is a
    directory" on the temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a folder, not a file", path=path, hint="give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for the whole lab
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Strict JSON (NaN/inf become null) so browsers and other tools can parse it too."""
    text = json.dumps(_finite(obj), indent=1, default=_jsonable, allow_nan=False)
    _write(path, lambda t: t.write_text(text))


def write_tsv(path: str | os.PathLike, df: pd.DataFrame, na_rep: str = "NaN") -> None:
    """`df` as a tab-separated table without its index, a missing value written as `na_rep`.

    The default "NaN" is cytopipe.results.NAN_REP, the spelling of every table written here so
    far (stats.tsv and collect's tables, see cytopipe.results); callers pass the constant so the
    convention is visible at the call. (This module sits beside cytopipe.results in the layers
    and may not import it, hence the literal.)
    """
    _write(path, lambda t: df.to_csv(t, sep="\t", index=False, na_rep=na_rep))


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> None:
    _write(path, lambda t: df.to_parquet(t, index=False))


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and not hasattr(obj, "__len__"):  # numpy scalar
        return _finite(obj.item())
    return obj


def _jsonable(obj: object) -> object:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
