"""A sample's automated gates as a gating strategy on its FCS file's own channels, for Gating-ML
2.0 and FlowJo: what the lab reviews and corrects in the tools it already uses.

Why: the template's gates are placed per sample on cytopipe's gating scale (scatter as a
fraction of the range, fluorescence on logicle), on canonical markers. A strategy another tool
applies must name the file's channels ($PnN), the compensation and each channel's scale as a
Gating-ML transformation; the gate limits and vertices stay exactly as placed, so the exported
gates give cytopipe's own membership (gates_strategy: any gates on canonical markers, the
learned model's polygons too). The compensation is written as the matrix preprocessing used
(not Gating-ML's "FCS", the file's own: FlowKit cannot read a Navios file's spillover
keyword, for one).

Two things the template has that a strategy has not are translated: a pass-through pre-gate (a
marker the panel lacks) is left out and its children hang from its parent; a gate with `or:`
parts (CD19-dim plasmablasts join the B cells) becomes its rectangles and a Boolean OR named
like the population, so children keep their parent. QC is not a gate: events QC removed are
counted by other tools and not by cytopipe (compare on QC-kept events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from cytopipe.errors import GatingError
from cytopipe.gating.autogate import AutogateResult
from cytopipe.gating.gates import BooleanGate, Gate, PolygonGate, RectangleGate
from cytopipe.gating.strategy import UNCOMPENSATED, DimSpec, Strategy
from cytopipe.preprocess.compensation import Spillover
from cytopipe.preprocess.transforms import Scale

EXPORTABLE_SCALES = ("linear", "logicle", "asinh")  # asinh: Gating-ML fasinh (mass cytometry)
MATRIX_ID = "spill"  # the compensation preprocessing applied, written into the strategy


def placed_strategy(
    result: AutogateResult,
    channels: Mapping[str, str],
    scales: Mapping[str, Scale],
    spill: Spillover | None = None,
) -> Strategy:
    """The placed gates of `result` on the file's channels (gates_strategy), pass-through
    pre-gates left out and `or:` parts joined by a Boolean OR named like the population."""

    def exported_parent(pop: str | None) -> str | None:
        while pop is not None and pop in result.passed:
            pop = result.parents.get(pop)
        return pop

    gates: list[Gate] = []
    for g in result.gates:
        if g.id in result.passed:
            continue
        parent = exported_parent(g.parent)
        extras = result.extras.get(g.id, ())
        own = f"{g.id}__gate" if extras else g.id
        gates.append(replace(g, id=own, parent=parent))
        if extras:
            parts = [own]
            for i, (_, extra) in enumerate(extras, 1):
                parts.append(f"{g.id}__or{i}")
                gates.append(replace(extra, id=parts[-1], parent=parent))
            gates.append(BooleanGate(g.id, parent, "or", tuple(parts)))
    return gates_strategy(gates, channels, scales, spill)


def gates_strategy(
    gates: Sequence[Gate],
    channels: Mapping[str, str],
    scales: Mapping[str, Scale],
    spill: Spillover | None = None,
) -> Strategy:
    """Gates on canonical markers (the gating scale) as a strategy on the file's channels:
    `channels` maps a canonical marker to its $PnN, `scales` to the Scale it was put on the
    gating scale with (provenance.scales), `spill` is the matrix preprocessing compensated with
    (written into the strategy, so a tool needs nothing from the file's keywords)."""
    matrices = {}
    if spill is not None:
        spill = replace(spill, id=MATRIX_ID, fluorochromes=tuple(spill.channels))
        matrices = {MATRIX_ID: spill}
    compensated = set(spill.channels) if spill is not None else set()
    dims: dict[str, DimSpec] = {}
    used_scales: dict[str, Scale] = {}

    def key(marker: str) -> str:
        if marker not in channels or marker not in scales:
            raise GatingError(f"no channel or scale for {marker} to export its gates")
        scale = scales[marker]
        if scale.kind not in EXPORTABLE_SCALES:
            raise GatingError(
                f"{marker} is on a {scale.kind} scale, which Gating-ML does not hold as cytopipe "
                "applies it", hint="export gates of samples on logicle, asinh or linear scales",
            )  # fmt: skip
        sid = f"scale_{marker}"
        used_scales[sid] = Scale(sid, scale.kind, scale.params)
        pnn = channels[marker]
        comp = MATRIX_ID if pnn in compensated else UNCOMPENSATED
        spec = DimSpec(pnn, comp, sid)
        dims[spec.key] = spec
        return spec.key

    return Strategy([_on_channels(g, key) for g in gates], dims, used_scales, matrices)


def _on_channels(g: Gate, key) -> Gate:
    if isinstance(g, BooleanGate):
        return g
    gate_dims = tuple(key(m) for m in g.dims)
    if isinstance(g, RectangleGate):
        return RectangleGate(g.id, g.parent, gate_dims, g.mins, g.maxs)
    if isinstance(g, PolygonGate):
        return PolygonGate(g.id, g.parent, gate_dims, g.vertices)
    raise GatingError(f"gate {g.id!r}: a {type(g).__name__} cannot be exported yet")


def _record(info: Mapping) -> tuple[dict, dict, Spillover | None]:
    """The channels, scales and spillover a preprocessed sample's record holds."""
    import numpy as np

    prov = info.get("provenance") or {}
    channels, matrix = prov.get("spillover_channels"), prov.get("spillover_matrix")
    spill = (
        Spillover(list(channels), np.asarray(matrix, dtype=float), prov.get("spillover_source", ""))
        if channels and matrix
        else None
    )
    scales = {m: Scale.from_record(r) for m, r in (prov.get("scales") or {}).items()}
    return dict(info.get("channels") or {}), scales, spill


def strategy_from_info(result: AutogateResult, info: Mapping) -> Strategy:
    """placed_strategy with the channels, scales and spillover a preprocessed sample's record
    (cytopipe.preprocess.sample's info: channels, provenance.scales, provenance.spillover_*)
    holds."""
    return placed_strategy(result, *_record(info))


def gates_from_info(gates: Sequence[Gate], info: Mapping) -> Strategy:
    """gates_strategy with what a preprocessed sample's record holds (as strategy_from_info)."""
    return gates_strategy(gates, *_record(info))
