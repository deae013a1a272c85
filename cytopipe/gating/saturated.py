"""Events QC removed only because a stain sat at its detector's top, counted in the populations
they certainly belong to (`qc.saturated_stains: gate`).

A reagent or voltage too bright for its detector pins the bright end of one population at the
top (a CD20 reagent 2.5x too bright: 28% of the B cells). Removed as margin events, that
population is counted short, and the subsets it is richest in most (transitional B cells are
the CD20-brightest: 0.48 against openCyto's on the Lyoplate file's CD20 x3). Gated as read,
they go wrong the other way: their true signal lies above the top, so its spill into other
detectors was under-compensated (CD20 into CD27 on that file: naive B cells read as unswitched
memory, 0.77 -> 0.44).

So the gates are placed without them (their pile-up at the top is no density), except that
where they are many in a population its cuts are placed with them in the stains whose value
they show (`placed`), and each is then counted only where it belongs whatever its true value:
on an interval per stain, from its value as read to its value had the pinned stain been up to
twice the top (the true signal, and the spill the matrix's inverse takes from every other
stain with it), and no further above it than the stains that spill reaches allow (`corners`).
An event joins a population
when the whole box of its intervals lies inside the gate (both corners, for the template's
rectangles; its extras' rectangles alike); a CD20-pinned naive B cell whose CD27 is negative
even as read is naive, one that reads CD27+ is a B cell of no subset. A file without a matrix
(compensated on export, display scales) only has the pinned stain's own interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cytopipe.gating.autogate import autogate
from cytopipe.gating.beyond_gate import population_mask, say_unlike
from cytopipe.gating.cut_moves import cut_moves
from cytopipe.gating.gates import dependency_order
from cytopipe.gating.placement import MIN_EVENTS, MIN_SHAPE_EVENTS, Held
from cytopipe.gating.result import AutogateResult
from cytopipe.gating.template import PopulationSpec
from cytopipe.preprocess.robust import robust_sd
from cytopipe.preprocess.transforms import Scale

ABOVE_TOP = 1.0  # the true signal of a pinned stain: up to this many tops above the top
FLOOR_Q = 0.001  # a stain's true value lies above the sample's lowest values (this quantile) ...
FLOOR_EVENTS = 200_000  # ... of at most about this many of its other events, evenly spread

Columns = Mapping[str, np.ndarray]
Saturated = tuple[Columns, Columns, Columns]  # these events as read, low, high


def saturated_events(
    columns: Columns, at_top: Columns | None, info: Mapping
) -> tuple[np.ndarray, Saturated | None]:
    """Which events (file order; `Preprocessed.columns`, `.at_top`, `.info`) QC removed only
    for stain tops, and their values as read with their intervals (None: there are none)."""
    n = len(next(iter(columns.values()))) if columns else 0
    rows = np.zeros(n, dtype=bool)
    for pinned in (at_top or {}).values():
        rows |= pinned
    if not rows.any():
        return rows, None
    shown = {m: np.asarray(v)[rows] for m, v in columns.items()}
    others = np.flatnonzero(~rows)[:: max(1, int(np.count_nonzero(~rows)) // FLOOR_EVENTS)]
    floors = {m: float(np.nanquantile(np.asarray(v)[others], FLOOR_Q))
              for m, v in columns.items() if others.size}  # fmt: skip
    below = {p: below_top(columns, p, ~rows, int(pinned.sum())) for p, pinned in at_top.items()}
    low, high = corners(shown, {m: v[rows] for m, v in at_top.items()}, info, floors, below)
    return rows, (shown, low, high)


NEAR_EVENTS = (50, 1000)  # the events just below a top: as many as sit at it, within these
MIN_SPREAD = 0.03  # a receiving stain's spread there, at least (gating scale)


def below_top(
    columns: Columns, pinned: str, unpinned: np.ndarray, n_pinned: int
) -> dict[str, tuple[float, float]]:
    """Stain -> (median, robust SD) of the events just below `pinned`'s top: the population
    that runs on above it, whose values in the stains its spill reaches tell how far above the
    top a pinned event's signal lies (`plausible_excess`)."""
    values = np.asarray(columns[pinned])
    rows = np.flatnonzero(unpinned & np.isfinite(values))
    n = min(rows.size, int(np.clip(n_pinned, *NEAR_EVENTS)))
    if n < NEAR_EVENTS[0]:
        return {}
    near = rows[np.argpartition(values[rows], rows.size - n)[rows.size - n :]]
    out = {}
    for marker, v in columns.items():
        x = np.asarray(v, dtype=np.float64)[near]
        centre = float(np.nanmedian(x))
        spread = float(robust_sd(x, centre, nan=True))
        out[marker] = (centre, max(spread, MIN_SPREAD))
    return out


KNOWN_WIDTH = 0.02  # an interval narrower than this (gating scale): the value is known
HELD_SHARE = 0.1  # saturated events beyond this share of a population's: placed with them too
UNDECIDED_SHARE = 0.2  # ... that may be in it but not certainly: said (a count a fifth short)


def placed(specs, columns: Columns, zeros, saturated: Saturated | None) -> AutogateResult:
    """The template placed on the QC-passed events; where the saturated events certainly in a
    population (of at least MIN_SHAPE_EVENTS) are more than HELD_SHARE of its events, placed
    again with them on that population's cuts, in each stain where their value is known.

    Why: a stain too bright for its detector pins the brightest of one population (a CD20
    reagent x1.8 at fluorescence x2.2: half the B cells, most of the naive ones). The
    subsets' cuts placed on the rest saw a memory-rich sample, and the IgD cut went below the
    IgD- memory B cells (switched memory 0.15, double negative 0.07); their IgD is known
    whatever their CD20. Elsewhere nothing changes: every other cut is placed as before."""
    result = autogate(specs, columns, zeros=zeros)
    if saturated is None:
        return result
    certain = certain_masks(result, saturated[1], saturated[2])
    held = {
        p: m
        for p, m in certain.items()
        if result.masks[p].sum() >= MIN_SHAPE_EVENTS
        and m.sum() > HELD_SHARE * result.masks[p].sum()
    }
    if not held:
        return result
    both, held_events = placement_events(columns, saturated, held)
    return autogate(specs, both, zeros=zeros, held=held_events)


def placement_events(
    columns: Columns, saturated: Saturated, certain: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], Held]:
    """The QC-passed events then the saturated ones as read, and how they are held: in the
    populations of `certain` where they certainly are, in each stain where their interval is
    narrower than KNOWN_WIDTH."""
    shown, low, high = saturated
    n = len(next(iter(columns.values())))

    def appended(held: np.ndarray) -> np.ndarray:  # a mask of the held events, on all
        return np.concatenate([np.zeros(n, dtype=bool), held])

    both = {m: np.concatenate([v, shown[m]]) for m, v in columns.items()}
    settled = ~appended(np.ones(len(next(iter(shown.values()))), dtype=bool))
    unknown = {m: appended(~(np.abs(high[m] - low[m]) <= KNOWN_WIDTH)) for m in columns}
    return both, Held(settled, {p: appended(c) for p, c in certain.items()}, unknown)


def with_saturated(
    result: AutogateResult,
    columns: Columns,
    saturated: Saturated | None,
    specs: Sequence[PopulationSpec],
) -> tuple[dict[str, np.ndarray], Columns]:
    """The placed gates' masks and the columns they were placed on, with the saturated events
    appended where they certainly belong (masks: the QC-passed events, then these). A
    population that more than UNDECIDED_SHARE of its count again may hold but not certainly
    (a pinned naive B cell whose CD27 reads high: naive or unswitched memory) is said to be
    unlike the template in `result`: half the B cells at CD20's top left a file's naive B
    cells at 463 of 1,333 (F1 0.50), said only by chance. Its counts' ranges as cuts move
    (`result.cut_moves`) are taken again on these masks: measured on the events the cuts were
    placed on, saturated ones held in populations they are not counted in left more events
    than were counted (real_fuzz "session 58b" seed 952069051: CD27hi CD38hi B cells "-1-279")."""
    n = len(next(iter(columns.values()))) if columns else 0
    masks = {g.id: result.masks[g.id][:n] for g in result.gates}
    if saturated is None:
        return masks, columns
    shown, low, high = saturated
    certain, undecided = _box_masks(result, low, high)
    masks = {p: np.concatenate([m, certain[p]]) for p, m in masks.items()}
    for p, maybe in undecided.items():
        n_maybe, counted = int(maybe.sum()), int(masks[p].sum())
        if n_maybe >= MIN_EVENTS and n_maybe > UNDECIDED_SHARE * counted:
            say_unlike(result, p, [
                f"{n_maybe} events at a stain's top may belong here ({counted} counted): their "
                "values are not known, so they count in no gate below their parent's"
            ])  # fmt: skip
    counted = {m: np.concatenate([v, shown[m]]) for m, v in columns.items()}
    available = {m for m, v in counted.items() if v is not None}
    result.cut_moves = cut_moves(result.gates, specs, available, masks, counted, result.thresholds)
    return masks, counted


def corners(
    columns: Columns,
    at_top: Columns,
    info: Mapping,
    floors: Mapping[str, float] | None = None,
    below: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(low, high): each stain's interval for these events (`columns` as read, on the gating
    scale; `at_top`: stain -> which of them sat at its top), from the sample record's matrix
    and scales (`Preprocessed.info`).

    `floors` (stain -> the lowest true value it takes, gating scale) bound how far above the
    top a pinned signal can lie: its spill into another stain is under-compensated by the same
    excess, and that stain cannot read more than its floor plus the spill. Where the spill is
    large the bound is tight: the generator's CD38 spills a third into CD19, and CD38-pinned
    plasmablasts were no B cells for certain with the excess up to a whole top (63 of 138
    uncounted in a lymphoid file)."""
    prov = info.get("provenance") or {}
    scales = {m: Scale.from_record(r) for m, r in (prov.get("scales") or {}).items()}
    low = {m: np.asarray(v, dtype=np.float64).copy() for m, v in columns.items()}
    high = {m: v.copy() for m, v in low.items()}
    n = len(next(iter(columns.values()))) if columns else 0
    shifts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # marker -> linear (down, up)

    def shift(marker: str, by: np.ndarray, least: np.ndarray | float = 0.0) -> None:
        down, up = shifts.setdefault(marker, (np.zeros(n), np.zeros(n)))
        down += np.minimum(by, least)
        up += np.maximum(by, least)

    channels = prov.get("spillover_channels") or []
    where = {c: k for k, c in enumerate(channels)}
    of = {m: where.get(c) for m, c in (info.get("channels") or {}).items() if m in columns}
    inverse = (
        np.linalg.inv(np.asarray(prov["spillover_matrix"], dtype=np.float64)) if channels else None
    )
    for pinned, rows in at_top.items():
        top = scales[pinned].p.get("T") if pinned in scales and pinned in columns else None
        if not top:  # a scale without a top (arcsinh): its true value anywhere above
            if pinned in high:
                high[pinned][rows] = np.inf
            continue
        excess = np.where(rows, ABOVE_TOP * top, 0.0)  # linear, above the top
        k = of.get(pinned)
        if inverse is None or k is None:
            shift(pinned, excess)
            continue
        spilled = {m: j for m, j in of.items() if j is not None and m in scales and inverse[k, j]}
        for marker, j in spilled.items():  # what the stains it spills into allow
            if marker != pinned and inverse[k, j] < 0 and marker in (floors or {}):
                room = scales[marker].inverse(low[marker]) - scales[marker].inverse(
                    np.array([floors[marker]])
                )
                excess = np.minimum(excess, np.maximum(room, 0.0) / -inverse[k, j])
        least = np.zeros(n)
        if (below or {}).get(pinned):
            coefs = {m: inverse[k, j] for m, j in spilled.items() if m != pinned}
            least[rows], excess[rows] = plausible_excess(
                {m: v[rows] for m, v in low.items() if m != pinned},
                coefs, excess[rows], below[pinned], scales,
            )  # fmt: skip
        for marker, j in spilled.items():
            shift(marker, excess * inverse[k, j], least * inverse[k, j])
    for marker, (down, up) in shifts.items():
        linear = scales[marker].inverse(low[marker])
        low[marker] = scales[marker].forward(linear + down)
        high[marker] = scales[marker].forward(linear + up)
    return low, high


GRID = 41  # excesses tried between none and the most the floors allow
CHI2 = 4.0  # ... and kept where they fit the events below the top within this of the best
ALIKE_SD = 3.0  # a pinned event like those below the top: within this many of their SDs


def plausible_excess(
    shown: Mapping[str, np.ndarray],
    coefs: Mapping[str, float],
    most: np.ndarray,
    near: Mapping[str, tuple[float, float]],
    scales: Mapping[str, Scale],
) -> tuple[np.ndarray, np.ndarray]:
    """(least, most): the excesses above the top (linear) with which the pinned events'
    compensated values in the stains the spill reaches (`shown`: as read, gating scale;
    `coefs`: the matrix inverse's row) lie as near the events just below the top (`near`:
    median, SD) as the best excess does, within CHI2; a grid step wider on each side. Only
    for events like those below the top (within ALIKE_SD) in every stain the excess moves by
    less than KNOWN_WIDTH: the others keep every excess up to `most`.

    Why: the population at the top runs on above it. With only the floors to bound it, a
    CD38-pinned plasmablast whose viability reads high (CD38's spill under-compensated) may
    be dead or alive, and plasmablasts at a CD38 1.7-1.9x too bright were 39 of 67, 226 of
    322 and 98 of 168 found (random_accuracy "session 54"). Where another population holds
    the top (T cells at CD45's), a pinned B cell is not one of them: fitted to T cells, 16
    naive B cells counted as unswitched memory (seed 409296022)."""
    fraction = np.linspace(0.0, 1.0, GRID)
    grid = most[:, None] * fraction[None, :]
    cost = np.zeros_like(grid)
    alike = np.ones(most.shape, dtype=bool)
    for marker, values in shown.items():
        if marker not in near:
            continue
        centre, spread = near[marker]
        known = np.ones(values.shape, dtype=bool)  # a stain the spill does not reach
        if coefs.get(marker):  # the others add the same to every excess: no fit
            linear = scales[marker].inverse(values)[:, None] + coefs[marker] * grid
            value = scales[marker].forward(linear.ravel()).reshape(grid.shape)
            cost += ((value - centre) / spread) ** 2
            known = np.abs(value[:, -1] - values) < KNOWN_WIDTH
        alike &= ~known | (np.abs(values - centre) <= ALIKE_SD * spread)
    fits = cost <= cost.min(axis=1, keepdims=True) + CHI2
    first = np.argmax(fits, axis=1)
    last = GRID - 1 - np.argmax(fits[:, ::-1], axis=1)
    least = np.where(alike, most * fraction[np.maximum(first - 1, 0)], 0.0)
    return least, np.where(alike, most * fraction[np.minimum(last + 1, GRID - 1)], most)


def certain_masks(result: AutogateResult, low: Columns, high: Columns) -> dict[str, np.ndarray]:
    """Population -> the events (rows of `low`/`high`) inside its placed gate and extras at
    both corners of their intervals, below a parent they are certainly in."""
    return _box_masks(result, low, high)[0]


def _box_masks(result: AutogateResult, low: Columns, high: Columns):
    """(certain, undecided): population -> the events certainly in it (`certain_masks`), and
    those that may be in it but not certainly: in its parent certainly or maybe, one corner
    inside its gate or extras. Maybe in a parent is maybe in its children: CD38-pinned
    plasmablasts whose viability reads high (CD38's spill under-compensated) may be dead or
    alive, and were undecided only for the live gate, where 98 are nothing among 260,064;
    among the 101 plasmablasts counted they are half the population (random_accuracy
    "session 51" seed 409296064: 67 of 199 found, nothing said)."""
    n = len(next(iter(low.values()))) if low else 0
    masks: dict[str, np.ndarray] = {}
    maybe: dict[str, np.ndarray] = {}
    for gate in dependency_order(result.gates):  # the template places no boolean gates
        everything = np.ones(n, dtype=bool)
        parent = masks[gate.parent] if gate.parent else everything
        possible = parent | maybe[gate.parent] if gate.parent else everything
        parts = [gate, *(extra for _, extra in result.extras.get(gate.id, ()))]
        masks[gate.id], maybe[gate.id] = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        rows = np.flatnonzero(possible)
        for part in parts:  # the whole box inside one part: the gate or one of its extras
            lo, hi = (population_mask(part, (), c, rows, n) for c in (low, high))
            masks[gate.id] |= lo & hi & parent
            maybe[gate.id] |= (lo | hi) & possible
        maybe[gate.id] &= ~masks[gate.id]
    none = np.zeros(n, dtype=bool)
    return ({p: masks.get(p, none) for p in result.masks},
            {p: maybe.get(p, none) for p in result.masks})  # fmt: skip
