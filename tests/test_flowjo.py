"""FlowJo workspaces: our evaluation of their gates equals FlowKit's and FlowJo's own counts,
and workspaces we export read back in FlowKit with identical counts."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest

from cytopipe.errors import GatingError
from cytopipe.gating.apply import apply_strategy
from cytopipe.gating.flowjo import (
    apply_flowjo_workspace,
    export_flowjo_workspace,
    flowjo_stored_counts,
    read_flowjo_workspace,
    source_for,
)
from cytopipe.gating.gates import (
    BooleanGate,
    EllipsoidGate,
    PolygonGate,
    QuadrantGate,
    RectangleGate,
)
from cytopipe.gating.strategy import DimSpec, Scale, Strategy

WORKSPACES = [
    "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect2.wsp",
    "simple_diamond_example/test_data_diamond_biex_rect.wsp",
    "simple_line_example/simple_poly_and_rect.wsp",
    "simple_line_example/simple_poly_and_rect_v2_poly50.wsp",
    "simple_line_example/single_ellipse_51_events.wsp",
]
# FlowJo saved this workspace without recomputing: it stores 0 for poly1, while the polygon
# holds 50 of the 100 events (the file name says so, and FlowKit counts 50 as well).
STALE_FLOWJO_COUNTS = {("simple_poly_and_rect_v2_poly50.wsp", "poly1")}


def _flowkit_workspace(wsp: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(wsp), fcs_samples=str(wsp.parent))
        for sid in ws.get_sample_ids():
            ws.analyze_samples(sample_id=sid, use_mp=False)
    return ws


@pytest.mark.parametrize("rel", WORKSPACES, ids=lambda r: Path(r).stem)
def test_workspace_gates_equal_flowkit_and_flowjo(shared_data, rel):
    wsp = shared_data / "flowkit" / rel
    ws = _flowkit_workspace(wsp)
    stored = flowjo_stored_counts(wsp)
    sids = ws.get_sample_ids()
    assert sids
    for sid in sids:
        ours = apply_flowjo_workspace(wsp, wsp.parent / sid, sid)
        report = ws.get_gating_results(sid).report
        assert len(report) >= 1
        for _, row in report.iterrows():
            name, path = row["gate_name"], row["gate_path"]
            theirs = np.asarray(ws.get_gate_membership(sid, name, path))
            assert np.array_equal(ours[name], theirs), name  # event for event
            flowjo = stored[sid]["/".join((*path[1:], name))]
            if flowjo < 0:  # FlowJo did not compute it
                continue
            if (wsp.name, name) in STALE_FLOWJO_COUNTS:
                assert flowjo != row["count"]  # still stale: revisit if the data changes
                continue
            assert int(ours[name].sum()) == flowjo == row["count"], name


def test_stored_counts_are_read_per_population(shared_data):
    wsp = shared_data / "flowkit" / WORKSPACES[0]
    counts = flowjo_stored_counts(wsp)["test_data_diamond_01.fcs"]
    assert sum(counts.values()) == 200_000  # four quadrants of all 200,000 events
    assert counts["Q2: channel_A+ , channel_B+"] == 50596


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def lymph_file(shared_data) -> Path:
    return shared_data / "flowio" / "fcs_files" / "100715.fcs"


def _b_cell_strategy(src):
    """A small B-cell hierarchy on compensated logicle channels of a real lymphocyte panel."""
    spill = dataclasses.replace(src.spill, id="Acquisition")
    logicle = Scale("logicle", "logicle", (("T", 262144.0), ("W", 0.5), ("M", 4.5), ("A", 0.0)))
    scales, dims = {}, {}
    for marker, channel in [
        ("CD3", "R780-A"),
        ("CD19", "G710-A"),
        ("CD27", "G660-A"),
        ("CCR7", "G610-A"),
    ]:
        scales[channel] = dataclasses.replace(logicle, id=channel)  # FlowJo: one scale per channel
        dims[marker] = DimSpec(channel, "Acquisition", channel)
    cells = [[20000, 0], [262000, 0], [262000, 200000], [60000, 150000], [20000, 20000]]
    gates = [
        PolygonGate("cells", None, ("FSC-A", "SSC-A"), cells),
        RectangleGate("lymph", "cells", ("FSC-A", "SSC-A"), (30000, None), (120000, 60000)),
        RectangleGate("cd3neg", "lymph", ("CD3",), (None,), (0.4,)),
        RectangleGate("b", "cd3neg", ("CD19",), (0.45,), (None,)),
        QuadrantGate.from_locations(
            "Q",
            "b",
            ("CD27", "CCR7"),
            ((0.4,), (0.45,)),
            {"b_pp": (1, 1), "b_pn": (1, 0), "b_np": (0, 1), "b_nn": (0, 0)},
        ),
    ]
    return gates, dims, scales, spill


def test_export_reads_back_in_flowkit_with_identical_counts(lymph_file, tmp_path):
    src = source_for(lymph_file)
    gates, dims, scales, spill = _b_cell_strategy(src)
    strategy = Strategy(
        gates,
        {k: dims.get(k, DimSpec(k)) for g in gates for k in g.dims},
        scales,
        {spill.id: spill},
    )
    ours = apply_strategy(strategy, src)
    assert 0 < ours["b"].sum() < ours["lymph"].sum()  # a real, non-trivial hierarchy

    out = tmp_path / "review.wsp"
    export_flowjo_workspace(gates, lymph_file, out, dims=dims, scales=scales, matrix=spill)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(out), fcs_samples=str(lymph_file))
        (sid,) = ws.get_sample_ids()
        ws.analyze_samples(sample_id=sid, use_mp=False)
    report = ws.get_gating_results(sid).report
    assert sorted(report["gate_name"]) == sorted(p for p in ours if p != "Q")
    for _, row in report.iterrows():
        theirs = np.asarray(ws.get_gate_membership(sid, row["gate_name"], row["gate_path"]))
        assert np.array_equal(theirs, ours[row["gate_name"]]), row["gate_name"]
    # and our reader of the exported workspace agrees too
    back = apply_strategy(read_flowjo_workspace(out)[sid], src)
    for pid, mask in back.items():
        assert np.array_equal(mask, ours[pid]), pid


def test_export_refuses_what_flowjo_cannot_hold(lymph_file, tmp_path):
    ell = EllipsoidGate("e", None, ("FSC-A", "SSC-A"), (5e4, 5e4), np.eye(2) * 1e8, 1.0)
    rect = RectangleGate("r", None, ("FSC-A",), (1e4,), (None,))
    with pytest.raises(GatingError, match="EllipsoidGate cannot be written"):
        export_flowjo_workspace([ell], lymph_file, tmp_path / "x.wsp")
    with pytest.raises(GatingError, match="BooleanGate cannot be written"):
        export_flowjo_workspace(
            [rect, BooleanGate("n", None, "not", ("r",))], lymph_file, tmp_path / "x.wsp"
        )
    asinh = Scale("s", "asinh", (("T", 262144.0), ("M", 4.5), ("A", 0.0)))
    with pytest.raises(GatingError, match="asinh scale"):
        export_flowjo_workspace(
            [rect],
            lymph_file,
            tmp_path / "x.wsp",
            dims={"FSC-A": DimSpec("FSC-A", transform="s")},
            scales={"s": asinh},
        )
    assert not (tmp_path / "x.wsp").exists()


def test_bad_workspaces_are_gating_errors(shared_data, tmp_path):
    with pytest.raises(GatingError, match="not found"):
        read_flowjo_workspace(tmp_path / "none.wsp")
    bad = tmp_path / "bad.wsp"
    bad.write_text("<Workspace><SampleList><Sample>")
    with pytest.raises(GatingError, match="bad.wsp"):
        read_flowjo_workspace(bad)
    wsp = shared_data / "flowkit" / WORKSPACES[1]
    with pytest.raises(GatingError, match="no sample 'other.fcs'"):
        read_flowjo_workspace(wsp, ["other.fcs"])


def test_apply_gates_takes_a_flowjo_workspace(shared_data, tmp_path, capsys):
    """`cytopipe apply-gates WORKSPACE.wsp FILE.fcs`: the sample named like the file, its gates
    evaluated as the workspace holds them (FlowJo's stored counts), one column per gate; an
    unknown sample is a one-line error naming the samples there are."""
    import pandas as pd

    from cytopipe import cli

    wsp = shared_data / "flowkit" / WORKSPACES[4]
    sid = next(iter(flowjo_stored_counts(wsp)))
    out = tmp_path / "m.parquet"
    assert cli.main(["apply-gates", str(wsp), str(wsp.parent / sid), "--out", str(out)]) == 0
    masks = pd.read_parquet(out)
    expected = apply_flowjo_workspace(wsp, wsp.parent / sid, sid)
    assert set(masks.columns) == set(expected) and len(masks.columns) >= 2
    for name, mask in expected.items():
        assert np.array_equal(masks[name].to_numpy(), mask), name
    stored = flowjo_stored_counts(wsp)[sid]
    for path, count in stored.items():
        if count >= 0:
            assert int(masks[path.split("/")[-1]].sum()) == count, path
    code = cli.main(["apply-gates", str(wsp), str(wsp.parent / sid), "--out", str(out),
                     "--sample", "nope.fcs"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "no sample 'nope.fcs'" in err and sid in err and "Traceback" not in err
