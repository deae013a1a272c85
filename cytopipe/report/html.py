"""HTML building blocks for the report: escaping, number formatting, tables, figures, pages.

Everything shown comes from files a lab does not fully control (FCS keywords and marker names,
sample sheets, error messages quoting them), so every piece of text goes through `esc()` and
every figure's JSON is made unable to close the `<script>` element that carries it. Pages are
plain static HTML (no server, no network): plotly.js is loaded from the report's own assets
folder and the little JavaScript below draws figures, sorts tables and follows plot clicks.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cytopipe.errors import ConfigError

STATE_COLORS = {
    "baseline": "#6c757d",
    "aplasia": "#e8590c",
    "reconstituted": "#2b8a3e",
    "not_depleted": "#1c7ed6",
    "unknown": "#adb5bd",
}
VERDICT_CLASS = {"pass": "ok", "warn": "warn", "fail": "bad", "failed": "bad"}
MISSING = "—"


def esc(value: Any) -> str:
    """Text for HTML element content or a quoted attribute; None/NaN become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


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
        return esc(value)
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


def fmt_pct(value: Any) -> str:
    text = fmt_number(value)
    return text if text == MISSING else f"{text} %"


def fmt_bool(value: Any) -> str:
    if is_missing(value) or value == "":
        return MISSING
    if isinstance(value, str):
        return {"true": "yes", "false": "no"}.get(value.lower(), esc(value))
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
    return esc(value)


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One table column: source key, header, kind (text|int|num|pct|bool|link), tooltip.

    `link(row) -> href | None` makes a text cell a link (the href is escaped here)."""

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
) -> str:
    """A sortable HTML table; numeric cells carry their exact value in data-v."""
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(
        f'<th title="{esc(c.title)}" class="{_kind_class(c.kind)}">{esc(c.label)}</th>'
        for c in columns
    )
    body = []
    for row in rows:
        klass = row_class(row) if row_class else ""
        cells = "".join(_cell(row, c) for c in columns)
        body.append(f'<tr class="{esc(klass)}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return (
        f'<div class="table-wrap"><table class="data sortable {esc(css)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _kind_class(kind: str) -> str:
    return "num" if kind in ("int", "num", "pct") else ""


def _cell(row: Mapping[str, Any], column: Column) -> str:
    value = row.get(column.key)
    if column.kind in ("int", "num", "pct"):
        text = fmt_pct(value) if column.kind == "pct" else fmt_number(value)
        return f'<td class="num" data-v="{data_value(value)}">{text}</td>'
    if column.kind == "bool":
        return f'<td data-v="{data_value(value)}">{fmt_bool(value)}</td>'
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    text = esc(value) if not is_missing(value) and value != "" else ""
    if column.kind == "verdict" and text:
        text = badge(str(value))
    href = column.link(row) if column.link else None
    if href and text:
        return f'<td class="id"><a href="{esc(href)}">{text}</a></td>'
    return f'<td class="long">{text}</td>' if column.kind == "long" else f"<td>{text}</td>"


def badge(verdict: str, label: str | None = None) -> str:
    klass = VERDICT_CLASS.get(verdict, STATE_CLASS.get(verdict, "neutral"))
    return f'<span class="badge {klass}">{esc(label if label is not None else verdict)}</span>'


STATE_CLASS = {
    "baseline": "neutral",
    "aplasia": "aplasia",
    "reconstituted": "ok",
    "not_depleted": "info",
    "unknown": "neutral",
    "ok": "ok",
}


def key_values(pairs: Iterable[tuple[str, Any]], *, css: str = "kv") -> str:
    """A two-column table of label -> value; values are escaped unless already Markup."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_markup(v)}</td></tr>" for k, v in pairs)
    return f'<table class="{esc(css)}">{rows}</table>'


class Markup(str):
    """HTML this module built itself (already escaped); everything else gets escaped."""


def _markup(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, Mapping):
        return key_values(((str(k), v) for k, v in value.items()), css="kv nested")
    if isinstance(value, list | tuple):
        if not value:
            return MISSING
        return "<ul>" + "".join(f"<li>{_markup(v)}</li>" for v in value) + "</ul>"
    if isinstance(value, bool):
        return fmt_bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_number(value)
    if is_missing(value) or value == "":
        return MISSING
    return esc(value)


def link(href: str, text: str) -> Markup:
    return Markup(f'<a href="{esc(href)}">{esc(text)}</a>')


# ----------------------------------------------------------------------------- file identity

# Archive files are often named after the patient ("Smith_John.fcs") and acquisition times are
# exact enough to re-identify a visit: the report is published, the lab's tables are not, so
# pages name the sample instead unless the config's `report:` section allows these.
REPORT_OPTIONS = {"show_file_names": False, "show_acquisition_times": False}
HIDDEN_DATE, HIDDEN_TIME = "(date hidden)", "(time hidden)"
FILE_KEYWORDS = frozenset({"fil"})
TIME_KEYWORDS = frozenset({"date", "btim", "etim", "begindatetime", "enddatetime", "last_modified"})
_DATE_RE = re.compile(  # ISO dates (and date-times), and $DATE's dd-mmm-yyyy
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{1,2}[-/ .](?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[-/ .]\d{2,4}\b",
    re.IGNORECASE,
)
_TIME_RE = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b")
_FCS_PATH_RE = r"[^\s'\"()<>,;]*\.(?:fcs|lmd)\b"  # any path or name of a list-mode file
_TOKEN = r"[^\s'\"()<>,;]*"  # what may precede a known file name in a path


@dataclass(frozen=True)
class Privacy:
    """What the HTML pages may say about a sample's file (config `report:` section)."""

    show_file_names: bool = False
    show_acquisition_times: bool = False

    @classmethod
    def from_config(cls, section: Mapping | None) -> Privacy:
        """The options of config `report:`; ConfigError naming a misspelt or non-boolean key,
        because a typo silently falling back to "show" or "hide" is a privacy bug either way."""
        if section is not None and not isinstance(section, Mapping):
            raise ConfigError(f"report must be a mapping of options, not {section!r}")
        options = dict(REPORT_OPTIONS)
        for key, value in (section or {}).items():
            if key not in REPORT_OPTIONS:
                raise ConfigError(
                    f"unknown setting report.{key}",
                    hint=f"use {', '.join(f'report.{k}' for k in REPORT_OPTIONS)}",
                )
            if not isinstance(value, bool):
                raise ConfigError(f"report.{key} must be true or false, not {value!r}")
            options[key] = value
        return cls(**options)

    def text(self, value: Any, sample_id: str, files: Iterable[str] = ()) -> Any:
        """`value` as a page may show it: the sample's file paths and names (`files`, and any
        other .fcs/.lmd path) become "the file of sample <id>", dates and times "(... hidden)".
        Non-text values pass unchanged."""
        if not isinstance(value, str) or not value:
            return value
        if not self.show_file_names:
            value = name_files(value, sample_id, files)
        if not self.show_acquisition_times:
            value = _TIME_RE.sub(HIDDEN_TIME, _DATE_RE.sub(HIDDEN_DATE, value))
        return value

    def keyword_shown(self, key: str) -> bool:
        """Whether an FCS keyword (already public per keyword_allowlist) may be on a page."""
        k = key.strip().lstrip("$").lower()
        if k in FILE_KEYWORDS:
            return self.show_file_names
        return self.show_acquisition_times or k not in TIME_KEYWORDS


def name_files(text: str, sample_id: str, files: Iterable[str] = ()) -> str:
    """`text` with every path or name of the sample's file replaced by "the file of sample
    <id>", in one pass (so the replacement is never matched again): the known paths whole, a
    known file name with whatever path precedes it, its name without extension, and any other
    .fcs/.lmd path (error messages quote the path the sheet gave, which may differ)."""
    names: list[str] = []
    for path in files:
        if not isinstance(path, str) or not path.strip():
            continue
        base = re.split(r"[\\/]", path.strip())[-1]
        names += [re.escape(path.strip()), _TOKEN + re.escape(base)]
        stem = base.rsplit(".", 1)[0]
        if len(stem) >= 3 and stem != sample_id:
            names.append(rf"(?<![\w.-]){re.escape(stem)}(?![\w-])")
    pattern = "|".join([*names, _FCS_PATH_RE])
    return re.sub(pattern, f"the file of sample {sample_id}", text, flags=re.IGNORECASE)


# ----------------------------------------------------------------------------- figures


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

    def embed(self, fig: Any, *, css: str = "plot", caption: str = "") -> Markup:
        self.n += 1
        fid = f"fig{self.n}"
        cap = f'<p class="caption">{esc(caption)}</p>' if caption else ""
        return Markup(
            f'<figure class="{esc(css)}"><div class="js-fig" id="{fid}" data-fig="{fid}-json">'
            f"</div>{cap}"
            f'<script type="application/json" id="{fid}-json">{figure_json(fig)}</script>'
            "</figure>"
        )


# ----------------------------------------------------------------------------- pages


def section(title: str, body: str, *, sid: str = "", note: str = "") -> str:
    anchor = f' id="{esc(sid)}"' if sid else ""
    intro = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<section{anchor}><h2>{esc(title)}</h2>{intro}{body}</section>"


def not_available(what: str, why: str) -> str:
    return f'<p class="unavailable">{esc(what)} not available: {esc(why)}</p>'


def page(
    *,
    title: str,
    heading: str,
    breadcrumbs: Sequence[tuple[str, str | None]],
    body: str,
    root: str,
    toc: Sequence[tuple[str, str]] = (),
    pager: Sequence[tuple[str, str | None]] = (),
    footer: str = "",
) -> str:
    """A complete page. `root` is the relative path to the report folder ("" or "../")."""
    crumbs = " › ".join(
        f'<a href="{esc(href)}">{esc(text)}</a>' if href else f"<span>{esc(text)}</span>"
        for text, href in breadcrumbs
    )
    contents = "".join(f'<a href="#{esc(sid)}">{esc(text)}</a>' for sid, text in toc)
    pages = "".join(
        f'<a class="pager" href="{esc(href)}">{esc(text)}</a>'
        if href
        else f'<span class="pager disabled">{esc(text)}</span>'
        for text, href in pager
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
<script src="{esc(root)}assets/plotly.min.js"></script>
</head>
<body>
<header class="top">
<nav class="crumbs">{crumbs}</nav>
<nav class="pagers">{pages}</nav>
</header>
<main>
<h1>{esc(heading)}</h1>
{f'<nav class="toc">{contents}</nav>' if contents else ""}
{body}
</main>
<footer>{footer}</footer>
<script>{JS}</script>
</body>
</html>
"""


def slug(identifier: str) -> str:
    """A file name for an id: the id itself when safe, else a cleaned form plus a short hash so
    two ids never share a page."""
    text = str(identifier)
    if _SAFE.match(text):
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', text)[:60]}-{digest}"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


CSS = """
:root{--fg:#1f2933;--muted:#66707a;--line:#d9dee3;--bg:#ffffff;--panel:#f6f8fa;
--ok:#2b8a3e;--warn:#b7791f;--bad:#c92a2a;--aplasia:#e8590c;--info:#1c7ed6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header.top{position:sticky;top:0;z-index:10;display:flex;justify-content:space-between;
align-items:center;gap:1em;padding:.45em 1.2em;background:#1f2933;color:#fff}
header.top a{color:#cde3ff;text-decoration:none}header.top a:hover{text-decoration:underline}
header.top span{color:#fff}
.crumbs{font-weight:600}
.pager{margin-left:.8em}.pager.disabled{color:#7b8794}
main{max-width:1240px;margin:0 auto;padding:.6em 1.2em 2em}
h1{font-size:1.55em;margin:.5em 0 .2em}
h2{font-size:1.2em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1.02em;margin:1em 0 .4em}
nav.toc{display:flex;flex-wrap:wrap;gap:.3em 1.1em;margin:.3em 0 .8em;font-size:.95em}
nav.toc a{color:var(--info)}
a{color:#1864ab}
.muted,.note,.caption{color:var(--muted)}
.note{margin:.2em 0 .6em}
.caption{font-size:.88em;margin:.2em 0 0}
.unavailable{color:var(--muted);font-style:italic;padding:.5em .8em;background:var(--panel);
border-left:3px solid var(--line)}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:.6em 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:.5em .9em;
min-width:9em}
.card .v{font-size:1.45em;font-weight:650}.card .k{color:var(--muted);font-size:.86em}
.card.bad{border-color:var(--bad);background:#fff5f5}.card.bad .v{color:var(--bad)}
.card.warn .v{color:var(--warn)}
.table-wrap{overflow-x:auto;max-width:100%}
table.data{border-collapse:collapse;font-size:.92em;margin:.3em 0}
table.data th,table.data td{padding:.28em .5em;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}
table.data th{background:var(--panel);cursor:pointer;vertical-align:bottom;font-weight:600}
table.data td.id{white-space:nowrap}
table.data td.long{min-width:14em;max-width:40em;font-size:.95em}
table.data th.num{text-align:right}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.data tbody tr:hover{background:#f1f7ff}
table.data tr.failed td{background:#fff5f5}
table.data tr.warn td{background:#fffbeb}
table.kv{border-collapse:collapse;font-size:.92em}
table.kv th{text-align:left;color:var(--muted);font-weight:500;padding:.18em 1em .18em 0;
vertical-align:top;white-space:nowrap}
table.kv td{padding:.18em 0;vertical-align:top;word-break:break-word}
table.kv.nested th{font-size:.95em}
table.kv ul{margin:0;padding-left:1.1em}
.badge{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.86em;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.badge.ok{color:var(--ok)}.badge.warn{color:var(--warn)}.badge.bad{color:var(--bad)}
.badge.aplasia{color:var(--aplasia)}.badge.info{color:var(--info)}.badge.neutral{color:var(--muted)}
.alert{border:2px solid var(--bad);background:#fff5f5;border-radius:6px;padding:.6em 1em;
margin:.8em 0}
.alert h2{border:none;margin:.1em 0 .4em;color:var(--bad)}
.alert.okbox{border-color:var(--ok);background:#f4fbf6}
.alert.warnbox{border-width:1px;border-color:var(--warn);background:#fffbeb}
.alert.okbox h2{color:var(--ok)}
.error{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;white-space:pre-wrap;
word-break:break-word}
figure{margin:.4em 0 1em}
.js-fig{width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:.4em 1em}
.grid figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:.2em}
.two{display:grid;grid-template-columns:1fr 1fr;gap:1.2em}
@media (max-width:900px){.two{grid-template-columns:1fr}}
details{margin:.5em 0}details>summary{cursor:pointer;color:#1864ab;font-weight:500}
dl.defs{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1.2em;font-size:.93em}
dl.defs dt{color:var(--muted)}dl.defs dd{margin:0}
footer{max-width:1240px;margin:0 auto;padding:1em 1.2em 2em;color:var(--muted);font-size:.85em;
border-top:1px solid var(--line)}
"""

JS = """
(function(){
  var config={responsive:true,displaylogo:false,displayModeBar:'hover',toImageButtonOptions:{format:'svg',scale:1}};
  var divs=document.querySelectorAll('div.js-fig[data-fig]'),drawn=[];
  for(var i=0;i<divs.length;i++){
    var div=divs[i];
    var spec=JSON.parse(document.getElementById(div.getAttribute('data-fig')).textContent);
    if(typeof Plotly==='undefined'){
      div.textContent='plotly.js could not be loaded (assets/plotly.min.js missing)';continue;}
    drawn.push(Plotly.newPlot(div,spec.data,spec.layout||{},config));
    var links=spec.layout&&spec.layout.meta&&spec.layout.meta.links;
    if(links){(function(div,links){div.on('plotly_click',function(ev){
      var p=ev.points&&ev.points[0];if(!p)return;
      var key=(p.customdata&&p.customdata.length)?p.customdata[0]:p.y;
      if(links[key])window.location.href=links[key];});})(div,links);}
  }
  // tells automated checks (and the browser test) that every figure has been drawn
  Promise.all(drawn).then(function(){document.body.setAttribute('data-plots-drawn',drawn.length);});
  var tables=document.querySelectorAll('table.sortable');
  for(var t=0;t<tables.length;t++){(function(tbl){
    var ths=tbl.tHead?tbl.tHead.rows[0].cells:[];
    for(var c=0;c<ths.length;c++){(function(col){ths[col].addEventListener('click',function(){
      var body=tbl.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var asc=tbl.getAttribute('data-sort')!==String(col)+'a';
      rows.sort(function(a,b){
        var x=a.cells[col],y=b.cells[col];
        var xv=x.getAttribute('data-v'),yv=y.getAttribute('data-v');
        var r;
        if(xv!==null&&yv!==null&&xv!==''&&yv!==''){r=parseFloat(xv)-parseFloat(yv);}
        else if(xv===''||yv===''){r=(xv===''?1:0)-(yv===''?1:0);}
        else{r=x.textContent.localeCompare(y.textContent,undefined,{numeric:true});}
        return asc?r:-r;});
      for(var k=0;k<rows.length;k++)body.appendChild(rows[k]);
      tbl.setAttribute('data-sort',String(col)+(asc?'a':'d'));});})(c);}
  })(tables[t]);}
})();
"""
