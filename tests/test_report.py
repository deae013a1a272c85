"""The HTML report: pages exist and link up, numbers shown equal the tables, text from files is
escaped, missing tables degrade to "not available", and the CLI works.

The cohort comes from tests/report_fixtures.py (known truth, longitudinal tables from the real
engine); browser rendering is tested in test_report_browser.py.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from conftest import REPO, benchmark
from report_fixtures import (
    ARCHIVE_PATH,
    CHECKED_COPIES,
    CHECKED_ROWS,
    COHORT,
    PLANTED_DATE,
    PLANTED_FAILED,
    PLANTED_SAMPLE,
    PLANTED_TIME,
    XSS,
    build_checked_cohort,
    build_results,
    plant_identifying_names,
)

from cytopipe import cli
from cytopipe.commands import report as report_cli
from cytopipe.config import defaults
from cytopipe.errors import CytopipeError
from cytopipe.gating.sample import gate
from cytopipe.gating.stats import review_rows
from cytopipe.gating.template import load_template
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import preprocess
from cytopipe.report.cohort_figures import swimmer_figure
from cytopipe.report.cohort_page import review_reason
from cytopipe.report.context import slug
from cytopipe.report.formatting import esc, fmt_number
from cytopipe.report.pages import write_report, write_report_figures
from cytopipe.report.patient_figures import DAYS_PER_YEAR, reference_segments
from cytopipe.report.sample_figures import density_figure
from cytopipe.report.sample_page import _ungated_lymphocytes

real_gating = benchmark("real_gating")

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
FIGURE_RE = re.compile(r'<script type="application/json" id="(fig\d+)-json">(.*?)</script>', re.S)


# ----------------------------------------------------------------------------- helpers


class Tables(HTMLParser):
    """Every <table> of a page: class -> list of rows; a cell is {text, v (data-v), href}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[dict]]]] = []
        self._cell: dict | None = None
        self._row: list[dict] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class", ""), []))
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"text": "", "v": a.get("data-v"), "href": None, "tag": tag}
        elif tag == "a" and self._cell is not None:
            self._cell["href"] = a.get("href")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def tables_of(html_text: str, css: str) -> list[dict[str, dict]]:
    """Rows of the first table whose class contains `css`, as {header: cell}."""
    parser = Tables()
    parser.feed(html_text)
    for klass, rows in parser.tables:
        if css in klass.split():
            header = [c["text"].strip() for c in rows[0]]
            return [dict(zip(header, row, strict=True)) for row in rows[1:]]
    raise AssertionError(f"no table with class {css!r}")


def figures(html_text: str) -> list[dict]:
    return [json.loads(body) for _, body in FIGURE_RE.findall(html_text)]


def trace(fig: dict, name: str) -> dict:
    found = [t for t in fig["data"] if t.get("name") == name]
    assert found, f"no trace {name!r} in {[t.get('name') for t in fig['data']]}"
    return found[0]


def close(a, b, rel=1e-9) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (
            b is None or (isinstance(b, float) and math.isnan(b))
        )
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    c = build_results(root / "results")
    index = write_report(c.results, c.results / "report")
    assert index == c.results / "report" / "index.html"
    return c


@pytest.fixture(scope="module")
def report(cohort) -> Path:
    return cohort.results / "report"


def table_file(cohort, name: str) -> pd.DataFrame:
    return pd.read_csv(cohort.results / "tables" / name, sep="\t")


# ----------------------------------------------------------------------------- structure


def test_every_page_is_written_and_plotly_is_bundled_once(cohort, report):
    pages = sorted(p.stem for p in (report / "patients").glob("*.html"))
    assert [p for p in pages if not p.endswith("_summary")] == cohort.patients
    assert [p for p in pages if p.endswith("_summary")] == [f"{p}_summary" for p in cohort.patients]
    assert sorted(p.stem for p in (report / "samples").glob("*.html")) == cohort.samples
    assets = list(report.rglob("*.js"))
    assert assets == [report / "assets" / "plotly.min.js"]
    assert assets[0].stat().st_size > 1_000_000  # the real plotly.js, not a stub
    index = read(report / "index.html")
    assert '<script src="assets/plotly.min.js"></script>' in index
    for page in [*report.glob("patients/*.html"), *report.glob("samples/*.html")]:
        text = read(page)
        assert '<script src="../assets/plotly.min.js"></script>' in text, page
        assert "https://" not in text and "http://" not in text, f"{page} refers to the network"


def test_a_report_folder_shared_on_its_own_keeps_its_table_links(cohort, report, tmp_path):
    """Regression: the table links pointed at ../tables/, outside the report folder. The cited
    tables now travel inside it; the failures copy names no file (report privacy)."""
    alone = tmp_path / "mailed" / "report"
    shutil.copytree(report, alone)
    index = read(alone / "index.html")
    hrefs = re.findall(r'href="([^"#]+\.(?:tsv|csv|json))"', index)
    assert "tables/cohort_export.csv" in hrefs and "tables/failures.tsv" in hrefs
    for href in hrefs:
        assert not href.startswith(".."), href
        assert (alone / href).is_file(), href
    assert (alone / "tables" / "km.tsv").read_bytes() == (
        cohort.results / "tables" / "km.tsv"
    ).read_bytes()
    failures = pd.read_csv(alone / "tables" / "failures.tsv", sep="\t")
    assert len(failures) and "path" not in failures
    assert not failures["error"].astype(str).str.contains(".fcs", regex=False).any()


def test_pages_say_how_sure_each_b_cell_number_is(cohort, report):
    """Issue 17: a count below the LLOQ reads '< LLOQ (x)', others carry their 95% interval,
    and every sample states the limits of its acquisition."""
    states = table_file(cohort, "sample_states.tsv")
    low = states[states["below_lloq"] == True].iloc[0]  # noqa: E712 (a nullable column)
    high = states[states["below_lloq"] == False].iloc[0]  # noqa: E712
    page = read(report / "samples" / f"{low['sample_id']}.html")
    assert f"&lt; LLOQ ({fmt_number(low['lloq_pct'], 2)} %)" in page
    assert "limits of this acquisition" in page and "LOD (20 events)" in page
    page = read(report / "samples" / f"{high['sample_id']}.html")
    assert f"{fmt_number(high['b_pct_lymphocytes'], 2)} % (95% CI " in page
    patient = read(report / "patients" / f"{high['patient_id']}.html")
    assert "B % lymph. (95% CI)" in patient


def test_patient_page_opens_with_where_the_patient_stands_now(cohort, report):
    """Issue 19: the last sample, its state and B cells with their interval or '< LLOQ', and
    when aplasia was first and last documented, above the timelines."""
    states = table_file(cohort, "sample_states.tsv")
    mine = states[states["patient_id"] == "P02"].sort_values("day")
    last = mine.iloc[-1]
    page = read(report / "patients" / "P02.html")
    now = page.index("Where the patient stands now")
    assert now < page.index("B cells over time")
    block = page[now : page.index("Summary", now)]
    assert f"day {int(last['day'])} ({last['sample_id']})" in block
    aplastic = mine[(mine["state"] == "aplasia") & (mine["day"] >= 0)]["day"]
    assert (
        f"first documented day {int(aplastic.min())}, last aplastic sample day "
        f"{int(aplastic.max())}" in block
    )
    assert f"of {fmt_number(last['lymphocytes'])} lymphocytes (95% CI" in block


def test_gate_gallery_shows_one_gate_on_every_sample_least_confident_first(cohort, report):
    """Issue 19: a reviewer checks one gate across the cohort on one page."""
    index = read(report / "index.html")
    assert 'href="gates/b_cells.html"' in index
    page = read(report / "gates" / "b_cells.html")
    shown = re.findall(r'<p class="tile"><a href="../samples/([^"#]+)\.html#gates">', page)
    stats = table_file(cohort, "sample_stats.tsv")
    b = stats[stats["population"] == "b_cells"].set_index("sample_id")
    assert sorted(shown) == sorted(b.index)
    confidences = [b.loc[sid, "confidence"] for sid in shown]
    assert confidences == sorted(confidences)
    assert len(figures(page)) == len(shown)


def test_gates_to_look_at_link_to_their_plot_on_the_sample_page(cohort, report):
    """Issue 19: sample, gate, confidence and why; the gate link lands on that gate's plot."""
    index = read(report / "index.html")
    links = re.findall(r'href="samples/([^"#]+)\.html#gate-([^"]+)"', index)
    stats = table_file(cohort, "sample_stats.tsv")
    expected = set()
    for sid, own in stats.groupby("sample_id"):
        unlike = own["as_template"].fillna("").astype(str).str.startswith("no")
        chosen = own.index.isin(review_rows(own).index) | unlike.to_numpy()
        expected |= {(sid, pop) for pop in own.loc[chosen, "population"]}
    assert expected and set(links) == expected
    for sid, pop in links:
        assert f'id="gate-{pop}"' in read(report / "samples" / f"{sid}.html"), (sid, pop)


def test_a_sample_without_a_lymphocyte_gate_says_so_beside_its_counts(
    report, shared_data, tmp_path
):
    """A file without scatter (the real Lyoplate file with FSC and SSC dropped) has no
    lymphocyte gate: its summary says the lymphocytes are every event of their parent; the
    generated samples, gated on scatter, say nothing of the kind."""
    for page in (report / "samples").glob("*.html"):
        assert "every event of their parent" not in read(page)
    source = read_fcs(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    stains = [i for i, n in enumerate(source.pnn) if not n.startswith(("FSC", "SSC"))]
    fcs = real_gating.write_fcs(
        tmp_path / "noscatter.fcs", np.asarray(source.events)[:, stains],
        [source.pnn[i] for i in stains], [source.pns[i] for i in stains],
        {"$SPILLOVER": source.keywords["spillover"]}, [source.pnr[i] for i in stains],
    )  # fmt: skip
    pre = preprocess(str(fcs), load_panel(REPO / "config" / "panel.yaml"), defaults("config"))
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    stats = gate("s", columns, load_template(REPO / "config" / "gating.yaml")).stats
    ((label, text),) = _ungated_lymphocytes(stats)
    assert label == "lymphocytes" and "every event of their parent" in str(text)
    assert "not gated: no" in str(text)


def test_a_gate_to_look_at_says_each_reason_once():
    """A failed-stain check writes its note in the flag and in as_template: the cohort page's
    'why' read it twice (the real Lyoplate file with a dim CD19 stain)."""
    note = "2405 CD3- lymphocytes as CD20-bright as the B cells, outside the B-cell gate"
    flag = f"cd19: shoulder at 0.16; {note}"
    assert review_reason({"flag": flag, "as_template": f"no: {note}"}) == flag
    both = review_reason({"flag": "low_confidence", "as_template": "no: cd3: 1 population"})
    assert both == "low_confidence · no: cd3: 1 population"
    assert review_reason({"flag": "", "as_template": "yes"}) == ""


def test_links_between_pages_resolve(cohort, report):
    href_re = re.compile(r'href="([^"#]+)"')
    reached = set()
    for page in report.rglob("*.html"):
        for href in href_re.findall(read(page)):
            target = (page.parent / href).resolve()
            assert target.exists(), f"{page.name}: broken link {href}"
            reached.add(target)
    index = read(report / "index.html")
    for pid in cohort.patients:
        assert f'href="patients/{pid}.html"' in index
        assert (report / "patients" / f"{pid}.html").resolve() in reached
        assert 'href="../index.html"' in read(report / "patients" / f"{pid}.html")
    for sid in cohort.samples:
        assert (report / "samples" / f"{sid}.html").resolve() in reached
        page = read(report / "samples" / f"{sid}.html")
        assert 'href="../index.html"' in page
    pid = cohort.sheet.set_index("sample_id").loc["P01-d90", "patient_id"]
    assert f'href="../patients/{pid}.html"' in read(report / "samples" / "P01-d90.html")


# ----------------------------------------------------------------------------- escaping


def test_script_text_from_files_is_shown_escaped_and_never_raw(cohort, report):
    pages = list(report.rglob("*.html"))
    for page in pages:
        text = read(page)
        assert "<script>alert(1)" not in text, page
        for _, body in FIGURE_RE.findall(text):
            assert "<" not in body, f"{page.name}: figure JSON could close its <script>"
    failed = read(report / "samples" / "P02-d150.html")
    assert ESCAPED in failed  # the error line, as text
    xss = read(report / "samples" / f"{cohort.xss_sample}.html")
    panel = {r["canonical marker"]["text"]: r for r in tables_of(xss, "panel")}
    assert panel["CD27"]["channel in the file ($PnN ($PnS))"]["text"] == f"BV421-A ({XSS})"
    keywords = {r["keyword"]["text"]: r["value"]["text"] for r in tables_of(xss, "keywords")}
    assert keywords["$SRC"] == XSS
    assert f"<li>odd keyword {ESCAPED}</li>" in xss  # provenance warning
    # figure text (axis titles) is escaped for plotly's own HTML-ish labels as well
    titles = [f["layout"]["yaxis"]["title"]["text"] for f in figures(xss)]
    assert any("&lt;script&gt;" in t for t in titles)
    assert ESCAPED in read(report / "index.html")  # the failure list on the cohort page


def test_esc_and_slug():
    assert esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert esc(float("nan")) == "" and esc(None) == ""
    assert slug("P01-d90") == "P01-d90"
    unsafe = slug("../x y")
    assert "/" not in unsafe and " " not in unsafe and unsafe != slug("../x_y")


def test_fmt_number():
    assert fmt_number(1234567) == "1,234,567"
    assert fmt_number(0.04369) == "0.04369"
    assert fmt_number(float("nan")) == "—"
    assert fmt_number(None) == "—"
    assert fmt_number(12.3456) == "12.35"


# ----------------------------------------------------------------------------- cohort page


def test_failed_samples_are_listed_with_their_error(cohort, report):
    failures = table_file(cohort, "failures.tsv")
    rows = tables_of(read(report / "index.html"), "failures")
    assert [r["sample"]["text"] for r in rows] == failures["sample_id"].tolist()
    for row, (_, expected) in zip(rows, failures.iterrows(), strict=True):
        # the page names the sample, not its file (report.show_file_names is off)
        shown = expected["error"].replace(
            expected["path"], f"the file of sample {expected['sample_id']}"
        )
        assert row["error (what is wrong and what to do)"]["text"] == shown
        assert expected["path"] not in read(report / "index.html")
        assert row["failed at"]["text"] == expected["stage"]
        assert row["sample"]["href"] == f"samples/{expected['sample_id']}.html"


def test_patient_table_equals_patients_tsv(cohort, report):
    patients = table_file(cohort, "patients.tsv").set_index("patient_id")
    rows = tables_of(read(report / "index.html"), "patients")
    assert sorted(r["patient"]["text"] for r in rows) == sorted(patients.index)
    columns = {
        "baseline B % lymph.": "baseline_b_pct",
        "baseline B /µL": "baseline_b_per_ul",
        "aplasia from day": "aplasia_start_day",
        "reconstitution day": "reconstitution_day",
        "aplasia days": "aplasia_duration_days",
        "last follow-up day": "last_followup_day",
        "age at infusion (y)": "age_at_infusion",
        "samples": "n_samples",
    }
    for row in rows:
        expected = patients.loc[row["patient"]["text"]]
        assert row["patient"]["href"] == f"patients/{row['patient']['text']}.html"
        for header, column in columns.items():
            shown = row[header]["v"]
            assert close(float(shown) if shown else None, expected[column]), (header, shown)
    outcome = {r["patient"]["text"]: r["outcome"]["text"] for r in rows}
    assert outcome["P01"] == "reconstituted"
    assert outcome["P02"] == "in aplasia, censored"
    assert outcome["P04"] == "never depleted"


def test_swimmer_bars_equal_the_patient_table(cohort, report):
    patients = table_file(cohort, "patients.tsv").set_index("patient_id")
    fig = figures(read(report / "index.html"))[0]
    aplasia = trace(fig, "B-cell aplasia")
    for pid, base, length in zip(aplasia["y"], aplasia["base"], aplasia["x"], strict=True):
        assert base == patients.loc[pid, "aplasia_start_day"]
        assert length == patients.loc[pid, "aplasia_duration_days"]
    assert sorted(aplasia["y"]) == sorted(patients.index[patients["aplasia_start_day"].notna()])
    recon = trace(fig, "reconstituted")
    assert sorted(recon["y"]) == sorted(patients.index[patients["reconstituted"]])
    for pid, base, length in zip(recon["y"], recon["base"], recon["x"], strict=True):
        assert base == patients.loc[pid, "reconstitution_day"]
        assert base + length == patients.loc[pid, "last_followup_day"]
    censored = trace(fig, "censored (follow-up ended in aplasia)")
    assert censored["y"] == ["P02"] and censored["x"] == [patients.loc["P02", "last_followup_day"]]
    # baseline sample marks: the earliest day of each patient is its pre-infusion sample
    states = table_file(cohort, "sample_states.tsv")
    ticks = trace(fig, "sampling day (colour: B-cell state)")
    assert sorted(zip(ticks["y"], ticks["x"], strict=True)) == sorted(
        zip(states["patient_id"], states["day"].astype(float), strict=True)
    )
    # rows are ordered reconstituted (by day), censored, others; clicking opens the patient
    assert fig["layout"]["yaxis"]["categoryarray"] == ["P03", "P01", "P02", "P04"]
    assert fig["layout"]["meta"]["links"]["P01"] == "patients/P01.html"


def test_swimmer_hover_states_each_patients_course(cohort, report):
    """Regression: the hover said "no aplasia episode" for every patient (NumPy booleans are
    not `True`), including one in aplasia for a year."""
    patients = table_file(cohort, "patients.tsv").set_index("patient_id")
    fig = figures(read(report / "index.html"))[0]
    hover = dict(
        zip(trace(fig, "follow-up")["y"], trace(fig, "follow-up")["hovertext"], strict=True)
    )
    for pid, row in patients.iterrows():
        expected = (
            "reconstituted" if row["reconstituted"]
            else "censored in aplasia" if row["censored"]
            else "no aplasia episode" if pd.isna(row["aplasia_start_day"]) else "in aplasia"
        )  # fmt: skip
        assert f"status: {expected}<br>" in hover[pid], (pid, hover[pid])
    assert "status: censored in aplasia" in hover["P02"]
    assert "status: reconstituted" in hover["P01"]


def test_memory_return_star_sits_on_the_day_the_flag_was_raised():
    """Regression: the star sat at the reconstitution day, not the day of the flagging sample."""
    patients = pd.DataFrame(
        {"patient_id": ["A"], "aplasia_start_day": [14.0], "aplasia_duration_days": [100.0],
         "reconstitution_day": [120.0], "reconstituted": [np.True_], "censored": [np.False_],
         "last_followup_day": [400.0], "flag_memory_return": [np.True_],
         "flag_memory_return_day": [300.0], "disease": ["SLE"]}
    )  # fmt: skip
    fig = swimmer_figure(patients).to_plotly_json()
    star = next(tr for tr in fig["data"] if tr["name"] == "memory/plasmablast return flag")
    assert list(star["x"]) == [300.0]
    assert "status: reconstituted" in star["hovertext"][0]


def test_km_curve_equals_km_tsv(cohort, report):
    km = table_file(cohort, "km.tsv")
    fig = figures(read(report / "index.html"))[1]
    curve = trace(fig, "still in aplasia (Kaplan-Meier)")
    assert curve["line"]["shape"] == "hv"
    assert curve["x"] == km["day"].astype(float).tolist()
    assert np.allclose(curve["y"], km["still_aplastic"])
    ticks = trace(fig, "censored")
    assert ticks["x"] == km.loc[km["censored"] > 0, "day"].astype(float).tolist()
    summary = json.loads((cohort.results / "tables" / "cohort_summary.json").read_text())
    median = summary["median_days_to_reconstitution"]
    assert f"median time to reconstitution: {fmt_number(median)} days" in json.dumps(fig)


def test_km_has_its_confidence_band_median_interval_and_numbers_at_risk(cohort, report):
    km = table_file(cohort, "km.tsv")
    fig = figures(read(report / "index.html"))[1]
    band = trace(fig, "95% confidence band")
    assert min(band["y"]) == pytest.approx(km["still_aplastic_low"].min())
    assert max(band["y"]) == pytest.approx(km["still_aplastic_high"].max())
    notes = [a["text"] for a in fig["layout"]["annotations"]]
    assert "at risk" in notes and str(int(km["at_risk"].iloc[0])) in notes
    assert "95% CI" in notes[0]


def test_qc_verdict_counts_and_definitions(cohort, report):
    index = read(report / "index.html")
    status = table_file(cohort, "sample_status.tsv")
    rows = tables_of(index, "qc")
    assert len(rows) == len(status)
    assert rows[0]["sample"]["text"] == "P02-d150"  # failed samples first
    warn = status.loc[status["qc_verdict"] == "warn", "sample_id"].tolist()
    assert [r["sample"]["text"] for r in rows if r["QC verdict"]["text"] == "warn"] == warn
    attention = [r["sample"]["text"] for r in tables_of(index, "attention")]
    review = status.loc[status["n_gates_to_review"] > 0, "sample_id"].tolist()
    assert sorted(attention) == sorted({"P02-d150", *warn, *review})
    for label, n in (("failed (not processed)", 1), ("QC warn", len(warn))):
        assert re.search(rf'<div class="v">{n}</div><div class="k">{re.escape(label)}</div>', index)
    definitions = json.loads((cohort.results / "tables" / "cohort_summary.json").read_text())[
        "definitions"
    ]
    assert esc(definitions["reconstitution"]) in index
    assert esc(definitions["reference_ranges"]["source"]) in index
    assert f"<dt>cytopipe version</dt><dd>{esc(definitions['cytopipe_version'])}</dd>" in index
    bands = tables_of(index, "bands")
    assert [float(r["low (cells/µL)"]["v"]) for r in bands] == [
        b["low"] for b in definitions["reference_ranges"]["bands"]
    ]


# ----------------------------------------------------------------------------- patient page


def test_patient_b_cell_points_equal_sample_states(cohort, report):
    states = table_file(cohort, "sample_states.tsv")
    for pid in cohort.patients:
        page = read(report / "patients" / f"{pid}.html")
        fig = figures(page)[0]
        mine = states[states["patient_id"] == pid].set_index("sample_id")
        seen = {}
        for tr in fig["data"]:
            if tr.get("mode") != "markers" or tr.get("yaxis", "y") not in ("y", "y2"):
                continue
            if tr.get("legendgroup") == "lloq":  # each sample's LLOQ, checked below
                lloq = "lloq_per_ul" if tr.get("yaxis", "y") == "y" else "lloq_pct"
                assert sorted(tr["y"]) == sorted(mine[lloq].dropna().tolist())
                continue
            column = "b_cells_per_ul" if tr.get("yaxis", "y") == "y" else "b_pct_lymphocytes"
            points = zip(tr["customdata"], tr["x"], tr["y"], strict=True)
            for i, ((sid, exact, *_), x, y) in enumerate(points):
                assert close(exact, mine.loc[sid, column]), (sid, column)
                assert x == mine.loc[sid, "day"]
                assert mine.loc[sid, "state"] in tr["legendgroup"]
                low, high = (("b_per_ul_low", "b_per_ul_high") if column == "b_cells_per_ul"
                             else ("b_pct_low", "b_pct_high"))  # fmt: skip
                assert close(y + tr["error_y"]["array"][i], mine.loc[sid, high])  # whisker top
                if exact > 0:
                    assert close(y, exact)
                else:  # zero on a log axis: at the bottom, below every real value
                    assert 0 < y < mine[column][mine[column] > 0].min()
                seen[(sid, column)] = True
        expected = mine[["b_cells_per_ul", "b_pct_lymphocytes"]].notna().sum().sum()
        assert len(seen) == expected, pid
        thresholds = [t for t in fig["data"] if t.get("legendgroup") == "threshold"]
        assert sorted(t["y"][0] for t in thresholds) == [1.0, 10.0]


def test_age_reference_band_changes_with_age(cohort, report):
    """P02 is 5.95 y at infusion: the 2-6 y band (390-1400) turns into 6-12 y (270-860)."""
    fig = figures(read(report / "patients" / "P02.html"))[0]
    band = trace(fig, "age reference range")
    polygons = [
        (band["x"][i], band["x"][i + 1], band["y"][i], band["y"][i + 2])
        for i in range(0, len(band["x"]), 6)
    ]
    crossing = (6.0 - COHORT["P02"][1]) * DAYS_PER_YEAR
    assert [(lo, hi) for _, _, lo, hi in polygons] == [(390.0, 1400.0), (270.0, 860.0)]
    assert math.isclose(polygons[0][1], crossing) and math.isclose(polygons[1][0], crossing)
    segments = reference_segments(
        0,
        100,
        17.9,
        [
            {"min_age": 12, "max_age": 18, "low": 1, "high": 2},
            {"min_age": 18, "max_age": 200, "low": 3, "high": 4},
        ],
    )
    assert [s[2] for s in segments] == [1, 3]


def test_subset_composition_equals_fractions(cohort, report):
    """Fractions where the B cells reach the LLOQ (50 events); fewer get a 'too few B cells'
    stub instead of a 100% bar built from a handful of events (issue 19)."""
    states = table_file(cohort, "sample_states.tsv")
    fig = figures(read(report / "patients" / "P01.html"))[1]
    mine = states[states["patient_id"] == "P01"].sort_values("day")
    enough = mine["b_cells"].to_numpy() >= 50
    assert enough.any() and (~enough & (mine["b_cells"].to_numpy() > 0)).any()
    for name, column in (
        ("naive (IgD+ CD27−)", "frac_naive"),
        ("switched memory (IgD− CD27+)", "frac_switched_memory"),
        ("plasmablasts", "frac_plasmablast"),
        ("transitional (CD24hi CD38hi, within naive)", "frac_transitional"),
    ):
        tr = trace(fig, name)
        assert [c[0] for c in tr["customdata"]] == mine["sample_id"].tolist()
        for shown, expected, ok in zip(tr["y"], mine[column], enough, strict=True):
            assert close(shown, expected) if ok else shown is None, (name, shown, expected)
    # one timepoint's bars add up to the whole B-cell compartment, or are one stub (also at 0)
    totals: dict[str, float] = {}
    for tr in (t for t in fig["data"] if t["type"] == "bar"):
        for x, y in zip(tr["x"], tr["y"], strict=True):
            totals[x] = totals.get(x, 0.0) + (0.0 if y is None else y)
    stub = trace(fig, "too few B cells (< 50 events): not shown")
    labels = trace(fig, "naive (IgD+ CD27−)")["x"]
    for x, n in zip(labels, mine["b_cells"], strict=True):
        assert (x in stub["x"]) == (n < 50), x
        assert math.isclose(totals[x], 1.0), x
    line = trace(fig, "switched memory + plasmablasts (memory-return flag)")
    expected = mine["frac_switched_memory"] + mine["frac_plasmablast"]
    for shown, value, ok in zip(line["y"], expected, enough, strict=True):
        assert close(shown, value) if ok else shown is None


def test_patient_samples_table_links_and_values(cohort, report):
    states = table_file(cohort, "sample_states.tsv").set_index("sample_id")
    page = read(report / "patients" / "P02.html")
    rows = tables_of(page, "states")
    for row in rows:
        sid = row["sample"]["text"]
        assert row["sample"]["href"] == f"../samples/{sid}.html"
        assert close(float(row["B % lymph."]["v"]), states.loc[sid, "b_pct_lymphocytes"])
        assert row["state"]["text"] == states.loc[sid, "state"]
    assert "P02-d150" in page and ESCAPED in page  # its failed sample, with the error


# ----------------------------------------------------------------------------- sample page


QUADRANTS = ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative")


def _check_density(fig, plot, outline_name="gate"):
    heat = fig["data"][0]
    assert heat["type"] == "heatmap"
    assert heat["customdata"] == plot["counts"]
    assert heat["x"] == plot["x_edges"] and heat["y"] == plot["y_edges"]
    counts = np.asarray(plot["counts"], dtype=float)
    z = np.array([[np.nan if v is None else v for v in row] for row in heat["z"]])
    assert np.allclose(z[counts > 0], np.log10(counts[counts > 0]), atol=1e-4)
    assert np.isnan(z[counts == 0]).all()
    gate = [d for d in fig["data"] if d.get("name") == outline_name][-1]
    assert [[x, y] for x, y in zip(gate["x"], gate["y"], strict=True)] == plot["gate"]
    go.Figure(fig)  # plotly accepts the hand-built figure as valid


def test_density_plots_equal_plots_json(cohort, report):
    """One figure per gate, but the IgD/CD27 quadrants share one with every outline and its
    percentage; under each, its cuts on the densities they were searched on."""
    sid = "P01-d90"
    plots = json.loads((cohort.results / "samples" / sid / "plots.json").read_text())["plots"]
    figs = figures(read(report / "samples" / f"{sid}.html"))
    dens = [f for f in figs if f["data"][0]["type"] == "heatmap"]
    cut_figs = [f for f in figs if f["data"][0]["type"] != "heatmap"]
    singles = [p for p in plots if p["population"] not in QUADRANTS]
    quads = [p for p in plots if p["population"] in QUADRANTS]
    assert len(quads) == 4 and len(dens) == len(singles) + 1
    quad_fig = next(f for f in dens if "b_naive" in f["layout"]["title"]["text"])
    for plot in quads:
        _check_density(quad_fig, plot, outline_name=plot["population"])
        assert any(
            n["text"].startswith(plot["population"]) and f"{plot['pct_parent']:.3g}%" in n["text"]
            for n in quad_fig["layout"]["annotations"]
        ), plot["population"]
    for fig, plot in zip([f for f in dens if f is not quad_fig], singles, strict=True):
        _check_density(fig, plot)
        dashed = [d for d in fig["data"] if d.get("line", {}).get("dash") == "dash"]
        assert len(dashed) == 2 * len(plot.get("extra_gates") or ())
        title = fig["layout"]["title"]["text"]
        assert title.startswith(f"<b>{plot['population']}</b> ({plot['count']:,}, ")
        assert f"{plot['pct_parent']:.3g}% of {plot['parent'] or 'all events'}" in title
    cuts = {c["name"]: c for p in plots for c in p["cuts"]}
    assert {"cd3", "cd19", "igd", "cd27"} <= set(cuts)
    expected = sum(len({c["name"] for c in p["cuts"]}) for p in singles) + len(
        {c["name"] for p in quads for c in p["cuts"]}
    )
    assert len(cut_figs) == expected
    for fig in cut_figs:
        name = fig["layout"]["title"]["text"].split(":")[0].removeprefix("<b>")
        cut = cuts[name]
        assert fig["data"][0]["y"] == cut["counts"]
        assert fig["layout"]["shapes"][0]["x0"] == cut["value"]
        go.Figure(fig)


def test_hierarchy_sidebar_links_every_gate_at_its_depth(cohort, report):
    sid = "P01-d90"
    plots = json.loads((cohort.results / "samples" / sid / "plots.json").read_text())["plots"]
    page = read(report / "samples" / f"{sid}.html")
    start = page.index('<nav class="hierarchy"')
    nav = page[start : page.index("</nav>", start)]
    items = re.findall(r'padding-left:([\d.]+)em"><a href="#gate-([^"]+)">', nav)
    assert [pop for _, pop in items] == [p["population"] for p in plots]
    depth = {pop: float(pad) for pad, pop in items}
    assert depth["cells"] == 0 and depth["lymphocytes"] > depth["leukocytes"] > depth["cells"]
    assert depth["b_naive"] == pytest.approx(depth["b_cd20pos"] + 0.8)
    for pop in depth:  # every link lands on a gate box or an anchor inside one
        assert f'id="gate-{pop}"' in page


def test_stats_table_equals_stats_tsv(cohort, report):
    sid = "P01-d90"
    stats = pd.read_csv(cohort.results / "samples" / sid / "stats.tsv", sep="\t")
    pop = table_file(cohort, "population_stats.tsv")
    pop = pop[pop["sample_id"] == sid].set_index("population")
    rows = tables_of(read(report / "samples" / f"{sid}.html"), "stats")
    assert [r["population"]["text"] for r in rows] == stats["population"].tolist()
    for row, (_, exp) in zip(rows, stats.iterrows(), strict=True):
        assert int(row["count"]["v"]) == exp["count"]
        assert close(float(row["% of parent"]["v"]), exp["pct_parent"])
        shown = row["% of lymphocytes"]["v"]
        assert close(float(shown) if shown else None, exp["pct_lymphocytes"])
        per_ul = row["cells/µL"]["v"]
        assert close(float(per_ul) if per_ul else None, pop.loc[exp["population"], "cells_per_ul"])


def test_failed_sample_page_shows_error_and_no_plots(cohort, report):
    page = read(report / "samples" / "P02-d150.html")
    assert "Sample failed" in page and "ingest" in page and ESCAPED in page
    assert not figures(page)
    assert 'id="clustering"' in page and "No clustering results" in page


def test_cohort_page_shows_bead_counts_only_when_a_sample_had_beads(cohort, report, tmp_path):
    """QC's counting beads are a column of the samples to look at where a sample had some; a
    cohort without beads is not given a column of zeros."""
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    status = pd.read_csv(results / "tables" / "sample_status.tsv", sep="\t")
    status["bead_events_found"] = 0
    status.to_csv(results / "tables" / "sample_status.tsv", sep="\t", index=False)
    write_report(results, results / "report")
    assert "beads" not in tables_of(read(results / "report" / "index.html"), "attention")[0]
    status.loc[status["sample_id"] == "P01-d28", "bead_events_found"] = 4296
    status.to_csv(results / "tables" / "sample_status.tsv", sep="\t", index=False)
    write_report(results, results / "report")
    rows = tables_of(read(results / "report" / "index.html"), "attention")
    assert {r["sample"]["text"]: r["beads"]["v"] for r in rows}["P01-d28"] == "4296"


def test_sample_page_shows_the_note_on_its_call(cohort, tmp_path):
    """A call whose gate is in doubt (a failed CD19 stain read as aplasia) says so where the
    call is shown, not only on the patient page."""
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    states = pd.read_csv(results / "tables" / "sample_states.tsv", sep="\t")
    note = "B-cell gate unlike the template (900 CD3- CD20+ lymphocytes outside <it>)"
    states["note"] = states["note"].astype(object)
    states.loc[states["sample_id"] == "P01-d90", "note"] = note
    states.to_csv(results / "tables" / "sample_states.tsv", sep="\t", index=False)
    write_report(results, results / "report")
    page = read(results / "report" / "samples" / "P01-d90.html")
    assert esc(note) in page
    other = read(results / "report" / "samples" / "P01-d28.html")
    assert "B-cell gate unlike the template" not in other


def test_clustering_section_renders_results_when_present(cohort, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    clusters = {
        "status": "ok",
        "clusters": [{"metacluster": 1, "label": "B naive", "events": 512}],
        "agreement": [{"population": "b_naive", "f1": 0.42, "status": "disagree"}],
        "disagreements": ["b_naive: gate and metaclusters agree poorly (F1 0.42) <check>"],
    }
    (results / "samples" / "P01-d90" / "clusters.json").write_text(json.dumps(clusters))
    write_report(results, results / "report")
    page = read(results / "report" / "samples" / "P01-d90.html")
    rows = tables_of(page, "clusters")
    assert rows[0]["label"]["text"] == "B naive" and rows[0]["events"]["v"] == "512"
    agreement = tables_of(page, "agreement")
    assert agreement[0]["f1"]["v"] == "0.42" and agreement[0]["status"]["text"] == "disagree"
    assert "Clusters and gates disagree" in page and "(F1 0.42) &lt;check&gt;" in page
    assert "No clustering results" in read(results / "report" / "samples" / "P01-d14.html")


def test_samples_where_gates_and_clustering_disagree_are_listed_to_look_at(cohort, tmp_path):
    """Two opinions: a population on which the gates and the clustering annotation disagree
    puts the sample on the cohort page's review list, with the disagreement."""
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    before = write_report(results, results / "report")
    listed = {r["sample"]["text"] for r in tables_of(read(before), "attention")}
    assert "P01-d90" not in listed
    clusters = {"status": "ok", "clusters": [], "agreement": [],
                "disagreements": ["b_naive: F1 0.42 < 0.8 (gate 512 events, clusters 300)"]}  # fmt: skip
    (results / "samples" / "P01-d90" / "clusters.json").write_text(json.dumps(clusters))
    index = read(write_report(results, results / "report"))
    rows = {r["sample"]["text"]: r for r in tables_of(index, "attention")}
    assert "b_naive: F1 0.42" in rows["P01-d90"]["gates vs clustering"]["text"]


# ----------------------------------------------------------------------------- robustness


def test_missing_tables_say_not_available(cohort, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    for name in (
        "km.tsv",
        "patients.tsv",
        "cohort_summary.json",
        "sample_states.tsv",
        "failures.tsv",
    ):
        (results / "tables" / name).unlink()
    (results / "tables" / "population_stats.tsv").write_text("")  # empty: unreadable
    index = write_report(results, results / "report")
    text = read(index)
    for what in (
        "The swimmer plot",
        "The Kaplan-Meier curve",
        "The patient table",
        "The definitions",
        "The list of failed samples",
    ):
        assert f"{what} not available" in text, what
    patient = read(results / "report" / "patients" / "P01.html")
    assert "not available" in patient
    assert len(list((results / "report" / "samples").glob("*.html"))) == len(cohort.samples)


def test_definitions_from_config_when_summary_missing(cohort, tmp_path, repo):
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    (results / "tables" / "cohort_summary.json").unlink()
    text = read(write_report(results, results / "report", repo / "config" / "config.yaml"))
    assert "cohort_summary.json missing" in text and "Shearer" in text
    fig = figures(read(results / "report" / "patients" / "P01.html"))[0]
    assert trace(fig, "aplasia threshold (10 cells/µL)")["y"] == [10.0, 10.0]


def test_stale_pages_are_removed(cohort, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    out = results / "report"
    write_report(results, out)
    (out / "samples" / "GONE.html").write_text("old")
    write_report(results, out)
    assert not (out / "samples" / "GONE.html").exists()


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cytopipe")
    report_cli.add_cli(parser.add_subparsers())
    return parser


def test_report_command(cohort, tmp_path, capsys):
    out = tmp_path / "cli-report"
    args = _report_parser().parse_args(
        ["report", "--results", str(cohort.results), "--out", str(out)]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert (out / "index.html").exists()
    args = _report_parser().parse_args(["report", "--results", str(tmp_path / "nope")])
    with pytest.raises(CytopipeError, match="results folder not found"):
        args.func(args)
    args = _report_parser().parse_args(
        ["report-figures", "--results", str(cohort.results), "--out", str(tmp_path / "figs")]
    )
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["km.html", "swimmer.html"]


def test_cytopipe_main_runs_report(cohort, tmp_path, capsys):
    """Through the real `cytopipe` entry point."""
    out = tmp_path / "main-report"
    assert cli.main(["report", "--results", str(cohort.results), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert cli.main(["report", "--results", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_report_figures_are_standalone(cohort, tmp_path):
    paths = write_report_figures(cohort.results, tmp_path / "figures")
    assert sorted(paths) == ["km", "swimmer"]
    for path in paths.values():
        text = read(path)
        assert path.stat().st_size > 1_000_000  # plotly.js inlined
        assert "<script src=" not in text
        assert "Plotly.newPlot" in text
    km = pd.read_csv(cohort.results / "tables" / "km.tsv", sep="\t")
    assert json.dumps(km["day"].astype(float).tolist()).replace(" ", "") in read(paths["km"])
    # a partial cohort still gets both files (Snakemake outputs), saying what is missing
    results = tmp_path / "partial"
    (results / "tables").mkdir(parents=True)
    paths = write_report_figures(results, tmp_path / "partial-figures")
    for name, path in paths.items():
        assert "not available" in read(path), name


def test_density_figure_without_gate_or_counts_is_valid():
    fig = density_figure(
        {
            "population": "b_cells",
            "parent": "lymphocytes",
            "x": "CD3",
            "y": "CD19",
            "counts": [[0, 0], [0, 0]],
            "x_edges": [0, 0.5, 1],
            "y_edges": [0, 0.5, 1],
            "count": 0,
            "pct_parent": 0.0,
            "gate": [],
        }
    )
    go.Figure(fig)
    assert "(0, 0% of lymphocytes)" in fig["layout"]["title"]["text"]


def test_density_figure_draws_or_parts_dashed_with_their_label():
    plot = {
        "population": "b_cells", "parent": "lymphocytes", "x": "CD3", "y": "CD19",
        "counts": [[1, 0], [0, 1]], "x_edges": [0, 0.5, 1], "y_edges": [0, 0.5, 1],
        "count": 2, "pct_parent": 100.0,
        "gate": [[0, 0.45], [0.4, 0.45], [0.4, 1], [0, 1]],
        "extra_gates": [{"label": "CD19-dim CD20- <CD27++>", "gate": [[0, 0.3], [0.4, 0.3], [0.4, 1], [0, 1]]}],
    }  # fmt: skip
    fig = density_figure(plot)
    go.Figure(fig)
    solid = [d for d in fig["data"][1:] if d["line"]["dash"] == "solid"]
    dashed = [d for d in fig["data"][1:] if d["line"]["dash"] == "dash"]
    assert len(solid) == len(dashed) == 2
    assert dashed[-1]["y"] == [0.3, 0.3, 1, 1, 0.3]
    assert "also gated: CD19-dim CD20- &lt;CD27++&gt;" in dashed[-1]["hovertemplate"]
    (note,) = fig["layout"]["annotations"]
    assert (note["x"], note["y"]) == (0, 0.3) and "only if CD19-dim" in note["text"]


def test_tables_from_another_version_or_empty_do_not_break_pages(cohort, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    states = pd.read_csv(results / "tables" / "sample_states.tsv", sep="\t")
    states.drop(columns=["b_cells"]).to_csv(
        results / "tables" / "sample_states.tsv", sep="\t", index=False
    )
    patients = pd.read_csv(results / "tables" / "patients.tsv", sep="\t")
    patients.iloc[:0].to_csv(results / "tables" / "patients.tsv", sep="\t", index=False)
    index = read(write_report(results, results / "report"))
    assert "The swimmer plot not available: no patients" in index
    page = read(results / "report" / "patients" / "P01.html")
    for what in ("B-cell subsets over time", "Plasmablasts"):
        assert esc(f"{what} not available: the table lacks column 'b_cells'") in page
    assert len(figures(page)) == 2  # B cells over time and CD20 vs CD19 still render
    assert "The patient summary not available" in page


# ----------------------------------------------------------------------------- file names, times


def copy_results(cohort, tmp_path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(cohort.results, results, ignore=shutil.ignore_patterns("report"))
    return results


def html_pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def test_file_names_and_acquisition_times_stay_out_of_the_html(cohort, tmp_path):
    results = copy_results(cohort, tmp_path)
    secrets = plant_identifying_names(results)
    out = results / "report"
    write_report(results, out)
    for page in html_pages(out):
        text = read(page)
        for secret in secrets:
            assert secret not in text, f"{page.name} shows {secret!r}"
    # the failure says which sample's file is broken instead
    (row,) = tables_of(read(out / "index.html"), "failures")
    assert row["sample"]["text"] == PLANTED_FAILED and "file" not in row
    error = row["error (what is wrong and what to do)"]["text"]
    assert error == (
        f"the file of sample {PLANTED_FAILED}: truncated DATA segment (the file of sample "
        f"{PLANTED_FAILED} holds 2/3 of its bytes)"
    )
    assert error in read(out / "samples" / f"{PLANTED_FAILED}.html")
    page = read(out / "samples" / f"{PLANTED_SAMPLE}.html")
    assert f"the file of sample {PLANTED_SAMPLE}" in page  # provenance `file`
    assert f"<li>the file of sample {PLANTED_SAMPLE}: $TOT missing" in page
    assert "$CYT" in page and "$FIL" not in page and "$BTIM" not in page
    # the lab's own table keeps the file name
    failures = pd.read_csv(results / "tables" / "failures.tsv", sep="\t")
    assert failures.set_index("sample_id").loc[PLANTED_FAILED, "path"] == ARCHIVE_PATH


def test_file_names_and_times_are_shown_when_the_config_allows_them(cohort, tmp_path):
    results = copy_results(cohort, tmp_path)
    secrets = plant_identifying_names(results)
    out = results / "report"
    options = {"show_file_names": True, "show_acquisition_times": True}
    write_report(results, out, options=options)
    (row,) = tables_of(read(out / "index.html"), "failures")
    assert row["file"]["text"] == ARCHIVE_PATH
    assert row["error (what is wrong and what to do)"]["text"].startswith(ARCHIVE_PATH)
    page = read(out / "samples" / f"{PLANTED_SAMPLE}.html")
    for secret in secrets:
        assert secret in page, secret
    # one without the other
    write_report(results, out, options={"show_file_names": True})
    page = read(out / "samples" / f"{PLANTED_SAMPLE}.html")
    assert "Smith_John.fcs" in page and PLANTED_TIME not in page and PLANTED_DATE not in page


def test_report_command_takes_the_options_from_config_or_settings(cohort, tmp_path):
    results = copy_results(cohort, tmp_path)
    plant_identifying_names(results)
    config = tmp_path / "config.yaml"
    config.write_text("report:\n  show_file_names: true\n")
    out = tmp_path / "from-config"
    assert cli.main(["report", "--results", str(results), "--out", str(out),
                     "--config", str(config)]) == 0  # fmt: skip
    page = read(out / "samples" / f"{PLANTED_SAMPLE}.html")
    assert "Smith_John.fcs" in page and PLANTED_TIME not in page
    out = tmp_path / "from-settings"
    settings = json.dumps({"report": {"show_acquisition_times": True}})
    assert cli.main(["report", "--results", str(results), "--out", str(out),
                     "--config", str(config), "--settings", settings]) == 0  # fmt: skip
    page = read(out / "samples" / f"{PLANTED_SAMPLE}.html")
    assert "Smith_John.fcs" in page and PLANTED_TIME in page
    config.write_text("report:\n  show_file_name: true\n")
    args = _report_parser().parse_args(
        ["report", "--results", str(results), "--out", str(out), "--config", str(config)]
    )
    with pytest.raises(CytopipeError, match="report.show_file_name"):
        args.func(args)


# ----------------------------------------------------------------------------- phenotype


def test_phenotype_not_evaluable_is_shown_and_exported(cohort, tmp_path):
    from cytopipe.clinical.longitudinal import run_longitudinal
    from cytopipe.clinical.tables import write_outputs

    results = copy_results(cohort, tmp_path)
    tables = results / "tables"
    stats = pd.read_csv(tables / "sample_stats.tsv", sep="\t")
    subsets = ["b_naive", "b_transitional", "b_unswitched_memory", "b_switched_memory",
               "b_double_negative", "plasmablasts"]  # fmt: skip
    before = table_file(cohort, "patients.tsv").set_index("patient_id")
    at_return = f"P01-d{int(before.loc['P01', 'reconstitution_day'])}"
    stats.loc[(stats["sample_id"] == at_return) & stats["population"].isin(subsets), "count"] = 0
    status = pd.read_csv(tables / "sample_status.tsv", sep="\t")
    write_outputs(run_longitudinal(stats, cohort.sheet, None, status), tables)
    export = pd.read_csv(tables / "cohort_export.csv").set_index("patient_id")
    assert export.loc["P01", "phenotype_at_return"] == "not evaluable"
    assert export.loc["P03", "phenotype_at_return"] == before.loc["P03", "phenotype_at_return"]
    index = read(write_report(results, results / "report"))
    rows = {r["patient"]["text"]: r for r in tables_of(index, "patients")}
    assert rows["P01"]["phenotype at return"]["text"] == "not evaluable"
    assert "phenotype at return: not evaluable" in index  # swimmer hover
    summary = read(results / "report" / "patients" / "P01.html")
    assert "<th>phenotype at return</th><td>not evaluable</td>" in summary


# ----------------------------------------------------------------------------- rows vs files


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Generated files through preprocess, gate, collect, longitudinal and report (CLI)."""
    c = build_checked_cohort(tmp_path_factory.mktemp("checked"))
    tables = c.results / "tables"
    sheet = ["--samples", str(c.sheet)]
    assert cli.main(["collect", *sheet, "--results", str(c.results), "--out", str(tables)]) == 0
    assert cli.main(["longitudinal", "--stats", str(tables / "sample_stats.tsv"), *sheet,
                     "--status", str(tables / "sample_status.tsv"), "--out", str(tables)]) == 0  # fmt: skip
    assert cli.main(["report", "--results", str(c.results)]) == 0
    return c


def test_rows_sharing_a_file_are_failed_in_every_output(checked):
    copy, source = next(iter(CHECKED_COPIES.items()))
    tables, out = checked.results / "tables", checked.results / "report"
    states = pd.read_csv(tables / "sample_states.tsv", sep="\t")
    assert not {copy, source} & set(states["sample_id"])
    summary = json.loads((tables / "cohort_summary.json").read_text())
    assert {f["sample_id"] for f in summary["failed_samples"]} == {copy, source}
    index = read(out / "index.html")
    rows = {r["sample"]["text"]: r for r in tables_of(index, "failures")}
    assert sorted(rows) == sorted([copy, source])
    for sid, other in ((copy, source), (source, copy)):
        assert rows[sid]["failed at"]["text"] == "sample sheet"
        error = rows[sid]["error (what is wrong and what to do)"]["text"]
        assert f"as sample {other}; one of the rows names the wrong file" in error
        page = read(out / "samples" / f"{sid}.html")
        assert "Sample failed" in page and "sample sheet" in page and f"as sample {other};" in page
    pid = CHECKED_ROWS[source][0]
    patient = read(out / "patients" / f"{pid}.html")
    assert f"samples/{source}.html" in patient.split("Samples without statistics")[1]
    allowed = [s for s, row in CHECKED_ROWS.items() if row[4] == "yes"]
    assert set(allowed) <= set(states["sample_id"])  # the rows that declared the shared file


def test_date_warning_is_shown_on_the_sample_and_cohort_pages(checked):
    out = checked.results / "report"
    status = pd.read_csv(checked.results / "tables" / "sample_status.tsv", sep="\t")
    warned = status.loc[status["warnings"].notna(), "sample_id"].tolist()
    assert warned == ["P1_D030"]
    page = read(out / "samples" / "P1_D030.html")
    assert "Checks of the file and its sample-sheet row" in page
    assert "61 days apart; check the row&#x27;s file or date" in page
    index = read(out / "index.html")
    look = {r["sample"]["text"]: r for r in tables_of(index, "attention")}
    assert look["P1_D030"]["file checks"]["text"] == (
        "acquired (date hidden) per $DATE, sheet collection_date (date hidden): 61 days apart; "
        "check the row's file or date"
    )
    assert {s for s, r in look.items() if r["file checks"]["text"]} == {"P1_D030"}
    assert "file/date warnings" in index  # the count beside the QC verdict cards


def test_generated_archive_names_and_times_stay_out_of_the_html(checked):
    secrets = {Path(p).stem for p in checked.files.values()}
    secrets |= {row[3][11:] for row in CHECKED_ROWS.values() if row[3]}  # acquisition times
    secrets |= {row[3][:10] for row in CHECKED_ROWS.values() if row[3]}  # and dates
    for page in html_pages(checked.results / "report"):
        text = read(page)
        for secret in secrets:
            assert secret not in text, f"{page.name} shows {secret!r}"


def test_statistics_rows_to_look_at_are_fallbacks_and_doubtful_gates_not_notes():
    from cytopipe.report.sample_page import _doubtful_row

    note = "7 events joined (CD19-dim CD20- CD27++ CD38++ outside the lymphocyte gate)"
    assert _doubtful_row({"confidence": 1.0, "flag": note}) == ""
    assert _doubtful_row({"confidence": 0.3, "flag": "low_confidence"}) == "warn"
    assert _doubtful_row({"confidence": 0.8, "flag": "cd24_tr fallback: no valley"}) == "warn"
    assert _doubtful_row({"confidence": None, "flag": ""}) == ""


def test_the_sample_page_shows_how_far_each_count_hinges_on_its_cuts(cohort, report):
    """Beside each count, the count with the gate's cuts moved a bandwidth inward and
    outward (stats.tsv count_cut_low / count_cut_high); nothing where no cut moves."""
    stats = table_file(cohort, "sample_stats.tsv")
    sid = str(stats["sample_id"].iloc[0])
    page = read(report / "samples" / f"{sid}.html")
    assert "count as its cuts move" in page
    own = stats[stats["sample_id"] == sid].set_index("population")
    b = own.loc["b_cells"]
    assert f"{int(b['count_cut_low']):,}-{int(b['count_cut_high']):,}" in page
    assert pd.isna(own.loc["lymphocytes", "count_cut_low"])
