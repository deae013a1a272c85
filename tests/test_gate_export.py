"""The workflow's gate step writes each sample's placed gates as Gating-ML 2.0 on the file's own
channels (samples/<id>/gates.xml): cytopipe's evaluator and FlowKit, reading it back and applying
it to the raw FCS file, give cytopipe's own membership on every QC-kept event."""

from __future__ import annotations

import warnings

import flowkit as fk
import numpy as np
import pandas as pd
import pytest
from conftest import benchmark

from cytopipe import cli
from cytopipe.gating.apply import apply_strategy
from cytopipe.gating.gatingml import read_gatingml
from cytopipe.gating.sample_columns import event_source_from_fcs
from cytopipe.ingest.fcs import read_fcs
from cytopipe.synth.cohort import synth_cohort

real_gating = benchmark("real_gating")


@pytest.fixture(scope="module", params=["A", "B"])
def gated_sample(request, tmp_path_factory):
    """A generated day-14 sample (CAR-T expansion, B-cell aplasia) through preprocess and gate."""
    out = tmp_path_factory.mktemp(f"export{request.param}")
    sheet = synth_cohort(out / "cohort", 1, 4, 30_000, request.param, timepoints=(-7, 14))
    fcs = sheet["path"].iloc[0]  # the baseline: B cells and their subsets present
    events, info, folder = out / "e.parquet", out / "info.json", out / "sample"
    assert cli.main(["preprocess", fcs, "--sample-id", "s", "--out-events", str(events),
                     "--out-info", str(info)]) == 0  # fmt: skip
    assert cli.main(["gate", str(events), "--info", str(info), "--out-dir", str(folder)]) == 0
    keep = pd.read_parquet(events)["qc_pass"].to_numpy()
    return fcs, folder, keep


def test_gatingml_gives_our_membership_with_our_evaluator(gated_sample):
    fcs, folder, keep = gated_sample
    ours = pd.read_parquet(folder / "gates.parquet")
    strategy = read_gatingml(folder / "gates.xml")
    masks = apply_strategy(strategy, event_source_from_fcs(read_fcs(fcs)))
    assert set(ours.columns) <= set(masks), set(ours.columns) - set(masks)
    assert {"b_cells", "b_naive", "car_t", "lymphocytes"} <= set(ours.columns)
    for pop in ours.columns:
        np.testing.assert_array_equal(masks[pop][keep], ours[pop].to_numpy()[keep], err_msg=pop)


def test_flowkit_reads_it_back_with_our_counts(gated_sample):
    fcs, folder, keep = gated_sample
    ours = pd.read_parquet(folder / "gates.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs = fk.parse_gating_xml(str(folder / "gates.xml"))
        results = gs.gate_sample(fk.Sample(fcs))
    report = results.report
    checked = 0
    for _, row in report.iterrows():
        name = row["gate_name"]
        if name not in ours:
            continue  # the parts of a population with `or:` rectangles
        theirs = np.asarray(results.get_gate_membership(name, gate_path=row["gate_path"]))
        assert int(theirs[keep].sum()) == int(ours[name].sum()), name
        assert np.array_equal(theirs[keep], ours[name].to_numpy()[keep]), name
        checked += 1
    assert checked == len(ours.columns)


def test_autogate_command_writes_the_same_gatingml(gated_sample, tmp_path):
    fcs, folder, keep = gated_sample
    out = tmp_path / "m.parquet"
    assert (
        cli.main(["autogate", fcs, "--out", str(out), "--gatingml", str(tmp_path / "g.xml")]) == 0
    )
    ours = pd.read_parquet(out)
    masks = apply_strategy(read_gatingml(tmp_path / "g.xml"), event_source_from_fcs(read_fcs(fcs)))
    for pop in ours.columns:
        np.testing.assert_array_equal(masks[pop][keep], ours[pop].to_numpy()[keep], err_msg=pop)


def test_a_sample_without_gates_gets_an_empty_document(tmp_path):
    """A failed sample still has its gates.xml (a workflow output): an empty Gating-ML root."""
    import xml.etree.ElementTree as ET

    from cytopipe.gating.gatingml import write_gatingml
    from cytopipe.gating.strategy import Strategy

    write_gatingml(Strategy([]), tmp_path / "g.xml")
    root = ET.parse(tmp_path / "g.xml").getroot()
    assert root.tag.endswith("Gating-ML") and len(root) == 0


def test_a_flowjo_workspace_of_the_samples_gives_our_counts_in_flowkit(gated_sample, tmp_path):
    """cytopipe export-flowjo: the sample with its own gates, compensation and transforms (and
    an OR node where a population has `or:` parts), and a sample without gates left out with
    the reason; FlowKit reads the workspace back with cytopipe's membership."""
    fcs, folder, keep = gated_sample
    from cytopipe.gating.gatingml import write_gatingml
    from cytopipe.gating.strategy import Strategy

    empty = tmp_path / "failed.xml"
    write_gatingml(Strategy([]), empty)  # what the workflow writes for a failed sample
    wsp = tmp_path / "batch.wsp"
    assert cli.main(["export-flowjo", "--gatingml", str(folder / "gates.xml"), str(empty),
                     "--fcs", fcs, str(tmp_path / "gone.fcs"), "--out", str(wsp)]) == 0  # fmt: skip
    text = wsp.read_text()
    assert "<OrNode" in text and "<Dependent " in text  # b_cells: CD19+ OR CD19-dim plasmablasts
    ours = pd.read_parquet(folder / "gates.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(wsp), fcs_samples=fcs)
        ws.analyze_samples()
        (sample_id,) = ws.get_sample_ids()
        results = ws.get_gating_results(sample_id)
    checked = set()
    for _, row in results.report.iterrows():
        name = row["gate_name"]
        if name in ours:
            theirs = np.asarray(results.get_gate_membership(name, gate_path=row["gate_path"]))
            assert np.array_equal(theirs[keep], ours[name].to_numpy()[keep]), name
            checked.add(name)
    assert checked == set(ours.columns)


def test_a_mass_cytometry_samples_gates_export_on_its_arcsinh(shared_data, tmp_path):
    """Mass cytometry stains are read on arcsinh (cofactor 5), which is Gating-ML's fasinh: the
    placed gates export (they were 'not exported: asinh scale') and FlowKit applying them to
    the raw file gives our membership on every event (the Lyoplate file as ion counts), the
    singlets on event length (linear, the file's own unit) x DNA too."""
    rng = np.random.default_rng(0)
    fcs = tmp_path / "helios.fcs"
    sample = read_fcs(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    stains = [i for i, n in enumerate(sample.pnn) if not n.startswith(("FSC", "SSC"))]
    counts = rng.poisson(np.clip(np.asarray(sample.events)[:, stains], 0, None) / 30.0)
    # with DNA and event length (and doublets): the cells and singlets gates export too
    dna = rng.lognormal(np.log(1000), 0.25, (len(counts), 2))
    events, _ = real_gating.with_doublets(np.column_stack([dna, counts]), len(counts), rng)
    real_gating.write_fcs(fcs, events, ["Ir191Di", "Ir193Di", "Event_length",
                                        *(f"Nd{142 + i}Di" for i in range(len(stains)))],
                          ["DNA1", "DNA2", "Event_length", *(sample.pns[i] for i in stains)],
                          {"$CYT": "Helios"}, 65536)  # fmt: skip
    out, xml = tmp_path / "m.parquet", tmp_path / "g.xml"
    assert cli.main(["autogate", str(fcs), "--out", str(out), "--gatingml", str(xml)]) == 0
    ours = pd.read_parquet(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = fk.parse_gating_xml(str(xml)).gate_sample(fk.Sample(str(fcs)))
    assert "fasinh" in xml.read_text() and ours["b_cells"].sum() > 1000
    assert ours["singlets"].sum() < ours["cells"].sum()  # gated, not passed
    for _, row in results.report.iterrows():
        if row["gate_name"] in ours:
            theirs = np.asarray(
                results.get_gate_membership(row["gate_name"], gate_path=row["gate_path"])
            )
            assert np.array_equal(theirs, ours[row["gate_name"]].to_numpy()), row["gate_name"]
