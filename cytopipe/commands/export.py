"""`cytopipe export-fcs`: the events of one gated population of a sample as an FCS file, with the
file's original channels and keywords, for tools that only read FCS (e.g. the B cells of every
sample for a downstream clustering tool).

The events are the original file's values as read (linear; a log-amplified channel decoded, so
its $PnE becomes 0,0 and its $PnR the decoded top), not the gating scale; the spillover keyword
stays valid. Two keywords say where the file came from: CYTOPIPE_SOURCE (the original file and
its SHA-256) and CYTOPIPE_POPULATION. The original file is never modified.
"""

from __future__ import annotations

import argparse
import math
import re
from array import array
from pathlib import Path
from typing import Any

# Keywords that describe the original file's layout, not its content: flowio writes its own.
LAYOUT = re.compile(
    r"^\$?(BEGIN|END)(DATA|ANALYSIS|STEXT)$|^\$?(NEXTDATA|TOT|PAR|DATATYPE|BYTEORD|MODE)$"
    r"|^\$?P\d+[BENSG]$",
    re.IGNORECASE,
)


def carried_keywords(keywords: dict[str, str], tops: list[float]) -> dict[str, str]:
    """The original keywords a population file keeps (layout ones dropped; read_fcs keeps them
    lower-case without '$': standard ones get it back), with each channel's $PnR the top of its
    values as read."""
    out = {}
    for key, value in keywords.items():
        k = key.lstrip("$").upper()
        if LAYOUT.match(k) or re.match(r"^P\d+R$", k):
            continue
        out[f"${k}" if k in STANDARD or re.match(r"^P\d+[A-Z]$", k) else k] = value
    for i, top in enumerate(tops, start=1):
        out[f"$P{i}R"] = str(int(math.ceil(top)))
    return out


STANDARD = {
    "BTIM", "ETIM", "CELLS", "COM", "CSMODE", "CSVBITS", "CYT", "CYTSN", "DATE", "EXP", "FIL",
    "INST", "LOST", "OP", "PROJ", "SMNO", "SPILLOVER", "SRC", "SYS", "TIMESTEP", "TR", "VOL",
    "ABRT", "BEGINDATETIME", "ENDDATETIME", "CARRIERID", "CARRIERTYPE", "LOCATIONID",
    "ORIGINALITY", "LAST_MODIFIER", "LAST_MODIFIED", "PLATEID", "PLATENAME", "WELLID",
    "FLOWRATE", "UNSTAINEDCENTERS", "COMP", "GATE", "GATING", "UNICODE",
}  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    import flowio
    import numpy as np
    import pandas as pd

    from cytopipe.atomic import atomic_path
    from cytopipe.errors import CytopipeError
    from cytopipe.ingest.fcs import read_fcs
    from cytopipe.preprocess.ranges import declared_top

    sample = read_fcs(args.fcs)
    try:
        gates = pd.read_parquet(args.gates)
    except (OSError, ValueError) as exc:
        raise CytopipeError(f"cannot read gate membership: {exc}", path=args.gates) from None
    if args.population not in gates:
        raise CytopipeError(
            f"no population {args.population!r} in the gate membership",
            path=args.gates, hint=f"populations: {', '.join(gates.columns)}",
        )  # fmt: skip
    if len(gates) != sample.n_events:
        raise CytopipeError(
            f"the gate membership has {len(gates)} rows but the file {sample.n_events} events",
            path=args.gates, hint="export with the gates.parquet written for this FCS file",
        )  # fmt: skip
    rows = gates[args.population].to_numpy(dtype=bool)
    events = np.ascontiguousarray(sample.events[rows], dtype="<f4")
    tops = [float(declared_top(sample, i) or r) for i, r in enumerate(sample.pnr)]
    metadata = carried_keywords(dict(sample.keywords), tops)
    sha = sample.provenance.get("sha256") or ""
    metadata["CYTOPIPE_SOURCE"] = f"{Path(args.fcs).name} sha256 {sha}"
    metadata["CYTOPIPE_POPULATION"] = args.population
    data = array("f")
    data.frombytes(events.tobytes())
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        flowio.create_fcs(fh, data, list(sample.pnn), list(sample.pns), metadata_dict=metadata)
    print(f"{args.out}: {int(rows.sum())} {args.population} events of {sample.n_events}")
    return 0


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export-fcs",
        help="write one gated population of a sample as an FCS file (original channels, keywords)",
        description="Reads FCS and its gate membership (gates.parquet of the workflow, or "
        "`cytopipe autogate --out`) and writes the population's events with the original "
        "channels and keywords.",
    )
    parser.add_argument("fcs", help="the original FCS file")
    parser.add_argument("--gates", required=True, help="gate membership (Parquet, file order)")
    parser.add_argument("--population", required=True, help="population to export, e.g. b_cells")
    parser.add_argument("--out", required=True, help="FCS file to write")
    parser.set_defaults(func=_run)
