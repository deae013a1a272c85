"""FlowJo 10 workspaces (.wsp): import gates for review overrides, export automated gates.

flowkit reads and writes the XML (its Workspace and WSP writer); gates are converted to
cytopipe's plain gate types and evaluated by cytopipe.gating.gates, like Gating-ML strategies.
FlowJo keys transforms and compensation by channel, so an exported workspace names each gate
dimension by its FCS channel ($PnN) and carries that channel's scale.

What flowkit can represent limits the round trip: FlowJo ellipses are read as polygons (as
FlowJo itself evaluates them), and flowkit's writer supports rectangle and polygon gates,
linear/logicle/biex scales and one spillover matrix. Quadrant gates are exported as one
rectangle per quadrant (exact); ellipsoid and boolean gates are refused with a clear error.
"""

from __future__ import annotations

import io
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.apply import apply_strategy
from cytopipe.gating.gates import (
    BooleanGate,
    EllipsoidGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RectangleGate,
    dependency_order,
)
from cytopipe.gating.gatingml import from_flowkit, to_flowkit
from cytopipe.gating.sample_columns import event_source_from_flowkit
from cytopipe.gating.strategy import DimSpec, EventSource, Strategy
from cytopipe.preprocess.compensation import Spillover
from cytopipe.preprocess.transforms import Scale


def _workspace(wsp_path: str | os.PathLike, fcs=None):
    import flowkit as fk

    if not os.path.isfile(wsp_path):
        raise GatingError("FlowJo workspace not found", path=wsp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flowkit warns per sample it does not load
            return fk.Workspace(
                os.fspath(wsp_path), fcs_samples=fcs, load_missing_file_data=fcs is None
            )
    except Exception as exc:  # lxml / KeyError / ValueError on malformed workspaces
        raise GatingError(
            f"cannot read FlowJo workspace: {type(exc).__name__}: {exc}",
            path=wsp_path,
            hint="export it again from FlowJo 10",
        ) from None


def read_flowjo_workspace(
    wsp_path: str | os.PathLike, sample_ids: Sequence[str] | None = None
) -> dict[str, Strategy]:
    """Each sample's gates (group template plus its custom gates) as a Strategy."""
    ws = _workspace(wsp_path)
    ids = ws.get_sample_ids(loaded_only=False)
    out = {}
    for sid in sample_ids or ids:
        if sid not in ids:
            raise GatingError(
                f"workspace has no sample {sid!r}", path=wsp_path, hint=f"samples: {ids}"
            )
        try:
            out[sid] = from_flowkit(
                ws.get_gating_strategy(sid), sample_id=sid, path=os.fspath(wsp_path)
            )
        except GatingError as exc:
            raise GatingError(f"sample {sid!r}: {exc.what}", path=wsp_path, hint=exc.hint) from None
    return out


def flowjo_stored_counts(wsp_path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Event counts FlowJo saved per sample and population path ('A/B/C'); -1 = not computed.

    These are FlowJo's own numbers, useful to check that a reviewed workspace still gives
    what the scientist saw; they may be stale if the workspace was saved before recomputing.
    """
    try:
        root = ET.parse(os.fspath(wsp_path)).getroot()
    except (OSError, ET.ParseError) as exc:
        raise GatingError(f"cannot read FlowJo workspace: {exc}", path=wsp_path) from None
    out: dict[str, dict[str, int]] = {}
    for node in root.iter("SampleNode"):
        counts: dict[str, int] = {}
        _collect_counts(node, (), counts)
        out[node.get("name", "")] = counts
    return out


def _collect_counts(el: ET.Element, path: tuple[str, ...], counts: dict[str, int]) -> None:
    for sub in el.findall("Subpopulations"):
        for pop in sub:
            if pop.tag not in ("Population", "AndNode", "OrNode", "NotNode"):
                continue
            p = (*path, pop.get("name", ""))
            counts["/".join(p)] = int(float(pop.get("count", "-1")))
            _collect_counts(pop, p, counts)


def apply_flowjo_workspace(
    wsp_path: str | os.PathLike, fcs_path: str | os.PathLike, sample_id: str | None = None
) -> dict[str, np.ndarray]:
    """Membership masks of one sample's workspace gates on its FCS file."""
    import flowkit as fk

    sid = sample_id or Path(fcs_path).name
    strategy = read_flowjo_workspace(wsp_path, [sid])[sid]
    return apply_strategy(strategy, event_source_from_flowkit(fk.Sample(os.fspath(fcs_path))))


# --------------------------------------------------------------------------- export


def export_flowjo_workspace(
    gates: Sequence[Gate],
    sample_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    dims: Mapping[str, DimSpec] | None = None,
    scales: Mapping[str, Scale] | None = None,
    matrix: Spillover | None = None,
    group_name: str = "cytopipe",
) -> None:
    """Write a FlowJo 10 workspace holding `gates` for one FCS file, for review in FlowJo.

    `dims` maps each gate dim key to its FCS channel, compensation (matrix id) and scale id
    in `scales`; a key missing from `dims` is taken as an uncompensated, linear channel name.
    Limits and vertices are on the scale of their dims, as cytopipe evaluates them.
    """
    import flowkit as fk

    dims = dict(dims or {})
    flat = _flowjo_gates(gates)
    _check_exportable(flat, dims, scales or {}, matrix)
    strategy = Strategy(
        flat,
        {k: dims.get(k, DimSpec(k)) for g in flat for k in g.dims},
        dict(scales or {}),
        {matrix.id: matrix} if matrix is not None else {},
    )
    gs = to_flowkit(strategy)
    try:
        sample = fk.Sample(os.fspath(sample_path))
    except Exception as exc:
        raise GatingError(f"flowkit cannot read the sample: {exc}", path=sample_path) from None
    session = fk.Session(gating_strategy=gs, fcs_samples=[sample])
    buf = io.BytesIO()
    try:
        session.export_wsp(buf, group_name)
    except (ValueError, NotImplementedError) as exc:
        raise GatingError(f"cannot express these gates in FlowJo: {exc}", path=out_path) from None
    data = _matrix_into_samples(buf.getvalue()) if matrix is not None else buf.getvalue()
    tmp = f"{os.fspath(out_path)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, out_path)


def _matrix_into_samples(xml: bytes) -> bytes:
    """Copy the spillover matrix into each <Sample>, where FlowJo 10 keeps it.

    flowkit 1.3.2 writes it only under <Matrices>, but reads it only from <Sample>, so without
    this its own reader cannot resolve the 'Comp-' channels of the exported gates.
    """
    from copy import deepcopy

    from lxml import etree

    root = etree.fromstring(xml)
    ns = {"transforms": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"}
    matrices = root.findall("Matrices/transforms:spilloverMatrix", ns)
    for sample in root.iter("Sample"):
        if matrices and sample.find("transforms:spilloverMatrix", ns) is None:
            data_set = sample.find("DataSet")
            at = 0 if data_set is None else list(sample).index(data_set) + 1
            sample.insert(at, deepcopy(matrices[0]))
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)


def _flowjo_gates(gates: Sequence[Gate]) -> list[Gate]:
    """Quadrant gates become one rectangle per quadrant (FlowJo's own quadrant tool does)."""
    out: list[Gate] = []
    for g in dependency_order(gates):
        if isinstance(g, QuadrantGate):
            for q in g.quadrants:
                mins = tuple(lo for lo, _ in q.ranges)
                maxs = tuple(hi for _, hi in q.ranges)
                out.append(RectangleGate(q.id, g.parent, g.dims, mins, maxs))
        else:
            out.append(g)
    quad_ids = {g.id for g in gates if isinstance(g, QuadrantGate)}
    for g in out:
        if g.parent in quad_ids:
            raise GatingError(
                f"gate {g.id!r}: its parent {g.parent!r} is a whole quadrant gate",
                hint="use one quadrant as the parent",
            )
    return out


def _check_exportable(
    gates: Sequence[Gate],
    dims: Mapping[str, DimSpec],
    scales: Mapping[str, Scale],
    matrix: Spillover | None,
) -> None:
    for g in gates:
        if isinstance(g, EllipsoidGate | BooleanGate):
            raise GatingError(
                f"gate {g.id!r}: {type(g).__name__} cannot be written to a FlowJo workspace "
                "by flowkit",
                hint="use a polygon, rectangle or quadrant gate for gates to review in FlowJo",
            )
        assert isinstance(g, RectangleGate | PolygonGate)
        for k in g.dims:
            spec = dims.get(k, DimSpec(k))
            if spec.ratio:
                raise GatingError(f"gate {g.id!r}: ratio dimensions do not exist in FlowJo")
            if spec.transform is not None and spec.transform not in scales:
                raise GatingError(
                    f"gate {g.id!r}: dimension {k!r} uses unknown scale {spec.transform!r}"
                )
            if spec.transform and scales[spec.transform].kind not in ("linear", "logicle", "biex"):
                raise GatingError(
                    f"gate {g.id!r}: the {scales[spec.transform].kind} scale of {k!r} cannot "
                    "be written to a FlowJo workspace by flowkit",
                    hint="use logicle, biex or linear",
                )
            comp = spec.compensation
            if comp not in ("uncompensated", None) and (matrix is None or comp != matrix.id):
                raise GatingError(
                    f"gate {g.id!r}: dimension {k!r} is compensated with {comp!r}; pass that "
                    "matrix (FlowJo workspaces hold the matrix itself)"
                )


def source_for(sample_path: str | os.PathLike) -> EventSource:
    """flowkit-read events of a file, as the workspace counts are computed on them."""
    import flowkit as fk

    return event_source_from_flowkit(fk.Sample(os.fspath(sample_path)))
