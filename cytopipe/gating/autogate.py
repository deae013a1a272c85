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
The 1-D densities, peaks and valleys are cytopipe.gating.densities; the 2-D mixtures
cytopipe.gating.mixture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from cytopipe.errors import GatingError
from cytopipe.gating.anchors import (
    LAST_RESORT,
    anchor_limits,
    flank_turn,
    last_resort,
    negative_minority,
    positive_majority,
)
from cytopipe.gating.beyond_gate import (
    coupled,
    missed,
    population_mask,
    rescue,
    short_of_parent,
    unstained,
)
from cytopipe.gating.cut_moves import cut_moves
from cytopipe.gating.debris import BACKGATE_EVENTS, backgated
from cytopipe.gating.densities import (
    density,
    density_range,
    dip_before_turn,
    far_side_valley,
    find_peak,
    find_valley,
    majority_peak,
    misplaced_majority,
    populations_shown,
    significant_dip,
    split_negatives,
    split_note,
    valley_below_start,
    valley_needs,
    valley_under,
)
from cytopipe.gating.gates import PolygonGate
from cytopipe.gating.lineage import (
    backgate_bright,
    lineage_bright,
    lineage_fit,
    one_event_f1,
    shows_lineage,
    stand_ins,
)
from cytopipe.gating.mixture import both_positive, one_population, place_gmm, split_placement
from cytopipe.gating.placement import (
    FOUND,
    LOW_CONFIDENCE,
    MIN_EVENTS,
    PASS,
    Held,
    Placement,
    clamped,
    empty,
    judged,
    lent_valley,
    referenced,
    split_separation,
    standing_in,
    strided,
    within_window,
)
from cytopipe.gating.rectangles import placed_rectangle
from cytopipe.gating.result import AutogateResult
from cytopipe.gating.template import PopulationSpec, ThresholdSpec, lenders, pass_gate, plot_axes
from cytopipe.ingest.panel import SCATTER

# ---------------------------------------------------------------- thresholds


class _Placer:
    """Places thresholds lazily (each once per sample) on populations gated so far."""

    def __init__(
        self,
        columns: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray],
        n: int,
        methods: Mapping[str, tuple[str, float, str]] | None = None,
        zeros: Mapping[str, float] | None = None,
        held: Held | None = None,
        lenders: Mapping[str, ThresholdSpec] | None = None,  # threshold -> one that `lends`
    ):
        self.columns, self.masks, self.n = columns, masks, n
        self.zeros, self.held, self.lenders = zeros or {}, held, lenders or {}
        self.methods = methods if methods is not None else {}
        self.done: dict[str, Placement] = {}
        self.last_resort: set[str] = set()  # valleys placed without valley, shoulder or turn

    def place(self, t: ThresholdSpec) -> Placement:
        if t.name not in self.done:
            self.done[t.name] = placed = standing_in(self._place(t), t.params, self.place)
            self.done[t.name] = lent_valley(placed, t, self.lenders, self.place, self.last_resort)
        return self.done[t.name]

    def values(self, t: ThresholdSpec) -> np.ndarray | None:
        """The threshold's dim on its population's events (None: population not gated)."""
        mask = self._mask(t)
        return None if mask is None else np.asarray(self.columns[t.dim][mask], dtype=np.float64)

    def _mask(self, t: ThresholdSpec) -> np.ndarray | None:
        if t.on is None:
            mask = np.ones(self.n, dtype=bool)
        elif t.on in self.masks:
            mask = self.masks[t.on].copy()
        else:
            return None
        optional = t.params.get("where_if_present", ())
        dims = [t.dim]
        for cond, side in (*t.where, *(c for c in optional if c[0].dims() <= self.columns.keys())):
            cut = self.place(cond).value
            col = self.columns[cond.dim]
            mask &= (col < cut) if side == "below" else (col >= cut)
            dims.append(cond.dim)
        return self._known(t.on, dims, mask)

    def _known(self, population: str | None, dims: Sequence[str], mask: np.ndarray) -> np.ndarray:
        return mask if self.held is None else self.held.known(population, dims, mask)

    def _place(self, t: ThresholdSpec) -> Placement:
        p = t.params
        if p.get("same_as") is not None:  # its cut, unless the sample did not show it
            same = self.place(p["same_as"])
            shown = (
                same.method in FOUND
                if p.get("same_if_two")
                else p["same_as"].name not in self.last_resort
            )
            if shown:
                return same
        if self._unused(t):
            return Placement("fallback", 0.2, "fallback: `only_without` this panel", t.fixed)
        x = self.values(t)
        if x is None:
            return self._fallback(t, f"{t.on} not gated")
        x = x[np.isfinite(x)]
        min_events = int(p.get("min_events", MIN_EVENTS))
        if x.size < min_events:
            among = "".join(f", {w.name} {side}" for w, side in t.where)  # of t.on, not all
            return self._fallback(t, f"only {x.size} events in {t.on}{among}")
        if t.method == "valley":
            placed = self._floored(t, self._valley(t, x))
            if p.get("backgate") and placed.value is not None:  # a debris or CD45- cut among cells?
                rows = strided(np.flatnonzero(self._mask(t)), BACKGATE_EVENTS)  # a share, not a cut
                bright = lineage_bright(self.columns, rows, p["backgate"])
                placed = backgated(placed, self.columns[t.dim][rows], bright)
            found = placed.method in FOUND
            shown = (placed.populations or 2) if found else 1  # `_valley` counts where expected
            separation = split_separation(x, placed.value) if found else None
            return replace(placed, populations=shown, separation=separation, events=int(x.size))
        if t.method == "quantile":
            value = float(np.quantile(x, float(p.get("q", 0.99)))) + float(p.get("offset", 0.0))
            return clamped(value, p["search"], "quantile")
        if t.method == "peak_offset":
            bw = t.bandwidth
            # no window: the sample's own majority peak and the SD of its narrower half-width
            # (too few events for half-widths: their median and its lower side's spread; the
            # mode of 109 CD27- CD38-low B cells, 67 of them double negative, lay near their
            # top, and transitional B cells with dim CD24 below it were naive: 0.28 -> 0.93)
            whole = (float(x.min()), float(x.max()))
            peak = (
                find_peak(x, p["peak"], bw)
                if "peak" in p
                else majority_peak(x, bw) or find_peak(x, whole, bw, how="median")
            )
            if peak is None:
                return self._fallback(t, f"no peak in {t.on}")
            sign = -1.0 if p.get("side", "above") == "below" else 1.0
            shift = float(p.get("offset", 0.0)) + float(p.get("sd", 0.0)) * peak[1]
            return clamped(peak[0] + sign * shift, p["search"], "peak_offset")
        return Placement("fixed", 1.0, "", t.fixed)

    def _floored(self, t: ThresholdSpec, placed: Placement) -> Placement:
        """`placed`, raised to its `not_below` threshold's cut where it fell below it and that
        cut was found in the sample (not the template's position), with the sample unlike the
        template: a cut among a reference population's negatives separates nothing (CD27 on
        B cells below the T cells' CD27 valley: the matrix x1.15-1.25 at fluorescence x1.5-2
        split the naive B cells' CD27 in two, and the density turn between them took a third
        of them as memory B cells, 'as the template')."""
        below, floor = t.params.get("not_below"), self._floor(t)
        if floor is None or placed.value is None or placed.value >= floor:
            return placed
        why = f"its cut ({placed.value:.2f}) lay below {below.name} ({floor:.2f}, on {below.on})"
        why += ": raised to it"
        flag = f"{placed.flag}; {why}" if placed.flag else why
        self.last_resort.discard(t.name)  # the cut is that valley, shown by the sample
        if t.params.get("quiet_floor"):  # the higher of two cuts is the definition
            return replace(placed, value=floor, flag=flag)
        unlike = f"{placed.unlike}; {why}" if placed.unlike else why
        return replace(placed, value=floor, flag=flag, unlike=unlike)

    def _floor(self, t: ThresholdSpec) -> float | None:
        """The cut of `t`'s `not_below` threshold where the sample showed it (None: no such
        threshold, or it had only the template's position)."""
        below = t.params.get("not_below")
        if below is None:
            return None
        floor = self.place(below)
        return None if floor.method == "fallback" else float(floor.value)

    def _valley(self, t: ThresholdSpec, x: np.ndarray) -> Placement:
        p = t.params
        search = [float(v) for v in p["search"]]
        lo, hi = search
        bw, anchor, limits = t.bandwidth, p.get("anchor"), None
        reference = self._floor(t)  # `not_below`'s cut, where the sample showed it
        if anchor:
            ref = self._gated(anchor.get("population"), t.dim)
            toward = self._gated(anchor.get("toward"), t.dim)
            peak = majority_peak(toward, bw) if toward is not None else None
            toward_at = peak[0] if peak is not None else None
            limits = anchor_limits(x, anchor, bw, ref, toward_at, reference)
            if limits is None:
                return self._fallback(t, f"no {t.dim} events in {anchor['peak']}")
            if anchor.get("side", "above") == "below":
                hi = min(hi, limits.start)
            else:
                lo = max(lo, limits.start)
            if lo >= hi and not limits.unlike:  # the anchor population fills the window
                limits = limits._replace(
                    unlike=f"its anchor population reaches {limits.start:.2f}, past the "
                    f"search window [{search[0]:g}, {search[1]:g}]"
                )
        # the sample's own majority peak, for a search start or a cut that follow the stain
        wanted = any(k in p for k in ("start_sd", "fallback_sd", "either_side"))
        balanced = bool(p.get("balanced", False))
        unpiled = bool(p.get("unpiled", balanced))
        majority = majority_peak(x, bw, unpiled=unpiled) if wanted else None
        if "start_sd" in p and majority is not None:
            lo = max(lo, majority[0] + float(p["start_sd"]) * majority[1])
        floor = search[0] if reference is None else reference
        unfloored, lo = lo, max(lo, floor)
        d = density(x, bw, *density_range(x, search[0], search[1], bw), unpiled=unpiled)
        min_side, min_depth, min_z = valley_needs(p, x.size)
        needs = (min_side, min_depth, min_z, bool(p.get("first", False)), balanced,
                 p.get("bright_minority"))  # fmt: skip
        found = find_valley(d, lo, hi, *needs) if lo < hi else None
        zero = self.zeros.get(t.dim)
        beyond = split_negatives(d, found[0], zero) if found else None
        split, dip = "", None  # dip: where the scale split the negatives in two, if it did
        if beyond is not None:  # the negatives' two humps: a valley beyond them, if any
            split, dip = split_note(found[0], zero, beyond), found[0]
            lo = floor = max(lo, beyond)
            found = find_valley(d, lo, hi, *needs) if lo < hi else None
        if found is None and p.get("either_side") and majority is not None:
            expected_below = bool(anchor) and anchor.get("side", "above") == "below"
            # not below `floor` either: a valley there is among the reference's negatives
            found = far_side_valley(
                d, x.size, majority[0], (floor, search[1]), p, look_above=expected_below
            )
            beyond = split_negatives(d, found[0], zero) if found else None
            if beyond is not None:  # nor between those humps (the majority is the upper one)
                split, dip, found = split or split_note(found[0], zero, beyond), found[0], None
        if found is None and reference is not None and not split and unfloored < reference:
            found = valley_under(d, unfloored, reference, needs)  # raised to it: `_floored`
        near = limits.near if limits is not None else None  # a noisy anchor (`near_sd`)
        if found is None and near is not None and near < min(lo, hi) and not split:
            found = find_valley(d, near, min(lo, hi), *needs)
        if found is None and limits is not None and ref is None and limits.method == "support":
            found = valley_below_start(d, x, bw, floor, lo, needs, zero)  # positives in the window
        unlike = limits.unlike if limits is not None else ""
        if found is not None:
            value, depth = found
            conf = round(depth, 3)
            flag = "; ".join(
                f for f in ("low_confidence" if conf < LOW_CONFIDENCE else "", split) if f
            )
            shown = populations_shown(d, *search, *needs[:3]) if "expect" in p else None
            return Placement("valley", conf, flag, value, populations=shown, unlike=unlike)
        upward = limits is not None and anchor.get("side") != "below"
        if upward and limits.method == "turn" and not split:
            beyond = split_negatives(d, limits.cut, zero)
            if beyond is not None:  # the turn is the dip between the negatives' two halves
                split, dip = split_note(limits.cut, zero, beyond), limits.cut
                floor = max(floor, beyond)
        no_valley = (f"no valley between {lo:.2f} and {hi:.2f}" if lo < hi else
                     f"no room for a valley: the search starts at {lo:.2f}, past its end {hi:.2f}")  # fmt: skip
        why = "; ".join(f for f in (no_valley, split) if f)
        if split and upward and limits.cut < floor:
            # a turn or shoulder between the negatives' two halves parts no populations
            limits = anchor_limits(x, anchor, bw, ref, toward_at, floor)
        if limits is not None and limits.instead and not split:  # a population before the turn
            limits = limits.instead  # (split negatives: their lower half is no majority peak)
        misplaced = ""
        if limits is None or limits.how.startswith(LAST_RESORT):
            self.last_resort.add(t.name)
            window, at = (max(search[0], floor), search[1]), p.get("split_at", "odds")
            w, pair = p.get("split_with") if p.get("split") and majority else None, None
            if w in self.columns:  # its dim and the second one on the same events
                mask = self._mask(t)
                pair = (self.columns[t.dim][mask], self.columns[w][mask], w, majority[0], bw)
            mixed = None
            if p.get("split"):  # above a split, the lower hump mirrors the upper one
                upper = x if dip is None else x[x > dip]
                mixed = split_placement(upper, window, unlike, pair=pair, at=at)
            one = self._one_reference(t)
            level = one.value if one else self._upper_level(t)  # parts two positive populations?
            if mixed is not None and (level is None or not both_positive(x, mixed.value, level)):
                return mixed
            if limits is not None:  # the majority peak this search already measured, if any
                peak = majority or majority_peak(x, bw, unpiled=unpiled)
                misplaced = misplaced_majority(x, peak, t.params.get("anchor") or {})
                positive = positive_majority(t, x, peak, why, bool(misplaced), self.place)
                if positive is not None:
                    return positive
                if misplaced and not p.get("split"):
                    cut = split_placement(x, window, misplaced, misplaced)
                    if cut := cut or self._negative_minority(t, peak, why, d, needs[0]):
                        return cut
        if limits is not None and limits.method == "turn" and majority is not None:
            span, judged = (max(lo, floor), hi), None if split else p  # split: no majority
            dip, astray = dip_before_turn(d, x, span, limits.far, majority, judged, min_side, floor)
            misplaced = misplaced or astray
            if dip is not None:
                how = f"a dip at {dip[0]:.2f} (depth {dip[1]:.2f}) before a turn, {limits.far:.2f}"
                return Placement("valley", 0.5, f"{how} ({why})", dip[0], unlike=unlike or astray)
        if limits is not None:  # no valley: the cut is still measured on the sample
            value, past = within_window(limits.how, limits.cut, search)
            if limits.how.startswith(LAST_RESORT):  # a template limit (an SD widened by a
                misplaced = misplaced or past  # shoulder: random draw 44c)
                flat = past and p.get("split") and split_placement(x, window, past, most=4, at=at)
                if flat:  # a plateau beside a peak: two Gaussians for the plateau
                    return flat
                span = sorted((limits.cut, majority[0])) if majority and not misplaced else None
                dip = span and significant_dip(d, *span, min_side)  # a second population's hump
                if dip:
                    how = f"a dip at {dip[0]:.2f} (depth {dip[1]:.2f}) before {limits.how}"
                    return Placement("valley", 0.5, f"{how} ({why})", dip[0], unlike=unlike)
            unlike, how = unlike or limits.unlike_if_cut or misplaced, f"{limits.how} ({why})"
            return limits.placed(how, value, unlike)
        if "fallback_sd" in p and majority is not None:  # k SD beyond the peak, or below it
            misplaced = misplaced_majority(x, majority, p)  # where it is a positive minority's
            upper = self._upper_level(t)  # ... or above the level that tells it is the upper one
            flipped = not misplaced and upper is not None and majority[0] > upper
            if flipped:  # said at any size, and in the flag
                names = " and ".join(r.name for r in p["upper_above"])
                misplaced = f"its majority peak {majority[0]:.2f} lies above {names}, {upper:.2f}"
                why = f"{misplaced}; {why}"
            cut, how, spread = last_resort(majority, p["fallback_sd"], -1.0 if misplaced else 1.0)
            value, past = within_window(how, cut, search)
            return Placement("peak_sd", 0.5, f"{how} ({why})", value, unlike=misplaced or past,
                             spread=spread, unlike_always=flipped)  # fmt: skip
        one, only = self._one_reference(t), p.get("lone_without_reference")
        if one and (not only or one.method == "fallback"):  # `only`: its reference unmeasured
            lone = one_population(x, p, p["reference"].name, None if only else one.value, why)
            if lone:
                return lone
        turn = flank_turn(x, t.bandwidth, search) if p.get("flank_turn") else None
        if turn is not None:  # measured, but the sample is unlike the template: no valley
            return Placement("turn", 0.5, f"{turn[1]} ({why})", turn[0], unlike=why)
        gap = None if isinstance(p.get("reference"), ThresholdSpec) else empty(x, search, t.fixed)
        return gap or self._fallback(t, why)

    def _gated(self, population: str | None, dim: str) -> np.ndarray | None:
        """The finite `dim` values of a population gated on this sample (not fallen back), or
        None: a reference population measured on the sample itself."""
        if population not in self.masks or self.methods.get(population, ("",))[0] == "fallback":
            return None
        v = np.asarray(self.columns[dim][self._known(population, [dim], self.masks[population])])
        return v[np.isfinite(v)]

    def _one_reference(self, t: ThresholdSpec) -> Placement | None:
        """The reference cut a `one_population_sd` threshold's lone population is judged by."""
        ref = t.params.get("reference")
        lone = "one_population_sd" in t.params and isinstance(ref, ThresholdSpec)
        return self.place(ref) if lone else None

    def _upper_level(self, t: ThresholdSpec) -> float | None:
        """The highest of `upper_above`'s cuts as measured on this sample: a lone population
        above it is the upper one. None where one fell back or the panel lacks its markers."""
        refs = t.params.get("upper_above", ())
        if not refs or any(not r.dims() <= self.columns.keys() for r in refs):
            return None
        levels = [self.place(r) for r in refs]
        if any(level.method == "fallback" for level in levels):
            return None
        return max(float(level.value) for level in levels)

    def _negative_minority(self, t: ThresholdSpec, peak, why: str, d, min_side: int):
        """`anchors.negative_minority` for a cut below its majority: a significant dip above
        the peak (`significant_dip`), else by its `reference` as measured on this sample."""
        ref, anchor = t.params.get("reference"), t.params.get("anchor") or {}
        if anchor.get("side") != "below" or not isinstance(ref, ThresholdSpec):
            return None
        r, search = self.place(ref), tuple(float(v) for v in t.params["search"])
        dip = significant_dip(d, peak[0], search[1], min_side)
        level = None if r.method == "fallback" else float(r.value)
        cut = negative_minority(peak, float(anchor["fallback_sd"]), level, search, dip)
        return cut and Placement(cut[2], 0.5, f"{cut[1]} ({why})", cut[0], unlike=cut[1])

    def _unused(self, t: ThresholdSpec) -> bool:
        """Whether the panel has a marker `t` is placed only without (`only_without`)."""
        return bool(set(t.params.get("only_without", ())) & self.columns.keys())

    def _fallback(self, t: ThresholdSpec, why: str) -> Placement:
        ref = t.params.get("reference")
        if isinstance(ref, ThresholdSpec) and not self._unused(ref):  # a cut measured here, unless
            r = self.place(ref)  # that one fell back to the template too
            conf = round(0.8 * r.confidence, 3)
            if r.method == "fallback":
                flag = f"fallback: {why}; {ref.name} on {ref.on} used"
                return Placement("fallback", conf, flag, r.value)
            return referenced(r, f"{ref.name} on {ref.on} used ({why})")
        return Placement("fallback", 0.2, f"fallback: {why}; template position", t.fixed)


def threshold_events(
    t: ThresholdSpec,
    columns: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    placed: Mapping[str, Placement],
) -> np.ndarray | None:
    """The values a placed threshold was searched on (its dim on `on`, within its `where`
    cuts as placed), so a reviewer sees the density the cut was put on; None: not gated."""
    n = len(next(iter(columns.values()))) if columns else 0
    placer = _Placer(columns, masks, n)
    placer.done = dict(placed)
    x = placer.values(t)
    return None if x is None else x[np.isfinite(x)]


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
    placed = (
        _Placer({"ratio": rel}, {}, len(r))._valley(spec, rel) if r.size >= MIN_EVENTS else None
    )
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


def _polygon_view(spec: PopulationSpec, variant: PopulationSpec, columns, rows, parent, available):
    """The polygon in the first view the panel has, or in another view (`alternatives`) when
    `compare_views` is set and the first view's cluster is not pure (confidence below
    LOW_CONFIDENCE, or lineage+ events below `compare_share` of it): the other view is kept
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
    if how[1] >= LOW_CONFIDENCE and share >= compare:
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


def _place_gate(spec: PopulationSpec, placer: _Placer, columns, rows, parent, available):
    """The gate of the first variant the panel has (polygons: maybe another view), how it was
    placed, its `or:` parts, its shape, and the variant used."""
    variant = spec.variant_for(available)
    if variant.gate["kind"] == "rectangle":
        return (*placed_rectangle(variant, placer, parent, available), variant)
    gate, how, shape, variant = _polygon_view(spec, variant, columns, rows, parent, available)
    return gate, how, [], shape, variant


def _cut(placer: _Placer):
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
    placer = _Placer(columns, out.masks, n_events, out.methods, zeros, held, lent)
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


__all__ = ["AutogateResult", "autogate", "place_ratio", "threshold_events"]
