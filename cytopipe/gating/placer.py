"""Per-sample placement of the template's 1-D thresholds, each once, on the populations gated
so far (`Placer`): the valley between two populations where the sample shows one, else a
position still measured on the sample, named for how (the methods are listed in
cytopipe.gating.autogate, which walks the hierarchy and asks the placer for each cut).

The densities, peaks, valleys and turns are cytopipe.gating.densities; the anchors and their
limits cytopipe.gating.anchors; what a placement records cytopipe.gating.placement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial

import numpy as np

from cytopipe.gating.anchors import (
    LAST_RESORT,
    anchor_limits,
    last_resort,
    negative_minority,
    positive_majority,
    spared_cut,
    split_majority,
    upper_half_sd,
)
from cytopipe.gating.debris import BACKGATE_EVENTS, backgated
from cytopipe.gating.densities import (
    MINORITY_DIP_Z,
    density,
    density_range,
    dip_before_turn,
    excess_z,
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
from cytopipe.gating.lineage import lineage_bright
from cytopipe.gating.mixture import both_positive, one_population, split_placement
from cytopipe.gating.placement import (
    FOUND,
    LOW_CONFIDENCE,
    MIN_EVENTS,
    Held,
    Placement,
    clamped,
    empty,
    lent_valley,
    probed,
    referenced,
    split_separation,
    standing_in,
    strided,
    within_window,
)
from cytopipe.gating.template import ThresholdSpec
from cytopipe.gating.turns import TOWARD_SHARE, flank_turn

# `straddled_by`: at least this share of its events above the cut: it parts them (T-B doublets
# are 1.6-6.3%)
STRADDLE_SHARE = 0.2
# `own_through`: the density at the shared cut this many Poisson SDs above that at the own
# valley as well, so a few hundred events' noise does not move a cut
THROUGH_Z = 3.0
# `lone_positive_sd`: a lone population is positive where this quantile of it lies past the
# level it is judged by: three quarters of it, not a mixture too small to split in two
LONE_QUANTILE = 0.25


class Placer:
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
        # threshold -> the upper hump of its negatives, where the scale split them and it fell
        # back (`_dip_floor`; set while placing it, so read after `place`)
        self.negatives_reach: dict[str, float] = {}

    def place(self, t: ThresholdSpec) -> Placement:
        if t.name not in self.done:
            self.done[t.name] = placed = standing_in(self._place(t), t.params, self.place)
            lender = self.lenders.get(t.name) if t.name in self.last_resort else None
            self.done[t.name] = lent = lent_valley(placed, lender, self.place)
            if lent is not placed:  # its cut is now the lender's valley, not a last resort
                self.last_resort.discard(t.name)
            self.done[t.name] = probed(lent, t.params, self.place)
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
        conds = (*t.where, *self._present(t.params.get("where_if_present", ())))
        mask = self._within(mask, conds)
        return self._known(t.on, [t.dim, *(cond.dim for cond, _ in conds)], mask)

    def _present(self, conds: Sequence) -> list:
        """The [threshold, side] conditions whose markers the panel has."""
        return [c for c in conds if c[0].dims() <= self.columns.keys()]

    def _within(self, mask: np.ndarray, conds: Sequence) -> np.ndarray:
        """`mask` narrowed to the events on each condition's side of its cut, as placed here."""
        for cond, side in conds:
            cut = self.place(cond).value
            col = self.columns[cond.dim]
            mask = mask & ((col < cut) if side == "below" else (col >= cut))
        return mask

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
            if not shown:
                return self._own(t)
            straddled = self._straddled(t, same)
            if straddled:
                own = self._own(t)
                if own.value is None or own.value <= same.value:
                    return same  # its own cut would keep no more of them
                flag = "; ".join(f for f in (own.flag, straddled) if f)
                return replace(own, flag=flag, unlike=straddled, unlike_always=True,
                               populations=same.populations, events=same.events)  # fmt: skip
            if "own_through" in p:
                own = self._own(t)
                through = self._through(t, same, own)
                if through:
                    return replace(own, flag="; ".join(f for f in (own.flag, through) if f))
            return same
        return self._own(t)

    def _straddled(self, t: ThresholdSpec, same: Placement) -> str:
        """Why the events above `straddled_by`'s cut straddle `same`'s (at least STRADDLE_SHARE
        of them above it), or ''. The B cells' CD3 cut is the CD3 valley of all lymphocytes,
        but a B cell's CD3 can be spread by the spill of its own bright stains beyond that of
        the NK cells that fill the valley's lower side: real_fuzz --photon "session 68c" seed
        74864428 (no CD20, CD3 x0.37, all stains x2.0, noise SD 217), 44% of the CD19+
        lymphocytes above the valley (0.157; openCyto's B cells reach CD3 0.43), B cells 0.697.
        Elsewhere 1.6-6.3% lie above it (T-B doublets: 100 files of real_fuzz "session 68" and
        "68c"); at the CD3+ events' own peak - 1 SD (0.505) the B cells are 0.958."""
        by = t.params.get("straddled_by")
        if by is None or not by.dims() <= self.columns.keys() or t.on not in self.masks:
            return ""
        cut = self.place(by)
        if cut.method == "fallback":
            return ""
        above = self.masks[t.on] & (self.columns[by.dim] >= cut.value)
        x = self.columns[t.dim][self._known(t.on, [t.dim, by.dim], above)]
        if x.size < MIN_EVENTS:
            return ""
        share = float(np.mean(x >= same.value))
        if share < STRADDLE_SHARE:
            return ""
        name = t.params["same_as"].name
        return (f"{share:.0%} of the {by.dim}+ events ({by.name}) lie above {name}'s cut "
                f"{same.value:.2f}: their own {t.dim} spreads across it")  # fmt: skip

    def _through(self, t: ThresholdSpec, same: Placement, own: Placement) -> str:
        """Why `same`'s cut runs through a hump of `t`'s own events that `t`'s own valley or
        two-population split parts from the rest (`own_through`), or ''. One CD27 cut for the
        IgD x CD27 quadrants is the DESIGN.md definition and openCyto's, and the real Lyoplate
        file's IgD- B cells show no more than a shallow dip beside it (density 1.2x, within its
        noise); but where the all-B-cell valley lies in the switched memory B cells' low tail,
        their density there is several times that where the IgD- B cells part, and the
        quadrant cuts a population in two (random_accuracy "session 72" seed 235828513: 4x at
        their own split 0.40, double negative 0.850 -> 0.965; six files of "session 73" up,
        none down)."""
        ratio = t.params.get("own_through")
        if ratio is None or own.method not in ("valley", "mixture") or own.value is None:
            return ""
        x = self.values(t)
        x = x[np.isfinite(x)]
        lo, hi = sorted((own.value, same.value))
        d = density(x, t.bandwidth, lo - 4 * t.bandwidth, hi + 4 * t.bandwidth)
        at_cut, at_valley = d.at(same.value), d.at(own.value)
        if at_cut < float(ratio) * at_valley or excess_z(at_cut, at_valley) < THROUGH_Z:
            return ""
        name = t.params["same_as"].name
        return (f"{name}'s cut {same.value:.2f} runs through these events' own {t.dim} "
                f"population ({at_cut / max(at_valley, 1e-9):.0f}x the density at their own "
                f"cut {own.value:.2f})")  # fmt: skip

    def _own(self, t: ThresholdSpec) -> Placement:
        """`t` placed on its own events, by its method."""
        p = t.params
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

    def _dip_floor(self, t: ThresholdSpec, floor: float) -> float:
        """Where a dip before a density turn may lie (`dip_before_turn`): not below `floor`,
        nor below the upper hump of `t`'s `not_below` population's negatives where the scale
        split them in two and no valley followed (that threshold fell back): they reach that
        far. Real_fuzz "session 72b pd" seed 3496447 (noise of SD 297): the T cells' CD27
        split at 0.21, no valley above their upper hump (0.36), and a dip at 0.20 in the naive
        B cells' own split negatives was the CD27 cut: unswitched memory 5,825 for 454."""
        below = t.params.get("not_below")
        return max(floor, self.negatives_reach.get(below.name, floor)) if below else floor

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
        resort = upward and limits.how.startswith(LAST_RESORT) and majority is not None
        halves = split_majority(x, bw, d, majority, zero) if resort and not split else None
        if halves is not None:  # the majority is the negatives' lower half: from the upper one
            dip, top, sd = halves
            split, floor, majority = split_note(dip, zero, top), max(floor, top), (top, sd)
            cut, how, spread = last_resort(majority, upper_half_sd(anchor["fallback_sd"]), 1.0)
            limits = limits._replace(start=top, cut=cut, how=how, spread=spread, other=None)
        no_valley = (f"no valley between {lo:.2f} and {hi:.2f}" if lo < hi else
                     f"no room for a valley: the search starts at {lo:.2f}, past its end {hi:.2f}")  # fmt: skip
        why = "; ".join(f for f in (no_valley, split) if f)
        if split and upward and limits.cut < floor and halves is None:
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
                pair = (self.columns[t.dim][mask], self.columns[w][mask], w, majority, bw)
            mixed, upper = None, x if dip is None else x[x > dip]
            if p.get("split"):  # above a split, the lower hump mirrors the upper one
                beyond = (last_resort(majority, p["fallback_sd"], 1.0)[0]  # where it would cut
                          if "fallback_sd" in p and majority else None)  # fmt: skip
                mixed = split_placement(upper, window, unlike, pair=pair, at=at, beyond=beyond)
            one = self._one_reference(t)
            level = one.value if one else self._upper_level(t)  # parts two positive populations?
            if mixed is not None and (level is None or not both_positive(x, mixed.value, level)):
                return mixed
            if limits is not None and halves is None:  # the majority peak measured, if any
                peak = majority or majority_peak(x, bw, unpiled=unpiled)
                misplaced = misplaced_majority(x, peak, t.params.get("anchor") or {})
                positive = positive_majority(t, x, peak, why, bool(misplaced), self.place)
                if positive is not None:
                    return positive
                if misplaced and not p.get("split"):
                    two = partial(split_placement, x, window, misplaced, misplaced)
                    if cut := self._negative_minority(t, peak, why, d, needs[0], two):
                        return cut
        if limits is not None and limits.method == "turn" and majority is not None:
            span, judged = (max(lo, floor), hi), None if split else p  # split: no majority
            low = self._dip_floor(t, floor)
            dip, astray = dip_before_turn(d, x, span, limits.far, majority, judged, min_side, low)
            misplaced = misplaced or astray
            if dip is not None:
                how = f"a dip at {dip[0]:.2f} (depth {dip[1]:.2f}) before a turn, {limits.far:.2f}"
                return Placement("valley", 0.5, f"{how} ({why})", dip[0], unlike=unlike or astray)
        if limits is not None:  # no valley: the cut is still measured on the sample
            value, past = within_window(limits.how, limits.cut, search)
            if limits.how.startswith(LAST_RESORT):  # a template limit (an SD widened by a
                misplaced = misplaced or past  # shoulder: random draw 44c)
                flat = (
                    past and p.get("split") and split_placement(upper, window, past, most=4, at=at)
                )
                if flat:  # a plateau beside a peak: two Gaussians for the plateau
                    return flat
                span = sorted((limits.cut, majority[0])) if majority and not misplaced else None
                dip = span and significant_dip(d, *span, min_side)  # a second population's hump
                if dip:
                    how = f"a dip at {dip[0]:.2f} (depth {dip[1]:.2f}) before {limits.how}"
                    return Placement("valley", 0.5, f"{how} ({why})", dip[0], unlike=unlike)
                spared = None if misplaced or not majority else self._spared(t, x, value, majority)
                if spared is not None:
                    how = f"{spared[1]} ({limits.how} cut through them; {why})"
                    return Placement("peak_sd", 0.5, how, spared[0], unlike=unlike,
                                     other=value, spread=limits.spread)  # fmt: skip
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
            k, ref = p["one_population_sd"], p["reference"].name
            lone = one_population(x, k, search, ref, None if only else one.value, why)
            if lone:
                return lone
        if lone := self._lone_positive(t, x, search, why):
            return lone
        turn = flank_turn(x, t.bandwidth, search) if p.get("flank_turn") else None
        if turn is not None:  # measured, but the sample is unlike the template: no valley
            return Placement("turn", 0.5, f"{turn[1]} ({why})", turn[0], unlike=why)
        gap = None if isinstance(p.get("reference"), ThresholdSpec) else empty(x, search, t.fixed)
        if split and not gap:  # no cut, but its negatives reach at least the upper hump
            self.negatives_reach[t.name] = floor
        return gap or self._fallback(t, why)

    def _spared(
        self, t: ThresholdSpec, x: np.ndarray, cut: float, majority: tuple[float, float]
    ) -> tuple[float, str] | None:
        """`anchors.spared_cut` for the events of `x` within `t`'s `spares` conditions (the
        CD27+ B cells for the IgD cut), the cut held in `t`'s search window."""
        spares = self._present(t.params.get("spares", ()))
        mask = self._mask(t) if spares else None  # a panel without CD27: nothing to spare
        if mask is None:
            return None
        theirs = self._within(mask, spares)[mask]  # aligned with `x`: `t`'s finite values
        theirs = theirs[np.isfinite(np.asarray(self.columns[t.dim][mask], dtype=np.float64))]
        anchor = t.params["anchor"]
        sign = -1.0 if anchor.get("side", "above") == "below" else 1.0
        k = float(anchor["fallback_sd"])
        found = spared_cut(x, theirs, cut, majority, sign, k, t.bandwidth)
        if found is None:
            return None
        names = " and ".join(f"{c.name} {side}" for c, side in spares)
        lo, hi = (float(v) for v in t.params["search"])
        return min(max(found[0], lo), hi), f"{found[1]} of the events {names}"

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

    def _lone_positive(
        self, t: ThresholdSpec, x: np.ndarray, search: Sequence[float], why: str
    ) -> Placement | None:
        """`one_population` for a `lone_positive_sd` threshold, judged by its `not_below`
        valley as measured here: a lone population whose lower quartile (LONE_QUANTILE) lies
        past halfway from that valley to its own population's peak above it (nearer the
        positives' peak than their valley) is positive. Random "session 70b" seed 35257543
        (post-CAR-T blood): its 107 IgD- B cells, nearly all switched memory, are one
        population at CD27 0.41, past halfway (0.30) from the T cells' CD27 valley (0.23) to
        their CD27+ peak (0.39); `reference` (cd27, a last resort at 0.60) called them all
        double negative: switched memory 0 of 102 -> 0.971. Not the valley itself: early after
        CAR-T the IgD-dim transitional B cells (CD27-) lie just above it (the real file's
        transitional-rich variant: 0.31 over 0.30, halfway 0.48), and 108 were called switched
        memory for openCyto's 8. Not the median: the real file's plasmablast-rich variant's 51
        IgD- B cells, too few for two Gaussians, hold 19 double negative (CD27 0.09-0.39)
        below 32 switched memory (0.45-0.80), their median past halfway (0.56 over 0.48)."""
        k, floor = t.params.get("lone_positive_sd"), t.params.get("not_below")
        if k is None or not isinstance(floor, ThresholdSpec):
            return None
        valley = self.place(floor)
        own = self.values(floor) if valley.method != "fallback" else None
        above = own[own > valley.value] if own is not None else np.empty(0)
        peak = majority_peak(above, floor.bandwidth) if above.size >= MIN_EVENTS else None
        if peak is None:
            return None
        level = valley.value + TOWARD_SHARE * (peak[0] - valley.value)
        name = f"halfway from {floor.name} {valley.value:.2f} to its positives' peak {peak[0]:.2f}"
        return one_population(x, k, search, name, level, why, q=LONE_QUANTILE)

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

    def _negative_minority(
        self, t: ThresholdSpec, peak, why: str, d, min_side: int, two: Callable
    ) -> Placement | None:
        """`anchors.negative_minority` for a cut below its majority: a significant dip above
        the peak (`significant_dip`), else two populations by BIC (`two()`), else by its
        `reference` as measured on this sample. The dip before BIC: two Gaussians put the cut
        where they are equally likely, and a narrow IgD- peak beside a wider IgD+ one makes
        that point lie inside the IgD+ B cells (real_fuzz "session 71" seed 174932854, a tenth
        of the naive B cells: the dip at 0.53, BIC 0.56, naive 0.871 -> 0.940; "37c" seed
        430259667: 0.893 -> 0.902)."""
        ref, anchor = t.params.get("reference"), t.params.get("anchor") or {}
        if anchor.get("side") != "below" or not isinstance(ref, ThresholdSpec):
            return two()
        r, search = self.place(ref), tuple(float(v) for v in t.params["search"])
        dip = significant_dip(d, peak[0], search[1], min_side, MINORITY_DIP_Z)
        if dip is None and (split := two()) is not None:
            return split
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
    placer = Placer(columns, masks, n)
    placer.done = dict(placed)
    x = placer.values(t)
    return None if x is None else x[np.isfinite(x)]
