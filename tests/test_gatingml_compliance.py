"""Gating-ML 2.0 compliance: every gate of FlowKit's reference set, event for event.

`gate_ref/gml/*.xml` holds one strategy per file (plus all of them in gml_all_gates.xml) and
`gate_ref/truth/Results_<Id>.txt` the expected 0/1 membership on data1.fcs. flowkit parses the
XML; cytopipe evaluates. The flowutils polygon/ellipse truth is the same gates (Polygon4,
Ellipse1 of the reference set) on pre-extracted event columns.
"""

from __future__ import annotations

import gc
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest
from conftest import SHARED_DATA

from cytopipe.errors import GatingError
from cytopipe.gating.apply import apply_strategy, apply_strategy_chunked
from cytopipe.gating.gates import evaluate
from cytopipe.gating.gatingml import read_gatingml, write_gatingml
from cytopipe.gating.sample_columns import (
    event_source_from_fcs,
    event_source_from_flowkit,
    sample_columns,
)

REF = SHARED_DATA / "flowkit" / "gate_ref"
INVALID = {"gml_range_gate_attr_testing.xml"}  # gate wrapped in a non-Gating-ML <sample> element
TRUTH_NAME = {"ParRectangle1": "ParQuadRect"}  # FlowKit's test suite pairs these the same way
GML_FILES = sorted(p.name for p in (REF / "gml").glob("*.xml")) if REF.is_dir() else []


@pytest.fixture(scope="module")
def ref(shared_data) -> Path:
    return shared_data / "flowkit" / "gate_ref"


@pytest.fixture(scope="module")
def data1(ref):
    return event_source_from_flowkit(fk.Sample(str(ref / "data1.fcs")))


def _truth(ref: Path, pid: str) -> np.ndarray | None:
    path = ref / "truth" / f"Results_{TRUTH_NAME.get(pid, pid)}.txt"
    return np.loadtxt(path, dtype=np.int8).astype(bool) if path.exists() else None


def test_reference_set_is_complete(ref):
    files = sorted(p.name for p in (ref / "gml").glob("*.xml"))
    assert files == GML_FILES and len(files) >= 40
    assert len(list((ref / "truth").glob("Results_*.txt"))) >= 50


def _flowkit_membership(xml: Path, fcs: Path) -> dict[str, np.ndarray]:
    gs = fk.parse_gating_xml(str(xml))
    res = gs.gate_sample(fk.Sample(str(fcs)))
    return {gid: np.asarray(res.get_gate_membership(gid, path)) for gid, path in gs.get_gate_ids()}


@pytest.mark.parametrize("fast", [False, True], ids=["transformed", "linearized"])
@pytest.mark.parametrize("name", [n for n in GML_FILES if n not in INVALID])
def test_gate_membership_equals_truth(ref, data1, name, fast):
    """Truth file where the reference set has one, else FlowKit's own result (myEllipse2,
    quadrant gate ids), so every gate of every file is checked event for event."""
    strategy = read_gatingml(ref / "gml" / name)
    masks = apply_strategy(strategy, data1, fast=fast)
    flowkit = None
    with_truth = 0
    for pid in strategy.population_ids():
        truth = _truth(ref, pid)
        if truth is None:
            if pid == strategy.gate(pid).id and pid.startswith("Quadrant"):
                continue  # a quadrant gate's own id is not a population in Gating-ML
            flowkit = flowkit or _flowkit_membership(ref / "gml" / name, ref / "data1.fcs")
            truth = flowkit[pid]
        else:
            with_truth += 1
        assert masks[pid].shape == truth.shape
        diff = np.flatnonzero(masks[pid] != truth)
        assert diff.size == 0, f"{pid}: {diff.size} events differ, first {diff[:10]}"
    assert with_truth >= 1 or name == "gml_ellipse2_gate.xml"


def test_all_truth_files_are_covered(ref):
    truth_ids = {p.stem.removeprefix("Results_") for p in (ref / "truth").glob("Results_*.txt")}
    ids = {
        TRUTH_NAME.get(p, p)
        for name in GML_FILES
        if name not in INVALID
        for p in read_gatingml(ref / "gml" / name).population_ids()
    }
    assert truth_ids <= ids


def test_chunked_evaluation_equals_truth(ref, data1):
    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    masks = apply_strategy_chunked(strategy, data1, chunk_events=1000)
    for pid in strategy.population_ids():
        truth = _truth(ref, pid)
        if truth is not None:
            assert np.array_equal(masks[pid], truth), pid


def test_chunks_are_freed_without_the_cycle_collector(ref, data1):
    """Each chunk's resolver, compensation and events go as soon as the chunk is gated: no
    reference cycle leaves them (and their event copies) to the cycle collector, which seldom
    runs in a long file."""
    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")  # compensated gates included
    apply_strategy_chunked(strategy, data1, chunk_events=1000)  # imports and caches warm
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage to look at
    try:
        apply_strategy_chunked(strategy, data1, chunk_events=1000)
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith(("cytopipe", "numpy"))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    # (threadpoolctl's BLAS controller, made once per call, has a cycle of its own)
    assert left == []


def test_chunked_evaluation_reads_events_through_slices_only(ref, data1, tmp_path):
    """Chunked evaluation needs only `events[i:j]`: an on-disk np.memmap works, so a file
    larger than memory is gated in memory of a few chunks plus the output masks."""
    path = tmp_path / "events.f32"
    data1.events.astype(np.float32).tofile(path)
    disk = np.memmap(path, dtype=np.float32, mode="r", shape=data1.events.shape)

    class SliceOnly:
        """Refuses whole-matrix access, so the test fails if anything materializes it."""

        shape = disk.shape

        def __len__(self):
            return len(disk)

        def __getitem__(self, key):
            assert isinstance(key, slice) and (key.stop - key.start) <= 2000
            return np.asarray(disk[key])

    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    src = type(data1)(SliceOnly(), data1.pnn, data1.pns, data1.spill)
    masks = apply_strategy_chunked(strategy, src, chunk_events=2000)
    whole = apply_strategy(strategy, type(data1)(np.asarray(disk), data1.pnn, data1.pns))
    for pid in strategy.population_ids():
        assert np.array_equal(masks[pid], whole[pid]), pid


def test_cytopipe_fcs_reader_gives_same_membership(ref, data1):
    """cytopipe's own FCS reader (float32 events) on the same strategy.

    data1.fcs has log-amplified channels whose linear values are not float32 numbers, so
    events within float32 rounding of a limit may move; we require at most a handful.
    """
    from cytopipe.ingest.fcs import read_fcs

    src = event_source_from_fcs(read_fcs(ref / "data1.fcs"))
    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    ours, exact = apply_strategy(strategy, src), apply_strategy(strategy, data1)
    worst = max(int(np.count_nonzero(ours[p] != exact[p])) for p in ours)
    assert worst <= 3


@pytest.mark.parametrize(
    "kind, gate_id, dims", [("ellipse", "Ellipse1", 2), ("poly", "Polygon4", 2)]
)
def test_flowutils_truth(shared_data, ref, kind, gate_id, dims):
    """flowutils' polygon/ellipse sets: events are the gate's two (compensated) columns."""
    fu = shared_data / "flowutils"
    points = np.load(fu / f"event_data_for_{kind}_test.npy")
    truth = np.loadtxt(fu / "truth" / f"Results_{gate_id}.txt", dtype=np.int8).astype(bool)
    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    gate = strategy.gate(gate_id)
    assert len(gate.dims) == dims == points.shape[1]
    masks = evaluate([gate], {d: points[:, i] for i, d in enumerate(gate.dims)})
    assert np.array_equal(masks[gate_id], truth)


def test_export_round_trip_keeps_membership(ref, data1, tmp_path):
    strategy = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    out = tmp_path / "roundtrip.xml"
    write_gatingml(strategy, out)
    again = read_gatingml(out)
    assert sorted(again.population_ids()) == sorted(strategy.population_ids())
    assert again.parents() == strategy.parents()
    a, b = apply_strategy(strategy, data1), apply_strategy(again, data1)
    for pid in a:
        assert np.array_equal(a[pid], b[pid]), pid


def test_invalid_document_is_a_gating_error(ref, tmp_path):
    with pytest.raises(GatingError, match="not a valid Gating-ML"):
        read_gatingml(ref / "gml" / "gml_range_gate_attr_testing.xml")
    junk = tmp_path / "junk.xml"
    junk.write_text("<gating:Gating-ML><unclosed>")
    with pytest.raises(GatingError, match="junk.xml"):
        read_gatingml(junk)
    with pytest.raises(GatingError, match="not found"):
        read_gatingml(tmp_path / "missing.xml")


def test_missing_channel_names_the_gates(ref, data1):
    strategy = read_gatingml(ref / "gml" / "gml_rect1_gate.xml")
    src = type(data1)(data1.events, ["A" * 3] * len(data1.pnn), [""] * len(data1.pnn))
    with pytest.raises(GatingError, match="Rectangle1 need channel 'SSC-H'"):
        sample_columns(strategy, src)


# --------------------------------------------------------------------------- apply-gates CLI


def test_apply_gates_cli_writes_truth_and_stats(ref, tmp_path, capsys):
    import pandas as pd

    from cytopipe.cli import main

    out, stats = tmp_path / "gates.parquet", tmp_path / "stats.tsv"
    xml = ref / "gml" / "gml_all_gates.xml"
    argv = ["apply-gates", str(xml), str(ref / "data1.fcs"), "--out", str(out)]
    assert main([*argv, "--stats", str(stats), "--chunk-events", "4000"]) == 0
    table = pd.read_parquet(out)
    strategy = read_gatingml(xml)
    assert list(table.columns) == strategy.population_ids()
    assert len(table) == 13367 and all(dt == np.dtype(bool) for dt in table.dtypes)
    for pid in table.columns:
        truth = _truth(ref, pid)
        if truth is not None:
            assert np.array_equal(table[pid].to_numpy(), truth), pid
    st = pd.read_csv(stats, sep="\t", keep_default_na=False)
    assert list(st.columns) == ["gate_id", "parent", "count", "pct_parent"]
    row = st.set_index("gate_id").loc["ParAnd3"]
    assert row["parent"] == "Range1"
    assert row["count"] == table["ParAnd3"].sum()
    assert row["pct_parent"] == pytest.approx(100 * table["ParAnd3"].sum() / table["Range1"].sum())


def test_apply_gates_cli_bad_input_is_one_line(ref, tmp_path, capsys):
    from cytopipe.cli import main

    out = tmp_path / "x.parquet"
    bad_xml = ref / "gml" / "gml_range_gate_attr_testing.xml"
    assert main(["apply-gates", str(bad_xml), str(ref / "data1.fcs"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cytopipe: error:") and "Gating-ML" in err and "\n" not in err

    other = ref.parent.parent / "flowio" / "fcs_files" / "100715.fcs"
    rect = ref / "gml" / "gml_rect1_gate.xml"
    assert main(["apply-gates", str(rect), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Rectangle1" in err and "'SSC-H'" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_benchmark_counts_identical_to_flowkit(tmp_path):
    """benchmarks/bench_gating.py end to end on a small file (make bench runs the big one)."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gating.py"
    cmd = [sys.executable, str(bench), "--events", "30000", "--workdir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_flowkit=") and last.endswith("counts_identical=true"), out


def test_compensated_ratio_dimension_uses_compensated_inputs(ref, data1):
    """A ratio's compensation-ref applies to its inputs (FlowKit ignores it; documented)."""
    from cytopipe.gating.gates import RectangleGate
    from cytopipe.gating.strategy import DimSpec, Scale, Strategy

    base = read_gatingml(ref / "gml" / "gml_all_gates.xml")
    spill = base.matrices["MySpill"]
    ratio = Scale("r", "fratio", (("A", 2.0), ("B", 1.0), ("C", -3.0)), ("FL2-H", "FL3-H"))
    spec = DimSpec("r", "MySpill", None, ratio=True)
    gate = RectangleGate("R", None, (spec.key,), (0.5,), (4.0,))
    strategy = Strategy([gate], {spec.key: spec}, {"r": ratio}, {"MySpill": spill})
    got = apply_strategy(strategy, data1)["R"]
    idx = [data1.pnn.index(d) for d in spill.detectors]
    comp = data1.events[:, idx] @ np.linalg.inv(spill.matrix)
    x, y = (comp[:, spill.detectors.index(c)] for c in ("FL2-H", "FL3-H"))
    r = 2.0 * (x - 1.0) / (y + 3.0)
    assert np.array_equal(got, (r >= 0.5) & (r < 4.0))
    assert 0 < got.sum() < len(got)
