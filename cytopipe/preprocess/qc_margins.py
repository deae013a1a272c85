"""QC margin events: values at the top of a detector's range (saturated) or at or below zero
in a scatter channel, which are not measurements of a particle.

Its own module because the rule needs the channel's top as `read_fcs` decodes it ($PnE, $PnG:
see `channel_top`, also used by cytopipe.preprocess.ranges) and a blocked pass over the raw
matrix; why the rule exists is in cytopipe.preprocess.qc's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# --- margins -----------------------------------------------------------------------------------


def _finite_float(text) -> float | None:
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def channel_top(keywords: Mapping[str, str], pnr: Sequence[float], i: int) -> float | None:
    """The value `read_fcs` returns for the top code ($PnR - 1) of channel i: log-amplified
    channels ($PnE) and gains ($PnG) change it, so a FACSCalibur's 1024-channel log FL1 tops
    out near 10^4, not at 1023. None when the file gives no usable range."""
    r = float(pnr[i])
    if not (r > 1 and math.isfinite(r)):
        return None
    top = r - 1.0
    e = keywords.get(f"p{i + 1}e", "")
    parts = [p.strip() for p in str(e).split(",")] if str(e).strip() else []
    if len(parts) == 2:
        f1, f2 = _finite_float(parts[0]), _finite_float(parts[1])
        if f1 and f1 > 0:
            top = 10 ** (f1 * top / r) * (f2 if f2 else 1.0)
    g = _finite_float(keywords.get(f"p{i + 1}g"))
    if g not in (None, 0.0, 1.0):
        top /= g
    return top


_CHUNK_ROWS = 1 << 15  # events per block of the margin pass (a 16-channel block is 2 MB)


def _margin_pass(
    raw: np.ndarray, top_cols: Sequence[int], tops: np.ndarray, floor_cols: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per event: any `top_cols` >= its top; any `floor_cols` <= 0.

    One pass over the event matrix in cache-sized row blocks, each compared as one flat
    vector against the per-channel limits tiled to the block (channels not checked get an
    unreachable limit): a comparison per row of a dozen channels would spend its time in loop
    overhead, and a column at a time would read the whole matrix once per channel. Margin
    events are rare, so their rows are found from the few flat hits.
    """
    n, n_ch = raw.shape
    sat = np.zeros(n, dtype=bool)
    floor = np.zeros(n, dtype=bool)
    if not n or not (len(top_cols) or len(floor_cols)):
        return sat, floor
    rows = min(_CHUNK_ROWS, n)
    lim_top = np.full(n_ch, np.inf)
    lim_top[list(top_cols)] = tops
    lim_floor = np.full(n_ch, -np.inf)
    lim_floor[list(floor_cols)] = 0.0
    tile_top = np.tile(lim_top.astype(raw.dtype), rows)
    tile_floor = np.tile(lim_floor.astype(raw.dtype), rows)
    hit = np.empty(rows * n_ch, dtype=bool)
    for a in range(0, n, rows):
        flat = np.ascontiguousarray(raw[a : a + rows]).reshape(-1)
        m = flat.size
        if len(top_cols):
            np.greater_equal(flat, tile_top[:m], out=hit[:m])
            sat[a + np.flatnonzero(hit[:m]) // n_ch] = True
        if len(floor_cols):
            np.less_equal(flat, tile_floor[:m], out=hit[:m])
            floor[a + np.flatnonzero(hit[:m]) // n_ch] = True
    return sat, floor


def _limit(top: float) -> float:
    """A value at or above this is at the channel's top (float rounding of the decoded top)."""
    return top * (1 - 1e-6)


def kept_scatter_tops(
    raw: np.ndarray, tops: Mapping[int, float | None], scatter: Sequence[int], names: Sequence[str]
) -> list[str]:
    """A note per scatter channel with events at its top, kept (`saturated_scatter: keep`):
    a cell too large for the forward-scatter range is still a cell whose stains were measured
    (the FlowCAP-I GvHD experts counted 166 T cells at FSC-H 1023 in file 9), and
    compensation never uses scatter, so nothing else about the event is off."""
    notes = []
    for i in scatter:
        top = tops.get(i)
        if top is None:
            continue
        k = int(np.count_nonzero(raw[:, i] >= _limit(top)))
        if k:
            notes.append(
                f"{k} event(s) at the top of {names[i]} kept (size off-scale, stains measured)"
            )
    return notes


MIN_CUT_OFF = 20  # fewer pinned events than this are not worth a warning
TAIL_FACTOR = 2.0  # pinned events continue a population when at least as many events lie
# within this factor below the top (on the raw, linear scale)


def stain_tops_cut_off(
    raw: np.ndarray,
    tops: Mapping[int, float | None],
    pinned: Mapping[int, int],
    names: Sequence[str],
    exclude: np.ndarray | None = None,
    counted: bool = False,
) -> dict[int, str]:
    """A warning per stain channel (by index) whose events at the top are a population running
    off the scale, not spikes: they are removed as margin events (their value, and the spill
    from it into other detectors, is unknown), so that population is counted short, or
    (`counted`) its subsets are uncertain where the spill could move them. A reagent
    brighter than the voltage allows does this: the Lyoplate file's CD20 x3 pinned 1,759 B
    cells, with 6,963 more within a factor 2 below the top (B cells 0.93, transitional 0.48
    against openCyto's). Gating them as read was measured and not taken: the spill of the pinned
    CD20 into CD27 is under-compensated, which made naive B cells unswitched memory (0.77 ->
    0.44); cytopipe.gating.saturated counts them where that spill leaves no doubt.
    `pinned`: stain channel -> its events at the top, as `margin_masks` counted them;
    `exclude`: events that are not cells (counting beads), left out of the tail too;
    `counted`: they are gated where they certainly belong (`saturated_stains: gate`)."""
    notes = {}
    for i, k in pinned.items():
        if k < MIN_CUT_OFF:
            continue
        near = tops[i] / TAIL_FACTOR
        below = int(np.count_nonzero(raw[:, i] >= near)) - k
        if exclude is not None and exclude.any():
            below -= int(np.count_nonzero(raw[exclude, i] >= near))
        if below >= k:
            notes[i] = (
                f"{names[i]}: {k} event(s) at the top removed, and {below} more lie within a "
                f"factor {TAIL_FACTOR:g} below it: a population runs off the scale (voltage or "
                "reagent too bright for this detector), "
                + (
                    "counted where they belong whatever their true signal up to twice the top "
                    "(in a subset only where its spill leaves no doubt)"
                    if counted
                    else f"so its count is short by up to {k}"
                )
                + "; acquire it at a lower voltage next time"
            )
    return notes


def at_stain_tops(
    raw: np.ndarray,
    stain_tops: Mapping[int, float],
    candidates: np.ndarray,
    scatter_tops: Mapping[int, float],
) -> dict[int, np.ndarray]:
    """Stain channel -> the `candidates` (saturated events removed for nothing else) at its
    top, leaving out events also at a scatter channel's top (removed as margin events, when
    `saturated_scatter: remove`). Only their stain values are doubtful, and only one way: the
    true signal lies above the top, and its spill into other detectors was under-compensated
    (cytopipe.gating.saturated gates them on that interval)."""
    rows = np.flatnonzero(candidates)
    block = raw[rows]
    for i, top in scatter_tops.items():
        rows = rows[block[:, i] < _limit(top)]
        block = raw[rows]
    out = {}
    for i, top in stain_tops.items():
        hit = rows[block[:, i] >= _limit(top)]
        if len(hit):
            out[i] = np.zeros(raw.shape[0], dtype=bool)
            out[i][hit] = True
    return out


def margin_masks(
    raw: np.ndarray,
    tops: Mapping[int, float | None],
    scatter: Sequence[int],
    names: Sequence[str],
    max_fraction: float = 0.5,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str]]:
    """(saturated, scatter_floor) event masks, margin events per channel, notes. Events in
    `exclude` (counting beads, which may sit at a detector's top) are never margin events.

    A channel with more than `max_fraction` of its events at the "top" has a $PnR that does not
    describe its values (some exporters write a nominal range); it is left out of the rule and
    noted rather than removing most of the file. Same for a scatter channel mostly <= 0.
    """
    n = raw.shape[0]
    top_cols = [i for i, v in tops.items() if v is not None]
    floor_cols = list(scatter)
    lims = np.array([_limit(tops[i]) for i in top_cols], dtype=np.float64)
    notes: list[str] = []
    for _ in range(2):  # a second pass only when a channel's range turned out nominal
        sat, floor = _margin_pass(raw, top_cols, lims, floor_cols)
        if exclude is not None:
            sat &= ~exclude
            floor &= ~exclude
        top_n = (raw[np.flatnonzero(sat)][:, top_cols] >= lims.astype(raw.dtype)).sum(axis=0)
        floor_n = (raw[np.flatnonzero(floor)][:, floor_cols] <= 0).sum(axis=0)
        nominal_t = [j for j, c in enumerate(top_n) if n and c > max_fraction * n]
        nominal_f = [j for j, c in enumerate(floor_n) if n and c > max_fraction * n]
        if not (nominal_t or nominal_f):
            break
        for j in nominal_t:
            notes.append(
                f"{names[top_cols[j]]}: {100 * top_n[j] / n:.0f}% of events at or above "
                f"$PnR - 1 ({lims[j]:g}); the range looks nominal, channel not used for the "
                "saturation rule"
            )
        for j in nominal_f:
            notes.append(
                f"{names[floor_cols[j]]}: {100 * floor_n[j] / n:.0f}% of events at or below 0; "
                "channel not used for the scatter-floor rule"
            )
        top_cols = [c for j, c in enumerate(top_cols) if j not in nominal_t]
        lims = np.delete(lims, nominal_t)
        floor_cols = [c for j, c in enumerate(floor_cols) if j not in nominal_f]
    per_channel = {names[c]: int(k) for c, k in zip(top_cols, top_n, strict=True) if k}
    per_channel.update(
        {f"{names[c]} (floor)": int(k) for c, k in zip(floor_cols, floor_n, strict=True) if k}
    )
    return sat, floor, per_channel, notes
