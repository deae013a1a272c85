"""The report in a real browser: every page loads in headless Chromium without console errors,
every plot renders, links between cohort, patient and sample pages resolve, and text from FCS
files that looks like a script stays text.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe) with only the
standard library: one browser for all pages keeps the test fast. It skips with the install
line when chromium is missing (Debian: `apt-get install -y chromium`; `make test` does this
where it may). Set CYTOPIPE_REPORT_DIR to a generated report folder (e.g. results/report) to
check that report instead of the small fixture cohort.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from report_fixtures import XSS, build_results

from cytopipe.report.pages import write_report

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]
SHOTS = Path("/tmp/report_shots")
PLOTS_RENDERED = """(() => {
  const figs = [...document.querySelectorAll('div.js-fig')];
  const done = figs.filter(d => d.classList.contains('js-plotly-plot')
      && d.querySelector('svg.main-svg') && d.querySelectorAll('g.trace, g.cartesianlayer .plot *').length);
  return {n: figs.length, rendered: done.length, ready: document.readyState};
})()"""
WAIT_DRAWN = """new Promise(resolve => { const check = () =>
  document.body && document.body.hasAttribute('data-plots-drawn') ? resolve(true)
  : setTimeout(check, 20); check(); })"""
PAGE_FACTS = """(() => ({
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  text: document.body.innerText,
  scripts: [...document.querySelectorAll('script')]
      .filter(s => !s.type || s.type === 'text/javascript').map(s => s.src || s.textContent),
  title: document.title,
  tables: document.querySelectorAll('table').length,
}))()"""


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A minimal DevTools-protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # move the child's ends above 9 so "3<&N 4>&M" cannot overwrite one with the other
        to_browser_r, from_browser_w = (_high_fd(fd) for fd in (to_browser_r, from_browser_w))
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        # bash (dash cannot redirect fds above 9) puts our pipe ends on fds 3 and 4, where
        # chromium expects them
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', binary, *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain, session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=1366,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message and message["id"] in self._replies:
                    self._replies[message["id"]].put(message)
                else:
                    self.events.put(message)

    def call(self, method: str, session: bool = False, timeout: float = 20.0, **params):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._replies[mid] = queue.Queue()
        message = {"id": mid, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = self._replies[mid].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply to {method} within {timeout} s") from None
        finally:
            self._replies.pop(mid, None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def load(self, url: str, timeout: float = 15.0) -> tuple[dict, list[dict]]:
        """Navigate, wait for load and for every plot to render; returns (plots, events)."""
        self.drain()
        self.call("Page.navigate", session=True, url=url)
        events, deadline, loaded = [], time.monotonic() + timeout, False
        while not loaded and time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            events.append(event)
            # a link to another anchor of the page already shown navigates within the
            # document: no load event follows
            loaded = event.get("method") in ("Page.loadEventFired", "Page.navigatedWithinDocument")
            if event.get("method") == "Page.javascriptDialogOpening":
                self.call("Page.handleJavaScriptDialog", session=True, accept=False)
        state = {}
        try:  # the page marks <body data-plots-drawn> once Plotly.newPlot resolved for all
            self.call(
                "Runtime.evaluate",
                session=True,
                expression=WAIT_DRAWN,
                awaitPromise=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except TimeoutError:
            pass  # reported below as plots not rendered
        state = self.evaluate(PLOTS_RENDERED)
        time.sleep(0.05)  # late console messages (e.g. a failing relayout)
        events += self.drain()
        for event in events:
            if event.get("method") == "Page.javascriptDialogOpening":
                self.call("Page.handleJavaScriptDialog", session=True, accept=False)
        return state, events

    def screenshot(self, path: Path) -> None:
        metrics = self.call("Page.getLayoutMetrics", session=True)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = min(int(size["height"]), 6000)
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1366, "height": height, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


def problems(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions, failed resource loads and dialogs."""
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(
                f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(
                "console: "
                + " ".join(
                    str(a.get("value", a.get("description"))) for a in params.get("args", [])
                )
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            out.append(f"dialog opened: {params.get('type')} {params.get('message')!r}")
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    given = os.environ.get("CYTOPIPE_REPORT_DIR")
    if given:
        return Path(given).resolve()
    root = tmp_path_factory.mktemp("browser")
    cohort = build_results(root / "results")
    write_report(cohort.results, cohort.results / "report")
    return (cohort.results / "report").resolve()


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="cytopipe-chromium-") as profile:
        b = Browser(binary, Path(profile))
        try:
            yield b
        finally:
            b.close()


def _path_of(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def test_every_page_renders_links_resolve_and_nothing_runs(report_dir: Path, browser: Browser):
    pages = [report_dir / "index.html", *sorted((report_dir / "patients").glob("*.html"))]
    pages += sorted((report_dir / "samples").glob("*.html"))
    pages += sorted((report_dir / "gates").glob("*.html"))
    assert len(pages) > 2, f"no report pages in {report_dir}"
    SHOTS.mkdir(exist_ok=True)
    shot_kinds = {"index": "cohort", "patients": "patient", "samples": "sample"}
    shot_taken: set[str] = set()
    linked: set[Path] = set()
    failures: dict[str, list[str]] = {}
    xss_pages = 0
    external = bool(os.environ.get("CYTOPIPE_REPORT_DIR"))
    for path in pages:
        state, events = browser.load(path.as_uri())
        name = str(path.relative_to(report_dir))
        bad = problems(events)
        if state.get("rendered") != state.get("n"):
            bad.append(f"{state.get('rendered')} of {state.get('n')} plots rendered")
        facts = browser.evaluate(PAGE_FACTS)
        if XSS in facts["text"]:
            xss_pages += 1
        for script in facts["scripts"]:
            if "alert(1)" in script:
                bad.append("an executable <script> contains the injected alert(1)")
        for url in facts["links"]:
            if not url.startswith("file:"):
                bad.append(f"link leaves the report: {url}")
                continue
            target = _path_of(url)
            if not target.exists():
                bad.append(f"broken link: {url}")
            elif target.suffix == ".html":
                linked.add(target.resolve())
        if bad:
            failures[name] = bad
        kind = shot_kinds.get(path.parent.name if path.parent != report_dir else "index")
        # the sample with injected text is the most instructive sample page to look at
        if (
            kind
            and kind not in shot_taken
            and (kind != "sample" or (state.get("n") and (XSS in facts["text"] or external)))
        ):
            browser.screenshot(SHOTS / f"{kind}.png")
            shot_taken.add(kind)
    assert not failures, json.dumps(failures, indent=1)
    # every page reachable from the cohort page's graph of links, every linked page exists
    unreached = {p.resolve() for p in pages[1:]} - linked
    assert not unreached, f"pages no other page links to: {sorted(map(str, unreached))}"
    if not external:
        assert xss_pages >= 2, "the injected marker/error text should be shown as text"
        for kind in ("cohort", "patient", "sample"):
            png = SHOTS / f"{kind}.png"
            assert png.exists() and png.stat().st_size > 20_000, f"blank screenshot for {kind}"


def test_clicking_a_swimmer_row_opens_the_patient(report_dir: Path, browser: Browser):
    """The swimmer plot's rows are links: the click handler maps a row to its patient page."""
    browser.load((report_dir / "index.html").as_uri())
    target = browser.evaluate(
        """(() => { const div = document.querySelector('div.js-fig');
           const links = div.layout.meta.links; const first = Object.keys(links)[0];
           div.emit('plotly_click', {points: [{customdata: [first], y: first}]});
           return links[first]; })()"""
    )
    deadline, href = time.monotonic() + 5, ""
    while time.monotonic() < deadline:
        try:
            href = browser.evaluate("location.href")
        except RuntimeError as exc:  # asked while the click's navigation is under way
            if "navigated" not in str(exc):
                raise
        if href.endswith(target.split("/")[-1]):
            break
        time.sleep(0.1)
    assert href.endswith("patients/" + target.split("/")[-1]), href


def test_patient_summary_prints_on_one_page(report_dir: Path, browser: Browser):
    """Issue 19: the one-page patient summary prints as one A4 page, its trend drawn, with the
    report date, versions, definitions and a sign-off block."""
    summaries = sorted((report_dir / "patients").glob("*_summary.html"))
    assert summaries, "no patient summaries"
    for path in summaries:
        state, events = browser.load(path.as_uri())
        assert state.get("rendered") == state.get("n") == 1, (path.name, state)
        assert not problems(events), (path.name, problems(events))
        text = browser.evaluate("document.body.innerText")
        assert "Report date" in text and "Reviewed by" in text and "LOD/LLOQ" in text
        pdf = base64.b64decode(
            browser.call("Page.printToPDF", session=True, timeout=60, preferCSSPageSize=True)[
                "data"
            ]
        )
        pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
        assert pages == 1, (path.name, pages)


def test_a_gate_reached_by_its_link_shows_where_its_cuts_were_searched(
    report_dir: Path, browser: Browser
):
    """Issue 19 item 8: the cohort page links a gate to review to samples/<sid>.html#gate-<pop>;
    there the gate's box is framed and its cut densities open, drawn at full width (the IgD/CD27
    quadrants share one box: b_naive is an anchor inside it)."""
    page = sorted((report_dir / "samples").glob("*.html"))[0]
    state, events = browser.load(page.as_uri() + "#gate-b_naive")
    assert not problems(events), problems(events)
    facts = browser.evaluate(
        """(() => { const box = document.getElementById('gate-b_naive').closest('.gate');
           const cuts = box.querySelector('details.cuts');
           const figs = Array.from(cuts.querySelectorAll('div.js-fig'));
           const outline = getComputedStyle(box.querySelector(':scope > figure')).outlineStyle;
           return {open: cuts.open, widths: figs.map(f => f.getBoundingClientRect().width),
                   outline: outline, quadrants: box.querySelectorAll('.anchor').length}; })()"""
    )
    assert facts["open"] and facts["widths"], facts
    assert min(facts["widths"]) > 200, facts  # resized when opened, not drawn at zero width
    assert facts["outline"] == "solid" and facts["quadrants"] == 3, facts


def test_issue_19_items_as_a_reader_meets_them(report_dir: Path, browser: Browser):
    """Issue 19, in the browser: the swimmer's hover says each patient's status (not "no aplasia
    episode" for everyone), the patient page opens on where the patient stands now, a timepoint
    with too few B cells is a stub, every gate link of the cohort page lands on that gate's box,
    and each gate's gallery draws one plot per sample it lists."""
    browser.load((report_dir / "index.html").as_uri())
    swimmer = browser.evaluate(
        """(() => { const div = document.querySelector('div.js-fig');
           return div.data.map(t => (t.hovertext || t.text || [])).flat().join('\\n'); })()"""
    )
    statuses = set(re.findall(r"status: ([a-z ]+)", swimmer))
    assert statuses and statuses != {"no aplasia episode"}, statuses
    links = browser.evaluate(
        "Array.from(document.querySelectorAll('a[href*=\"#gate-\"]')).map(a => a.href)"
    )
    assert links, "no gate to review is linked from the cohort page"
    for href in links:
        page, anchor = href.split("#")
        browser.load(href)
        found = browser.evaluate(f"!!document.getElementById('{anchor}')?.closest('.gate')")
        assert found, href
    patients = sorted(
        p for p in (report_dir / "patients").glob("*.html") if "_summary" not in p.name
    )
    stubs = 0
    for path in patients:
        browser.load(path.as_uri())
        top = browser.evaluate(
            "(() => { const s = document.getElementById('now'); return s ? s.getBoundingClientRect().top : -1; })()"
        )
        assert 0 <= top < 400, (path.name, top)  # the first thing under the page title
        stubs += browser.evaluate(
            """Array.from(document.querySelectorAll('div.js-fig')).map(d => d.data || [])
               .flat().filter(t => String(t.name || '').startsWith('too few B cells')).length"""
        )
    assert stubs >= 1, "no timepoint with too few B cells drawn as a stub"
    for gallery in sorted((report_dir / "gates").glob("*.html")):
        state, _ = browser.load(gallery.as_uri())
        tiles = browser.evaluate("document.querySelectorAll('p.tile a').length")
        assert tiles >= 1 and state.get("rendered") == state.get("n") == tiles, (
            gallery.name,
            state,
        )
