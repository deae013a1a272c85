"""Rectangle gates whose bounds are placed thresholds (a population's `min`/`max` and its
`or:` parts), and how their placements combine into the population's method and confidence:
the gate is only as sure as its least certain cut."""

from __future__ import annotations

from collections.abc import Sequence

from cytopipe.gating.gates import RectangleGate
from cytopipe.gating.placement import LOW_CONFIDENCE, Placement, judged
from cytopipe.gating.template import PopulationSpec, ThresholdSpec


def combined(placements: Sequence[tuple[str, Placement]]) -> tuple[str, float, str]:
    """The population's method (a fallback if any cut fell back), its least confident cut's
    confidence, and the flags of its cuts."""
    if not placements:
        return "fixed", 1.0, ""
    methods = sorted({p.method for _, p in placements})
    method = "fallback" if "fallback" in methods else "+".join(methods)
    conf = min(p.confidence for _, p in placements)
    flag = "; ".join(f"{name}: {p.flag}" for name, p in placements if p.flag)
    if not flag and conf < LOW_CONFIDENCE:
        flag = "low_confidence"
    return method, conf, flag


def placed_rectangle(spec: PopulationSpec, placer, parent: str | None, available: set[str]):
    """The rectangle and its `or:` parts the panel can gate, all with thresholds placed by
    `placer` (its `place(threshold)` gives the threshold's Placement on this sample, once)."""
    used: list[tuple[str, Placement, int | None]] = []

    def placed(bounds) -> tuple:
        out = []
        for b in bounds:
            if isinstance(b, ThresholdSpec):
                where = placer.place(b)
                if all(name != b.name for name, _, _ in used):
                    used.append((b.name, where, b.params.get("expect")))
                out.append(where.value)
            else:
                out.append(b)
        return tuple(out)

    gate = RectangleGate(
        spec.id, parent, spec.dims, placed(spec.place["min"]), placed(spec.place["max"])
    )
    extras = [
        (
            part.label,
            RectangleGate(spec.id, parent, part.dims, placed(part.mins), placed(part.maxs)),
        )
        for part in spec.place.get("or", ())
        if part.applies(available)
    ]
    extras = [(label, box) for label, box in extras if not _inside(box, gate)]
    return gate, combined([(n, p) for n, p, _ in used]), extras, judged(used)


def _inside(box: RectangleGate, gate: RectangleGate) -> bool:
    """`box` holds no event outside `gate` (within it on each of the gate's dims; its other
    dims only narrow it): an `or:` part that adds nothing in this sample, not drawn or
    listed (the CD19+ CD20+ part of the B cells wherever one CD19 cut serves both)."""
    own = dict(zip(box.dims, zip(box.mins, box.maxs, strict=True), strict=True))
    for dim, lo, hi in zip(gate.dims, gate.mins, gate.maxs, strict=True):
        if dim not in own:
            return False
        blo, bhi = own[dim]
        if lo is not None and (blo is None or blo < lo):
            return False
        if hi is not None and (bhi is None or bhi > hi):
            return False
    return True
