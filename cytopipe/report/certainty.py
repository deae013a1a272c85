"""B-cell numbers as the pages say them: with their exact 95% interval, and as "< LLOQ (x)"
below the lower limit of quantification, never as a bare number the acquisition cannot support
(cytopipe.clinical.uncertainty computes them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cytopipe.report.formatting import MISSING, fmt_number, is_missing, sig


def _below_lloq(row: Mapping) -> bool:
    flag = row.get("below_lloq")
    return not is_missing(flag) and bool(flag)


def value_text(row: Mapping, value: str, low: str, high: str, lloq: str, unit: str) -> str:
    """'1.2 % (95% CI 0.95-1.4)', or '< LLOQ (0.1 %)' when the count is below the LLOQ."""
    if is_missing(row.get(value)):
        return MISSING
    if _below_lloq(row):
        limit = row.get(lloq)
        return "< LLOQ" + ("" if is_missing(limit) else f" ({sig(limit)}{unit})")
    text = f"{sig(row.get(value))}{unit}"
    if is_missing(row.get(low)) or is_missing(row.get(high)):
        return text
    return f"{text} (95% CI {sig(row.get(low))}–{sig(row.get(high))})"


def pct_text(row: Mapping) -> str:
    return value_text(row, "b_pct_lymphocytes", "b_pct_low", "b_pct_high", "lloq_pct", " %")


def per_ul_text(row: Mapping) -> str:
    return value_text(row, "b_cells_per_ul", "b_per_ul_low", "b_per_ul_high", "lloq_per_ul", "/µL")


def events_text(row: Mapping) -> str:
    """'0 of 50,000 lymphocytes (95% CI 0-3.7 events)'."""
    if is_missing(row.get("b_cells")):
        return MISSING
    text = f"{fmt_number(row.get('b_cells'))} of {fmt_number(row.get('lymphocytes'))} lymphocytes"
    if not is_missing(row.get("b_cells_high")):
        text += f" (95% CI {sig(row.get('b_cells_low'))}–{sig(row.get('b_cells_high'))} events)"
    return text


def limits_text(row: Mapping, lod_events: Any = None, lloq_events: Any = None) -> str:
    """What the acquisition can see: 'LOD 0.04 % / 2/µL, LLOQ 0.1 % / 5/µL'."""
    parts = []
    for name, events in (("LOD", lod_events), ("LLOQ", lloq_events)):
        key = name.lower()
        if is_missing(row.get(f"{key}_pct")):
            continue
        text = f"{name}{'' if events is None else f' ({fmt_number(events)} events)'} "
        text += f"{sig(row.get(f'{key}_pct'))} %"
        if not is_missing(row.get(f"{key}_per_ul")):
            text += f" / {sig(row.get(f'{key}_per_ul'))}/µL"
        parts.append(text)
    return ", ".join(parts) or MISSING
