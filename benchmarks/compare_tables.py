"""Are two runs' cohort tables the same? For refactorings that must not change behaviour, and for
a core facility checking that a new cytopipe version reproduces an archived run.

    .venv/bin/python benchmarks/compare_tables.py OLD/results/tables NEW/results/tables

Prints, per table, "identical" or the first differing rows and columns; exits 1 on any
difference. Byte-identical files are identical; otherwise the tables are read and compared
cell by cell (a float differing below 1e-12 relative counts as equal and is reported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _read(path: Path) -> pd.DataFrame | None:
    if path.suffix == ".tsv":
        return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, dtype=str)
    return None


def _cells_equal(a: pd.Series, b: pd.Series) -> np.ndarray:
    same = (a == b).to_numpy()
    x, y = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    close = np.isclose(x, y, rtol=1e-12, atol=0) & x.notna().to_numpy()
    return same | close


def compare(old: Path, new: Path) -> list[str]:
    """One line per table; a line starting with "DIFFERS" for every difference."""
    lines = []
    names = sorted({p.name for p in old.iterdir()} | {p.name for p in new.iterdir()})
    for name in names:
        a, b = old / name, new / name
        if not a.exists() or not b.exists():
            lines.append(f"DIFFERS {name}: only in {'new' if b.exists() else 'old'}")
            continue
        if a.read_bytes() == b.read_bytes():
            lines.append(f"identical {name}")
            continue
        fa, fb = _read(a), _read(b)
        if fa is None or fb is None:
            lines.append(f"DIFFERS {name}: contents differ")
            continue
        if list(fa.columns) != list(fb.columns) or len(fa) != len(fb):
            lines.append(f"DIFFERS {name}: shape/columns {fa.shape} vs {fb.shape}")
            continue
        bad = [c for c in fa.columns if not _cells_equal(fa[c], fb[c]).all()]
        if bad:
            c = bad[0]
            row = int(np.flatnonzero(~_cells_equal(fa[c], fb[c]))[0])
            lines.append(
                f"DIFFERS {name}: columns {bad[:6]}; first at row {row}: "
                f"{fa[c].iloc[row]!r} vs {fb[c].iloc[row]!r}"
            )
        else:
            lines.append(f"equal {name} (numbers equal within 1e-12, text identical)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    lines = compare(args.old, args.new)
    print("\n".join(lines))
    return 1 if any(line.startswith("DIFFERS") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
