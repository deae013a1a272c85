"""Which events carry a T- or B-lineage marker: backgating evidence for the scatter and CD45
gates.

Why a module of its own: the lymphocyte gate, the debris cut and the CD45- cut all ask where the
CD3+/CD19+/CD20+ events are, each marker cut at its own deepest valley; that answer is only
evidence when the cut parts the lineage from its negatives, which this module checks. Also
which marker stands in for one the panel lacks (`stand_ins`), and how well a gate holds the
lineage+ events (`lineage_fit`: which scatter view to keep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from cytopipe.gating.beyond_gate import unparented
from cytopipe.gating.densities import density, find_valley
from cytopipe.gating.gates import Gate, evaluate
from cytopipe.gating.placement import MIN_EVENTS, MIN_SHAPE_EVENTS, strided

BACKGATE_SIDE = 0.002  # each side of a lineage marker's valley holds >= 0.2% of the parent
BACKGATE_TOP = 0.9995  # ... within the density's span, up to this quantile
BACKGATE_DEPTH = 0.3  # ... and dips 30% below the lower peak (as valley thresholds)
# A lineage marker "bright" on nearly every event found a dip in its negatives' tail, not the
# lineage: ignored. The Lyoplate file, lymphopenic at fluorescence x2, had its deepest CD20
# valley at 0.09 (97% above; its 1% B cells lay beyond the 99.5% quantile the density spans),
# and the lymphocyte gate took 22,559 events for 1,585 (F1 0.11, now 0.94-0.95).
BACKGATE_MAX_SHARE = 0.95
# T and B cells are exclusive lineages: a T-lineage marker's bright events and a B-lineage
# marker's overlap by more than this share of the smaller set only where one marker's cut lies
# among its negatives, which then hold the other lineage's cells too (that marker is ignored).
# Lymphopenic blood after CAR-T at a high CD19 gain: the negatives of every cell split in two
# humps on CD19 (B cells absent), 72% of the leukocytes were "CD19+", among them 84% of the T
# cells; the granulocytes were taken for the lymphocytes (F1 0.10, 56 B cells for 9).
EXCLUSIVE_LINEAGES = (frozenset({"CD3"}), frozenset({"CD19", "CD20"}))
MAX_LINEAGE_OVERLAP = 0.5


def lineage_bright(
    columns, rows: np.ndarray, markers: Sequence[str], stand_in: Mapping[str, str] | None = None
) -> np.ndarray | None:
    """Events of `rows` bright for any of `markers` (T and B lineage: lymphocytes wherever they
    sit in scatter), each cut at its own deepest density valley over the data's full range;
    None when no marker of the panel shows two populations.

    Backgating, as an expert checks a lymphocyte gate: without CD45 the lowest-SSC cluster can
    be debris at the FSC threshold (FlowCAP-I GvHD files 6 and 9), and in myeloid-rich samples
    the lymphocytes are a minority; the cluster that holds the CD3+/CD19+ events is theirs.
    A marker whose bright events hold most of the other lineage's is left out
    (EXCLUSIVE_LINEAGES): its cut lies among negatives. `stand_in`: marker -> the marker it
    stands in for (`stand_ins`), whose lineage it is judged as.
    """
    each = {}
    for m in markers:
        if m not in columns:
            continue
        v = np.nan_to_num(np.asarray(columns[m][rows], dtype=np.float64), nan=-np.inf)
        if v.size < MIN_SHAPE_EVENTS:
            continue
        lo, hi = np.quantile(v, [0.005, BACKGATE_TOP])
        if hi <= lo:
            continue
        d = density(v, (hi - lo) / 50, lo, hi)
        cut = find_valley(d, lo, hi, int(BACKGATE_SIDE * v.size), BACKGATE_DEPTH)
        if cut is not None and np.mean(v >= cut[0]) <= BACKGATE_MAX_SHARE:
            each[m] = v >= cut[0]
    lineage = {m: i for i, markers_of in enumerate(EXCLUSIVE_LINEAGES) for m in markers_of}
    lineage |= {s: lineage[m] for s, m in (stand_in or {}).items() if m in lineage}
    for a, b in combinations(list(each), 2):
        if not ({a, b} <= each.keys() and {a, b} <= lineage.keys()) or lineage[a] == lineage[b]:
            continue  # dropped already, no lineage of its own, or the same one (CD19, CD20)
        na, nb = np.count_nonzero(each[a]), np.count_nonzero(each[b])
        both = np.count_nonzero(each[a] & each[b])
        if both > MAX_LINEAGE_OVERLAP * max(min(na, nb), 1):
            del each[a if na > nb else b]  # the larger set holds the other lineage: negatives
    if not each:
        return None
    return np.logical_or.reduce(list(each.values()))


def shows_lineage(bright: np.ndarray | None) -> bool:
    """Whether `lineage_bright` found lineage+ events enough to say where a population sits
    (a handful can be spill or doublets)."""
    return bright is not None and np.count_nonzero(bright) >= MIN_EVENTS


def stand_ins(place: Mapping, columns) -> dict[str, str]:
    """Marker the panel lacks -> the marker of `stand_in` the panel has in its place: without
    CD3, CD27 marks the T cells (most of them; no monocyte or granulocyte). With the B cells
    alone as lineage+ events, the lymphocytes of an aplastic sample showed none (the lowest-SSC
    cluster of 10% of the events was the granulocytes: lymphocytes 0.002), and a lineage+ share
    could not keep the monocytes out of a myeloid sample's scatter gate (16,877 monocytes
    joined 6,697 lymphocytes without a dip: F1 0.43)."""
    return {m: s for m, s in place.get("stand_in", {}).items() if m not in columns and s in columns}


def backgate_bright(columns, rows: np.ndarray, place: Mapping) -> np.ndarray | None:
    """`lineage_bright` on `backgate`'s markers, each one the panel lacks replaced by its
    stand-in (`stand_ins`), which is judged as the lineage of the marker it stands in for."""
    stood = stand_ins(place, columns)
    markers = [stood.get(m, m) for m in place.get("backgate", ())]
    return lineage_bright(columns, rows, markers, {s: m for m, s in stood.items()})


VIEW_MAX_EVENTS = 200_000  # a view is judged on no more events than this


def one_event_f1(bright: np.ndarray) -> float:
    """At least what one lineage+ event in or out of a gate moves `lineage_fit`'s F1 by (2 /
    (gated + lineage+ events), the gated ones as many or more): views closer than that tie
    (one cluster's equal F1s differed in their last digits)."""
    return 1.0 / max(np.count_nonzero(strided(bright, VIEW_MAX_EVENTS)), 1)


def lineage_fit(gate: Gate, columns, rows: np.ndarray, bright: np.ndarray) -> tuple[float, float]:
    """F1 of `gate` on the parent's rows against the lineage+ events (backgating: how well the
    gate holds the cells a lymphocyte gate must hold while leaving the others out), and their
    share of the gated events. The lineage- lymphocytes (NK cells) cap both alike in every
    view, so views compare fairly. Judged on a strided subsample of at most VIEW_MAX_EVENTS
    events (a share, not a cut)."""
    rows, bright = strided(rows, VIEW_MAX_EVENTS), strided(bright, VIEW_MAX_EVENTS)
    g = unparented(gate)
    inside = evaluate([g], {d: columns[d][rows] for d in g.dims}, n_events=len(rows))[g.id]
    hit = np.count_nonzero(inside & bright)
    n_in = np.count_nonzero(inside)
    return 2.0 * hit / max(n_in + np.count_nonzero(bright), 1), hit / max(n_in, 1)
