"""A population's events beyond its gate, after every gate is placed: `rescue:` rectangles
whose events join it (plasmablasts outside the scatter gate), `missed:` rectangles whose events
say the gate is to review (CD3- CD20+ lymphocytes outside a CD19 B-cell gate), and a gate
holding less of its parent than `most_of_parent:` expects (CD20 masked on B cells) or not
showing a stain it must carry (`stained:`: a failed IgD or CD24 stain), or two stains rising
together on cells that carry them independently (`independent:`: spillover left). Their
thresholds may be placed on populations below the gate, hence after the whole pass of
cytopipe.gating.autogate; the helpers that evaluate one gate on a parent's events are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from cytopipe.gating.gates import Gate, PolygonGate, RectangleGate, evaluate
from cytopipe.gating.placement import (
    LOW_CONFIDENCE,
    MIN_EVENTS,
    MIN_SHAPE_EVENTS,
    SHAPE_MAX_EVENTS,
    noted,
    strided,
)
from cytopipe.gating.result import AutogateResult
from cytopipe.gating.template import PopulationSpec, ThresholdSpec

Cut = Callable[[ThresholdSpec], float]  # a threshold's position on the sample


def _apply(gate: Gate, columns: Mapping[str, np.ndarray], rows: np.ndarray, n: int) -> np.ndarray:
    """Mask of `gate` (placed without parent) evaluated on the parent's rows only."""
    sub = {d: columns[d][rows] for d in gate.dims}
    inside = evaluate([gate], sub, n_events=len(rows))[gate.id]
    mask = np.zeros(n, dtype=bool)
    mask[rows[inside]] = True
    return mask


def population_mask(gate: Gate, extras, columns, rows: np.ndarray, n: int) -> np.ndarray:
    """A population's events among its parent's `rows`: its gate's and its extras'."""
    mask = _apply(unparented(gate), columns, rows, n)
    for _, extra in extras:
        mask |= _apply(unparented(extra), columns, rows, n)
    return mask


RESCUE_RATIO, RESCUE_SLACK = 2.0, 10  # joined events beyond this many x those inside: doubtful


def rescue(spec: PopulationSpec, out: AutogateResult, cut: Cut, columns, available, n):
    """Join the parent's events outside `spec`'s gate that a `rescue:` rectangle holds, then
    evaluate every gate below again (same gates, same cut-offs) on the grown population.

    Plasmablasts are larger than lymphocytes and CD45-dim: a scatter gate fitted to the small
    lymphocytes leaves a quarter of them out (random draw: 7 files with too few plasmablasts;
    once inside the gate, every one was found). Their phenotype (CD19-dim, CD20-, CD27 and CD38
    brighter than any T cell) finds them wherever they sit, but its cut-offs are placed on
    populations inside the lymphocytes, hence after the whole pass.

    Real plasmablasts outside the gate are at most about as many as inside it; many more events
    of that phenotype outside than inside (more than RESCUE_RATIO x + RESCUE_SLACK) look like
    autofluorescent or antibody-sticky myeloid cells: they are joined (the definition is the
    definition) but the gate is not confident, so the sample is listed to review."""
    rows = np.flatnonzero(out.masks[spec.parent]) if spec.parent else np.arange(n)
    before = out.masks[spec.id].copy()
    joined, doubt = [], []
    for part in spec.rescue:
        if not part.applies(available):
            continue
        outside = rows[~out.masks[spec.id][rows]]
        gate = _part_gate(spec, part, cut)
        hit = _apply(unparented(gate), columns, outside, n)
        if hit.any():
            n_in = int(_apply(unparented(gate), columns, rows[out.masks[spec.id][rows]], n).sum())
            out.masks[spec.id] |= hit
            out.extras.setdefault(spec.id, []).append((part.label, gate))
            joined.append(f"{int(hit.sum())} events joined ({part.label})")
            if hit.sum() > RESCUE_RATIO * n_in + RESCUE_SLACK:
                doubt.append(
                    f"{int(hit.sum())} joined but {n_in} like them inside the gate: check that "
                    "they are not autofluorescent or antibody-sticky cells"
                )
    if not joined:
        return
    _add_flags(out, spec.id, joined + doubt, review=bool(doubt))
    new = {spec.id: np.flatnonzero(out.masks[spec.id] & ~before)}  # population -> joined rows
    for g in out.gates:  # template order: parents before children; only the joined events
        if g.parent in new:
            hit = population_mask(g, out.extras.get(g.id, ()), columns, new[g.parent], n)
            out.masks[g.id] |= hit
            new[g.id] = np.flatnonzero(hit)


def missed(spec: PopulationSpec, out: AutogateResult, cut: Cut, columns, available, n):
    """Say when the parent holds, outside `spec`'s gate, more events that another marker of its
    lineage marks than a `missed:` part's `share` of the parent allows, and more than its
    `of_gate` share of the gate holds (default: more than the gate): the gate is to review
    (confidence below LOW_CONFIDENCE) and its sample unlike the template.

    Why: B-cell aplasia is read from the CD19+ B cells alone. A tube whose CD19 stain failed
    (the reagent left out, a dead tandem) has no CD19+ B cells either, and was indistinguishable
    from aplasia: the real Lyoplate file with its CD19 drawn from the T cells' values had 0 B
    cells, 'as the template'. Its CD20 still stained, 11,000 CD3- CD20+ lymphocytes sit outside
    the B-cell gate (21% of the lymphocytes); files without such a failure hold at most 0.2%
    (random draw, aplasia files: the NK cells' tail above the CD20 cut), 0.6% where a file's
    spillover matrix is missing (CD20's spill), beside 11,000 B cells in the gate: more
    outside than inside is what hides B cells. A part with `of_gate` below 1 says so earlier,
    from that share of the gate's own events: a CD19 stain 30x dimmer kept 8,562 of the file's
    11,000 B cells, and 2,400 CD3- lymphocytes as CD20-bright as the B cells in the gate sat
    outside it (28% of it; 0.2% on the file as acquired, at most 0.6% over the random draw).
    Each stain is named once, by the first part that finds it missed events.

    `contradicted:` parts say the same of the gate's own events that another marker puts
    outside the population, more than a part's `share` of the gate: CD8 beta reaches the cell
    surface only paired with CD8 alpha, so CD8b+ events among the CD4+ CD8(alpha)- T cells are
    nonspecific binding or spill. On FlowCAP-I GvHD files 7, 8 and 9 they are 25%, 11% and 25%
    of the CD4 T cells (the experts left most of them out of theirs: CD4 T cells F1 0.879,
    0.867, 0.863, the three lowest), on the other six 0.5-6%. A part's `instead` population
    is said to be to review too: file 9's experts count most of its CD8b+ CD4 T cells (CD8
    alpha dim) as CD8 T cells, whose count was short by them with nothing said of it."""
    n_inside = int(np.count_nonzero(out.masks[spec.id]))
    notes = {}  # the stain to check -> why (the first part that says so)
    for part in spec.missed:
        within = part.within or spec.parent
        if within is not None and within not in out.masks:
            continue
        parent = out.masks[within] if within else np.ones(n, dtype=bool)
        n_parent = int(np.count_nonzero(parent))
        hidden = part.check or ", ".join(d for d in spec.dims if d not in part.dims) + " stain"
        if not part.applies(available) or not n_parent or hidden in notes:
            continue
        outside = np.flatnonzero(parent & ~out.masks[spec.id])
        hit = int(_apply(unparented(_part_gate(spec, part, cut)), columns, outside, n).sum())
        if hit > max(part.share * n_parent, part.of_gate * n_inside) and hit >= MIN_EVENTS:
            of_gate = f", {hit / max(n_inside, 1):.0%} of the {n_inside} inside"
            notes[hidden] = (
                f"{hit} {part.label} ({100 * hit / n_parent:.1f}% of {within}, more than "
                f"{100 * part.share:g}%{of_gate if part.of_gate < 1 else ''}): check the "
                f"{hidden}"
            )
    inside = np.flatnonzero(out.masks[spec.id])
    for part in spec.contradicted:
        if not part.applies(available) or not n_inside:
            continue
        hit = int(_apply(unparented(_part_gate(spec, part, cut)), columns, inside, n).sum())
        if hit > part.share * n_inside and hit >= MIN_EVENTS:
            notes[part.label] = (
                f"{hit} of its {n_inside} events {part.label} ({hit / n_inside:.0%}, more than "
                f"{100 * part.share:g}%)"
            )
            if part.instead in out.methods:
                say_unlike(out, part.instead, [
                    f"{spec.id} holds {hit} events {part.label} ({hit / n_inside:.0%} of it): "
                    f"{part.instead} may be short by them"
                ])  # fmt: skip
    if not notes:
        return
    say_unlike(out, spec.id, list(notes.values()))


def short_of_parent(spec: PopulationSpec, out: AutogateResult) -> None:
    """Say when a population expected to hold most of its parent (`most_of_parent:`) holds
    less than its share of a parent large enough to judge: the gate is to review, its sample
    unlike the template, each population below it carries a note that it was cut among these
    events only, and each other population cut on the same marker that it was.

    Why: B cells are CD20+ but for plasmablasts and a few CD20-dim cells. Where CD20 is masked
    (anti-CD20 therapy such as rituximab, which many lupus patients had before CAR-T, leaves its
    epitope blocked) or its stain failed, most B cells are CD20-; the B-cell count (CD19) holds,
    but the naive, memory and transitional B cells are cut among the few CD20+ B cells left:
    the real Lyoplate file with its CD20 stain failed (each event's compensated CD20 drawn
    from the T cells') kept 756 of its 11,488 B cells CD20+ and read 626 naive B cells (9,400
    with CD20), and 176 plasmablasts (67: CD20-low memory B cells among them), 'as the
    template'."""
    share, why = spec.most_of_parent
    n_parent = int(np.count_nonzero(out.masks[spec.parent]))
    n_inside = int(np.count_nonzero(out.masks[spec.id]))
    if n_parent < MIN_SHAPE_EVENTS or n_inside >= share * n_parent:
        return
    note = (
        f"{n_inside} of {n_parent} {spec.parent} ({100 * n_inside / n_parent:.0f}%, at least "
        f"{100 * share:g}% expected): {why}"
    )
    say_unlike(out, spec.id, [note])
    below, on_marker = _affected(out, spec.id, spec.dims[0])
    for g in below:
        _add_flags(out, g, [f"cut among {spec.id} only: {why} (see {spec.id})"], False)
    for g in on_marker - below:  # plasmablasts: CD20-low, cut on the same CD20
        _add_flags(out, g, [f"cut on {spec.dims[0]}: {why} (see {spec.id})"], False)


def _affected(out: AutogateResult, root: str, marker: str) -> tuple[set[str], set[str]]:
    """The populations below `root`, and every other population gated on `marker` or below
    one that is (plasmablasts, below the CD27hi CD38hi B cells)."""
    below, on_marker = {root}, set()
    for g in out.gates:  # template order: parents before children
        if g.parent in below:
            below.add(g.id)
        if (marker in g.dims or g.parent in on_marker) and g.id != root:
            on_marker.add(g.id)
    return below - {root}, on_marker


STAINED_GAP = 0.15  # `stained:`: brighter than the marker-negative population's median by
# this much of the 0-1 analysis scale (about 5x where it is logarithmic); not its upper tail,
# which a bright stain's spread widens (a T-cell marker spilling into IgD: generated files whose
# T cells' IgD ran 0.2 wide, all B-cell cuts right) and a few stained events of another
# lineage in the gate lift (a T-poor file's T-cell gate)


def unstained(spec: PopulationSpec, out: AutogateResult, columns) -> None:
    """Say when a population does not show a stain it must carry (`stained:`): too few of its
    events clearly brighter than a population that never carries the marker. The gate is
    to review, its sample unlike the template, and each population cut on that marker carries
    the note.

    Why: a failed stain (the reagent left out, a dead tandem, a clone that no longer binds)
    leaves the marker at the background of every cell, and the cuts placed on it still split
    that background by their last resorts: the real Lyoplate file with its IgD stain failed
    (`real_gating.write_failed_stain`: each event's compensated IgD drawn from the T cells')
    read 998 unswitched memory and 1,742 double-negative B cells (openCyto 454 and 765), with
    CD24 failed 11 transitional B cells (1,070), with CD27 failed (drawn from the naive B
    cells') no memory B cell and no plasmablast, all 'as the template'. Most B cells are IgD+
    (naive, unswitched memory) and CD24+ well above the T cells, which carry neither: 87% and
    89% of the B cells on that file, 0.1% and 0.4% with the stain failed, at least 60% and
    66% in its 60 variants of benchmarks/real_gating.py (memory-rich, T-poor, other gains),
    50% and 95% in the 70-file random draw. CD27 is on most T cells (naive and central
    memory) and few B cells: 80% of the T cells above the B cells' median on that file, 3%
    with the stain failed, at least 76% and 53% in the variants and the random draw. CD38
    (`net`): most B cells carry it (transitional B cells and plasmablasts brightest), some T
    cells too (activated; naive T cells in children), so the B cells' share above the level is
    counted beyond the T cells' own: 54% more on that file, 0% with the stain failed (each
    event's CD38 drawn from the T cells': 775 transitional B cells for 1,070 and 22
    plasmablasts for 91, 'as the template'), at least 43% in its variants and 35% in the
    random draw."""
    for dim, inside, than, share, net in spec.stained:
        if dim not in columns or not {inside, than, spec.id} <= out.masks.keys():
            continue
        counts = [int(np.count_nonzero(out.masks[p])) for p in (spec.id, inside, than)]
        if min(counts) < MIN_SHAPE_EVENTS:
            continue
        values = np.asarray(columns[dim])
        negative = values[out.masks[than]]
        level = float(np.median(negative)) + STAINED_GAP
        bright = float(np.mean(values[out.masks[inside]] > level))
        if net:
            bright -= float(np.mean(negative > level))
        if bright >= share:
            continue
        more = " more" if net else ""
        note = (
            f"{max(100 * bright, 0):.0f}%{more} of {inside} above the {than} on {dim} (at least "
            f"{100 * share:g}% expected, {than} median {level - STAINED_GAP:.2f}): check the "
            f"{dim} stain, or a spillover into {dim} that lifts the {than}"
        )
        say_unlike(out, spec.id, [note])
        for g in _affected(out, spec.id, dim)[1]:
            _add_flags(out, g, [f"cut on {dim}: check the {dim} stain (see {spec.id})"], False)


MIN_COUPLED_EVENTS = 200  # a rank correlation's error ~0.07 (Fisher z): 0.59 never reads 0.8


def rank_correlations(x: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between the columns of `x` (events x markers): the
    Pearson correlation of their ranks. Equal values share their mean rank: channels clipped
    at zero or stored as integer channel numbers hold many, and ranking them apart by event
    order made two clipped channels correlate 1. A constant column correlates with nothing."""
    ranks = np.column_stack([_mean_ranks(column) for column in np.asarray(x).T])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.corrcoef(ranks, rowvar=False)
    return np.nan_to_num(np.atleast_2d(rho))


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties at their mean (scipy.stats.rankdata's 'average'; not imported: the
    per-sample `gate` command starts without SciPy's statistics, tests/test_cli.py)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], len(values))
    run = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends - 1) / 2.0)[run]
    return ranks


def coupled(spec: PopulationSpec, out: AutogateResult, columns) -> None:
    """Say when two stains move together on cells that carry them independently
    (`independent:`): a rank correlation of at least `max_rho` (or at most `min_rho`) on the
    population's events (less those of `but_not`) is spillover the compensation left, not
    biology. The population is to review, its sample unlike the template, and each population
    cut on either marker carries the note.

    Why: a tandem dye that came apart, a matrix from other controls, a file compensated twice
    or not at all add a share of one stain to another on every cell, and the cuts on the
    receiving marker move with the donor's level: the real Lyoplate file with 70% of CD20's
    APC-H7 signal in CD38's detector read 632 transitional B cells for openCyto's 1,070,
    'as the template'. On naive B cells that are not transitional (one population, whose
    markers vary from cell to cell for their own reasons) CD20 and CD38 then correlate 0.98
    (0.85 at 10% of CD20's signal, 0.93 at 20%); uncompensated, CD20 and CD27 0.84; the
    matrix applied twice -0.88, half of it 0.71. The file as acquired: at most 0.56, at most
    0.59 over the 77 variants of benchmarks/real_gating.py --stress (other gains, scatter,
    compositions), at most 0.31 over the 70-file random draw. Transitional B cells are left
    out: with the naive B cells (early reconstitution) their CD38 and CD24, both high, read
    0.87. A whole matrix off shows best on the T cells, which lack CD19, CD20, IgD and CD24
    and mostly carry CD27: CD27 and CD24 there read 0.88-0.92 at 0.65x-0.5x the matrix and
    -0.93 at 1.5x, where the B-subset cuts fail (0.85 at 0.7x, -0.86 at 1.3x, where they
    hold; at most 0.43 on the file as acquired and its variants, 0.50 on another lab's file;
    over the random draw at most 0.18, but down to -0.75: compensating a large spill exactly
    anti-correlates two unstained channels' noise, hence a lower `min_rho` there). Only pairs
    with CD27 are judged there (`against`): large activated T cells (CAR-T expansion) carry
    more autofluorescence into every unstained channel at once, which no spill explains."""
    markers, but_not, max_rho, min_rho, against = spec.independent
    events = out.masks[spec.id].copy()
    if but_not not in out.masks:  # not gated on this panel (no CD24 or CD38): none to leave out
        but_not = None
    else:
        events &= ~out.masks[but_not]
    have = [m for m in (*markers, *against) if m in columns]
    if len(have) < 2 or np.count_nonzero(events) < MIN_COUPLED_EVENTS:
        return
    rows = np.flatnonzero(events)
    rows = strided(rows, SHAPE_MAX_EVENTS)
    rho = rank_correlations(np.column_stack([np.asarray(columns[m])[rows] for m in have]))
    pairs = [
        (rho[i, j], have[j], have[i])
        for i in range(len(have))
        for j in range(i)
        if not against or (have[i] in against) != (have[j] in against)
    ]
    pairs = sorted((p for p in pairs if not min_rho < p[0] < max_rho), key=lambda p: -abs(p[0]))
    if not pairs:
        return
    cells = f"{spec.id} outside {but_not}" if but_not else spec.id
    notes = [
        f"{a} and {b} {'rise together' if r > 0 else 'move against each other'} on {cells} "
        f"(rank correlation {r:.2f}, {min_rho:g} to {max_rho:g} expected): check the "
        f"compensation between {a} and {b} (a tandem that came apart, a matrix from other "
        "controls)"
        for r, a, b in pairs
    ]
    say_unlike(out, spec.id, notes)
    for dim in sorted({m for _, a, b in pairs for m in (a, b)}):
        for g in _affected(out, spec.id, dim)[1]:
            _add_flags(out, g, [f"cut on {dim}: check its compensation (see {spec.id})"], False)


def say_unlike(out: AutogateResult, population: str, notes: list[str]) -> None:
    """`notes` added to the population's flag and its 'unlike the template' reasons, and its
    gate to review."""
    _add_flags(out, population, notes, review=True)
    why = "; ".join(notes)
    shape = out.shapes.setdefault(population, {})
    shape["as_template"] = noted(shape.get("as_template", ""), why)


def _add_flags(out: AutogateResult, population: str, notes: list[str], review: bool) -> None:
    """`notes` after the population's flag; `review`: its confidence below LOW_CONFIDENCE, so
    the gate is listed to review."""
    method, conf, flag = out.methods[population]
    conf = min(conf, LOW_CONFIDENCE - 0.1) if review else conf
    out.methods[population] = (method, conf, "; ".join([*([flag] if flag else []), *notes]))


def _part_gate(spec: PopulationSpec, part, cut: Cut) -> RectangleGate:
    """A `rescue:` or `missed:` rectangle with its thresholds as placed on this sample."""
    bounds = [
        tuple(cut(b) if isinstance(b, ThresholdSpec) else b for b in side)
        for side in (part.mins, part.maxs)
    ]
    return RectangleGate(spec.id, spec.parent, part.dims, *bounds)


def unparented(gate: Gate) -> Gate:
    if isinstance(gate, RectangleGate):
        return RectangleGate(gate.id, None, gate.dims, gate.mins, gate.maxs)
    return PolygonGate(gate.id, None, gate.dims, gate.vertices)
