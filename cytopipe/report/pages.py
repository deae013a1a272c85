"""The interactive HTML report: cohort, patient and sample pages (`cytopipe report`).

Layout of the report folder (default results/report/):
  index.html                 cohort: swimmer plot, Kaplan-Meier, patients, failed samples,
                             samples by QC verdict, definitions
  patients/<patient_id>.html B cells over time (log), subsets, CD20 vs CD19, plasmablasts, QC
  samples/<sample_id>.html   every gate on its density plot, statistics, QC, provenance
  assets/plotly.min.js       plotly.js, written once, loaded by every page (works offline)

The report only reads the small per-sample and cohort outputs (never events), tolerates a
partial results folder (a missing table makes its section say "not available"), and shows the
numbers of the tables unchanged. Failed samples are listed on the cohort page with their error
line: that is how a core facility learns that a file in a batch was broken.

Pages name samples, never their files: file names and paths (archives name files after patients)
and exact acquisition dates and times appear only when config `report:` allows them
(`show_file_names`, `show_acquisition_times`; see `Privacy`). The tables under tables/ are the
lab's and keep them.

`write_report_figures` writes the main cohort plots as standalone HTML files (plotly.js inlined)
for Snakemake's own `--report`.

One module per page builds it (cohort_page, patient_page, sample_page) from a `Report`
(context); this module writes them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cytopipe.atomic import atomic_path
from cytopipe.errors import CytopipeError
from cytopipe.report.cohort_figures import km_figure, swimmer_figure
from cytopipe.report.cohort_page import cohort_page
from cytopipe.report.context import load_report, slug
from cytopipe.report.data import load_results, load_sample
from cytopipe.report.formatting import esc
from cytopipe.report.gallery_page import Gallery, gallery_links, gallery_page
from cytopipe.report.patient_page import patient_page
from cytopipe.report.patient_summary import patient_summary_page
from cytopipe.report.privacy import Privacy
from cytopipe.report.render import Unavailable, render
from cytopipe.report.sample_page import sample_page
from cytopipe.report.shipped_tables import ship_tables
from cytopipe.results import TABLE_FILES

ASSET = "assets/plotly.min.js"


def write_report(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> Path:
    """Write every page of the report for `results_dir` into `out_dir`; returns index.html.

    `config` (config/config.yaml) is only used when tables/cohort_summary.json is missing, to
    still state the definitions (thresholds, reference ranges) the pages draw. `options` is the
    config's `report:` section (what the pages may show of file names and acquisition times)."""
    results = load_results(results_dir)
    if not results.root.is_dir():
        raise CytopipeError(
            "results folder not found", path=results_dir, hint="run the workflow first"
        )
    out = Path(out_dir)
    report = load_report(results, out, config)
    report.privacy = Privacy.from_config(options)
    write_plotly_asset(out)
    written = {out / "index.html"}
    for pid in report.patients:
        path = out / "patients" / f"{slug(pid)}.html"
        _write(path, patient_page(report, pid))
        summary = out / "patients" / f"{slug(pid)}_summary.html"
        _write(summary, patient_summary_page(report, pid))
        written |= {path, summary}
    gallery = Gallery()
    for sid in report.samples:
        sample = load_sample(sid, results.sample_dirs.get(sid))
        opinions = (
            (sample.clusters, ""),
            (sample.learned, "learned gating: "),
            (sample.expert, "expert gating: "),
        )
        for opinion, who in opinions:
            if isinstance(opinion, dict) and opinion.get("disagreements"):
                found = [f"{who}{d}" for d in opinion["disagreements"]]
                report.disagreements.setdefault(sid, []).extend(found)
        path = out / "samples" / f"{slug(sid)}.html"
        _write(path, sample_page(report, sample))
        written.add(path)
        gallery.add(sample)
    for gate in gallery.gates():
        path = out / "gates" / f"{slug(gate)}.html"
        _write(path, gallery_page(report, gallery, gate))
        written.add(path)
    report.galleries = gallery_links(report, gallery)
    _remove_stale(out, written)
    report.downloads = ship_tables(results.root, out, report.privacy)
    index = out / "index.html"
    _write(index, cohort_page(report))  # last: its presence means the report is complete
    return index


def write_report_figures(
    results_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Standalone swimmer.html and km.html (plotly.js inlined) in `out_dir`, for Snakemake's
    `--report` (it embeds files marked report(...), which cannot load a shared asset).

    Both files are always written (a short "not available" page when a table is missing or
    empty) so a workflow rule declaring them as outputs never fails on a partial cohort."""
    import plotly.io as pio

    results = load_results(results_dir)
    out = Path(out_dir)
    summary = results.summary or {}
    titles = {
        "swimmer": "Swimmer plot: B-cell aplasia and reconstitution per patient",
        "km": "Time to B-cell reconstitution (Kaplan-Meier)",
    }
    builders = {
        "swimmer": ("patients", lambda t: swimmer_figure(t, results.table("sample_states"))),
        "km": (
            "km",
            lambda t: km_figure(
                t,
                summary.get("median_days_to_reconstitution"),
                len(summary.get("excluded_from_km") or []),
                summary.get("median_days_to_reconstitution_ci"),
            ),
        ),
    }
    paths = {}
    for name, (table_name, build) in builders.items():
        frame = results.table(table_name)
        paths[name] = out / f"{name}.html"
        if frame is None or not len(frame):
            why = results.why_missing(table_name) or f"{TABLE_FILES[table_name]} has no rows"
            text = render(
                "figure_unavailable.html",
                title=titles[name],
                missing=Unavailable(titles[name], why),
            )
        else:
            fig = build(frame)
            fig.update_layout(title=dict(text=esc(titles[name]), x=0))
            fig.update_layout(height=(fig.layout.height or 400) + 60, margin=dict(t=90))
            text = pio.to_html(
                fig, include_plotlyjs=True, full_html=True, config={"displaylogo": False}
            )
        _write(paths[name], text)
    return paths


def write_plotly_asset(out: Path) -> Path:
    """plotly.js once per report folder (rewritten only when the installed version differs)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    path = out / ASSET
    if path.exists() and path.stat().st_size == len(js.encode("utf-8")):
        return path
    _write(path, js)
    return path


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _remove_stale(out: Path, keep: set[Path]) -> None:
    """Pages of samples/patients no longer in the results would otherwise linger with old data."""
    for sub in ("patients", "samples", "gates"):
        folder = out / sub
        if folder.is_dir():
            for page_file in folder.glob("*.html"):
                if page_file not in keep:
                    page_file.unlink()
