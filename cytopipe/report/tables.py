"""Tables, key-value lists and the small inline pieces of a page (badges, links), as plain data
for the templates (templates/macros.html draws them).

A page's Python decides what a cell says (numbers formatted, file names scrubbed, links); the
template decides how it looks. Text stays text until the template escapes it, so a marker
name or an error message from a file can never become markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cytopipe.report.formatting import (
    MISSING,
    data_value,
    fmt_bool,
    fmt_number,
    fmt_pct,
    is_missing,
    plain,
)

VERDICT_CLASS = {"pass": "ok", "warn": "warn", "fail": "bad", "failed": "bad"}
STATE_CLASS = {
    "baseline": "neutral",
    "aplasia": "aplasia",
    "reconstituted": "ok",
    "not_depleted": "info",
    "unknown": "neutral",
    "ok": "ok",
}


# ----------------------------------------------------------------------------- inline pieces
# What a table cell or a key-value entry may hold besides text; `kind` tells the template
# (macros.html `content`) which one it is.


@dataclass(frozen=True)
class Badge:
    """A verdict or state as a coloured pill."""

    css: str
    text: str
    kind: ClassVar[str] = "badge"


@dataclass(frozen=True)
class Link:
    href: str
    text: str
    kind: ClassVar[str] = "link"


@dataclass(frozen=True)
class KeyValues:
    """A two-column table of label -> value (values are text or inline pieces)."""

    pairs: list[tuple[str, Any]]
    css: str = "kv"
    kind: ClassVar[str] = "kv"


@dataclass(frozen=True)
class BulletList:
    entries: list[Any]
    kind: ClassVar[str] = "list"


Piece = Badge | Link | KeyValues | BulletList


def badge(verdict: str, label: str | None = None) -> Badge:
    klass = VERDICT_CLASS.get(verdict, STATE_CLASS.get(verdict, "neutral"))
    return Badge(klass, plain(label if label is not None else verdict))


def link(href: str, text: str) -> Link:
    return Link(plain(href), plain(text))


def key_values(pairs: Iterable[tuple[str, Any]], *, css: str = "kv") -> KeyValues:
    """Label -> value; values may be anything read from a file (nested mappings become nested
    tables, lists bullet lists, numbers formatted) or an inline piece built by a page."""
    return KeyValues([(plain(k), content(v)) for k, v in pairs], css)


def content(value: Any) -> Any:
    """A value as a page shows it: text, or an inline piece."""
    if isinstance(value, Piece):
        return value
    if isinstance(value, Mapping):
        return key_values(((str(k), v) for k, v in value.items()), css="kv nested")
    if isinstance(value, list | tuple):
        if not value:
            return MISSING
        return BulletList([content(v) for v in value])
    if isinstance(value, bool):
        return fmt_bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_number(value)
    if is_missing(value) or value == "":
        return MISSING
    return plain(value)


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One table column: source key, header, kind (text|int|num|pct|bool|verdict|long),
    tooltip. A value that is an inline piece (e.g. a badge) is shown as it is.

    `link(row) -> href | None` makes a text cell a link."""

    key: str
    label: str
    kind: str = "text"
    title: str = ""
    link: Callable[[Mapping[str, Any]], str | None] | None = None


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    css: str = "",
    row_class: Callable[[Mapping[str, Any]], str] | None = None,
    empty: str = "none",
) -> dict:
    """A sortable table for macros.html `table`: header, rows of cells; numeric cells carry
    their exact value (data-v) beside the formatted text."""
    rows = list(rows)
    return {
        "css": css,
        "empty": empty,
        "head": [{"label": c.label, "title": c.title, "css": _kind_class(c.kind)} for c in columns],
        "rows": [
            {
                "css": row_class(row) if row_class else "",
                "cells": [_cell(row, c) for c in columns],
            }
            for row in rows
        ],
    }


def _kind_class(kind: str) -> str:
    return "num" if kind in ("int", "num", "pct") else ""


def _cell(row: Mapping[str, Any], column: Column) -> dict:
    """{css, v (exact value or None), href, content} of one cell."""
    value = row.get(column.key)
    if column.kind in ("int", "num", "pct"):
        text = fmt_pct(value) if column.kind == "pct" else fmt_number(value)
        return {"css": "num", "v": data_value(value), "href": None, "content": text}
    if column.kind == "bool":
        return {"css": "", "v": data_value(value), "href": None, "content": fmt_bool(value)}
    if isinstance(value, Piece):
        return {"css": "", "v": None, "href": None, "content": value}
    text: Any = plain(value) if not is_missing(value) and value != "" else ""
    if column.kind == "verdict" and text:
        text = badge(str(value))
    href = column.link(row) if column.link else None
    if href and text:
        return {"css": "id", "v": None, "href": href, "content": text}
    return {
        "css": "long" if column.kind == "long" else "",
        "v": None,
        "href": None,
        "content": text,
    }
