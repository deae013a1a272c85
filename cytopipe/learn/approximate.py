"""What a learned model decided on one file, as gates an expert can open, review and correct:
one polygon per population, on the two markers that hold it best, in the expert's hierarchy.

Why polygons: the model weighs every marker of an event at once, which no gating
tool can show. FlowJo and Gating-ML hold 2-D gates; for each population the pair of markers
where the outline of its events (population_outline: the convex hull of the central 99%)
separates it best from the rest of its parent is the gate drawn, and its count is given beside
the model's, so the reviewer sees how close the approximation is. Corrected in FlowJo, the
workspace is a new reference file (learn-gates, expert_gates).
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np

from cytopipe.gating.gates import PolygonGate, evaluate
from cytopipe.gating.stats import f1_score
from cytopipe.learn.agreement import population_outline
from cytopipe.learn.model import Model, members, parents_first

CHOOSE_MAX_EVENTS = 50_000  # pairs are compared on at most this many of the parent's events
OUTLINE_MAX_EVENTS = 20_000  # ... and outlined from at most this many of the population's


def gate_id(name: str) -> str:
    """A population name as a gate id FlowJo and Gating-ML accept (no spaces or slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "population"


def approximate(
    model: Model, events: np.ndarray, labels: np.ndarray, seed: int = 0
) -> tuple[list[PolygonGate], list[dict]]:
    """Polygon gates of the model's populations on `events` (columns = model.markers, the
    gating scale) labelled `labels` by predict, and one row per population: its gate id, its
    parent, the markers drawn, the model's count, the gate's count (inside its parent's gate)
    and the F1 of gate against model. Populations without 3 distinct events get no gate (the
    row is kept)."""
    rng = np.random.default_rng(seed)
    columns = {m: np.asarray(events[:, i], dtype=np.float64) for i, m in enumerate(model.markers)}
    ids: dict[str, str] = {}
    gated: dict[str, np.ndarray] = {}  # gate id -> its events (inside its parent's gate too)
    gates: list[PolygonGate] = []
    rows = []
    for pop, parent in parents_first(model):
        inside = members(model, labels, pop)
        within = members(model, labels, parent) if parent else np.ones(len(labels), dtype=bool)
        parent_id = ids.get(parent) if parent else None
        best = None
        pool = np.flatnonzero(within)
        if len(pool) > CHOOSE_MAX_EVENTS:
            pool = np.sort(rng.choice(pool, CHOOSE_MAX_EVENTS, replace=False))
        mine = pool[inside[pool]]
        if len(mine) > OUTLINE_MAX_EVENTS:
            mine = rng.choice(mine, OUTLINE_MAX_EVENTS, replace=False)
        for dims in combinations(model.markers, 2):
            outline = population_outline(columns[dims[0]][mine], columns[dims[1]][mine])
            if not outline:
                continue
            gate = PolygonGate(pop, None, dims, np.asarray(outline))
            hit = evaluate([gate], {d: columns[d][pool] for d in dims})[pop]
            f1 = f1_score(hit, inside[pool])
            if best is None or f1 > best[0]:
                best = (f1, dims, outline)
        row = {"population": pop, "gate": None, "parent": parent, "dims": "",
               "model_events": int(inside.sum()), "gate_events": None, "f1": None}  # fmt: skip
        if best is not None:
            gid = gate_id(pop)
            while gid in ids.values():
                gid += "_"
            ids[pop] = gid
            gates.append(PolygonGate(gid, parent_id, best[1], np.asarray(best[2])))
            hit = evaluate([PolygonGate(gid, None, best[1], np.asarray(best[2]))], columns)[gid]
            if parent_id is not None:
                hit &= gated[parent_id]
            gated[gid] = hit
            row.update(gate=gid, dims=" x ".join(best[1]), gate_events=int(hit.sum()),
                       f1=round(f1_score(hit, inside), 4))  # fmt: skip
        rows.append(row)
    return gates, rows
