"""Commands for one FCS file: `fcs-info` (triage an archive file) and `ingest` (its events,
channel table and provenance)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from cytopipe.atomic import write_json, write_parquet, write_tsv
from cytopipe.config import add_settings_arguments, settings_from_args
from cytopipe.errors import FcsError
from cytopipe.ingest import panel
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.keywords import public_keywords
from cytopipe.preprocess.compensation import spillover_from_keywords


def run_ingest(args: argparse.Namespace) -> int:
    """Standalone ingestion for a core facility: the file's events, channels and provenance."""
    cfg = settings_from_args(args)
    sample = read_fcs(args.fcs)
    panel_map = panel.load_panel(args.panel) if args.panel else None
    idx = panel.match_channels(panel_map, sample.pnn, sample.pns) if panel_map else {}
    marker_of = {i: m for m, i in idx.items()}
    out = Path(args.out)
    stem = Path(args.fcs).name.removesuffix(".fcs").removesuffix(".FCS")
    channels = pd.DataFrame(
        {
            "index": range(1, len(sample.pnn) + 1),
            "pnn": sample.pnn,
            "pns": sample.pns,
            "pnr": sample.pnr,
            "marker": [marker_of.get(i, "") for i in range(len(sample.pnn))],
        }
    )
    events = pd.DataFrame(sample.events, columns=sample.pnn)  # read_fcs refuses duplicate $PnN
    write_parquet(out / f"{stem}.events.parquet", events)
    write_tsv(out / f"{stem}.channels.tsv", channels)
    keywords = public_keywords(sample.keywords, cfg.get("keyword_allowlist") or ())
    write_json(out / f"{stem}.provenance.json", {**sample.provenance, "keywords": keywords})
    print(
        f"{args.fcs}: {sample.events.shape[0]} events x {len(sample.pnn)} channels -> {out}/{stem}.*"
    )
    return 0


def describe(path: str | os.PathLike, *, dataset: int = 0) -> dict:
    """What a core facility needs to triage an archived file (no identifying keywords)."""
    sample = read_fcs(path, dataset=dataset)
    prov = dict(sample.provenance)
    warnings = list(prov.get("warnings", []))
    try:
        spill = spillover_from_keywords(sample)
        spill_info = None if spill is None else {"source": spill.source, "channels": spill.channels}
        warnings += [] if spill is None else list(spill.warnings)
    except FcsError as exc:
        spill_info = {"source": "unusable", "error": exc.what}
        warnings.append(f"spillover: {exc.what}")
    prov["warnings"] = warnings
    return {
        **prov,
        "channels": [
            {"pnn": n, "pns": s, "pnr": r}
            for n, s, r in zip(sample.pnn, sample.pns, sample.pnr, strict=True)
        ],
        "spillover": spill_info,
    }


def _format_info(info: Mapping) -> str:
    lines = [
        f"file:        {info['file']}",
        f"version:     FCS {info['fcs_version']} (dataset {info['dataset']}, {info['datatype']}, {info['byte_order']}-endian, bits {info['bits_per_channel']})",
        f"instrument:  {info['cytometer'] or '-'}",
        f"acquired:    {info['acquisition_date'] or '-'} {info['acquisition_time'] or ''}".rstrip(),
        f"events:      {info['n_events']}",
        f"sha256:      {info['sha256']}",
        f"channels:    {info['n_channels']}",
    ]
    width = max(len(c["pnn"]) for c in info["channels"])
    for i, c in enumerate(info["channels"], 1):
        lines.append(f"  {i:>3} {c['pnn']:<{width}}  {c['pns'] or '-':<24} {c['pnr']:g}")
    spill = info["spillover"]
    if spill is None:
        lines.append("spillover:   none in file")
    elif "error" in spill:
        lines.append(f"spillover:   unusable ({spill['error']})")
    else:
        lines.append(f"spillover:   {spill['source']} ({len(spill['channels'])} channels)")
    lines.append(f"warnings:    {len(info['warnings'])}")
    lines += [f"  - {w}" for w in info["warnings"]]
    return "\n".join(lines)


def _cmd_fcs_info(args: argparse.Namespace) -> int:
    info = describe(args.file, dataset=args.dataset)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else _format_info(info))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fcs-info",
        help="describe an FCS file: version, instrument, events, channels, spillover, warnings",
    )
    p.add_argument("file", help="FCS file (also .lmd and extension-less archive files)")
    p.add_argument(
        "--dataset", type=int, default=0, help="dataset index in multi-dataset files (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_fcs_info)

    i = subparsers.add_parser(
        "ingest", help="read one FCS file: events (Parquet), channel table, provenance (JSON)"
    )
    i.add_argument("fcs")
    i.add_argument("--out", required=True, help="output folder")
    i.add_argument(
        "--panel", default=None, help="panel YAML: adds the canonical marker of each channel"
    )
    add_settings_arguments(i)
    i.set_defaults(func=run_ingest)
