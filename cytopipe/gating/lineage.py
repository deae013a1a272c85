"""Which events carry a T- or B-lineage marker: backgating evidence for the scatter and CD45
gates.

Why a module of its own: the lymphocyte gate, the debris cut and the CD45- cut all ask where the
CD3+/CD19+/CD20+ events are, each marker cut at its own deepest valley; that answer is only
evidence when the cut parts the lineage from its negatives, which this module checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from cytopipe.gating.densities import density, find_valley
from cytopipe.gating.placement import MIN_EVENTS, MIN_SHAPE_EVENTS

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


def lineage_bright(columns, rows: np.ndarray, markers: Sequence[str]) -> np.ndarray | None:
    """Events of `rows` bright for any of `markers` (T and B lineage: lymphocytes wherever they
    sit in scatter), each cut at its own deepest density valley over the data's full range;
    None when no marker of the panel shows two populations.

    Backgating, as an expert checks a lymphocyte gate: without CD45 the lowest-SSC cluster can
    be debris at the FSC threshold (FlowCAP-I GvHD files 6 and 9), and in myeloid-rich samples
    the lymphocytes are a minority; the cluster that holds the CD3+/CD19+ events is theirs.
    A marker whose bright events hold most of the other lineage's is left out
    (EXCLUSIVE_LINEAGES): its cut lies among negatives.
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
