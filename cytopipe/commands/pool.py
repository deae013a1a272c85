"""The `pool` command: several centres' cohort exports checked for the same definitions and
pooled into one export, with the pooled page (Kaplan-Meier by centre, log-rank test, medians,
swimmers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from cytopipe.atomic import atomic_path
    from cytopipe.clinical.pooling import (
        centre_codes,
        check_definitions,
        km_by_centre,
        km_input,
        log_rank,
        medians,
        pool_exports,
    )
    from cytopipe.errors import CytopipeError
    from cytopipe.report.pages import write_plotly_asset
    from cytopipe.report.pooled_page import pooled_page

    exports = {}
    for path in map(Path, args.exports):
        try:
            exports[path.name if path.name not in exports else str(path)] = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise CytopipeError(f"cannot read the export: {exc}", path=path) from None
    shared = check_definitions(exports)
    pooled = pool_exports(exports)
    curves = km_by_centre(pooled)
    data = km_input(pooled)
    test = log_rank(data["time"], data["observed"], data["centre"])
    table = medians(curves)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pooled_export.csv") as tmp:
        pooled.to_csv(tmp, index=False)
    with atomic_path(out / "pooled_medians.tsv") as tmp:
        table.assign(
            log_rank_chi2=test["chi2"], log_rank_df=test["df"], log_rank_p=test["p"]
        ).to_csv(tmp, sep="\t", index=False)
    write_plotly_asset(out)
    sources = {
        code: name for name, codes in centre_codes(exports).items() for code in codes.unique()
    }
    with atomic_path(out / "pooled.html") as tmp:
        Path(tmp).write_text(pooled_page(pooled, curves, table, test, shared, sources))
    p = "n/a" if test["p"] != test["p"] else f"{test['p']:.3g}"
    print(
        f"pool: {len(exports)} exports, {pooled['centre'].nunique()} centres, {len(pooled)} patients; "
        f"log-rank p {p}; {out / 'pooled.html'}"
    )
    return 0


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pool",
        help="pool several centres' cohort exports (same definitions checked) into one analysis",
        description=(
            "Reads each centre's tables/cohort_export.csv, refuses when their definitions "
            "(def_* columns, cytopipe version) differ, naming the field, and writes "
            "pooled_export.csv, pooled_medians.tsv (per centre and pooled, with the log-rank "
            "test) and pooled.html (Kaplan-Meier by centre, swimmers by centre, disease and age)."
        ),
    )
    parser.add_argument("exports", nargs="+", help="cohort_export.csv files, one per centre")
    parser.add_argument("--out", required=True, help="folder for the pooled files")
    parser.set_defaults(func=_run)
