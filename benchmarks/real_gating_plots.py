"""Where our gates and openCyto's differ on the real Lyoplate B-cell file, drawn: the density of
our parent population, our cut-offs as lines, openCyto's events of the same population as dots.
Writes docs/real_gating/lyoplate_differences.png (the README shows it) through headless Chromium.

    .venv/bin/python benchmarks/real_gating_plots.py [--data ../shared/data/real]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_gating import DEFAULT_DATA, REPO  # noqa: E402

from cytopipe.config import read_yaml, validated  # noqa: E402
from cytopipe.gating.autogate import autogate  # noqa: E402
from cytopipe.gating.template import load_template  # noqa: E402
from cytopipe.ingest.panel import load_panel  # noqa: E402
from cytopipe.preprocess.sample import preprocess  # noqa: E402

OUT = REPO / "docs" / "real_gating" / "lyoplate_differences.png"

# (title, our parent population, x, y, openCyto gate, our cut-offs as (threshold, axis),
#  our population drawn where openCyto's scatter lymphocyte gate does not hold it, or None)
PANELS = (
    (
        "transitional: naive-quadrant B cells (ours)",
        "b_naive",
        "CD38",
        "CD24",
        "Live/CD19andCD20/Transitional",
        (("cd38_tr", "x"), ("cd24_tr", "y")),
        None,
    ),
    (
        "plasmablasts: CD27hi CD38hi B cells (ours)",
        "b_cd27hi_cd38hi",
        "CD20",
        "CD38",
        "Live/CD19and!CD20/Plasmablasts",
        (("cd20_pb", "x"), ("cd38_pb", "y")),
        "plasmablasts",
    ),
    (
        "plasmablasts in scatter: all cells",
        "cells",
        "FSC-A",
        "SSC-A",
        "Live/CD19and!CD20/Plasmablasts",
        (),
        "plasmablasts",
    ),
    (
        "IgD/CD27 quadrants: CD20+ B cells (ours)",
        "b_cd20pos",
        "IgD",
        "CD27",
        "Live/CD19andCD20/IgD-CD27+",
        (("igd", "x"), ("cd27", "y")),
        None,
    ),
)


def figure(data: Path) -> go.Figure:
    path = data / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="plots")
    pre = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg)
    keep = np.asarray(pre.qc_pass, dtype=bool)
    columns = {m: np.asarray(v)[keep] for m, v in pre.columns.items()}
    result = autogate(load_template(REPO / "config" / "gating.yaml"), columns)
    ref = pd.read_csv(path.with_name("lyoplate_bcell_C01_opencyto_gates.csv"))[keep]
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[0] for p in PANELS])
    outside = ~ref["lymph"].to_numpy(bool)
    for col, (_, parent, x, y, theirs, cuts, ours) in enumerate(PANELS, start=1):
        mine = result.masks[parent]
        fig.add_histogram2d(
            x=columns[x][mine], y=columns[y][mine], nbinsx=80, nbinsy=80, row=1, col=col,
            colorscale="Greys", showscale=False, zmin=0, zmax=None,
        )  # fmt: skip
        other = ref[theirs].to_numpy(bool)
        fig.add_scatter(
            x=columns[x][other], y=columns[y][other], mode="markers", row=1, col=col,
            marker=dict(size=3, color="#d6336c"), name=f"openCyto {theirs.split('/')[-1]}",
            showlegend=theirs not in (p[4] for p in PANELS[: col - 1]),
        )  # fmt: skip
        if ours is not None:
            beyond = result.masks[ours] & outside
            fig.add_scatter(
                x=columns[x][beyond], y=columns[y][beyond], mode="markers", row=1, col=col,
                marker=dict(size=5, color="#1c7ed6", symbol="x"), showlegend=col == 2,
                name=f"ours ({ours}), outside openCyto's lymphocyte gate",
            )  # fmt: skip
        for name, axis in cuts:
            value = result.thresholds[name].value
            line = dict(color="#1c7ed6", width=2, dash="dash")
            if axis == "x":
                fig.add_vline(x=value, line=line, row=1, col=col)
            else:
                fig.add_hline(y=value, line=line, row=1, col=col)
        top = 0.8 if y == "SSC-A" else 1
        fig.update_xaxes(title=x, range=[0, 1], row=1, col=col)
        fig.update_yaxes(title=y, range=[0, top], row=1, col=col)
    fig.update_layout(
        width=1800, height=520, template="simple_white", margin=dict(t=60, l=60, r=20, b=50),
        legend=dict(orientation="h", y=-0.18), title="Lyoplate C01: our cut-offs (blue dashed) "
        "on the density of our parent population; openCyto's population as pink dots",
    )  # fmt: skip
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 1
    fig = figure(args.data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "plot.html"
        fig.write_html(html, include_plotlyjs=True, config={"displayModeBar": False})
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1800,540", f"--screenshot={OUT}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
