"""Where a patient stands now, for the top of the patient page: the clinician's first question
("is this child still in aplasia, how sure are we, are memory cells coming back?") answered
without scrolling past the timelines.

From sample_states of the patient, in day order: the last sample, its state, B cells with their
95% interval and event count (or "< LLOQ"), its position against the age band, the naive and
switched-memory + plasmablast shares with the change since the previous visit (only where both
visits have B cells at the LLOQ), and when aplasia was first documented and last seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cytopipe.report.certainty import events_text, pct_text, per_ul_text
from cytopipe.report.formatting import fmt_number, has_text, is_missing, plain
from cytopipe.report.tables import badge, key_values


def _share(row: Mapping, lloq: float) -> tuple[float, float] | None:
    """(naive, switched memory + plasmablasts) as fractions of B cells, None below the LLOQ."""
    b = row.get("b_cells")
    if is_missing(b) or float(b) < lloq:
        return None
    values = [row.get(k) for k in ("frac_naive", "frac_switched_memory", "frac_plasmablast")]
    naive, switched, pb = (0.0 if is_missing(v) else float(v) for v in values)
    return naive, switched + pb


def _change(now: float, before: float | None) -> str:
    if before is None:
        return ""
    delta = 100 * (now - before)
    return f" ({'+' if delta >= 0 else '−'}{abs(delta):.0f} points since the previous visit)"


def patient_now(states: pd.DataFrame | None, lloq: float) -> Any:
    """Key-value pairs of the patient's current standing, or None without samples."""
    if states is None or not len(states):
        return None
    rows = states.assign(_day=pd.to_numeric(states["day"], errors="coerce"))
    rows = rows.sort_values("_day", kind="stable").to_dict("records")
    last = rows[-1]
    post = [r for r in rows if r["_day"] >= 0]
    aplastic = [r["_day"] for r in post if r.get("state") == "aplasia"]
    state = str(last.get("state") or "")
    pairs: list[tuple[str, Any]] = [
        ("last sample", f"day {fmt_number(last['_day'])} ({plain(last.get('sample_id', ''))})"),
        ("B-cell state", badge(state, state) if state else "—"),
        ("CD19+ B cells", events_text(last)),
        ("% of lymphocytes", pct_text(last)),
        ("cells/µL", per_ul_text(last)),
    ]
    band = last.get("ref_source_band")
    if band and not is_missing(band):
        pairs.append(
            (
                "age reference",
                f"{plain(last.get('ref_position', ''))} the {plain(band)} band "
                f"({fmt_number(last.get('ref_low'))}–{fmt_number(last.get('ref_high'))}/µL)",
            )
        )
    now = _share(last, lloq)
    with_b = [r for r in rows[:-1] if _share(r, lloq) is not None]
    before = _share(with_b[-1], lloq) if with_b else None
    if now is None:
        b = last.get("b_cells")
        count = "" if is_missing(b) else f" ({fmt_number(b)} event{'' if b == 1 else 's'})"
        pairs.append(("B-cell subsets", f"too few B cells to say{count}"))
    else:
        pairs.append(
            ("naive share", f"{100 * now[0]:.0f}%" + _change(now[0], before and before[0]))
        )
        pairs.append(
            (
                "switched memory + plasmablasts",
                f"{100 * now[1]:.0f}%" + _change(now[1], before and before[1]),
            )
        )
    if aplastic:
        pairs.append(
            (
                "aplasia",
                f"first documented day {fmt_number(min(aplastic))}, last aplastic sample day "
                f"{fmt_number(max(aplastic))}",
            )
        )
    elif post:
        pairs.append(("aplasia", "not documented after infusion"))
    note = last.get("note")
    if has_text(note):
        pairs.append(("note", plain(note)))
    return key_values([(k, v) for k, v in pairs if not (isinstance(v, float) and np.isnan(v))])
