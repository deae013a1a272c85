"""Population statistics and the binned density data the report draws gates on.

The report must never need the events again (a cohort can hold thousands of 10 M event
files), so each sample's gates are summarised here as counts, percentages, medians and 2-D
histograms of the parent population.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cytopipe.gating.placement import LOW_CONFIDENCE, PASS, noted

MARKERS = ("CD45", "CD3", "CD19", "CD20", "CD27", "CD38", "IgD", "CD24")
STATS_COLUMNS = [
    "sample_id", "population", "parent", "count", "count_cut_low", "count_cut_high",
    "pct_parent", "pct_lymphocytes",
    "gate_method", "confidence", "flag", "parent_count", "populations_found", "separation",
    "as_template", *(f"median_{m}" for m in MARKERS),
]  # fmt: skip
PLOT_BINS = 96


def _pct(num: int, den: int) -> float:
    return 100.0 * num / den if den else float("nan")


def population_stats(
    sample_id: str,
    masks: Mapping[str, np.ndarray],
    parents: Mapping[str, str | None],
    columns: Mapping[str, np.ndarray],
    n_root: int,
    methods: Mapping[str, tuple[str, float, str]] | None = None,
    shapes: Mapping[str, Mapping] | None = None,
    moves: Mapping[str, tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """One row per population in `masks` order. `methods`: population -> (method, confidence,
    flag); `shapes`: population -> what the sample looked like where its gate was placed
    (populations_found, separation, as_template: cytopipe.gating.placement.judged); `moves`:
    population -> (events leaving, events joining) as its cuts move a bandwidth
    (cytopipe.gating.cut_moves), the count_cut_low / count_cut_high columns (empty where
    no cut of the population moves)."""
    counts = {pop: int(np.count_nonzero(m)) for pop, m in masks.items()}
    n_lymph = counts.get("lymphocytes")
    under_lymph = _descendants(parents, "lymphocytes")
    rows = []
    for pop, mask in masks.items():
        parent = parents.get(pop)
        method, confidence, flag = (methods or {}).get(pop, ("fixed", 1.0, ""))
        row = {
            "sample_id": sample_id,
            "population": pop,
            "parent": parent or "",
            "count": counts[pop],
            **_cut_range(counts[pop], (moves or {}).get(pop)),
            "pct_parent": _pct(counts[pop], counts[parent] if parent else n_root),
            "pct_lymphocytes": _pct(counts[pop], n_lymph)
            if pop in under_lymph and n_lymph is not None
            else float("nan"),
            "gate_method": method,
            "confidence": confidence,
            "flag": flag,
            "parent_count": counts[parent] if parent else n_root,
            **{k: None for k in ("populations_found", "separation")},
            "as_template": "",
            **(shapes or {}).get(pop, {}),
        }
        if unsure := unsure_count(row["count_cut_low"], row["count_cut_high"]):
            row["as_template"] = noted(row["as_template"], unsure)
        for m in MARKERS:
            col = columns.get(m) if m in columns else None
            row[f"median_{m}"] = (
                float(np.median(col[mask])) if col is not None and counts[pop] else float("nan")
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=STATS_COLUMNS)
    for column in ("populations_found", "count_cut_low", "count_cut_high"):
        out[column] = out[column].astype("Int64")
    return out


# A count whose range as its cuts move (`cut_moves`: a bandwidth, a last resort's spread, the
# turn a limit kept a cut from) spans more than UNSURE_RANGE-fold is not known to within that
# factor, whatever its gate's confidence: real_fuzz "57j" seed 204517589 (memory-poor, CD20
# x1.72): the CD27 turn (0.50) kept halfway to the T cells' peak (0.27), in the naive B cells'
# long tail, 920 unswitched memory B cells for openCyto's 142, range 136-1,107, nothing said.
# Only where the range reaches UNSURE_MIN_EVENTS: in aplasia a handful moves by design.
UNSURE_RANGE = 5.0
UNSURE_MIN_EVENTS = 100


def unsure_count(low: int | None, high: int | None) -> str:
    """Why a count is not known (its range spans more than UNSURE_RANGE-fold), else ''."""
    if low is None or high is None or high < UNSURE_MIN_EVENTS:
        return ""
    if high + 1 <= UNSURE_RANGE * (low + 1):
        return ""
    return f"its count ranges {low:,}-{high:,} as its cuts move: more than {UNSURE_RANGE:g}-fold"


def _cut_range(count: int, moved: tuple[int, int] | None) -> dict:
    if moved is None:
        return {"count_cut_low": None, "count_cut_high": None}
    return {"count_cut_low": count - moved[0], "count_cut_high": count + moved[1]}


def f1_score(found: np.ndarray, reference: np.ndarray) -> float:
    """Agreement of two per-event memberships (a gate and a truth, a peer's gate or an expert's
    label): 2 |both| / (|found| + |reference|); 1.0 when both are empty (nothing to find, and
    nothing found)."""
    denom = np.count_nonzero(found) + np.count_nonzero(reference)
    return 2.0 * np.count_nonzero(found & reference) / denom if denom else 1.0


def unlike_mask(stats: pd.DataFrame) -> np.ndarray:
    """Rows of one sample's stats whose gate was placed where the sample did not look as the
    template expects (all False for stats from before the check)."""
    if "as_template" not in stats:
        return np.zeros(len(stats), dtype=bool)
    return stats["as_template"].fillna("").astype(str).str.startswith("no").to_numpy()


def unlike_template(stats: pd.DataFrame) -> str:
    """The gates of one sample placed where it did not look as the template expects, as
    'populations: why' joined by ' | ' ('' when all did, or for stats from before the check).
    One line per reason: a cut shared by several populations (CD27 for the four quadrant
    subsets) gives one reason, which a reviewer should read once."""
    bad = stats[unlike_mask(stats)]
    reasons: dict[str, list[str]] = {}
    for pop, why in zip(bad["population"], bad["as_template"], strict=True):
        for reason in str(why).removeprefix("no: ").split("; "):
            reasons.setdefault(reason, []).append(str(pop))
    return " | ".join(f"{', '.join(pops)}: {why}" for why, pops in reasons.items())


def gates_to_review(stats: pd.DataFrame, low: float = LOW_CONFIDENCE, min_parent: int = 50) -> int:
    """How many gates of one sample a reviewer should look at (review_rows)."""
    return len(review_rows(stats, low, min_parent))


def review_rows(
    stats: pd.DataFrame, low: float = LOW_CONFIDENCE, min_parent: int = 50
) -> pd.DataFrame:
    """The gates a reviewer should look at: placed with confidence below `low` (where autogate
    flags low confidence) on a parent of at least `min_parent` events.

    Every fallback is flagged in the statistics, but in aplasia the B-subset gates fall back on
    parents of a handful of events by design, and no position of those gates can move the counts
    by more than that handful; listing every such sample would bury the ones that matter. A
    pre-gate the panel cannot apply (method 'pass': no FSC-H, no CD45) placed nothing to look
    at either: it is a fact of the panel, said once on the cohort page (`passed_pregates`);
    listed per sample, it put every real Lyoplate file (neither channel) on the review list.
    """
    if stats.empty:
        return stats.iloc[0:0]
    counts = stats.set_index("population")["count"]
    parent_n = stats["parent"].map(counts).fillna(np.inf)  # root: all events
    doubtful = pd.to_numeric(stats["confidence"], errors="coerce").fillna(0.0) < low
    if "gate_method" in stats:
        doubtful &= stats["gate_method"].astype(str) != PASS
    return stats[(doubtful & (parent_n >= min_parent)).to_numpy()]


def passed_pregates(stats: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(population, why) -> samples in which that pre-gate passed every event, the panel
    lacking its marker."""
    if stats.empty or "gate_method" not in stats:
        return {}
    passed = stats[stats["gate_method"].astype(str) == PASS]
    groups = passed.groupby(["population", "flag"], sort=False)["sample_id"].nunique()
    return {(str(p), str(f)): int(n) for (p, f), n in groups.items()}


def _descendants(parents: Mapping[str, str | None], root: str) -> set[str]:
    """Populations inside `root`, including itself."""
    inside = {root}
    changed = True
    while changed:
        changed = False
        for pop, parent in parents.items():
            if parent in inside and pop not in inside:
                inside.add(pop)
                changed = True
    return inside


def density_plot(
    population: str,
    parent: str | None,
    x: str,
    y: str,
    columns: Mapping[str, np.ndarray],
    parent_mask: np.ndarray,
    count: int,
    outline: np.ndarray,
    ranges: Mapping[str, tuple[float, float]],
    extra_outlines: Sequence[tuple[str, np.ndarray]] = (),
) -> dict:
    """Parent events binned on the gate's two axes, with the gate outline in the same units
    (and the outlines of its `or:` parts, with their labels)."""
    xr, yr = ranges[x], ranges[y]
    xe = np.linspace(*xr, PLOT_BINS + 1)
    ye = np.linspace(*yr, PLOT_BINS + 1)
    h, _, _ = np.histogram2d(columns[y][parent_mask], columns[x][parent_mask], bins=(ye, xe))
    n_parent = int(np.count_nonzero(parent_mask))
    return {
        "population": population,
        "parent": parent or "",
        "x": x,
        "y": y,
        "x_range": list(xr),
        "y_range": list(yr),
        "x_edges": np.round(xe, 5).tolist(),
        "y_edges": np.round(ye, 5).tolist(),
        "counts": h.astype(int).tolist(),
        "gate": _rounded(outline),
        "count": count,
        "pct_parent": _pct(count, n_parent),
        "extra_gates": [{"label": label, "gate": _rounded(o)} for label, o in extra_outlines],
    }


CUT_BINS = 120


def cut_density(t, values: np.ndarray, placed, view: tuple[float, float]) -> dict:
    """A threshold's 1-D histogram on the events it was searched on, with where it was placed
    and how (valley, fallback and why): what a reviewer checks before trusting the cut."""
    edges = np.linspace(*view, CUT_BINS + 1)
    counts, _ = np.histogram(np.clip(values, *view), bins=edges)
    where = [f"{cond.dim} {side} {cond.name}" for cond, side in t.where]
    return {
        "name": t.name,
        "dim": t.dim,
        "on": t.on or "all events",
        "where": where,
        "edges": np.round(edges, 5).tolist(),
        "counts": counts.astype(int).tolist(),
        "events": int(values.size),
        "value": None if placed.value is None else round(float(placed.value), 5),
        "method": placed.method,
        "confidence": round(float(placed.confidence), 3),
        "flag": placed.flag,
    }


def _rounded(outline: np.ndarray) -> list:
    return np.round(np.asarray(outline, dtype=float), 5).tolist()


def display_range(values: np.ndarray) -> tuple[float, float]:
    """Axis range for plots: the scale's natural 0-1 span, widened to the data's 0.1-99.9 %."""
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = np.quantile(values, [0.001, 0.999])
    return (float(min(0.0, lo)), float(max(1.0, hi)))
