"""`cytopipe apply-gates`: apply an agreed Gating-ML 2.0 strategy, or a sample's gates in a
FlowJo 10 workspace, to one FCS file.

A core facility runs this over a batch with the same XML (or the workspace a scientist reviewed
in FlowJo); the output has one boolean column per population in the strategy and one row per
event in file order, so it joins with any per-event export of the same file. Large files are
gated in chunks of events.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from cytopipe.atomic import atomic_path, write_tsv
from cytopipe.errors import GatingError
from cytopipe.gating.apply import (
    DEFAULT_CHUNK_EVENTS as DEFAULT_CHUNK,
)
from cytopipe.gating.apply import apply_strategy_chunked, strategy_stats
from cytopipe.gating.gatingml import read_gatingml
from cytopipe.gating.sample_columns import event_source_from_fcs
from cytopipe.gating.strategy import EventSource, Strategy


def read_events(path: str | os.PathLike) -> EventSource:
    """The FCS reader used by apply-gates: cytopipe's lazy one (cytopipe.ingest.fcs.open_fcs).

    Events are decoded chunk by chunk as the gates need them (same values as read_fcs), so a
    file larger than memory is gated in memory of a few chunks plus the masks. The file is not
    hashed: apply-gates writes no provenance. Switching reader is this one line
    (event_source_from_flowkit(flowkit.Sample(path)) gives FlowKit's float64 events instead).
    """
    from cytopipe.ingest.fcs import open_fcs

    return event_source_from_fcs(open_fcs(path, sha256=False))


def apply_gates(
    strategy_path: str | os.PathLike,
    fcs_path: str | os.PathLike,
    *,
    chunk_events: int = DEFAULT_CHUNK,
    sample_id: str | None = None,
) -> tuple[Strategy, dict[str, np.ndarray]]:
    """Strategy and its population masks on one file; any bad input is a GatingError/FcsError.

    A FlowJo workspace (.wsp) holds gates per sample: `sample_id` names the workspace's sample
    (default: the FCS file's name, as FlowJo names samples)."""
    strategy = read_strategy(strategy_path, sample_id or os.path.basename(fcs_path))
    if not strategy.gates:
        raise GatingError("the gating document defines no gates", path=strategy_path)
    src = read_events(fcs_path)
    src.path = os.fspath(fcs_path)
    masks = apply_strategy_chunked(strategy, src, chunk_events)
    return strategy, masks


def read_strategy(path: str | os.PathLike, sample_id: str) -> Strategy:
    """Gating-ML 2.0, or one sample's gates of a FlowJo workspace (by file suffix)."""
    if str(path).lower().endswith(".wsp"):
        from cytopipe.gating.flowjo import read_flowjo_workspace

        return read_flowjo_workspace(path, [sample_id])[sample_id]
    return read_gatingml(path)


ROW_GROUP_EVENTS = 1 << 20


def write_masks(path: str | os.PathLike, strategy: Strategy, masks: dict[str, np.ndarray]) -> None:
    """Parquet with one bool column per population, in strategy order.

    Written one row group at a time: converting every mask to Arrow at once would add a copy
    of all masks (bit-packed, plus the writer's buffers) on top of them for a 50 M event file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = strategy.population_ids()
    n = len(masks[ids[0]]) if ids else 0
    schema = pa.schema([(pid, pa.bool_()) for pid in ids])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, max(n, 1), ROW_GROUP_EVENTS):
            hi = min(n, lo + ROW_GROUP_EVENTS)
            part = [pa.array(masks[pid][lo:hi], type=pa.bool_()) for pid in ids]
            writer.write_table(pa.Table.from_arrays(part, schema=schema))


def _cmd_apply_gates(args: argparse.Namespace) -> int:
    strategy, masks = apply_gates(
        args.strategy, args.fcs, chunk_events=args.chunk_events, sample_id=args.sample
    )
    write_masks(args.out, strategy, masks)
    if args.stats:
        write_tsv(args.stats, pd.DataFrame(strategy_stats(strategy, masks)))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "apply-gates",
        help="apply a Gating-ML 2.0 strategy or a FlowJo workspace's gates to an FCS file",
        description=(
            "Writes one boolean column per gate id (and quadrant id), one row per event in file "
            "order. Compensation refs: 'FCS' uses the file's own spillover."
        ),
    )
    p.add_argument("strategy", help="Gating-ML 2.0 XML file, or a FlowJo 10 workspace (.wsp)")
    p.add_argument(
        "--sample",
        help="the workspace sample whose gates to apply (default: the FCS file's name)",
    )
    p.add_argument("fcs", help="FCS file")
    p.add_argument("--out", required=True, help="output Parquet of gate memberships")
    p.add_argument("--stats", help="also write a TSV: gate_id, parent, count, pct_parent")
    p.add_argument(
        "--chunk-events",
        type=_positive_int,
        default=DEFAULT_CHUNK,
        help=f"events gated per chunk, bounds memory (default {DEFAULT_CHUNK})",
    )
    p.set_defaults(func=_cmd_apply_gates)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
