"""Values as the report shows them: numbers as a scientist reads them, booleans as yes/no,
unknown values as "—", and the exact value behind a table cell (for sorting and tests).

Everything here returns plain text: the templates escape it (autoescaping), so nothing is
escaped twice. `esc` is for the few places that are not a template (plotly titles).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

MISSING = "—"


def plain(value: Any) -> str:
    """Text of a value for a page; None/NaN become "" (as an empty cell, not "nan")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def esc(value: Any) -> str:
    """Text for HTML element content or a quoted attribute; None/NaN become ""."""
    return html.escape(plain(value), quote=True)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def has_text(value: Any) -> bool:
    """A table cell with something to show (not None, NaN or blank)."""
    return not is_missing(value) and bool(str(value).strip())


def fmt_number(value: Any, digits: int = 4) -> str:
    """A number as a scientist reads it: thousands separators for counts, 4 significant digits
    otherwise (no exponent for ordinary magnitudes), "—" when unknown."""
    if is_missing(value) or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return plain(value)
    if not math.isfinite(number):
        return MISSING
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    if abs(number) >= 1e3:
        return f"{number:,.0f}"
    if abs(number) >= 1e-3:
        text = f"{number:.{digits}g}"
        return text if "e" not in text else f"{number:.{digits}f}"
    return f"{number:.{digits - 1}e}"


def sig(value: Any, digits: int = 2) -> str:
    """`value` to `digits` significant figures, never in exponent form ("170", "0.34",
    "0.025"): an interval of a small count does not deserve more, and "1.7e+02" is not read
    at a glance. Whole numbers of 1,000 and more keep their separators."""
    if is_missing(value) or value == "":
        return MISSING
    number = float(value)
    if not math.isfinite(number):
        return MISSING
    if number == 0:
        return "0"
    rounded = float(f"{number:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def fmt_pct(value: Any) -> str:
    text = fmt_number(value)
    return text if text == MISSING else f"{text} %"


def fmt_bool(value: Any) -> str:
    if is_missing(value) or value == "":
        return MISSING
    if isinstance(value, str):
        return {"true": "yes", "false": "no"}.get(value.lower(), value)
    return "yes" if bool(value) else "no"


def data_value(value: Any) -> str:
    """The exact value behind a displayed cell (tests and table sorting read it)."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float | int) or hasattr(value, "item"):
        number = float(value)
        return repr(int(number)) if number == int(number) and abs(number) < 1e15 else repr(number)
    return plain(value)
