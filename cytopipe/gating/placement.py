"""How a gate or threshold was placed in one sample, shared by the 1-D placements
(cytopipe.gating.autogate) and the 2-D mixtures (cytopipe.gating.mixture)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cytopipe.gating.template import ThresholdSpec
from cytopipe.preprocess.robust import robust_sd

LOW_CONFIDENCE = 0.5
PASS = "pass"  # the method of a pre-gate whose marker the panel lacks: every event passes
MIN_EVENTS = 30  # below this a population's own distribution is not used to place a cut
FOUND = ("valley", "mixture")  # methods of a cut between two populations the sample showed
MIN_SHAPE_EVENTS = 500  # ... and below this its shape (populations, separation) is not judged
# majority_peak needs this many: at 100 events of N(0.20, 0.06), its bandwidth widened, its peak
# + 2.5 SD falls within 0.29-0.37 (5-95%), as at 200 (0.31-0.37 at 500, truth 0.35); without
# it a window's quantile stood in, which is the window's edge where a minority fills it
MIN_PEAK_EVENTS = 100
GMM_MAX_EVENTS = 10_000  # the mixture is fitted on a fixed-seed subsample: speed, determinism


@dataclass(frozen=True)
class Placement:
    """How one threshold or gate was placed in this sample."""

    # valley | mixture | gmm | ratio | quantile | peak_offset | fixed; without a valley, still
    # measured on the sample: shoulder | turn | support | peak_sd | edge (anchors.Limits),
    # reference (the template's reference cut, measured on another population of the sample),
    # gap (no events in the search window: any cut there gives the same gate); fallback: the
    # template's position
    method: str
    confidence: float
    flag: str = ""
    value: float | None = None  # thresholds: the cut-off
    # What the sample looked like where the cut was searched (None: not searched for).
    populations: int | None = None  # 1 (no valley) or 2; gmm: clusters after joining
    separation: float | None = None  # Ashman's D of the two sides (gmm: to the nearest cluster)
    events: int | None = None  # events the placement looked at
    unlike: str = ""  # why the sample did not look as the template expects, seen while placing
    other: float | None = None  # another cut the sample supports (a turn its limit moved)
    spread: float | None = None  # how far a cut no density showed may move either way
    # `unlike` said at any size: a reading the sample's other populations decided
    # (`upper_above`), not a shape too few events cannot show
    unlike_always: bool = False


def referenced(ref: Placement, flag: str) -> Placement:
    """A cut taken from its reference threshold's placement (measured on another population of
    this sample): that cut's doubts, and how far it may move, are this one's too. Without its
    `other` and `spread` a switched-memory CD27 cut taken from a last resort held at its
    window's edge read "0 switched memory B cells, 0-0" (random_accuracy "session 58b" seed
    952069028: 85), the unswitched ones 0-137 beside it."""
    conf = round(0.8 * ref.confidence, 3)
    return Placement("reference", conf, flag, ref.value, unlike=ref.unlike, other=ref.other,
                     spread=ref.spread)  # fmt: skip


def standing_in(own: Placement, params: Mapping, place: Callable) -> Placement:
    """`own`, or where it was placed on its own because the cut it stands in for (`same_as`)
    found no two populations, with that cut's look and doubts (`same_doubts`): the T cells'
    certain part above a CD3 with no valley is as doubtful as the CD3 cut, not a confident
    peak_offset. `place`: threshold -> its placement in this sample."""
    same = place(params["same_as"]) if params.get("same_doubts") else own
    if own is same or same.method in FOUND:  # placed on its own for another reason (`straddled`)
        return own
    note = f"its certain part: {own.method} {own.value:.2f}" if own.value is not None else ""
    return replace(same, value=own.value, flag="; ".join(f for f in (same.flag, note) if f))


def probed(placed: Placement, params: Mapping, place: Callable) -> Placement:
    """`placed`, or where it found no two populations of its own and its stain's `probe` (a
    cut of the same stain on a population that always shows both: the T cells' CD27- and
    CD27+ cells in blood) found only a shallow valley or none, `placed` said unlike the
    template: the stain is too dim or noisy to part anything, so a cut the sample never showed
    is a guess. Why: the B cells' CD27 shows no valley on the real Lyoplate file either (a
    density turn), so only the stain's own look tells a dim one; over real_fuzz "session 66"
    (100 files) the T cells' CD27 valley was shallower than LOW_CONFIDENCE in 6 of the 7 files
    whose IgD x CD27 subsets missed and in 4 of the 93 others (one 0.015 above its target),
    one of the misses said by nothing else; random_accuracy "session 66" (70 files): in none
    with 500 B cells (where the T cells' CD27 found none, the B cells' own valley placed it)."""
    probe = params.get("probe")
    if probe is None or placed.method in FOUND:
        return placed
    seen = place(probe)  # judged where it searched enough of its own population's events
    searched = seen.method in (*FOUND, "fallback") and (seen.events or 0) >= MIN_SHAPE_EVENTS
    if not searched or seen.confidence >= LOW_CONFIDENCE:
        return placed
    look = "no valley" if seen.method == "fallback" else f"a shallow valley ({seen.confidence:.2f})"
    why = (f"{probe.dim} on {probe.on}: {look} between negatives and positives "
           f"({probe.name}): a dim or noisy stain, and no valley here placed this cut")  # fmt: skip
    if why in placed.unlike:  # a cut `same_as` a probed one carries its reason already
        return placed
    return replace(placed, unlike="; ".join(w for w in (placed.unlike, why) if w))


def lent_valley(placed: Placement, lender: ThresholdSpec | None, place: Callable) -> Placement:
    """`placed` (a last resort), or the valley its `lender` (a threshold `same_as` it that
    `lends`, so placed on its own) found among its narrower population; `placed` where there is
    no lender or it found no valley. One CD27 cut for the IgD x CD27 quadrants: where the
    memory B cells' CD27 sits close to the naive ones' (another donor's: real_fuzz --donor seed
    198822555, memory CD27 x0.6), all B cells show a continuum and the last resort lay past the
    window (6 unswitched memory B cells for openCyto's 126, transitional 0.49), while among the
    IgD- ones CD27- and CD27+ B cells part at a valley (0.39; the best quadrant's cut 0.40):
    unswitched memory 0.77, transitional 0.97. `place`: threshold -> its placement (the
    caller has stored `placed` by then: the lender's `same_as` reads it)."""
    if lender is None:
        return placed
    own = place(lender)
    if own.method != "valley" or own.value is None:
        return placed
    among = ", ".join(f"{w.name} {side}" for w, side in lender.where)
    how = f"{lender.name}'s valley {own.value:.2f} (on {lender.on}, {among}; here {placed.flag})"
    return replace(own, flag=how, unlike=placed.unlike or own.unlike)


SHAPE_MAX_EVENTS = 100_000  # split_separation looks at no more events than this
MIN_SEPARATION = 2.0  # Ashman's D below this: the populations on both sides of a cut overlap


def ashman_d(m1: float, s1: float, m2: float, s2: float) -> float:
    """Ashman's D of two populations (means, SDs): above 2 they are cleanly separated."""
    return float(np.sqrt(2.0) * abs(m2 - m1) / np.sqrt(max(s1 * s1 + s2 * s2, 1e-18)))


def strided(values: np.ndarray, at_most: int) -> np.ndarray:
    """Every k-th value, at most `at_most` of them: a deterministic subsample for what is a
    share or a description, not a cut (fast at 10 M events, the same on every run)."""
    return values if len(values) <= at_most else values[:: len(values) // at_most + 1]


def split_separation(x: np.ndarray, cut: float) -> float | None:
    """Ashman's D of the events below and above `cut` (medians, robust SDs); None when a side
    has fewer than MIN_EVENTS events. A description, not a cut: on a strided subsample of at
    most SHAPE_MAX_EVENTS events (deterministic; its medians move by far less than it reports)."""
    x = strided(x, SHAPE_MAX_EVENTS)
    below, above = x[x < cut], x[x >= cut]
    if below.size < MIN_EVENTS or above.size < MIN_EVENTS:
        return None
    mb, ma = float(np.median(below)), float(np.median(above))
    sb, sa = float(robust_sd(below, mb)), float(robust_sd(above, ma))
    return ashman_d(mb, sb, ma, sa)


def noted(as_template: str, why: str) -> str:
    """`as_template` ('', 'yes' or 'no: <reasons>') with `why` among its reasons."""
    return f"{as_template}; {why}" if as_template.startswith("no: ") else f"no: {why}"


def unlike_reason(name: str, p: Placement, expect: int | None = None) -> str:
    """Why this placement's sample did not look as the template expects ('' when it did, or
    when too few events were there to judge: a B-subset cut in aplasia is not a surprise)."""
    if p.events is None:
        return ""
    shown = p.populations or 0
    if expect and shown > expect:  # its valleys' own significance judges them, at any size
        return f"{name}: {shown} populations in {p.events} events, {expect} expected"
    if p.unlike and (p.unlike_always or p.events >= MIN_SHAPE_EVENTS):
        return f"{name}: {p.unlike}"
    if p.events < MIN_SHAPE_EVENTS:
        return ""
    if expect and p.populations is not None and p.populations < expect:
        return f"{name}: {p.populations} population in {p.events} events, {expect} expected"
    if p.separation is not None and p.separation < MIN_SEPARATION:
        return f"{name}: populations overlap (separation D {p.separation:.1f} < {MIN_SEPARATION:g})"
    if "out of limits" in p.flag:
        return f"{name}: {p.flag.removeprefix('fallback: ')}"
    return ""


def judged(placements: Sequence[tuple[str, Placement, int | None]]) -> dict:
    """One gate's look: the fewest populations and the smallest separation its placements
    found, and `as_template`: '' (nothing searched), 'yes', or 'no: <why>'."""
    searched = [(n, p, e) for n, p, e in placements if p.populations is not None]
    if not searched:
        return {"populations_found": None, "separation": None, "as_template": ""}
    seps = [p.separation for _, p, _ in searched if p.separation is not None]
    why = [w for w in (unlike_reason(n, p, e) for n, p, e in searched) if w]
    return {
        "populations_found": min(p.populations for _, p, _ in searched),
        "separation": round(min(seps), 2) if seps else None,
        "as_template": "no: " + "; ".join(why) if why else "yes",
    }


@dataclass(frozen=True)
class Held:
    """Events QC held out (a stain at its detector's top), appended after the others, and where
    they still count in placing a cut (cytopipe.gating.saturated.placed): `settled` marks the
    others; `certain`: population -> the held events certainly in it (as the gates first
    placed without them count them), for the populations whose cuts are placed with them;
    `unknown`: stain -> the held events whose value of it is not known."""

    settled: np.ndarray
    certain: Mapping[str, np.ndarray]
    unknown: Mapping[str, np.ndarray]

    def known(self, population: str | None, dims: Sequence[str], mask: np.ndarray) -> np.ndarray:
        """`mask` without the held events, but those certainly in `population` whose value of
        every one of `dims` is known."""
        if population not in self.certain:
            return mask & self.settled
        usable = self.settled | self.certain[population]
        for dim in dims:
            if dim in self.unknown:
                usable = usable & ~self.unknown[dim]
        return mask & usable


EMPTY_SHARE = 0.001  # a search window with at most this share of the events is a gap (`empty`)


def empty(x: np.ndarray, search: Sequence[float], fixed: float) -> Placement | None:
    """No valley because the search window holds (nearly) no events: wherever the cut falls in
    it, no count moves by more than EMPTY_SHARE of the events, so the template's position
    (`fixed`) there is as right as any, not a fallback (debris the acquisition threshold already
    removed: the Lyoplate file has no event below FSC 0.17, the debris window ends at 0.12).
    None where events are there to be cut. (A cut with a reference cut takes that instead.)"""
    if x.size < MIN_EVENTS:
        return None
    lo, hi = search
    inside = int(np.count_nonzero((x >= lo) & (x <= hi)))
    if inside > EMPTY_SHARE * x.size:
        return None
    flag = f"{inside:,} of {x.size:,} events in [{lo:g}, {hi:g}]: any cut there gives this gate"
    return Placement("gap", 1.0, flag, min(max(fixed, lo), hi))


# A last resort k SDs from a majority peak (no valley, shoulder or turn: `fallback_sd`) is a
# convention, not a position the sample showed: k was chosen on a few files, and on others the
# experts' cut lies half an SD or more away. Its count's range (`cut_moves`) reaches half an SD
# either way, not one bandwidth: real_fuzz "session 56w" seed 134401500 (IgD: the naive peak
# 0.60 - 2 SD, 0.45) counted 84 double-negative B cells, 47-138 at one bandwidth, where
# openCyto's cut (0.49, 1.5 SD) counts 185.
LAST_RESORT_SPREAD = 0.5


def clamped(value: float, search: Sequence[float], method: str) -> Placement:
    """A measured cut held within the template's search window, at low confidence when it had
    to be moved."""
    lo, hi = (float(v) for v in search)
    if lo <= value <= hi:
        return Placement(method, 1.0, "", value)
    return Placement(
        method, 0.3, f"low_confidence: {value:.2f} outside [{lo:g}, {hi:g}], clamped",
        min(max(value, lo), hi),
    )  # fmt: skip


def within_window(how: str, cut: float, search: Sequence[float]) -> tuple[float, str]:
    """A last-resort cut held within the template's search window, and the note that says so
    when it had to be moved: a cut at the window's edge is the template's, not the sample's."""
    value = min(max(cut, search[0]), search[1])
    return value, "" if value == cut else f"{how} ({cut:.2f}) lies past the template's window"
