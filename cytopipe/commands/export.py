"""`cytopipe export-fcs` and `export-anndata`: results other tools open. export-fcs writes the
events of one gated population of a sample as an FCS file, with the
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
import sys
from array import array
from pathlib import Path
from typing import Any

from cytopipe.errors import ConfigError

# Keywords that describe the original file's layout, not its content: flowio writes its own,
# and $PnR is rewritten from the values' tops.
LAYOUT = re.compile(
    r"^\$?(BEGIN|END)(DATA|ANALYSIS|STEXT)$|^\$?(NEXTDATA|TOT|PAR|DATATYPE|BYTEORD|MODE)$"
    r"|^\$?P\d+[BENSGR]$",
    re.IGNORECASE,
)


def carried_keywords(keywords: dict[str, str], tops: list[float]) -> dict[str, str]:
    """The original keywords a population file keeps (layout ones dropped; read_fcs keeps them
    lower-case without '$': standard ones get it back), with each channel's $PnR the top of its
    values as read."""
    out = {}
    for key, value in keywords.items():
        k = key.lstrip("$").upper()
        if LAYOUT.match(k):
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
    ad = subparsers.add_parser(
        "export-anndata",
        help="write gated samples as AnnData (.h5ad) for scanpy/pytometry/FlowSOM users",
        description="Events of every gated sample of a results folder (a fixed-seed subsample "
        "per sample) x markers on the gating scale; gate membership, sample, patient and day "
        "in obs; provenance in uns.",
    )
    ad.add_argument("--results", required=True, help="the workflow's results folder")
    ad.add_argument("--out", required=True, help=".h5ad file to write")
    ad.add_argument("--samples", nargs="*", help="only these sample ids")
    ad.add_argument("--per-sample", type=int, default=10_000,
                    help="events per sample (0: all QC-kept events; default 10000)")  # fmt: skip
    ad.add_argument("--seed", type=int, default=0, help="subsampling seed (default 0)")
    ad.set_defaults(func=_run_anndata)
    fj = subparsers.add_parser(
        "export-flowjo",
        help="write samples' automated gates as one FlowJo 10 workspace (.wsp)",
        description="Every sample with its own gates (from the workflow's gates.xml), "
        "compensation and transforms, in one group; populations with `or:` parts become "
        "FlowJo OR gates. FlowJo finds each FCS file at its path.",
    )
    fj.add_argument("--gatingml", nargs="+", required=True, help="samples/{sample}/gates.xml")
    fj.add_argument("--fcs", nargs="+", required=True, help="each sample's FCS file, same order")
    fj.add_argument("--out", required=True, help=".wsp file to write")
    fj.set_defaults(func=_run_flowjo)


def _run_flowjo(args: argparse.Namespace) -> int:
    """Samples without gates (failed upstream), without their FCS file, or with a file name
    already in the workspace are left out and named; the others are written."""
    from cytopipe.gating.flowjo_export import write_workspace
    from cytopipe.gating.gatingml import read_gatingml

    if len(args.gatingml) != len(args.fcs):
        raise ConfigError(
            f"{len(args.gatingml)} Gating-ML files but {len(args.fcs)} FCS files",
            hint="give one --fcs file per --gatingml file, in the same order",
        )
    samples, names = [], set()
    for xml, fcs in zip(args.gatingml, args.fcs, strict=True):
        why = ""
        strategy = read_gatingml(xml) if _has_gates(xml) else None
        if strategy is None or not strategy.gates:
            why = "no gates (the sample failed upstream)"
        elif not Path(fcs).is_file():
            why = "its FCS file is not there"
        elif Path(fcs).name in names:
            why = f"another sample of this workspace has the file name {Path(fcs).name}"
        if why:
            print(f"{args.out}: left out {fcs}: {why}", file=sys.stderr)
            continue
        names.add(Path(fcs).name)
        samples.append((strategy, fcs))
    for fcs, why in write_workspace(samples, args.out):
        print(f"{args.out}: left out {fcs}: {why}", file=sys.stderr)
        samples = [s for s in samples if str(s[1]) != fcs]
    print(f"{args.out}: {len(samples)} samples with their gates")
    return 0


def _has_gates(path: str) -> bool:
    """Whether a sample's gates.xml holds gates (a failed sample's is an empty document)."""
    import xml.etree.ElementTree as ET

    try:
        return len(ET.parse(path).getroot()) > 0
    except (OSError, ET.ParseError):
        return False


def _run_anndata(args: argparse.Namespace) -> int:
    """Every gated sample of a results folder (or those named) as one AnnData: events (a fixed-
    seed subsample of each sample's QC-kept events) x markers on the gating scale, gate
    membership and the sample's patient/day in obs, provenance in uns."""
    import json

    import anndata as ad
    import numpy as np
    import pandas as pd

    from cytopipe import __version__
    from cytopipe import results as layout
    from cytopipe.errors import CytopipeError
    from cytopipe.preprocess.sample import split_event_table

    root = Path(args.results)
    wanted = set(args.samples or ())
    folders = sorted(p.parent for p in layout.samples_folder(root).glob(f"*/{layout.SAMPLE_GATES}"))
    states_path = layout.table_path(root, "sample_states")
    states = (pd.read_csv(states_path, sep="\t").set_index("sample_id")
              if states_path.exists() else pd.DataFrame())  # fmt: skip
    rng = np.random.default_rng(args.seed)
    parts, provenance = [], {}
    for folder in folders:
        sid = folder.name
        if wanted and sid not in wanted:
            continue
        gates = pd.read_parquet(layout.sample_gates_path(folder))
        events_path = layout.preprocessed_events_path(root, sid)
        if gates.empty or not events_path.exists():
            continue  # a failed sample has no events to export
        events = pd.read_parquet(events_path)
        marker_columns, qc_pass, _ = split_event_table(events)
        kept = np.flatnonzero(qc_pass)
        if args.per_sample and kept.size > args.per_sample:
            kept = np.sort(rng.choice(kept, args.per_sample, replace=False))
        markers = [c for c in marker_columns if c != "Time"]
        obs = gates.iloc[kept].reset_index(drop=True).astype(bool)
        obs.insert(0, "event", kept)
        obs.insert(0, "sample_id", sid)
        for column in ("patient_id", "day"):
            obs[column] = (
                states.loc[sid, column] if sid in states.index and column in states else np.nan
            )
        parts.append((events[markers].to_numpy(dtype=np.float32)[kept], obs, markers))
        record = layout.preprocessed_record_path(root, sid)
        if record.exists():
            prov = json.loads(record.read_text()).get("provenance") or {}
            provenance[sid] = json.dumps(
                {k: prov.get(k) for k in ("sha256", "scales", "cytopipe_version")}
            )
    if not parts:
        raise CytopipeError("no gated sample to export", path=root, hint="run the workflow first")
    markers = sorted(
        {m for _, _, ms in parts for m in ms}, key=[m for _, _, ms in parts for m in ms].index
    )
    x = np.vstack([pd.DataFrame(v, columns=ms).reindex(columns=markers).to_numpy(np.float32)
                   for v, _, ms in parts])  # fmt: skip
    obs = pd.concat([o for _, o, _ in parts], ignore_index=True)
    for column in obs.columns:
        if obs[column].dtype == object:
            obs[column] = obs[column].astype(str).astype("category")
    obs.index = (obs["sample_id"].astype(str) + ":" + obs["event"].astype(str)).to_numpy()
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=markers))
    adata.uns["cytopipe"] = {
        "version": __version__, "results": str(root.resolve()), "per_sample": int(args.per_sample),
        "seed": int(args.seed), "scale": "gating scale: scatter / range, fluorescence logicle",
        "provenance": provenance,
    }  # fmt: skip
    adata.write_h5ad(args.out)
    print(f"{args.out}: {adata.n_obs} events x {adata.n_vars} markers from {len(parts)} samples")
    return 0
