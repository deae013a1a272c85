"""Benchmark: cytopipe's gating core against FlowKit on the same file and Gating-ML strategy.

Generates an FCS 3.1 file (N events, 20 parameters: 4 scatter/time + 16 fluorescence with
spillover) and a 15-gate nested B-cell strategy as Gating-ML (polygons, rectangles, ranges,
an ellipse and booleans on compensated + logicle dimensions), then runs
ingest -> compensate -> transform -> gate -> counts with cytopipe and with FlowKit, each in its
own subprocess so their peak memory (ru_maxrss) does not mix, checks that every gate count
is identical and prints time and memory per step.

    .venv/bin/python benchmarks/bench_gating.py --events 1000000

The last line is `speedup_vs_flowkit=X peak_rss_over_raw=Y counts_identical=true|false`, where
X = FlowKit wall time / cytopipe wall time (end to end) and Y = cytopipe's peak RSS over the
size of the raw float32 event matrix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCATTER = ["FSC-A", "FSC-H", "SSC-A", "Time"]
MARKERS = [
    "CD45", "CD3", "CD19", "CD20", "CD27", "CD38", "IgD", "CD24",
    "CD4", "CD8", "CD14", "CD16", "CD56", "HLA-DR", "Viability", "IgM",
]  # fmt: skip
DETECTORS = [f"FL{i + 1}-A" for i in range(len(MARKERS))]
LOGICLE = (("T", 262144.0), ("W", 0.5), ("M", 4.5), ("A", 0.0))


# --------------------------------------------------------------------------- data


def spillover(seed: int = 11) -> np.ndarray:
    """A plausible 16x16 spillover: rows = fluorochromes, columns = detectors."""
    rng = np.random.default_rng(seed)
    k = len(DETECTORS)
    s = np.eye(k)
    for i in range(k):
        for j in (i - 1, i + 1, i + 2):
            if 0 <= j < k:
                s[i, j] = rng.uniform(0.01, 0.25)
    return s


def _population_table() -> list[tuple[str, float, dict[str, float]]]:
    """(name, fraction, marker -> log10 of the positive mean; absent = negative)."""
    b = {"CD45": 4.0, "CD19": 3.6, "CD20": 3.8, "HLA-DR": 3.5}
    return [
        ("debris", 0.08, {}),
        ("doublets", 0.04, {"CD45": 3.9}),
        ("dead", 0.05, {"Viability": 4.2, "CD45": 3.5}),
        ("granulocytes", 0.25, {"CD45": 3.4, "CD16": 3.8}),
        ("monocytes", 0.08, {"CD45": 3.7, "CD14": 4.0, "HLA-DR": 3.6, "CD4": 3.0}),
        ("t_cd4", 0.20, {"CD45": 4.1, "CD3": 3.9, "CD4": 3.8}),
        ("t_cd8", 0.12, {"CD45": 4.1, "CD3": 3.9, "CD8": 3.9}),
        ("nk", 0.06, {"CD45": 4.0, "CD56": 3.6, "CD16": 3.5}),
        ("b_naive", 0.06, {**b, "IgD": 3.8, "IgM": 3.6, "CD24": 3.2}),
        ("b_unswitched", 0.02, {**b, "IgD": 3.6, "CD27": 3.5, "IgM": 3.7}),
        ("b_switched", 0.02, {**b, "CD27": 3.6}),
        ("b_transitional", 0.01, {**b, "IgD": 3.6, "CD24": 4.0, "CD38": 3.8}),
        ("plasmablasts", 0.01, {"CD45": 3.9, "CD19": 3.0, "CD27": 4.2, "CD38": 4.3}),
    ]


def _scatter_means(name: str) -> tuple[float, float, float]:
    """(FSC-A, FSC-H/FSC-A ratio, SSC-A) per population."""
    return {
        "debris": (12000, 0.75, 6000),
        "doublets": (140000, 0.45, 30000),
        "granulocytes": (110000, 0.75, 140000),
        "monocytes": (100000, 0.75, 60000),
    }.get(name, (70000, 0.75, 22000))


def generate_events(n: int, seed: int = 5, chunk: int = 1 << 20) -> np.ndarray:
    """(n, 20) float32 events, generated chunk by chunk into one preallocated array."""
    rng = np.random.default_rng(seed)
    pops = _population_table()
    frac = np.array([p[1] for p in pops])
    frac /= frac.sum()
    spill = spillover()
    out = np.empty((n, len(SCATTER) + len(MARKERS)), dtype=np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        which = rng.choice(len(pops), size=m, p=frac)
        true = rng.normal(0.0, 60.0, (m, len(MARKERS)))  # negatives: spread around zero
        fsc = np.empty(m)
        ratio = np.empty(m)
        ssc = np.empty(m)
        for k, (name, _, pos) in enumerate(pops):
            sel = np.flatnonzero(which == k)
            for marker, level in pos.items():
                j = MARKERS.index(marker)
                true[sel, j] = 10 ** rng.normal(level, 0.18, sel.size)
            f, r, s = _scatter_means(name)
            fsc[sel] = rng.normal(f, f * 0.12, sel.size)
            ratio[sel] = rng.normal(r, 0.04, sel.size)
            ssc[sel] = rng.normal(s, s * 0.2, sel.size)
        observed = true @ spill + rng.normal(0.0, 15.0, (m, len(MARKERS)))
        block = out[lo : lo + m]
        block[:, 0] = np.clip(fsc, 0, 262143)
        block[:, 1] = np.clip(fsc * ratio, 0, 262143)
        block[:, 2] = np.clip(ssc, 0, 262143)
        block[:, 3] = np.arange(lo, lo + m) / max(n, 1) * 1000.0
        block[:, 4:] = np.clip(observed, -262144, 262143)
    return out


def write_fcs(path: Path, events: np.ndarray) -> None:
    from array import array

    import flowio

    flat = array("f")
    flat.frombytes(np.ascontiguousarray(events, dtype="<f4").tobytes())
    meta = {f"$P{i + 1}R": "262144" for i in range(events.shape[1])}
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, flat, SCATTER + DETECTORS, ["", "", "", ""] + MARKERS, meta)


def strategy():
    """The 15-gate B-cell strategy on compensated logicle dims (cytopipe objects)."""
    from cytopipe.gating.gates import BooleanGate, EllipsoidGate, PolygonGate, RectangleGate
    from cytopipe.gating.strategy import DimSpec, Scale, Strategy
    from cytopipe.preprocess.compensation import Spillover

    spill = Spillover(
        list(DETECTORS), spillover(), "benchmark", id="spill", fluorochromes=tuple(MARKERS)
    )
    dims = {m: DimSpec(d, "spill", "logicle") for m, d in zip(MARKERS, DETECTORS, strict=True)}
    cells = [[25000, 0], [262000, 0], [262000, 220000], [40000, 220000], [25000, 12000]]
    singlets = [[20000, 14000], [262000, 190000], [262000, 262000], [20000, 30000]]
    lymph = [[0.52, 0], [1.0, 0], [1.0, 45000], [0.6, 45000]]
    gates = [
        PolygonGate("cells", None, ("FSC-A", "SSC-A"), cells),
        PolygonGate("singlets", "cells", ("FSC-A", "FSC-H"), singlets),
        RectangleGate("live", "singlets", ("Viability",), (None,), (0.55,)),
        RectangleGate("leukocytes", "live", ("CD45",), (0.5,), (None,)),
        PolygonGate("lymphocytes", "leukocytes", ("CD45", "SSC-A"), lymph),
        RectangleGate("t_cells", "lymphocytes", ("CD3",), (0.55,), (None,)),
        RectangleGate("non_t", "lymphocytes", ("CD3",), (None,), (0.55,)),
        PolygonGate("b_cells", "non_t", ("CD19", "CD20"), [[0.55, 0], [1, 0], [1, 1], [0.55, 1]]),
        RectangleGate("b_cd20pos", "b_cells", ("CD20",), (0.55,), (None,)),
        BooleanGate("b_cd20neg", "b_cells", "not", ("b_cd20pos",)),
        EllipsoidGate(
            "plasmablasts",
            "b_cd20neg",
            ("CD27", "CD38"),
            (0.8, 0.82),
            [[0.004, 0], [0, 0.004]],
            4.0,
        ),
        RectangleGate("b_naive", "b_cells", ("IgD", "CD27"), (0.55, None), (None, 0.55)),
        RectangleGate(
            "b_unswitched_memory", "b_cells", ("IgD", "CD27"), (0.55, 0.55), (None, None)
        ),
        RectangleGate("b_switched_memory", "b_cells", ("IgD", "CD27"), (None, 0.55), (0.55, None)),
        BooleanGate("b_memory", "b_cells", "or", ("b_unswitched_memory", "b_switched_memory")),
    ]
    used = {k: dims[k] if k in dims else DimSpec(k) for g in gates for k in g.dims}
    return Strategy(
        gates, used, {"logicle": Scale("logicle", "logicle", LOGICLE)}, {"spill": spill}
    )


# --------------------------------------------------------------------------- runners


def _peak_rss_bytes() -> int:
    """Peak RSS of this process image: VmHWM, which exec resets (ru_maxrss would carry over
    the parent's peak, e.g. from generating the events, into the child)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _import_flowkit() -> float:
    """Both tools parse Gating-ML with flowkit: import it before the clock starts, for both."""
    import warnings

    t0 = time.perf_counter()
    import flowkit  # noqa: F401

    warnings.simplefilter("ignore")
    return time.perf_counter() - t0


def run_cytopipe(fcs: str, gml: str, chunk: int) -> dict:
    import_s = _import_flowkit()
    from cytopipe.gating.apply import apply_strategy_chunked
    from cytopipe.gating.gatingml import read_gatingml
    from cytopipe.gating.strategy import EventSource
    from cytopipe.ingest.fcs import read_fcs

    steps: dict[str, float] = {}
    rss = {"import": _peak_rss_bytes()}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    sample = read_fcs(fcs)
    steps["ingest"] = time.perf_counter() - t0
    rss["ingest"] = _peak_rss_bytes()
    t0 = time.perf_counter()
    from cytopipe.preprocess import qc

    idx = {name: i for i, name in enumerate(sample.pnn)}
    signals = {m: sample.events[:, idx[d]] for m, d in zip(MARKERS, DETECTORS, strict=True)}
    keep = qc.qc_sample(sample, idx, signals).keep  # FlowKit has no QC: cytopipe pays extra here
    steps["qc"] = time.perf_counter() - t0
    rss["qc"] = _peak_rss_bytes()
    del keep
    t0 = time.perf_counter()
    strat = read_gatingml(gml)
    steps["parse strategy"] = time.perf_counter() - t0
    src = EventSource(sample.events, sample.pnn, sample.pns, None, fcs)
    masks = apply_strategy_chunked(strat, src, chunk, timings=steps)
    rss["gate"] = _peak_rss_bytes()
    t0 = time.perf_counter()
    counts = {pid: int(np.count_nonzero(masks[pid])) for pid in strat.population_ids()}
    steps["counts"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    peak = _peak_rss_bytes()
    out = {"steps": steps, "total": total, "counts": counts, "peak_rss": peak, "import": import_s}
    return {**out, "rss_by_step": rss}


def run_flowkit(fcs: str, gml: str) -> dict:
    import_s = _import_flowkit()
    import flowkit as fk

    steps: dict[str, float] = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    sample = fk.Sample(fcs)
    steps["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    session = fk.Session(gating_strategy=gml, fcs_samples=[sample])
    steps["parse strategy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.analyze_samples(use_mp=False)
    steps["compensate+transform+gate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = session.get_analysis_report()
    counts = {str(r.gate_name): int(r["count"]) for _, r in report.iterrows()}
    steps["counts"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    rss = _peak_rss_bytes()
    return {"steps": steps, "total": total, "counts": counts, "peak_rss": rss, "import": import_s}


def _child(tool: str, fcs: Path, gml: Path, chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--fcs", str(fcs), "--gml", str(gml)]
    cmd += ["--chunk", str(chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{tool} run failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def _fmt_gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--chunk", type=int, default=1 << 16, help="events per chunk (cytopipe)")
    ap.add_argument("--workdir", default="/tmp/cytopipe_bench")
    ap.add_argument("--skip-flowkit", action="store_true", help="only time cytopipe")
    ap.add_argument("--child", choices=["cytopipe", "flowkit"], help=argparse.SUPPRESS)
    ap.add_argument("--fcs", help=argparse.SUPPRESS)
    ap.add_argument("--gml", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        run = run_cytopipe(args.fcs, args.gml, args.chunk) if args.child == "cytopipe" else None
        run = run or run_flowkit(args.fcs, args.gml)
        print(json.dumps(run))
        return 0

    from cytopipe.gating.gatingml import write_gatingml

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    fcs = work / f"bench_{args.events}.fcs"
    gml = work / "bench_strategy.xml"
    if not fcs.exists():
        t0 = time.perf_counter()
        write_fcs(fcs, generate_events(args.events))
        print(f"generated {fcs} in {time.perf_counter() - t0:.1f} s")
    write_gatingml(strategy(), gml)
    n_par = len(SCATTER) + len(MARKERS)
    raw_bytes = args.events * n_par * 4
    print(f"events={args.events} parameters={n_par} raw float32 matrix={_fmt_gb(raw_bytes)}")

    ours = _child("cytopipe", fcs, gml, args.chunk)
    theirs = None if args.skip_flowkit else _child("flowkit", fcs, gml, args.chunk)

    print(f"\n{'step':28s} {'cytopipe':>10s} {'flowkit':>10s} {'ratio':>8s}")
    ct = ours["steps"]
    ft = theirs["steps"] if theirs else {}
    fused = ct.get("compensate", 0) + ct.get("transform", 0) + ct.get("gate", 0)
    rows = [
        ("ingest", ct["ingest"], ft.get("ingest")),
        ("qc (cytopipe only)", ct.get("qc", 0.0), None),
        ("parse strategy", ct["parse strategy"], ft.get("parse strategy")),
        ("  compensate", ct.get("compensate", 0.0), None),
        ("  transform", ct.get("transform", 0.0), None),
        ("  gate", ct.get("gate", 0.0), None),
        ("compensate+transform+gate", fused, ft.get("compensate+transform+gate")),
        ("counts", ct["counts"], ft.get("counts")),
        ("total (wall)", ours["total"], theirs["total"] if theirs else None),
    ]
    for name, c, f in rows:
        fs = f"{f:10.2f}" if f is not None else f"{'':>10s}"
        ratio = f"{f / c:7.1f}x" if f is not None and c > 0 else ""
        print(f"{name:28s} {c:10.2f} {fs} {ratio:>8s}")
    fi = f"{theirs['import']:10.2f}" if theirs else ""
    print(f"{'(import flowkit, untimed)':28s} {ours['import']:10.2f} {fi}")
    print(f"{'peak RSS':28s} {_fmt_gb(ours['peak_rss']):>10s} ", end="")
    print(f"{_fmt_gb(theirs['peak_rss']):>10s}" if theirs else "")
    by_step = ", ".join(f"{k} {_fmt_gb(v)}" for k, v in ours["rss_by_step"].items())
    print(f"cytopipe peak RSS after: {by_step}")

    print("\ngate counts:")
    identical = theirs is not None
    for pid, count in ours["counts"].items():
        other = theirs["counts"].get(pid) if theirs else None
        mark = "" if other is None or other == count else "  <-- differs"
        identical = identical and other == count
        print(f"  {pid:22s} {count:10d} {'' if other is None else other:>10}{mark}")
    speedup = theirs["total"] / ours["total"] if theirs else float("nan")
    print(
        f"speedup_vs_flowkit={speedup:.1f} peak_rss_over_raw={ours['peak_rss'] / raw_bytes:.2f} "
        f"counts_identical={'true' if identical else 'false'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
