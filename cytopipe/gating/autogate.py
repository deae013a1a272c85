"""Automated, per-sample placement of the gating template's gates (issue 6).

Fixed gates calibrated on one cytometer fail on another (a CD27 positive peak at 0.45 instead of
0.63 on the logicle scale is split by a fixed 0.46 cut-off), and a gate fitted to the data draws
itself around noise when the population is absent (B-cell aplasia after CD19 CAR-T). So every
gate is placed per sample, top-down, from populations that are always there:

- `valley`: the density minimum between two peaks of a 1-D smoothed histogram, searched only
  inside hard limits and, when `anchor` is set, only beyond `min_sd` robust SDs above (or below)
  the peak of the always-present population (the CD19-negative NK/T cells). No valley -> a
  position still measured on the sample, its method named for how: `shoulder`, the density
  `turn`, where the events run out (`support`), the `anchor` peak or the majority peak +
  `fallback_sd` SDs of its own spread (`peak_sd`), the negatives' upper quantile + a margin
  (`edge`), or a reference threshold placed on another population (`reference`: CD27 on T cells
  for tiny B-cell parents); only the template's fixed value is a `fallback` (real memory B cells
  are a continuum in IgD and CD27: their cuts are turns, not fallbacks). With `split`, before
  those last resorts: two Gaussians BIC prefers to one, cut where both are equally likely; with
  `not_below`, a majority peak above that threshold's valley is positive and cut below, not
  beyond; with `same_as`, another threshold's cut unless that one had only its last resort (the
  IgD- half of the CD27 quadrant), or, with `same_if_two`, unless it found no two populations
  (the CD19 of CD20- lymphocytes, whose NK cells a CD38 spill can spread up to the B cells).
- `quantile` / `peak_offset`: a position relative to a reference population's distribution, for
  cut-offs with no second peak to find (plasmablasts are "brighter than any T cell").
- `gmm` (2-D clusters: lymphocytes in CD45 vs SSC-A; the number of components from the data,
  by BIC) and `ratio` (singlets: FSC-H/FSC-A).

Every placement reports (method, confidence 0-1, flag); a cut without a valley says how it was
placed, and a fallback to the template or a low confidence is flagged.
Positions are on the gating scale of `cytopipe.preprocess.sample.preprocess` (scatter / top, logicle).
Each 1-D threshold is placed once per sample by cytopipe.gating.placer (its densities, peaks
and valleys: cytopipe.gating.densities); the 2-D mixtures are cytopipe.gating.mixture; this
module walks the hierarchy and places the polygons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.beyond_gate import (
    coupled,
    missed,
    population_mask,
    rescue,
    short_of_parent,
    unstained,
)
from cytopipe.gating.cut_moves import cut_moves
from cytopipe.gating.gates import PolygonGate
from cytopipe.gating.lineage import (
    backgate_bright,
    lineage_fit,
    one_event_f1,
    shows_lineage,
    stand_ins,
)
from cytopipe.gating.mixture import place_gmm
from cytopipe.gating.placement import LOW_CONFIDENCE, MIN_EVENTS, PASS, Held, Placement, judged
from cytopipe.gating.placer import Placer
from cytopipe.gating.rectangles import placed_rectangle
from cytopipe.gating.result import AutogateResult
from cytopipe.gating.template import PopulationSpec, ThresholdSpec, lenders, pass_gate, plot_axes
from cytopipe.ingest.panel import SCATTER

# ---------------------------------------------------------------- 2-D placements


def place_ratio(x: np.ndarray, y: np.ndarray, params: Mapping) -> tuple[np.ndarray, Placement]:
    """Singlets: a line y = r * x through the origin, r at the valley below the singlets' ridge
    of y / x (doublets have a larger area for their height, i.e. a smaller ratio).

    The ratio is read relative to its median, the singlets' (the majority): the template's
    windows then hold whatever an instrument's height and area scales are (BD sets area scaling
    so singlets sit near 1; an Accuri's height runs above its area, a Navios' peak and integral
    differ by their own factor). A ridge at twice the area fell outside them (generated
    singlets F1 0.974 -> 0.959)."""
    keep = x > float(params.get("min_x", 0.01))
    r = (y[keep] / x[keep]).astype(np.float64)
    scale = float(np.median(r)) if r.size else 1.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    spec = ThresholdSpec("ratio", "ratio", "valley", float(params["fixed"]), None, (), params)
    rel = r / scale
    placed = Placer({"ratio": rel}, {}, len(r))._valley(spec, rel) if r.size >= MIN_EVENTS else None
    if placed is None:
        placed = Placement(
            "fallback", 0.2, "fallback: too few events; template position", spec.fixed
        )
    method = "ratio" if placed.method == "valley" else placed.method
    placed = Placement(method, placed.confidence, placed.flag, placed.value * scale)
    top = max(1.3, 1.3 * float(placed.value))
    return np.array([[0.0, 0.0], [1.0, placed.value], [1.0, top], [0.0, top]]), placed


# ---------------------------------------------------------------- the hierarchy


# Scatter on the gating scale is a fraction of the channel's range ($PnR). Events in its top 2%
# are at or near saturation (a clipped pulse's area piles up below the top code): they stay in
# the sample (qc.saturated_scatter: large cells whose stains were measured) but carry no
# position to fit. On the Lyoplate file thinned to 3% of its lymphocytes, its 600 events at the
# FSC and SSC tops took a mixture component and the lymphocytes merged with debris (F1 0.71 ->
# 0.35); on GvHD file 7, fitted up to the top code, the scatter gate moved and CD3+ CD4+
# monocytes joined by phenotype (CD4 T cells 0.88 -> 0.72). 0.98 was the cells gate's ceiling.
SCATTER_SATURATED = 0.98


def _measured(dim: str, values: np.ndarray) -> np.ndarray | bool:
    return values < SCATTER_SATURATED if dim in SCATTER else True


def _polygon(spec: PopulationSpec, columns, rows: np.ndarray, parent: str | None, bright):
    """The polygon placed on the parent's `rows`; `bright`: their lineage+ events (None: no
    lineage marker showed any)."""
    place = spec.place or {"method": "fixed"}
    x = np.asarray(columns[spec.dims[0]][rows], dtype=np.float64)
    y = np.asarray(columns[spec.dims[1]][rows], dtype=np.float64)
    usable = (
        np.isfinite(x) & np.isfinite(y) & _measured(spec.dims[0], x) & _measured(spec.dims[1], y)
    )
    x, y = x[usable], y[usable]
    verts, placed = None, Placement("fixed", 1.0, "")
    if place["method"] == "gmm":
        stood = stand_ins(place, columns)
        if not all(m in columns or m in stood for m in place.get("share_needs", ())):
            place = {**place, "join_share": 0.0, "refine_share": 0.0, "mixed_share": 0.0}
        verts, placed = place_gmm(
            np.column_stack([x, y]), place, None if bright is None else bright[usable]
        )
        used = [f"{stood[m]} for {m}" for m in place.get("backgate", ()) if m in stood]
        if used and shows_lineage(bright):  # the reviewer sees which events backgated it
            note = f"backgated with {', '.join(used)}"
            placed = replace(placed, flag="; ".join(f for f in (placed.flag, note) if f))
    elif place["method"] == "ratio":
        verts, placed = place_ratio(x, y, place)
    if verts is None:
        verts = np.asarray(spec.gate["vertices"], dtype=float)
        if place["method"] != "fixed" and not placed.flag:
            placed = Placement("fallback", 0.2, "fallback: template position")
    gate = PolygonGate(spec.id, parent, spec.dims, verts)
    return gate, (placed.method, placed.confidence, placed.flag), judged([(spec.id, placed, None)])


# a surer fit's lineage F1 not this much lower; a higher one wins by more than one event (0.03
# kept CD45 x SSC views worse by 0.006-0.026: lymphopenic lymphocytes 0.90-0.95, FSC 0.96-0.99)
VIEW_MARGIN = 0.03
# the other views are tried below this confidence of the first view's fit. At LOW_CONFIDENCE
# (0.5) a lymphopenic file's CD45 x SSC cluster at 0.51 held 955 monocytes as CD45-bright as
# the lymphocytes and of side scatter as low (random_accuracy "63c" seed 381695474: 0.934;
# FSC x SSC 0.984); of 14 files of five draws at 0.5-0.7, 13 rose (myeloid tissue 0.952 ->
# 0.977, 0.966 -> 0.998), one stayed; in a sixth draw one fell, 0.973 -> 0.969 (both views'
# lineage F1 0.93, the surer fit kept). Always trying them raised others by 0.002-0.01 but
# costs a second fit in every CD45 panel's file (the draw took 20-25% longer).
COMPARE_BELOW = 0.7


def _polygon_view(spec: PopulationSpec, variant: PopulationSpec, columns, rows, parent, available):
    """The polygon in the first view the panel has, or in another view (`alternatives`) when
    `compare_views` is set and the first view's cluster is not pure (confidence below
    COMPARE_BELOW, or lineage+ events below `compare_share` of it): the other view is kept
    when it holds the lineage+ events better (by more than one event's F1), or about as well
    (within VIEW_MARGIN) from a fit that is more confident: confident, or, where neither is, by
    VIEW_MARGIN more. The lineage+ share alone cannot decide: NK cells are lymphocytes without
    a lineage marker, and where they and the monocytes overlap in SSC only forward scatter
    keeps them (generated lymphopenic blood: NK cells 84% kept in CD45 x SSC, lymphocytes F1
    0.942 at confidence 0.06, 0.980 in FSC x SSC at 0.13).

    CD45 x SSC cannot tell lymphocytes from monocytes where both overlap (lymphopenic blood
    after CAR-T, myeloid-rich tissue: the monocytes outnumber the lymphocytes ten to one);
    forward scatter, the cells' size, often can. Which view separates them is decided per
    sample, from the sample's own lineage+ events. The other view is searched the way the
    first was (seeded, refined, posterior-clipped), with its own scales and centre limits."""
    place = variant.place or {}
    gmm = place.get("method") == "gmm"
    bright = backgate_bright(columns, rows, place) if gmm else None
    gate, how, shape = _polygon(variant, columns, rows, parent, bright)
    if not place.get("compare_views") or not shows_lineage(bright):
        return gate, how, shape, variant
    first, share = lineage_fit(gate, columns, rows, bright)
    compare = float(place.get("compare_share", place.get("refine_share", 0.0)))
    if how[1] >= COMPARE_BELOW and share >= compare:
        return gate, how, shape, variant
    score, best = first, (gate, how, shape, variant)
    for alt in spec.alternatives:
        if alt is variant or alt.gate["kind"] != "polygon" or not alt.needed() <= available:
            continue
        # the first view's way of finding a rare cluster, the other view's scales and limits
        own = {k: alt.place[k] for k in ("log", "center_limits") if k in alt.place}
        other = _polygon(replace(alt, place={**place, **own}), columns, rows, parent, bright)
        if other[1][0] == "fallback":
            continue
        f1 = lineage_fit(other[0], columns, rows, bright)[0]
        conf = other[1][1]
        surer = conf >= min(LOW_CONFIDENCE, how[1] + VIEW_MARGIN) and conf > how[1]
        trusted = surer and f1 >= first - VIEW_MARGIN
        if f1 > score + one_event_f1(bright) or (trusted and best[3] is variant):
            score, best = f1, (*other, alt)
    gate, (method, conf, flag), shape, chosen = best
    notes = [flag] if flag else []
    if chosen is not variant:
        notes.insert(0, (
            f"gated on {' x '.join(chosen.dims)}: {' x '.join(variant.dims)} did not separate "
            f"the lymphocytes (confidence {how[1]:.2f} vs {conf:.2f}; lineage+ F1 "
            f"{first:.2f} vs {score:.2f})"
        ))  # fmt: skip
        share = lineage_fit(gate, columns, rows, bright)[1]
    expected = float(place.get("refine_share", 0.0))
    if share < expected / 2:  # a lymphocyte gate of mostly lineage- events: monocytes inside
        conf = min(conf, round(float(LOW_CONFIDENCE * share / (expected / 2)), 3))
        notes.append(f"lineage+ events only {share:.0%} of the gate: other cells likely inside")
    return gate, (method, conf, "; ".join(notes)), shape, chosen


def _place_gate(spec: PopulationSpec, placer: Placer, columns, rows, parent, available):
    """The gate of the first variant the panel has (polygons: maybe another view), how it was
    placed, its `or:` parts, its shape, and the variant used."""
    variant = spec.variant_for(available)
    if variant.gate["kind"] == "rectangle":
        return (*placed_rectangle(variant, placer, parent, available), variant)
    gate, how, shape, variant = _polygon_view(spec, variant, columns, rows, parent, available)
    return gate, how, [], shape, variant


def _cut(placer: Placer):
    """A threshold's position on this sample, placed once (`rescue`/`missed` bounds)."""
    return lambda t: placer.place(t).value


def autogate(
    specs: Sequence[PopulationSpec],
    columns: Mapping[str, np.ndarray],
    n_events: int | None = None,
    zeros: Mapping[str, float] | None = None,
    held: Held | None = None,
) -> AutogateResult:
    """Place and evaluate every population's gate on this sample, top-down.

    `columns`: canonical marker -> values on the gating scale, events that passed QC. Each gate is
    placed on its parent's events (thresholds on their own reference population), so a gate never
    sees events its parent excluded. Populations whose markers the panel lacks are skipped (or
    pass their parent's events when `optional: pass`), as `template.build_gates` does.
    `zeros`: marker -> where 0 falls on its gating scale (`Preprocessed.zeros`), so a valley
    between the two humps a logicle scale makes of wide negatives is not taken for a gate.
    """
    available = {m for m, v in columns.items() if v is not None}
    if n_events is None:
        n_events = len(next(iter(columns.values()))) if columns else 0
    for m, v in columns.items():
        if len(v) != n_events:
            raise GatingError(f"column {m} has {len(v)} events, expected {n_events}")
    out = AutogateResult([], {}, {}, {}, {}, {})
    lent = lenders(specs, columns)
    placer = Placer(columns, out.masks, n_events, out.methods, zeros, held, lent)
    all_rows = np.arange(n_events)
    for spec in specs:
        if spec.parent is not None and spec.parent not in out.masks:
            out.skipped[spec.id] = f"parent {spec.parent} not gated"
            continue
        rows = np.flatnonzero(out.masks[spec.parent]) if spec.parent else all_rows
        variant = spec.variant_for(available)
        if variant is None:
            missing = ", ".join(sorted(spec.without_open(available).needed() - available))
            if spec.optional != "pass":
                out.skipped[spec.id] = f"no {missing} channel"
                continue
            gate = pass_gate(spec, available)
            how = (PASS, 0.0, f"not gated: no {missing} channel")
            out.passed.add(spec.id)
            extras, shape = [], judged([])
        else:
            gate, how, extras, shape, variant = _place_gate(
                spec,
                placer,
                columns,
                rows if held is None else rows[held.settled[rows]],
                spec.parent,
                available,
            )
            out.plotted[spec.id] = plot_axes(variant, available)
            lacking = sorted(spec.needed() - available)
            if lacking:  # the template's first choice needs a marker the panel lacks: say so
                note = f"gated on {' x '.join(variant.dims)}: no {', '.join(lacking)} channel"
                how = (how[0], how[1], "; ".join(f for f in (note, how[2]) if f))
        out.masks[spec.id] = population_mask(gate, extras, columns, rows, n_events)
        if extras:
            out.extras[spec.id] = extras
        out.gates.append(gate)
        out.methods[spec.id] = how
        out.shapes[spec.id] = shape
        out.parents[spec.id] = spec.parent
    placed = [s for s in specs if s.id in out.masks and s.id not in out.passed]
    for spec in placed:  # joins first: the doubts below judge the grown populations
        if spec.rescue:
            rescue(spec, out, _cut(placer), columns, available, n_events)
    for spec in placed:
        if spec.missed or spec.contradicted:
            missed(spec, out, _cut(placer), columns, available, n_events)
        if spec.most_of_parent:
            short_of_parent(spec, out)
        if spec.stained:
            unstained(spec, out, columns)
        if spec.independent:
            coupled(spec, out, columns)
    out.thresholds = dict(placer.done)
    out.cut_moves = cut_moves(out.gates, specs, available, out.masks, columns, out.thresholds)
    return out


__all__ = ["AutogateResult", "autogate", "place_ratio"]
