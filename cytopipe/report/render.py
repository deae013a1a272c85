"""Pages from templates: the Jinja2 environment, the report's CSS and JavaScript, and figures
handed to the templates as JSON.

The templates (cytopipe/report/templates/) and the static files (cytopipe/report/static/) are
package data, read through importlib.resources so an installed cytopipe finds them. Pages are
plain static HTML (no server, no network): plotly.js is loaded from the report's own assets
folder and static/report.js, inlined in every page, draws figures, sorts tables and follows
plot clicks.

Everything shown comes from files a lab does not fully control (FCS keywords and marker names,
sample sheets, error messages quoting them), so autoescaping is on for every template and
every value goes through `_shown` (the same escaping as html.escape). The one thing a template
writes unescaped is a figure's JSON inside <script type="application/json">, and
`figure_json` makes that unable to close the element.
"""

from __future__ import annotations

import functools
import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import jinja2


class Html(str):
    """Text that is already HTML (escaped text, the report's CSS and JavaScript): templates
    write it as it is (`__html__`, the protocol Jinja's autoescaping follows)."""

    def __html__(self) -> str:
        return self


def _shown(value: Any) -> Any:
    """What `{{ value }}` writes: None/NaN as nothing, text escaped like html.escape (so `'`
    is &#x27; as in every earlier report); markup made by a template or macro stays."""
    if hasattr(value, "__html__"):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return Html(html.escape(str(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cytopipe.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@functools.cache
def static_text(name: str) -> str:
    """A file of cytopipe/report/static/ (the report's CSS and JavaScript)."""
    return resources.files("cytopipe.report").joinpath("static", name).read_text(encoding="utf-8")


def render(template: str, **data: Any) -> str:
    """A page (or part) from templates/`template`; pages get the CSS and JavaScript too."""
    style = Html(static_text("report.css"))
    script = Html(static_text("report.js"))
    return environment().get_template(template).render(style=style, script=script, **data)


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """A plotly figure for macros.html `plot`: element id, JSON, css class, caption."""

    id: str
    json: str
    css: str = "plot"
    caption: str = ""
    kind: ClassVar[str] = "figure"


@dataclass(frozen=True)
class Unavailable:
    """What a page says instead of a section or figure: "<what> not available: <why>"."""

    what: str
    why: str
    kind: ClassVar[str] = "unavailable"


def figure_json(fig: Any) -> str:
    """Figure JSON that cannot end the <script> element carrying it.

    plotly already writes "<" as \\u003c; escaping again here covers figures built as plain
    dicts too (the density plots skip plotly's validation for speed)."""
    if hasattr(fig, "to_json"):
        text = fig.to_json()
    else:
        text = json.dumps(fig, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class FigureCounter:
    """Unique element ids for the figures of one page."""

    def __init__(self) -> None:
        self.n = 0

    def embed(self, fig: Any, *, css: str = "plot", caption: str = "") -> Figure:
        self.n += 1
        return Figure(f"fig{self.n}", figure_json(fig), css, caption)
