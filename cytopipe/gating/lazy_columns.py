"""Gate dimensions computed on demand: a columns mapping that computes a costly column
(compensation, logicle, a ratio) only when a gate asks for it, and only for the rows of the
gate's parent when it can (`take`).

cytopipe.gating.gates evaluates gates against any mapping; this is the lazy one that
cytopipe.gating.sample_columns builds for a sample, and that `with_ratios` builds for
Gating-ML ratio dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- ratio dims


@dataclass(frozen=True)
class RatioDimension:
    """Gating-ML `fratio`: A * (x - B) / (y - C) of two other dims, usable as a gate dim."""

    id: str
    numerator: str
    denominator: str
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0

    def compute(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.compute_rows(columns, None)

    def compute_rows(
        self, columns: Mapping[str, np.ndarray], rows: np.ndarray | None
    ) -> np.ndarray:
        x, y = (_take(columns, k, rows) for k in (self.numerator, self.denominator))
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.a * (x - self.b) / (y - self.c)


def _take(columns: Mapping[str, np.ndarray], key: str, rows: np.ndarray | None) -> np.ndarray:
    """columns[key][rows], computing only those rows when the mapping can (LazyColumns)."""
    if rows is None:
        return columns[key]
    take = getattr(columns, "take", None)
    return take(key, rows) if take is not None else np.asarray(columns[key])[rows]


class LazyColumns(Mapping):
    """Columns computed on first access and cached, so gates pay only for the dims they use.

    `compute` maps a key to a function of (this mapping, rows) returning the column's values
    for `rows` (an index array) or for all events when rows is None; `base` supplies plain
    columns. `take(key, rows)` lets a gate deep in the hierarchy compute a costly column
    (compensation, logicle) for its parent's events only; full columns are cached.
    """

    def __init__(
        self,
        base: Mapping[str, np.ndarray] | None = None,
        compute: Mapping[str, Callable[[Mapping[str, np.ndarray], np.ndarray | None], np.ndarray]]
        | None = None,
        n_events: int | None = None,
    ):
        self._base = base if base is not None else {}
        self._compute = dict(compute or {})
        self._cache: dict[str, np.ndarray] = {}
        self.n_events = n_events  # known length saves computing a column just to count

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._cache:
            return self._cache[key]
        if key in self._compute:
            value = np.asarray(self._compute[key](self, None))
            self._cache[key] = value
            return value
        return self._base[key]

    def take(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Values of `key` at `rows`, without computing the other events' values."""
        if key in self._cache:
            return self._cache[key][rows]
        if key in self._compute:
            return np.asarray(self._compute[key](self, rows))
        return np.asarray(self._base[key])[rows]

    def __contains__(self, key: object) -> bool:
        return key in self._compute or key in self._base

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from (k for k in self._compute if k not in self._base)

    def __len__(self) -> int:
        return len(set(self._base) | set(self._compute))


def with_ratios(columns: Mapping[str, np.ndarray], ratios: Iterable[RatioDimension]) -> LazyColumns:
    """Add ratio dims to a columns mapping, computed only if a gate asks for them."""
    return LazyColumns(columns, {r.id: r.compute_rows for r in ratios})
