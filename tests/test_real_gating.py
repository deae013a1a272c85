"""The unedited template on real files we did not write: the Lyoplate B-cell panel (BD
LSRFortessa, human PBMC) against openCyto's automated gates, a peer tool (not truth), and the
FlowCAP-I GvHD T-cell panel (FACSCalibur, scatter heights only, no CD45, no CD19) against the
experts' per-event labels.

The B-cell titration removes every CD19+ event but k of openCyto's B cells. Targets are the
issue's; the measured figures are printed by benchmarks/real_gating.py and listed in the
README. What still misses a target is a strict xfail, so it is noticed when it starts to pass.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, benchmark

from cytopipe import cli
from cytopipe.config import read_yaml, validated
from cytopipe.gating.autogate import autogate
from cytopipe.gating.beyond_gate import rank_correlations
from cytopipe.gating.gates import evaluate
from cytopipe.gating.placement import unlike_reason
from cytopipe.gating.sample import gate_events
from cytopipe.gating.stats import f1_score, review_rows, unlike_template
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import SCATTER_ONLY, preprocess

real_gating = benchmark("real_gating")
real_fuzz = benchmark("real_fuzz")
gvhd_fuzz = benchmark("gvhd_fuzz")

TARGETS = {
    "b_cells": 0.95,
    "b_cd20pos": 0.95,
    "b_naive": 0.90,
    "b_unswitched_memory": 0.70,
    "b_switched_memory": 0.70,
    "b_double_negative": 0.70,
    "b_transitional": 0.70,
}
WITH_PLASMABLASTS = {**TARGETS, "plasmablasts": 0.70}


@pytest.fixture(scope="module")
def lyoplate(shared_data):
    return {row["population"]: row for row in real_gating.lyoplate(shared_data / "real")}


@pytest.mark.parametrize("population", [*sorted(TARGETS), "plasmablasts"])
def test_lyoplate_population_agrees_with_opencyto(lyoplate, population):
    """Plasmablasts: 0.66 until the lymphocyte outline left out a background component and
    CD19+ events of lymphocyte side scatter joined (0.78, 2026-12-01; 106 found then, 41 of
    them above openCyto's scatter gate)."""
    row = lyoplate[population]
    assert row["f1"] >= TARGETS.get(population, 0.70), row


def test_lyoplate_lymphocytes_are_not_stretched_by_a_background_component(lyoplate):
    """The scatter mixture (FSC x SSC: no CD45 here) gives the lymphocytes a neighbour 8x as
    spread, 42% lineage+, with no dip between: it counts for the posterior cut but not for the
    outline's ellipse (`MAX_CORE_SPREAD`). Its moments once stretched the gate to SSC 0.50:
    4,940 events beyond openCyto's gate, 80% lineage-negative, F1 0.950; 0.975 (2026-12-01)."""
    assert lyoplate["lymphocytes"]["f1"] >= 0.97, lyoplate["lymphocytes"]


@pytest.mark.parametrize("gain", ["1", "0.33", "2"])
def test_plasmablasts_agree_with_opencyto_within_its_scatter_gate(lyoplate, regained, gain):
    """Where we differ on purpose: plasmablasts are larger than lymphocytes and some of ours lie
    above openCyto's scatter lymphocyte gate (README). On the events inside that gate our
    CD20-, CD27 and CD38 cuts must find openCyto's plasmablasts: the CD38 cut is the valley of
    the sample's own CD20- B cells (was the transitional level: 0.79 here), the CD20 cut the
    valley between them and the CD20+ memory B cells of the same CD27 and CD38 (was the B
    cells' own CD20 cut: 0.89 here, x2 0.67 where the CD38-brightest events saturate; now
    0.94 and 0.85, 2026-12-01)."""
    row = lyoplate["plasmablasts"] if gain == "1" else regained[gain, "plasmablasts"]
    assert row["f1_in_their_lymph"] >= 0.70, row


@pytest.fixture(scope="module")
def gvhd(shared_data):
    return {(row["file"], row["population"]): row for row in real_gating.gvhd(shared_data / "real")}


@pytest.mark.parametrize("name", real_gating.GVHD_FILES)
def test_t_cells_of_a_t_cell_panel_without_cd45_agree_with_experts(gvhd, name):
    """F1 on the events the experts assigned to a population, as FlowCAP-I scored it (their
    'unassigned' debris, doublets and outliers are unknown, not negatives; both F1s print)."""
    row = gvhd[name, "t_cells"]
    assert row["f1"] >= row["target"], row


def test_t_cells_at_the_top_of_forward_scatter_count(gvhd):
    """GvHD file 9 holds 166 of the experts' T cells at FSC-H 1023, the top of the range: large,
    activated cells whose stains were measured. Removed as margin events (and by a 0.98
    ceiling of the cells gate) they were lost: F1 0.907; kept (`qc.saturated_scatter: keep`)
    and joined by phenotype, 0.961 (2026-12-01)."""
    assert gvhd["gvhd_09", "t_cells"]["f1"] >= 0.95, gvhd["gvhd_09", "t_cells"]


@pytest.fixture(scope="module")
def gvhd_t_rich(shared_data):
    return {row["file"]: row for row in real_gating.gvhd_t_rich(shared_data / "real")}


@pytest.mark.parametrize("i", real_gating.T_RICH)
def test_t_cells_of_a_t_cell_rich_sample_keep_their_large_t_cells(gvhd_t_rich, i):
    """Files 6, 7 and 9 with 70% of their non-T events removed: the scatter-only lymphocyte
    cluster is tight and the experts' large T cells sit beside it. CD3+ CD4+, CD3+ CD8+ and
    CD3-dim CD8 alpha-beta+ events join the lymphocytes wherever they sit (measured
    2026-12-01: 0.968, 0.941, 0.969; 0.777, 0.693, 0.770 when only CD3+ events of lymphocyte
    side scatter joined). Each file's own target."""
    row = gvhd_t_rich[f"gvhd_{i:02d}, T-rich"]
    assert row["f1"] >= row["target"], row


@pytest.fixture(scope="module")
def gvhd_voltages(shared_data):
    return {
        (r["file"], r["population"]): r for r in real_gating.gvhd_voltages(shared_data / "real")
    }


@pytest.mark.parametrize("setting", real_gating.VOLTAGES)
def test_t_cells_hold_at_another_instruments_lower_voltages(gvhd_voltages, setting):
    """A channel whose median fell below 5% of its range was put on logicle although the file's
    other channels were read as log channel numbers: file 2 with its stains 0.3 decades lower,
    T cells F1 0.327; file 3 at -0.5 decades 0.425 (measured 2026-12-02, before). A channel
    of the same range as one that holds channel numbers now does too: 0.923, 0.963; CD4
    alone lower, the CD4 T cells 0.977."""
    rows = [
        r for (label, _), r in gvhd_voltages.items() if label == real_gating.voltage_label(*setting)
    ]
    assert rows and all(r["f1"] >= r["target"] for r in rows), rows


@pytest.mark.parametrize("setting", real_gating.FORWARD_SCATTER)
def test_t_cells_hold_at_a_lower_forward_scatter_gain(shared_data, setting):
    """GvHD file 8 at FSC x0.4: the debris valley lay between the lymphocytes and the larger
    cells, T cells 0.71 (measured 2026-12-02); the events below it are lineage+ as often as
    those above (0.91), so it moves below them: 0.982. File 9 (0.908) keeps its valley (0.19)."""
    row = real_gating.gvhd_forward_scatter(shared_data / "real", (setting,))[0]
    assert row["f1"] >= row["target"], row


@pytest.mark.parametrize(("i", "method"), [(1, "backgated"), (8, "fallback")])
def test_a_debris_cut_without_a_valley_is_checked_on_the_lineage_markers(shared_data, i, method):
    """A FACSCalibur's acquisition threshold truncates the debris: no valley in the window, so
    the cut is the template's 0.06, and every GvHD file's debris gate was listed to review. Its
    events below are lineage+ 0.02 times as often as those above on file 1 (debris: checked,
    no longer a fallback, not to review), 0.18 times on file 8 (not told apart: still a
    fallback and listed). The count is the same either way."""
    path = shared_data / "real" / "flowcap1_gvhd" / f"gvhd_{i:02d}.fcs"
    _, gated = real_gating.gated_sample(path, SCATTER_ONLY)
    placed = gated.result.thresholds["fsc_debris"]
    assert placed.method == method and placed.value == 0.06, placed
    listed = "cells" in set(review_rows(gated.stats)["population"])
    assert listed == (method == "fallback") and ("debris, not cells" in placed.flag) != listed


@pytest.fixture(scope="module")
def display_values(shared_data):
    return real_gating.display_values(shared_data / "real")


@pytest.mark.parametrize("form", real_gating.DISPLAY_FORMS)
def test_display_scale_channel_values_are_gated_as_stored(display_values, form):
    """The Lyoplate file as an archive of gated data holds it (0-4095 on a biexponential
    display scale): a logicle on top of it lost every lymphocyte (B and T cells F1 0, under
    $PnR 4096 or the acquisition's 262144); with the acquisition's matrix kept, once read as
    stored, the matrix applied to the display values cost the plasmablasts 0.79 -> 0.58 and
    double negative 0.89 -> 0.79 (measured 2026-12-02). Read as stored on the range the values
    fill, not compensated again: as the file as acquired. Scatter exported as channel values
    too, under 262144, lay below the debris cut: no cells at all, until it was read alike."""
    label = real_gating.display_label(*form)
    rows = {r["population"]: r for r in display_values if r["file"] == label}
    assert rows["b_cd20pos"]["f1"] >= 0.95 and rows["t_cells"]["f1"] >= 0.95, rows
    assert all(r["f1"] >= r["target"] for r in rows.values() if r["target"]), rows


@pytest.mark.parametrize("form", list(real_gating.MISREAD))
def test_a_misread_matrix_gates_as_the_file_as_acquired(shared_data, form):
    """The Lyoplate file's matrix stored as the compensation matrix (its inverse): unswitched
    memory 0.26, plasmablasts 0.56; or transposed: B cells 0.002 (measured 2026-12-02/03).
    Inverted or turned back, every target met and each population within 0.01 of the file as
    acquired."""
    rows = real_gating.misread_matrices(shared_data / "real", forms=(form,))
    assert all(r["f1"] >= r["target"] for r in rows if r["target"]), rows
    acquired = {r["population"]: r["f1"] for r in real_gating.lyoplate(shared_data / "real")}
    for row in rows:
        assert abs(row["f1"] - acquired[row["population"]]) <= 0.01, row


def test_a_file_without_scatter_is_gated_on_its_stains(shared_data):
    """The Lyoplate file without FSC and SSC, and as a mass cytometry acquisition (ion counts,
    isotope channels, $CYT Helios): both were refused for want of FSC-A and SSC-A (2026-12-03).
    Without scatter nothing tells doublets and large cells from lymphocytes, so the marker cuts
    are scored inside openCyto's scatter lymphocyte gate (every target met) and on all events
    only where scatter plays no part (T cells, CD20+ B cells). With 8% doublets and an event
    length channel, the doublets count as negatives: without the singlets gate on event
    length x DNA, T cells 0.930 and unswitched memory 0.696 inside openCyto's lymphocytes,
    CD20+ B cells 0.929 on all events."""
    rows = real_gating.without_scatter(shared_data / "real")
    assert {r["file"] for r in rows} == {
        real_gating.NO_SCATTER, real_gating.MASS_CYTOMETRY, real_gating.MASS_DOUBLETS
    }  # fmt: skip
    assert any(r["population"] == "singlets" for r in rows)
    for row in rows:
        assert row["f1_in_their_lymph"] >= (row["target"] or 0.95), row
        if row["population"] in ("t_cells", "b_cd20pos"):
            assert row["f1"] >= 0.95, row


@pytest.mark.parametrize("what", [what for _, what in real_gating.LINEAGE_EXPORTS])
def test_an_export_of_one_lineage_is_gated_as_one_population(shared_data, what):
    """The Lyoplate file holding only openCyto's B cells, its CD19+ events or its T cells (a
    lab's export of one lineage). Measured 2026-12-03 before the fixes: B cells 0.953 but
    switched memory 0.615 (the scatter mixture split the B cells), CD19+ export B cells 0.18
    once that was fixed (36 CD19-dim events stood in for the negatives)."""
    gate = dict((w, g) for g, w in real_gating.LINEAGE_EXPORTS)[what]
    rows = real_gating.lineage_exports(shared_data / "real", exports=((gate, what),))
    assert any(r["target"] for r in rows)
    assert all(r["f1"] >= r["target"] for r in rows if r["target"]), rows


def test_a_mass_cytometry_file_says_why_its_scatter_gates_pass(tmp_path):
    """No 'no spillover matrix' warning for an instrument without optical spillover; the
    cells are the DNA intercalator's (normalisation beads left in the file are not), and the
    sample says its lymphocytes were not gated."""
    rng = np.random.default_rng(1)
    n, beads = 4000, 200
    cd3 = np.where(rng.random(n) < 0.6, rng.poisson(300, n), rng.poisson(2, n))
    cd19 = np.where(cd3 > 50, rng.poisson(1, n), rng.poisson(200, n) * (rng.random(n) < 0.3))
    cells = np.column_stack([rng.poisson(2, n), cd3, cd19, rng.lognormal(np.log(1000), 0.25, n)])
    bead = np.column_stack([rng.poisson(2, (beads, 3)), rng.poisson(3, beads)])
    path = tmp_path / "helios.fcs"
    real_gating.write_fcs(path, np.vstack([cells, bead]).astype(float),
                          ["Pt195Di", "Nd142Di", "Sm147Di", "Ir191Di"],
                          ["cisplatin", "CD3", "CD19", "191Ir_DNA1"], {"$CYT": "Helios"}, 65536)  # fmt: skip
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="t")
    pre = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg)
    warnings = " ".join(pre.info["provenance"]["warnings"])
    assert "mass cytometry ($CYT Helios)" in warnings and "no scatter channels" in warnings
    # read on arcsinh (cofactor 5) whatever $PnR declares: a logicle topped at a small declared
    # range resolved single ion counts as populations (CD20+ B cells F1 0.005)
    small = real_gating.write_fcs(tmp_path / "small.fcs", np.vstack([cells, bead]).astype(float),
                                  ["Pt195Di", "Nd142Di", "Sm147Di", "Ir191Di"],
                                  ["cisplatin", "CD3", "CD19", "191Ir_DNA1"], {"$CYT": "Helios"}, 512)  # fmt: skip
    other = preprocess(str(small), load_panel(REPO / "config" / "panel.yaml"), cfg)
    for marker in ("CD3", "CD19", "viability", "DNA"):
        assert np.allclose(other.columns[marker], pre.columns[marker]), marker
        assert pre.info["provenance"]["scales"][marker]["kind"] == "asinh"
    # ... so values above that $PnR move nothing: not the flow note "declared range ... is
    # nominal; scale top 262144" nor a QC warning for it (both, 2026-12-03)
    assert "declared range" not in " ".join(other.info["provenance"]["warnings"])
    assert other.info["qc"]["verdict"] == pre.info["qc"]["verdict"] == "pass"
    assert "no spillover matrix" not in warnings and pre.info["provenance"]["uncompensated"] is None
    keep = pre.qc_pass
    result = autogate(load_template(REPO / "config" / "gating.yaml"),
                      {m: v[keep] for m, v in pre.columns.items()})  # fmt: skip
    is_cell = (np.arange(n + beads) < n)[keep]
    assert f1_score(result.masks["cells"], is_cell) >= 0.99
    assert result.methods["cells"][2].startswith("gated on DNA")
    assert "lymphocytes" in result.passed and "live" not in result.passed
    assert result.plotted["live"] == ("viability", "CD3")  # no SSC-A to plot it against
    assert result.methods["lymphocytes"][2].startswith("not gated")
    t_cells, b_cells = (int(result.masks[p].sum()) for p in ("t_cells", "b_cells"))
    truth_t = int((cd3 > 50).sum())
    assert abs(t_cells - truth_t) <= 0.02 * truth_t, (t_cells, truth_t)
    assert b_cells > 0


def test_a_declared_range_far_above_the_values_is_read_on_the_range_they_fill(shared_data):
    """The Lyoplate file declaring a BD Accuri C6's 24-bit range: B and T cells F1 0 on a
    logicle topped there (measured 2026-12-02); read on the 18-bit range its values fill, every
    target of the file as acquired is met."""
    rows = real_gating.wide_ranges(shared_data / "real", tops=(2**24,))
    assert {r["population"] for r in rows} >= {"b_cd20pos", "t_cells", "plasmablasts"}
    assert all(r["f1"] >= r["target"] for r in rows if r["target"]), rows
    t_cells = next(r for r in rows if r["population"] == "t_cells")
    assert t_cells["f1"] >= 0.95, t_cells


def test_a_matrix_over_display_values_is_named_not_applied(shared_data, tmp_path):
    """The display values with the acquisition's $SPILLOVER kept under its $PnR 262144: read
    on the range they fill, the matrix not applied, and both said."""
    path = real_gating.write_display_values(shared_data / "real", tmp_path / "d.fcs", 262144, True)
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="test")
    prov = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg).info["provenance"]
    assert prov["spillover_source"] == "not applied: channel numbers" and not prov["uncompensated"]
    assert prov["transform"]["CD19"] == "linear/4096", prov["transform"]
    said = " ".join(prov["warnings"])
    assert "display-scale channel values" in said and "was not applied" in said, said


def _autogate(path, panel=REPO / "config" / "panel.yaml", **kwargs):
    """The QC-kept events' columns, the template's result on them, and the QC mask."""
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="test")
    pre = preprocess(str(path), load_panel(panel), cfg, **kwargs)
    keep = pre.qc_pass
    columns = {m: v[keep] for m, v in pre.columns.items()}
    return columns, autogate(load_template(REPO / "config" / "gating.yaml"), columns), keep


def test_lyoplate_subset_cuts_are_measured_on_the_file_not_fallen_back(shared_data):
    """Real memory B cells are a continuum in IgD and CD27: no valley, and the cuts sit where
    the naive peak's density turns (within 0.01-0.03 of openCyto's). Those are positions of
    this file, and say so: until session 20 every B-cell subset read 'fallback' in the
    statistics, as if the template's fixed positions had been used (what the issue's user
    saw), and the sample page marked each row to look at. So did the debris cut."""
    path = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    _, result, _ = _autogate(path)
    subsets = ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative",
               "b_transitional", "plasmablasts")  # fmt: skip
    for pop in subsets:
        method, confidence, flag = result.methods[pop]
        assert "fallback" not in method and "fallback" not in flag, (pop, method, flag)
        assert confidence >= 0.5, (pop, confidence)
    assert result.methods["b_naive"][0] == "turn"
    assert "density turn" in result.thresholds["igd"].flag
    # one CD27 cut for the quadrants, as openCyto's: the IgD- B cells' own shallow dip (their
    # density at the shared cut 1.2x that at the dip, within its noise) does not move theirs
    # (`own_through`)
    assert result.thresholds["cd27_switched"].value == result.thresholds["cd27"].value
    # no event below FSC 0.17 (the acquisition threshold): the debris window [0.03, 0.12] is
    # empty, any cut in it gives the same gate; it read 'template position', confidence 0.2
    assert result.methods["cells"][:2] == ("gap", 1.0), result.methods["cells"]


def test_a_failed_cd19_stain_is_not_read_as_aplasia(shared_data, tmp_path):
    """The Lyoplate file with its CD19 stain failed (a reagent left out, a dead tandem: each
    event's compensated CD19 drawn from the T cells', spilled back): no CD19+ B cells, as in
    aplasia, and it said 'as the template'. CD20 still marks the B cells: 11,000 CD3- CD20+
    lymphocytes outside the B-cell gate make the gate one to review and the sample unlike the
    template. The file as acquired is not."""
    path = tmp_path / "failed_cd19.fcs"
    _, failed, _ = _autogate(real_gating.write_failed_stain(shared_data / "real", path, "CD19"))
    assert failed.masks["b_cells"].sum() < 50
    look = failed.shapes["b_cells"]["as_template"]
    assert look.startswith("no: ") and "CD3- CD20+ lymphocytes outside" in look, look
    assert failed.methods["b_cells"][1] < 0.5 and "check the CD19 stain" in look
    _, original, _ = _autogate(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    assert "outside the B-cell gate" not in original.methods["b_cells"][2]


@pytest.mark.parametrize("factor, listed", [(0.03, True), (0.1, False)])
def test_a_dim_cd19_stain_that_hides_b_cells_is_listed(shared_data, tmp_path, factor, listed):
    """CD19 30x dimmer (a tandem that lost most of its signal, another reagent at a lower
    voltage): the B cells' CD19 sinks into the NK cells' and the gate kept 8,562 for openCyto's
    11,028, 'as the template': the failed-stain check needs more CD3- CD20+ lymphocytes
    outside the gate than inside. Now 2,400 CD3- lymphocytes as CD20-bright as the B cells
    (above their 5% quantile) outside the gate, 28% of it, list it to review (over 10% of the
    gate and 0.5% of the lymphocytes; 0.2% on the file as acquired, at most 0.6% over the
    random draw, 4% at x0.05, which loses 5% of the B cells). At x0.1 the B cells still part
    from the NK cells (F1 0.98) and nothing is said."""
    path = real_gating.write_dimmer_stain(shared_data / "real", tmp_path / "d.fcs", "CD19", factor)
    _, result, _ = _autogate(path)
    look = result.shapes["b_cells"]["as_template"]
    assert ("as CD20-bright as the B cells" in look) is listed, look
    if listed:
        assert look.startswith("no: ") and "check the CD19 stain" in look, look
        assert result.methods["b_cells"][1] < 0.5


def test_a_tandem_that_came_apart_is_listed_with_what_lifted_the_negatives(shared_data, tmp_path):
    """Half of CD27's PE-Cy7 signal in the PE detector (CD24), which the file's matrix does not
    compensate: the T cells, CD27+, read CD24 0.57 for 0.12, the B cells are no longer CD24+
    above them and the CD24 check lists the sample, as for a failed CD24 stain, though CD24 is
    fine. The note gives the T cells' level and names the other cause, so the reviewer looks
    at the compensation, not only at the CD24 reagent."""
    path = real_gating.write_dimmer_stain(
        shared_data / "real", tmp_path / "t.fcs", "CD27", 0.5, donor="CD24"
    )
    _, result, _ = _autogate(path)
    look = result.shapes["b_cd20pos"]["as_template"]
    assert "check the CD24 stain, or a spillover into CD24 that lifts the t_cells" in look, look
    assert float(look.split("t_cells median ")[1][:4]) > 0.4, look


@pytest.mark.parametrize("kept, listed", [(0.3, True), (0.9, True), (1.0, False)])
def test_a_cd20_tandem_that_came_apart_into_cd38_is_said(shared_data, tmp_path, kept, listed):
    """70% of CD20's APC-H7 signal in the APC detector (CD38's; APC-Cy7 tandems are known to
    come apart with light and fixation): every B cell's CD38 rises with its CD20, and the
    transitional B cells read 632 for openCyto's 1,070 (F1 0.62), 'as the template'. The cut
    still moves (what a cut on CD38 can do when CD38 holds CD20), but the naive B cells that
    are not transitional now show it: CD20 and CD38 rank-correlate 0.99 there (0.55 as
    acquired; 0.85 with 10% of CD20's signal moved), the sample is listed to review and each
    population cut on CD38 or CD20 says to check their compensation."""
    path = real_gating.write_dimmer_stain(
        shared_data / "real", tmp_path / "t.fcs", "CD20", kept, donor="CD38"
    )
    _, result, _ = _autogate(path)
    look = result.shapes["b_naive"]["as_template"]
    assert ("CD20 and CD38 rise together" in look) is listed, look
    flag = result.methods["b_transitional"][2]
    assert ("cut on CD38: check its compensation (see b_naive)" in flag) is listed, flag
    if listed:
        assert look.startswith("no: ") and result.methods["b_naive"][1] < 0.5


@pytest.fixture(scope="module")
def cd20_x3(shared_data, tmp_path_factory):
    """The Lyoplate file with CD20 x3: a reagent too bright for the detector."""
    path = tmp_path_factory.mktemp("cd20") / "b.fcs"
    return real_gating.write_dimmer_stain(shared_data / "real", path, "CD20", 3.0)


def test_b_cells_pinned_at_the_top_of_cd20_are_counted_where_they_certainly_belong(
    shared_data, cd20_x3
):
    """CD20 x3 (a reagent too bright for the detector): 1,759 events at CD20's top. QC
    removed them (B cells 0.931, transitional 0.480: the CD20-brightest B cells); gated as read,
    the under-compensated CD20 spill lifts their CD27 (unswitched memory 0.77 -> 0.49). Counted
    where their intervals (CD20 up to twice the top) lie inside the gates (2026-12-04): B cells
    0.984, naive 0.941, transitional 0.869, unswitched memory 0.792."""
    ref = real_gating._lyoplate_source(shared_data / "real")[1]

    def f1(settings=None) -> dict[str, float]:
        masks = real_gating.gated(cd20_x3, settings=settings)
        return {r["population"]: r["f1"] for r in real_gating._lyoplate_rows("x3", masks, ref)}

    counted, removed = f1(), f1({"qc": {"saturated_stains": "remove"}})
    assert removed["b_cd20pos"] < 0.94 and removed["b_transitional"] < 0.5, removed
    assert counted["b_cd20pos"] >= 0.98 and counted["b_transitional"] >= 0.85, counted
    assert counted["b_naive"] >= removed["b_naive"] + 0.01, (counted, removed)
    for subset in ("b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert counted[subset] >= removed[subset] - 0.005, (subset, counted, removed)


def test_the_workflow_steps_count_the_pinned_b_cells(cd20_x3, tmp_path, repo, monkeypatch):
    """The same file through the workflow's `preprocess` and `gate` steps: the events table
    carries which events sat at CD20's top (`at_top:CD20`), and the gate step counts them as the
    benchmark does; the statistics count them too."""
    from cytopipe import cli

    monkeypatch.chdir(repo)
    events, info, out = tmp_path / "S.parquet", tmp_path / "S.json", tmp_path / "gated"
    assert cli.main(["preprocess", str(cd20_x3), "--sample-id", "S", "--out-events", str(events),
                     "--out-info", str(info)]) == 0  # fmt: skip
    assert cli.main(["gate", str(events), "--info", str(info), "--out-dir", str(out)]) == 0
    table = pd.read_parquet(events)
    pinned, qc_pass = table["at_top:CD20"].to_numpy(), table["qc_pass"].to_numpy()
    assert pinned.sum() == 1759 and not qc_pass[pinned].any()
    masks = pd.read_parquet(out / "gates.parquet")
    expected = real_gating.gated(cd20_x3)
    assert masks["b_cd20pos"].sum() == expected["b_cd20pos"].sum()
    assert masks["b_cd20pos"][pinned].sum() > 1200
    stats = pd.read_csv(out / "stats.tsv", sep="\t").set_index("population")
    assert stats.loc["b_cd20pos", "count"] == masks["b_cd20pos"].sum()


@pytest.mark.parametrize("share", [0.15, 0.5])
def test_activated_naive_b_cells_are_not_taken_for_spillover(shared_data, tmp_path, share):
    """Lupus expands activated naive B cells (IgD+ CD27-, CD24- CD38-): beside the resting
    ones they make CD24 and CD38 vary together on the naive B cells, by biology. With 15% or
    half of the naive B cells so (their CD24 and CD38 x0.1) the two correlate 0.68 at most
    (0.56 as acquired), below the 0.8 that says spillover was left."""
    path = real_gating.write_activated_naive(shared_data / "real", tmp_path / "a.fcs", share)
    _, result, _ = _autogate(path)
    assert "check the compensation" not in result.methods["b_naive"][2]


def test_activated_t_cells_autofluorescence_is_not_taken_for_spillover(shared_data, tmp_path):
    """Large activated T cells (CAR-T expansion: most T cells can be blasts) carry more
    autofluorescence into every channel at once; with 80% of the T cells so (5 unstained SDs x
    a size factor) the stains they lack rank-correlate 0.83-0.89 on them, which would read as
    spillover left. Only pairs with CD27, which T cells carry bright, are judged there
    (`against`): 0.21 at most, and nothing is said."""
    path = real_gating.write_autofluorescent_t_cells(
        shared_data / "real", tmp_path / "a.fcs", 0.8, 5
    )
    columns, result, _ = _autogate(path)
    t_cells = result.masks["t_cells"]
    lacked = np.column_stack([columns[m][t_cells] for m in ("CD19", "IgD", "CD24")])
    assert rank_correlations(lacked).min() > 0.8  # the blasts' autofluorescence is there
    assert "check the compensation" not in result.methods["t_cells"][2]


@pytest.mark.parametrize(
    "factor, said_on",
    [(1.0, None), (0.85, None), (1.3, None), (0.7, "t_cells"), (0.6, "t_cells"),
     (0.5, "t_cells"), (1.5, "t_cells"), (2.0, "b_naive")],
)  # fmt: skip
def test_a_spillover_matrix_far_off_is_said(shared_data, tmp_path, factor, said_on):
    """The file's matrix with every spillover value x `factor` (a matrix from other controls,
    a file compensated twice): the B-subset cuts hold at x0.7 and x1.3 and fail beyond
    (unswitched memory 0.69 at x0.6, 0.63 at x0.5 and 0.67 at x1.5; plasmablasts 0.68 at
    x0.5), with nothing said. The T cells, which lack CD19, CD20, IgD and CD24 and mostly
    carry CD27, show it: CD27 and CD24 rank-correlate 0.85 at x0.7, 0.90 at x0.6, 0.92 at
    x0.5 and -0.93 at x1.5 (at most 0.43 as acquired and over the stress variants, 0.66 at
    x0.85, -0.86 at x1.3: within -0.9 to 0.8, since exact compensation of a large spill
    anti-correlates two unstained channels' noise, down to -0.75 over the random draw);
    doubled, the naive B cells also show CD20 and CD27 at -0.88 (0.03 as acquired)."""
    path = real_gating.write_spillover_error(shared_data / "real", tmp_path / "s.fcs", factor)
    _, result, _ = _autogate(path)
    said = {p for p in ("t_cells", "b_naive") if "check the compensation" in result.methods[p][2]}
    assert (said_on in said) if said_on else not said, said
    if said_on:
        assert result.shapes[said_on]["as_template"].startswith("no: ")
        assert "check its compensation" in result.methods["b_unswitched_memory"][2]


@pytest.mark.parametrize("factor,gain", [(1.15, 1.5), (1.2, 1.5), (1.25, 2.0)])
def test_an_over_compensated_file_at_another_gain_keeps_its_cd27_cut(
    shared_data, tmp_path, factor, gain
):
    """The matrix at x1.15-1.25 and fluorescence x1.5-2 (another instrument's gain): as at
    x1.15-1.25 (`test_a_spillover_matrix_off_by_a_factor_keeps_the_plasmablasts`), the CD27
    turn was pulled halfway to the T cells' CD27 peak, inside the naive B cells (x1.15, x1.5:
    unswitched memory 0.40); and further off, the naive B cells' CD27 split in two humps and
    the first density turn fell between them, below even the T cells' CD27 valley (0.31-0.33):
    unswitched memory 0.27 and 0.33, 'as the template'. A turn is now searched above that
    valley (`not_below: cd27_t`), and finds the naive B cells' edge (0.48-0.52)."""
    data = shared_data / "real"
    path = real_gating.write_spillover_error(data, tmp_path / "s.fcs", factor, gain)
    ref = real_gating._lyoplate_source(data)[1]
    masks = real_gating.gated(path)
    for pop in ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        theirs, target = real_gating.LYOPLATE[pop]
        f1 = f1_score(masks[pop].to_numpy(), ref[theirs].to_numpy(bool))
        assert f1 >= target, (pop, f1)


def test_a_cut_below_its_not_below_reference_is_raised_and_said(shared_data, tmp_path):
    """`not_below`: a CD27 cut on B cells that still lands below the T cells' CD27 valley (here
    forced by a search window ending at 0.26, below the file's T-cell valley, 0.275) is raised
    to that valley and the sample is unlike the template; without `not_below` it stays."""
    raw = yaml.safe_load((REPO / "config" / "gating.yaml").read_text())
    raw["thresholds"]["cd27"]["search"] = [0.20, 0.26]
    raw["thresholds"]["cd27"]["fixed"] = 0.25
    edited = tmp_path / "gating.yaml"
    edited.write_text(yaml.safe_dump(raw, sort_keys=False))
    columns, _, _ = _autogate(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    result = autogate(load_template(edited), columns)
    cd27, t_valley = result.thresholds["cd27"], result.thresholds["cd27_t"]
    assert t_valley.method == "valley" and cd27.value == t_valley.value > 0.26
    assert "raised to it" in result.shapes["b_naive"]["as_template"]
    del raw["thresholds"]["cd27"]["not_below"]
    edited.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert autogate(load_template(edited), columns).thresholds["cd27"].value <= 0.26


def test_b_cells_with_cd20_masked_are_listed_with_their_subsets(shared_data, tmp_path):
    """The Lyoplate file with its CD20 stain failed (each event's compensated CD20 drawn from
    the T cells', as anti-CD20 therapy masking the epitope leaves it): the B cells (CD19) still
    count, but the subsets, cut among the 756 of 11,488 B cells left CD20+, read 626 naive B
    cells (about 9,400 with CD20), and the CD20-low plasmablasts 176 (67), 'as the template'.
    Now the CD20+ gate is one to review, the sample unlike the template, each subset says it
    was cut among the CD20+ B cells only and the plasmablasts that they were cut on CD20. The
    file as acquired (99% of its B cells CD20+) carries none of it."""
    path = real_gating.write_failed_stain(shared_data / "real", tmp_path / "f.fcs", "CD20")
    _, masked, _ = _autogate(path)
    b_cells = real_gating._lyoplate_source(shared_data / "real")[1]["Live/CD19andCD20"]
    assert masked.masks["b_cells"].sum() == pytest.approx(b_cells.sum(), rel=0.05)
    look = masked.shapes["b_cd20pos"]["as_template"]
    assert look.startswith("no: ") and "CD20 masked" in look, look
    assert masked.methods["b_cd20pos"][1] < 0.5
    for subset in ("b_naive", "b_switched_memory", "b_transitional"):
        assert "cut among b_cd20pos only" in masked.methods[subset][2]
    assert "cut on CD20: most B cells CD20-" in masked.methods["plasmablasts"][2]
    _, original, _ = _autogate(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")
    assert "CD20 masked" not in original.methods["b_cd20pos"][2]
    assert original.shapes["b_cd20pos"]["as_template"] in ("", "yes")  # no stain failed either


@pytest.mark.parametrize(
    "marker, negative, subset",
    [
        ("IgD", "Live/CD3", "b_unswitched_memory"),
        ("CD24", "Live/CD3", "b_transitional"),
        ("CD27", "Live/CD19andCD20/IgD+CD27-", "plasmablasts"),
        ("CD38", "Live/CD3", "b_transitional"),
    ],
)
def test_a_failed_subset_stain_is_listed(shared_data, tmp_path, marker, negative, subset):
    """The Lyoplate file with its IgD, CD24, CD27 or CD38 stain failed: each event's
    compensated value drawn from cells without the marker (T cells; naive B cells for CD27,
    which most T cells carry; for CD38, which some T cells carry, the T cells' values: B and
    T cells then alike). The cuts on it split the background by their last resorts (998
    unswitched memory and 1,742 double-negative B cells for openCyto's 454 and 765; 11
    transitional for 1,070; no memory B cell and no plasmablast; CD38: 775 transitional and
    22 plasmablasts for 91), 'as the template'. Now the CD20+ B cells,
    among which they are cut, are to review and unlike the template, and the populations cut
    on the marker (or below one that is) say to check its stain. The file as acquired is not
    flagged (test above)."""
    path = real_gating.write_failed_stain(
        shared_data / "real", tmp_path / "f.fcs", marker, negative
    )
    _, failed, _ = _autogate(path)
    look = failed.shapes["b_cd20pos"]["as_template"]
    assert look.startswith("no: ") and f"check the {marker} stain" in look, look
    assert failed.methods["b_cd20pos"][1] < 0.5
    assert f"check the {marker} stain" in failed.methods[subset][2]
    assert "check the" not in failed.methods["b_cells"][2]


@pytest.fixture(scope="module")
def gvhd_07(shared_data):
    """File 7 (the most CD3-dim and large T cells) gated: columns, result, experts' labels."""
    path = shared_data / "real" / "flowcap1_gvhd" / "gvhd_07.fcs"
    columns, result, keep = _autogate(path, required=SCATTER_ONLY)
    labels = pd.read_csv(path.with_name("gvhd_07_labels.csv"))["label"].to_numpy()[keep]
    return columns, result, labels


def _joined(columns, result, population: str) -> np.ndarray:
    """Events of `population` outside the lymphocytes' scatter polygon (joined by `rescue`)."""
    scatter = {g.id: g for g in result.gates}["lymphocytes"]
    inside = evaluate([replace(scatter, parent=None)], columns)["lymphocytes"]
    return result.masks[population] & ~inside


def test_t_cells_outside_the_scatter_gate_join_by_cd3(gvhd_07):
    """Large (activated) T cells beside a scatter-only lymphocyte gate are CD3+ wherever they
    sit: the `rescue` joins them. On file 7 the joined events must be the experts' T cells,
    not monocytes: at least 90% of those the experts assigned (their 'unassigned' are unknown,
    as FlowCAP-I scored them: 53 of the 384 joined on 2026-12-01, 27 of them at the top of
    forward scatter; 303 T cells, 28 others)."""
    columns, result, labels = gvhd_07
    joined = _joined(columns, result, "lymphocytes") & (labels != "unassigned")
    experts_t = np.isin(labels[joined], real_gating.T_LABELS)
    assert joined.sum() >= 100 and experts_t.mean() >= 0.9, (joined.sum(), experts_t.mean())
    assert "CD3+ outside the lymphocyte gate" in result.methods["lymphocytes"][2]


def test_b_cells_outside_the_scatter_gate_join_by_cd19(shared_data):
    """Memory B cells and plasmablasts are larger than naive B cells: CD19+ CD3- events of
    lymphocyte side scatter outside the scatter gate join it, as CD3+ events do. On the Lyoplate
    file the joined events that openCyto calls live must be its CD19+ cells (measured
    2026-12-01: 403 joined, 294 live by openCyto's tighter viability cut, 98% of them CD19+;
    B cells 0.966 -> 0.981, plasmablasts 0.66 -> 0.78)."""
    path = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    columns, result, keep = _autogate(path)
    ref = pd.read_csv(path.with_name("lyoplate_bcell_C01_opencyto_gates.csv"))[keep]
    joined = _joined(columns, result, "b_cells") & ref["Live"].to_numpy(bool)
    assert joined.sum() >= 100 and ref["Live/CD19"].to_numpy()[joined].mean() >= 0.95
    assert "CD19+ outside the lymphocyte gate" in result.methods["lymphocytes"][2]


def test_cd3_dim_t_cells_join_by_cd8_alpha_beta(gvhd_07):
    """CD8 alpha-beta marks T cells only: below the CD3 valley, CD3-dim CD8a+ CD8b+ events
    join the T cells (`or`). On file 7 (880 CD3-dim 'other T cells') they must be the experts'
    T cells (measured: 207 joined, 91% theirs)."""
    columns, result, labels = gvhd_07
    below = result.masks["t_cells"] & (columns["CD3"] < result.thresholds["cd3"].value)
    experts_t = np.isin(labels[below], real_gating.T_LABELS)
    assert below.sum() >= 100 and experts_t.mean() >= 0.8, (below.sum(), experts_t.mean())


def test_the_cd8_t_cells_cd4_ceiling_raised_to_the_cd4_valley_is_not_a_surprise(shared_data):
    """`cd4_cd8pos` is the higher of two cuts (`quiet_floor`): on GvHD file 1 the CD8+ T
    cells' own CD4- edge (0.24) lies below the CD4 valley of all T cells (0.32), the usual
    case, so the flag says it was raised but the sample is as the template expects (before:
    4 of the 9 files listed as unlike the template for it)."""
    path = shared_data / "real" / "flowcap1_gvhd" / "gvhd_01.fcs"
    _, result, _ = _autogate(path, required=SCATTER_ONLY)
    placed = result.thresholds["cd4_cd8pos"]
    assert placed.value == result.thresholds["cd4"].value and "raised" in placed.flag
    assert not placed.unlike


@pytest.mark.parametrize("population", ["t_cd4", "t_cd8"])
def test_cd4_and_cd8_t_cells_split_as_the_experts_did(gvhd, population):
    """The template's CD4/CD8 valleys on the T cells (the cuts the CAR+ T cells are split by)
    against the experts' CD4 T and CD8 T populations. Measured (2026-12-03): CD4 0.86-0.99,
    median 0.978; CD8 0.84-0.98, median 0.917 (0.72-0.98, median 0.912, while the CD8 T cells'
    CD4 ceiling was the CD4 valley of all T cells: on file 6 it fell inside the CD8 T cells'
    own CD4 spread, 0.26, where the experts cut at about 0.4; now it is where the CD8+ T
    cells' CD4- population ends, `cd4_cd8pos`, if that is higher: 0.39. File 9's CD4 0.90 ->
    0.86 once its large T cells at the top of forward scatter counted: the experts call many
    of them 'other T cells'). Held: median >= 0.90, every file >= 0.80."""
    f1 = [gvhd[name, population]["f1"] for name in real_gating.GVHD_FILES]
    assert np.median(f1) >= 0.90 and min(f1) >= 0.80, f1


@pytest.fixture(scope="module")
def regained(shared_data):
    return {(row["file"].rsplit("x", 1)[1], row["population"]): row
            for row in real_gating.gains(shared_data / "real")}  # fmt: skip


@pytest.mark.parametrize("gain", ["0.33", "2"])
@pytest.mark.parametrize("population", [*TARGETS, "plasmablasts"])
def test_lyoplate_at_another_detector_gain_agrees_with_opencyto(regained, gain, population):
    """Another instrument or voltage: every fluorescence signal x0.33 or x2 (clipped at the
    channel's range). Cut-offs placed relative to the sample's own peaks and spreads hold; the
    transitional B cells, on fixed offsets and windows tuned to our generator, fell to F1 0.01
    at x0.33; plasmablasts at x2 were 0.55-0.63 (85 CD38-brightest events saturate) until the
    CD20 cut was placed among the CD27hi CD38hi B cells: 0.77 (2026-12-01)."""
    row = regained[gain, population]
    assert row["f1"] >= TARGETS.get(population, 0.70), row


@pytest.fixture(scope="module")
def dimmer_stain(shared_data):
    return {(row["file"], row["population"]): row
            for row in real_gating.stain_brightness(shared_data / "real")}  # fmt: skip


@pytest.fixture(scope="module")
def miscompensated(shared_data):
    return {(row["file"], row["population"]): row
            for row in real_gating.spillover_errors(shared_data / "real")}  # fmt: skip


@pytest.mark.parametrize("factor", real_gating.SPILLOVER_ERRORS)
def test_a_spillover_matrix_off_by_a_factor_keeps_the_plasmablasts(miscompensated, factor):
    """The file's matrix with every spillover x0.7 to x1.3 (a lab's matrix from other controls,
    a tandem dye that aged): the cells are the same, compensated wrongly. Under-compensated,
    the plasmablasts' bright CD27 (PE-Cy7) spills into CD20 (APC-Cy7, 0.33 of it) and lifts
    them above the B cells' CD20 cut: 0.44 at x0.7 and 0.61 at x0.85, until their CD20 cut
    became the valley among the CD27hi CD38hi B cells (0.76, 0.78; x1.3 0.83 -> 0.77).
    Over-compensated at x1.15 and x1.2, the CD27 cut was pulled into the naive B cells
    (unswitched memory 0.56, 0.54; `LIMIT_MINORITY` in cytopipe/gating/turns.py)."""
    for population, target in WITH_PLASMABLASTS.items():
        row = miscompensated[f"lyoplate C01, spillover x{factor:g}", population]
        assert row["f1"] >= target, row


@pytest.fixture(scope="module")
def uncompensated(shared_data):
    return {row["population"]: row for row in real_gating.uncompensated(shared_data / "real")}


UNCOMPENSATED_MISSES = {"b_unswitched_memory": 0.488, "plasmablasts": 0.569}  # 2026-12-01


@pytest.mark.parametrize("population", WITH_PLASMABLASTS)
def test_a_file_without_its_spillover_matrix_keeps_its_naive_b_cells(
    uncompensated, population, request
):
    """The file without `$SPILLOVER`, gated uncompensated (with a warning): CD20's spill lifts
    the naive B cells' CD27 to 0.50, above the window where the template looks for them
    (up to 0.35). The cut then fell back to the T cells' CD27 cut and every naive B cell
    counted as unswitched memory (naive 0, unswitched memory 0.08, double negative 0); it is
    now placed from the B cells' own majority peak (2026-12-01: naive 0.958, switched memory
    0.745, double negative 0.767, transitional 0.862). Uncompensated IgD+ CD27+ and plasmablast
    cells are beyond what the cuts can recover (UNCOMPENSATED_MISSES)."""
    if population in UNCOMPENSATED_MISSES:
        miss = f"uncompensated: F1 {UNCOMPENSATED_MISSES[population]}"
        request.applymarker(pytest.mark.xfail(strict=True, reason=miss))
    row = uncompensated[population]
    assert row["f1"] >= WITH_PLASMABLASTS[population], row


def test_a_file_without_its_spillover_matrix_is_listed_as_unlike_the_template(
    shared_data, tmp_path
):
    """...and says so: the B-cell quadrant's CD27 anchor was not where the template expects,
    on 11,000 B cells, so the sample is listed to review (it was 'as the template' with every
    naive B cell called memory)."""
    path = real_gating.write_uncompensated(shared_data / "real", tmp_path / "uncompensated.fcs")
    _, result, _ = _autogate(path)
    for population in ("b_naive", "b_unswitched_memory", "b_switched_memory"):
        look = result.shapes[population]["as_template"]
        assert look.startswith("no: cd27") and "not in [-0.2, 0.35]" in look, look
    assert result.shapes["b_cells"]["as_template"] == "yes"


@pytest.mark.parametrize("stain,factor", real_gating.STAIN_BRIGHTNESS)
def test_one_much_dimmer_stain_is_cut_where_opencyto_cuts(dimmer_stain, stain, factor):
    """A dimmer reagent moves one stain's populations down the scale: every cut follows the
    sample's own peaks, not the window the file's brightness suggested. Measured (2026-12-01):
    IgD x0.1 naive 0.986, unswitched 0.870, switched 0.951, double negative 0.963 (0.55 when
    the IgD window started at 0.25); CD3 x0.08 T cells 0.986 (0.938 from 0.25)."""
    for population, target in {**TARGETS, "t_cells": 0.95}.items():
        row = dimmer_stain[f"lyoplate C01, {stain} x{factor:g}", population]
        assert row["f1"] >= target, row


@pytest.fixture(scope="module")
def scatter_regained(shared_data):
    return {(row["file"].split(", ", 1)[1], row["population"]): row
            for row in real_gating.scatter_gains(shared_data / "real")}  # fmt: skip


@pytest.mark.parametrize("fsc,ssc", real_gating.SCATTER_GAINS)
def test_lyoplate_at_other_scatter_voltages_agrees_with_opencyto(scatter_regained, fsc, ssc):
    """Forward and side scatter x0.5, x1.8 or x0.6 / x1.5 (clipped at the range): lymphocytes
    sit elsewhere on every instrument. Measured (2026-12-01): lymphocytes 0.970-0.983, B cells
    0.971-0.980, naive 0.976-0.979. Both x0.05: every scatter value below 13,000 of 262,144,
    every cell below the debris cut (F1 0) until such scatter was read on the range it fills
    (2026-12-02: lymphocytes 0.970, B cells 0.971)."""
    label = f"scatter FSC x{fsc:g} SSC x{ssc:g}"
    for population, target in {**TARGETS, "lymphocytes": 0.95, "t_cells": 0.95}.items():
        row = scatter_regained[label, population]
        assert row["f1"] >= target, row


def test_cells_in_the_lowest_percent_of_the_scatter_range_are_lymphocytes(shared_data):
    """Forward and side scatter x0.03 with 0.5% clumps up to the range's top (a wide-range
    instrument's layout, as a BD Accuri C6's): the lymphocytes' cluster centre lay below the
    scatter mixture's sanity limit and every lymphocyte fell back to the template's polygon
    (B cells 0.928, lymphocytes 0.890, plasmablasts 0.069, measured 2026-12-02)."""
    rows = real_gating.low_scatter(shared_data / "real")
    assert all(r["f1"] >= r["target"] for r in rows if r["target"]), rows
    by = {r["population"]: r["f1"] for r in rows}
    assert by["lymphocytes"] >= 0.95 and by["t_cells"] >= 0.95, by


@pytest.fixture(scope="module")
def recomposed(shared_data):
    return {(row["file"].split(", ", 1)[1], row["population"]): row
            for row in real_gating.recomposed(shared_data / "real")}  # fmt: skip


def _recomposed_f1(row: dict, population: str) -> float:
    """B cells are scored within openCyto's scatter gate (our ~700 CD19+ events beyond it weigh
    more as B cells get fewer), every other population on all events."""
    return row["f1_in_their_lymph"] if population in ("b_cells", "b_cd20pos") else row["f1"]


# subsets of < 100 events are too few to score (memory in early reconstitution, all but the
# naive B cells with 3% of the lymphocytes)
RECOMPOSED_SCORED = {
    "early reconstitution": ("b_cells", "b_cd20pos", "b_naive", "b_transitional"),
    "early reconstitution, a quarter of the events": (
        "b_cells",
        "b_cd20pos",
        "b_naive",
        "b_transitional",
    ),
    "lymphopenic: 3% of lymphocytes kept": ("b_cells", "b_cd20pos", "b_naive"),
    # our B cells hold the plasmablasts, a tenth of them here, which openCyto's do not
    "plasmablast-rich: 5% of CD20+ B cells kept": ("b_cd20pos", "b_naive"),
    # openCyto's double negative: IgD-dim transitional B cells (136), the memory ones < 30
    "transitional-rich reconstitution: 1% of memory, 5% of other naive B cells kept": (
        "b_cells",
        "b_cd20pos",
        "b_naive",
        "b_transitional",
        "b_double_negative",
    ),
}


@pytest.mark.parametrize(
    "variant,population",
    [(v, p) for v in real_gating.RECOMPOSED for p in RECOMPOSED_SCORED.get(v, TARGETS)],
)
def test_other_b_cell_compositions_are_cut_where_opencyto_cuts(recomposed, variant, population):
    """Most naive B cells removed from the real file (memory-rich: the IgD- B cells become the
    majority; IgD searched only below the majority peak scored switched memory 0.07), most
    memory and non-transitional naive B cells (early reconstitution: the transitional B cells
    become the CD38 majority; transitional scored 0.004), most T cells (B cells the lymphocytes'
    majority: 6% of the T cells CD19+ doublets lifted the CD19 cut above the B cells, 0.18) or
    most lymphocytes (lymphopenic: the lymphocyte cluster under 10% of the events was not
    a candidate, B cells 0.004). Most memory B cells removed (memory-poor, as in young
    children: the IgD density turn, where both populations are equally likely, moved away from
    the naive peak with the smaller IgD- shoulder, double negative 0.52, unswitched memory 0.57;
    it now keeps within 2.5 SD of the peak, CD27 within 3). B cells are scored within
    openCyto's scatter gate (our ~700 CD19+ events beyond it weigh more as B cells get
    fewer)."""
    row = recomposed[variant, population]
    assert _recomposed_f1(row, population) >= TARGETS.get(population, 0.95), row


MEMORY_POOR = "memory-poor: 30% of memory B cells kept"
# compositions at an instrument setting of `real_gating.py --stress` (each drawn on its own, so
# the draws differ from the benchmark's, which draws them in a row)
STRESSED = [(MEMORY_POOR, "fluorescence x0.33"), (MEMORY_POOR, "fluorescence x2"),
            (MEMORY_POOR, "scatter x0.5"), ("10% of naive B cells kept", "fluorescence x2")]  # fmt: skip
# measured 2026-12-01 (session 15): (composition, setting, population) -> F1 of a known miss
STRESS_MISSES = {
    (MEMORY_POOR, "scatter x0.5", "b_unswitched_memory"): 0.619,  # the IgD cut (peak - 2.5 SD)
    (MEMORY_POOR, "scatter x0.5", "b_double_negative"): 0.686,  # falls below openCyto's
    # ("10% of naive B cells kept", "fluorescence x2", "b_naive") missed at 0.899 (CD20 off the
    # top of the scale) until CD19+ events smaller than the lymphocytes' peak - 4 SD stopped
    # joining them (`fsc_lymph`, session 63): 0.902
}


@pytest.fixture(scope="module")
def stressed(shared_data):
    rows = {}
    for variant, setting in STRESSED:
        fluorescence, fsc, ssc = real_gating.STRESS_SETTINGS[setting]
        for row in real_gating.recomposed(
            shared_data / "real", {variant: real_gating.RECOMPOSED[variant]},
            fluorescence=fluorescence, fsc=fsc, ssc=ssc,
        ):  # fmt: skip
            rows[variant, setting, row["population"]] = row
    return rows


@pytest.mark.parametrize(
    "variant,setting,population",
    [
        pytest.param(v, s, p, marks=pytest.mark.xfail(strict=True, reason=f"known miss, F1 {f1}"))
        if (f1 := STRESS_MISSES.get((v, s, p))) is not None
        else (v, s, p)
        for v, s in STRESSED
        for p in TARGETS
    ],
)
def test_a_composition_on_another_instrument_is_cut_where_opencyto_cuts(
    stressed, variant, setting, population
):
    """A child's memory-poor blood on an instrument three times dimmer (`--stress`). Without a
    CD27 valley, the density turn kept within 3 naive SDs cut into the naive B cells: the
    logicle scale narrows that SD at low gain (openCyto's cut 3.5 SDs out at x0.33, 2.7 at
    x2), unswitched memory 0.457 in the benchmark's draw (419 for openCyto's 124). The turn
    now keeps no further than halfway to the T cells' CD27 peak (`toward`; openCyto's cut lies
    0.46-0.49 of the way at every gain): 0.760 there, 0.748 in this draw. What still misses is
    a strict xfail with its figure."""
    row = stressed[variant, setting, population]
    assert _recomposed_f1(row, population) >= TARGETS.get(population, 0.95), row


def test_plasmablasts_of_a_plasmablast_rich_sample_are_not_cut_at_the_transitional_level(
    recomposed,
):
    """Active lupus: plasmablasts a tenth of the B cells (5% of openCyto's CD20+ B cells kept,
    all its 67 plasmablasts). The CD20- B cells are then nearly all plasmablasts: one
    population, no CD38 valley among them, and the fallback to the transitional B cells' CD38
    level (0.66) cut a fifth of them (F1 0.736). BIC finds one population above that level,
    so the cut is its own lower edge (median - 3 SD, 0.50; the valley on the whole file is
    0.48): 0.835 (2026-12-01). Also: the CD19 valley sits higher with few B cells (0.45 for
    0.40) and CD19-dim plasmablasts fall below it."""
    row = recomposed["plasmablast-rich: 5% of CD20+ B cells kept", "plasmablasts"]
    assert row["f1"] >= 0.80, row


@pytest.fixture(scope="module")
def lymphopenic(shared_data):
    rows = [*real_gating.lymphopenic_draws(shared_data / "real"),
            *real_gating.lymphopenic_draws(shared_data / "real",
                                           fluorescence=real_gating.LYMPHOPENIC_GAIN)]  # fmt: skip
    return {(row["file"], row["population"]): row for row in rows}


GAINS = (1.0, real_gating.LYMPHOPENIC_GAIN)


def lymphopenic_draw(seed: int, gain: float) -> str:
    return f"lyoplate C01, {real_gating.lymphopenic_label(seed, gain)}"


@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("seed", real_gating.LYMPHOPENIC_SEEDS)
def test_b_cells_of_every_lymphopenic_draw_agree_with_opencyto(lymphopenic, seed, gain):
    """A few lymphocytes beside many monocytes, as after CAR-T, drawn three times, as acquired
    and at fluorescence x2: the B cells hold in each draw (within openCyto's scatter gate, as
    the recomposed variants are scored). Draw 2 scored 0.17 when a broad monocyte-and-debris
    cluster joined the lymphocytes; at x2 every draw's lymphocyte gate held 14x their number
    (the backgating's CD20 cut fell in the negatives' tail: 97% 'bright')."""
    row = lymphopenic[lymphopenic_draw(seed, gain), "b_cells"]
    assert row["f1_in_their_lymph"] >= TARGETS["b_cells"], row


# measured 2026-12-01: four in session 13 (0.935-0.943), none from session 15 to 38; draw 3
# at x2 was 0.9501, 0.9498 from 2026-12-04 (the events at a stain's top count: 5 more
# lymphocytes, inside our scatter gate, not all inside theirs) to session 63, 0.9501 again
# since CD19+ events smaller than the lymphocytes' peak - 4 SD no longer join them
LYMPHOPENIC_LYMPHOCYTE_MISSES: dict[tuple[int, float], float] = {}  # (seed, gain) -> F1


@pytest.mark.parametrize(
    "seed,gain",
    [
        pytest.param(s, g, marks=pytest.mark.xfail(strict=True, reason=f"known miss, F1 {f1}"))
        if (f1 := LYMPHOPENIC_LYMPHOCYTE_MISSES.get((s, g))) is not None
        else (s, g)
        for s in real_gating.LYMPHOPENIC_SEEDS
        for g in GAINS
    ],
)
def test_lymphocytes_of_every_lymphopenic_draw_agree_with_opencyto(lymphopenic, seed, gain):
    """Without CD45, a few lymphocytes beside many monocytes: the scatter mixture gave them one
    broad component with the low-forward-scatter debris (F1 0.66-0.82, twice the events). A
    cluster under 75% lineage+ is now searched inside where the panel has CD3 and CD19, and a
    refit is kept when it halves the lineage- share (0.94-0.96). At fluorescence x2 the
    backgating took every event for lineage+ (F1 0.11): a marker 'bright' on over 95% of the
    events is now ignored. Draws 1 and 2 still missed (0.935-0.943): the posterior that cuts
    the outline weighed the lymphocytes 1/30 of the monocytes and the cut fell into their own
    edge (SSC 58k, openCyto's 66k); it now widens while the events it adds are lineage+ at
    least half as often as those inside (`mixture._backgated_outline`): 0.950-0.966."""
    row = lymphopenic[lymphopenic_draw(seed, gain), "lymphocytes"]
    assert row["f1"] >= 0.95, row


@pytest.mark.parametrize("seed", real_gating.LYMPHOPENIC_SEEDS)
def test_lymphocytes_of_every_lymphopenic_draw_without_cd3_agree_with_opencyto(shared_data, seed):
    """A B-cell panel without CD3 (and the Lyoplate file has no CD45), 3% of the lymphocytes
    beside many monocytes: the B cells were the only lineage+ events, so their share could not
    keep a cluster of monocytes and debris out of the lymphocytes (join_share and refine_share
    need T and B cells both marked), and it joined them: draws 1-3 0.767, 0.817, 0.656 (draw
    3: 3,133 events for 1,575). CD27, on most T cells and no myeloid cell, stands in for CD3
    there (`stand_in`): draw 3 0.954. In draws 1 and 2 the seeded refit was 1.49x and 1.34x
    as lineage+-rich and was refused (1.5x, or half the lineage- share): with CD27- T and NK
    cells lineage-, about 70% of the lymphocytes are lineage+ at best. A refit is now kept
    where it doubles the odds of lineage+ events (`mixture.REFINE_ODDS`): 0.942, 0.938, 0.954."""
    rows = real_gating.lymphopenic_draws(
        shared_data / "real", seeds=[seed], without=real_gating.LYMPHOPENIC_WITHOUT
    )
    row = next(r for r in rows if r["population"] == "lymphocytes")
    assert row["f1"] >= 0.93, row


def test_an_aplastic_t_poor_lymphopenic_file_without_cd45_is_not_gated_on_the_monocytes(
    shared_data, tmp_path
):
    """After CAR-T without CD45 in the panel: no B cells, a tenth of the T cells, 5% of the
    lymphocytes kept (T cells 0.6% of the events, NK cells most of the lymphocytes). The
    backgating needed 1% of the events on each side of a lineage valley and found none, and
    the lymphocyte gate took the monocytes: 24,981 events for openCyto's 605. Now the few T
    cells show where the lymphocytes are; the gate still holds debris beside them (NK cells
    carry no marker here to tell them from it), and says so: its confidence, measured on the
    whole parent and not only on the cluster it was refitted in (0.58 before), is below 0.5."""
    sample, ref, metadata = real_gating._lyoplate_source(shared_data / "real")
    rng = np.random.default_rng(3)
    b_lineage, lineage = real_gating._lineages(sample, ref)
    keep = ~b_lineage
    for pool, share in (
        (ref["Live/CD3"].to_numpy(bool), 0.1),
        (ref["lymph"].to_numpy(bool) | lineage, 0.05),
    ):
        members = np.flatnonzero(pool & keep)
        keep[rng.choice(members, int(len(members) * (1 - share)), replace=False)] = False  # fmt: skip
    path = real_gating._write_like(sample, sample.events[keep], tmp_path / "v.fcs", metadata)
    _, result, kept = _autogate(path)
    theirs = int(ref["lymph"].to_numpy(bool)[keep][kept].sum())
    ours = int(result.masks["lymphocytes"].sum())
    assert ours < 3 * theirs, (ours, theirs)
    assert result.methods["lymphocytes"][1] < 0.5, result.methods["lymphocytes"]


@pytest.fixture(scope="module")
def calibur(shared_data):
    return {(row["file"], row["population"]): row
            for row in real_gating.calibur(shared_data / "real")}  # fmt: skip


@pytest.mark.parametrize("panel,log_ssc", real_gating.CALIBUR_PANELS)
@pytest.mark.parametrize("population", sorted(real_gating.TARGETS_CALIBUR))
def test_a_facscalibur_era_b_cell_panel_is_gated_like_the_original(
    calibur, panel, log_ssc, population
):
    """The same cells as a FACSCalibur records them: scatter heights and log-amplifier channel
    numbers (no $PnE), no CD45, no viability; side scatter linear or on a log amplifier too (the
    lymphocytes at 0.5-0.75 of its range: 2 lymphocytes were found when the gate's centre had to
    lie below 0.40). Measured (2026-12-01): T cells 0.979 / 0.977, B cells 0.978 / 0.966."""
    row = calibur[real_gating.calibur_label(panel, log_ssc), population]
    assert row["f1"] >= row["target"], row


@pytest.mark.parametrize("missing", ["CD3", "CD20", "CD19"])
def test_a_b_cell_panel_without_cd3_cd20_or_cd19_still_finds_the_b_cells(
    shared_data, tmp_path, missing
):
    """B-cell panels often carry no CD3 (or no CD20). Without CD3 the B cells are the CD19+
    lymphocytes (cut above the CD19-negative majority, `cd19_lymph`); without CD20 the subsets
    are cut on all B cells (`optional: pass`); without CD19 (CD20 in its place, as after CD19
    loss) they are the CD3- CD20+ lymphocytes. Plasmablasts need CD19 and CD20 (told from B
    cells by CD20): absent without them, with the reason, not undercounted. Without CD3 they
    are the CD19+ CD27++ CD38++ CD20-low B cells, their CD20 valley no lower than the B cells'
    own cut on all lymphocytes (`cd20_pb_lymph`); only the CD19-dim ones, told from NK cells
    by CD3, are lost (F1 0.72 against openCyto's; 0 before session 47: not gated, said).
    Measured (2026-12-01): B cells 0.957 without CD3, 0.967 without CD20, 0.975 without CD19
    (0 before: no gate).

    Without CD3, CD20 is cut on all lymphocytes (`cd20_lymph`; cd20 is placed on CD3- ones)
    and CD19+ events outside the scatter gate with lymphocyte side scatter join as they do with
    CD3 (the rescue part `only_without: [CD3]`). Before (session 41), every B cell passed as
    CD20+ and openCyto's B cells beside the scatter gate stayed out: switched memory 0.849,
    double negative 0.748 (0.928, 0.879 with CD3); now each subset is within 0.04 of the full
    panel's (0.915, 0.866)."""
    path = real_gating.panel_without([missing], tmp_path)
    fcs = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    required = ["FSC-A", "SSC-A"]
    masks = real_gating.gated(fcs, required=required, panel=path)
    ref = pd.read_csv(fcs.with_name("lyoplate_bcell_C01_opencyto_gates.csv"))
    scored = ("b_cells", "b_naive") + (("plasmablasts",) if missing == "CD3" else ())
    for ours, (theirs, _) in real_gating.LYOPLATE.items():
        if ours in scored:
            f1 = f1_score(masks[ours].to_numpy(), ref[theirs].to_numpy(bool))
            assert f1 >= WITH_PLASMABLASTS[ours], (ours, f1)
    assert ("plasmablasts" in masks) == (missing == "CD3") and "b_transitional" in masks
    _, result, _ = _autogate(fcs, panel=path, required=required)
    if missing == "CD3":  # the sample page says how the B cells were gated
        assert "gated on CD19 x SSC-A: no CD3 channel" in result.methods["b_cells"][2]
        assert "b_cd20neg" not in result.skipped
        # the rescue part `only_without: [CD3]`: openCyto's B cells beside our scatter gate
        # join the lymphocytes as with CD3 (2 of 11,028 left outside; 183 without the part)
        b_cells = ref[real_gating.LYOPLATE["b_cd20pos"][0]].to_numpy(bool)
        assert (b_cells & ~masks["lymphocytes"].to_numpy()).sum() <= 20
        full = real_gating.gated(fcs, required=required)
        for ours in [p for p in real_gating.LYOPLATE if p.startswith("b_") and p != "b_cells"]:
            theirs = ref[real_gating.LYOPLATE[ours][0]].to_numpy(bool)
            f1, f1_full = (f1_score(m[ours].to_numpy(), theirs) for m in (masks, full))
            assert f1 >= f1_full - 0.04, (ours, f1, f1_full)
    else:
        assert result.skipped["b_cd20neg"] == f"no {missing} channel", result.skipped
        assert result.skipped["plasmablasts"] == f"no {missing} channel", result.skipped


PREGATED = "pre-gated on lymphocytes (openCyto's scatter gate)"


def test_a_file_pre_gated_on_lymphocytes_is_not_split(recomposed):
    """An export holding only lymphocytes is one population: the scatter mixture finds four
    components, and the side-scatter-higher one (52% lineage+, against 97% in the chosen one,
    NK cells among them) lay beyond a dip; it joins by its lineage+ share (`join_bright`).
    Measured: lymphocytes F1 0.926 -> 0.990, B cells 0.949 -> 0.984, switched memory 0.677 ->
    0.933, plasmablasts 0.41 -> 0.88."""
    assert recomposed[PREGATED, "lymphocytes"]["f1"] >= 0.98, recomposed[PREGATED, "lymphocytes"]


@pytest.fixture(scope="module")
def titration(shared_data):
    return {
        (background, row["ref"]): row["ours"]
        for background, how in TITRATION_BACKGROUNDS.items()
        for row in real_gating.titration(shared_data / "real", **how)
    }


TITRATION_BACKGROUNDS = {
    "whole file": {},
    "pre-gated": {"pregated": True},
    "pre-gated with CD45": {"pregated": True, "cd45": True},
}


@pytest.mark.parametrize("background", TITRATION_BACKGROUNDS)
@pytest.mark.parametrize("kept", real_gating.TITRATION)
def test_b_cells_removed_from_a_real_file_are_not_invented(titration, kept, background):
    """Aplasia on a real background: 0, 5 or 20 B cells left must stay (near) that few; 100
    and 500 are counted within 20%. Also on the file pre-gated on lymphocytes, where the
    issue's user found 56 B cells for 100 and 220 for 500, with and without a CD45 channel
    (that user's export had one: lymphocytes gated on CD45 x SSC)."""
    found = titration[background, kept]
    assert real_gating.titration_target(kept, found), (kept, found)


@pytest.fixture(scope="module")
def pregated_cd45(shared_data):
    return {row["population"]: row for row in real_gating.pregated_cd45(shared_data / "real")}


@pytest.mark.parametrize("population", [*WITH_PLASMABLASTS, "lymphocytes"])
def test_an_export_pre_gated_on_lymphocytes_with_cd45_is_not_split(pregated_cd45, population):
    """The issue's export: pre-gated on lymphocytes, with CD45 (drawn per event by openCyto's
    populations, B cells a little CD45-dimmer; the scatter and stains are the file's). One
    population on CD45 x SSC: a mixture that split it kept 42% of the lymphocytes there.
    Measured (2026-12-01): lymphocytes 0.993, B cells 0.986, naive 0.982, unswitched memory
    0.851, switched 0.935, double negative 0.877, transitional 0.902, plasmablasts 0.880; the
    same within 0.01 with T and B cells 0.3 decades apart on CD45 (two CD45 peaks)."""
    target = {**WITH_PLASMABLASTS, "lymphocytes": 0.98}[population]
    assert pregated_cd45[population]["f1"] >= target, pregated_cd45[population]


def test_the_autogate_command_gates_a_t_cell_panel_without_cd19(shared_data, tmp_path, capsys):
    """`cytopipe autogate` gates one file by hand, whatever its panel: a FlowCAP-I T-cell file
    (no CD19, no CD45) gets its lymphocytes and T cells, as the benchmark gates them, and the
    B-cell populations are listed as skipped with the reason (it stopped at 'no channel for
    required marker CD19' before)."""
    from cytopipe import cli

    fcs = shared_data / "real" / "flowcap1_gvhd" / "gvhd_07.fcs"
    out = tmp_path / "members.parquet"
    assert cli.main(["autogate", str(fcs), "--out", str(out)]) == 0
    members = pd.read_parquet(out)
    labels = pd.read_csv(fcs.with_name("gvhd_07_labels.csv"))["label"]
    assigned = (labels != "unassigned").to_numpy()
    t = labels.isin(real_gating.T_LABELS).to_numpy()
    assert f1_score(members["t_cells"].to_numpy()[assigned], t[assigned]) >= 0.80
    err = capsys.readouterr().err
    assert "skipped b_cells: no CD19 channel" in err and "--panel" in err


def test_viability_cut_holds_where_live_lymphocytes_are_the_minority(shared_data, tmp_path):
    """The viability dye's negative peak is the dimmest, not always the largest: on the Lyoplate
    file, monocytes sit a little brighter (autofluorescence: 21,000 events at 0.38-0.52, FSC and
    SSC of myeloid cells, 2% in openCyto's lymphocyte gate) and the dead cells beyond a valley
    at 0.55. With 80% of openCyto's live cells removed (mostly lymphocytes) the monocytes are
    the majority; the anchor took the median of its window then, 0.39, found no valley beyond
    it + 4 SD and cut at 0.80, above half of the dead cells. The lowest peak keeps the cut."""
    sample, ref, metadata = real_gating._lyoplate_source(shared_data / "real")
    whole = _autogate(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs")[1]
    live = np.flatnonzero(ref["Live"].to_numpy(bool))
    keep = np.ones(len(ref), dtype=bool)
    keep[np.random.default_rng(1).choice(live, int(0.8 * len(live)), replace=False)] = False
    path = real_gating._write_like(sample, sample.events[keep], tmp_path / "thin.fcs", metadata)
    whole, thinned = whole.thresholds["viability"], _autogate(path)[1].thresholds["viability"]
    assert thinned.method == "valley" and abs(thinned.value - whole.value) < 0.02, (whole, thinned)


# benchmarks/real_fuzz.py's and gvhd_fuzz.py's whole draws run in `make bench` (-m slow);
# `make test` runs their first quarter, which kept CI within its time.
WHOLE_DRAW, QUICK_DRAW = 100, 25
DRAWS = [
    pytest.param(QUICK_DRAW, id="first quarter of the draw"),
    pytest.param(WHOLE_DRAW, id="whole draw", marks=pytest.mark.slow),
]


def test_optional_perturbations_leave_the_reported_draws_files_as_they_were(shared_data, tmp_path):
    """`--photon` and `--donor` are drawn after every other perturbation, so a seed draws the
    same file without them as before they existed (regression tests name such seeds); with
    `--donor` the drawn population's level of its stain is scaled in the written file, and
    no other event's."""
    sample, ref, metadata, spill, compensated = real_gating._compensated_source(
        shared_data / "real"
    )
    pools = real_gating.recomposable(sample, ref)
    stains = set()
    for seed in real_fuzz.fuzz_seeds(12):
        keep, params = real_fuzz.draw(np.random.default_rng(seed), pools)
        more_keep, more = real_fuzz.draw(np.random.default_rng(seed), pools, True, True)
        assert np.array_equal(keep, more_keep)
        assert {k: v for k, v in more.items() if k not in ("photon", "donor")} == params
        stain, pool, level = more["donor"]
        assert (stain, pool) in real_fuzz.DONOR_SHIFTS and 0.5 <= level <= 2.0
        stains.add(stain)
    assert len(stains) >= 3
    config = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config")
    panel = load_panel(REPO / "config" / "panel.yaml")
    igd = []
    for name, donor in (("d", ("IgD", "naive", 0.5)), ("p", None)):
        path = tmp_path / f"{name}.fcs"
        drawn = {**params, "donor": donor}
        real_fuzz.write(sample, spill, compensated, keep, drawn, metadata, path, pools)
        igd.append(preprocess(str(path), panel, config).columns["IgD"])
    naive = pools["naive"][keep]
    assert np.median(igd[0][naive]) < np.median(igd[1][naive]) - 0.05
    assert np.allclose(igd[0][~naive], igd[1][~naive], atol=1e-3)


@pytest.mark.parametrize("files", DRAWS)
def test_random_combinations_of_real_perturbations_never_miss_silently(shared_data, files):
    """The real file changed several ways at once (composition, one stain's brightness, gains,
    the matrix x0.85-1.15, stains left out of the panel, wider negatives, an export that clips
    them, an export of display-scale values, a matrix written transposed: 4 files, each gated as
    it would be with the matrix the right way round), as a lab's file differs: a target may be missed,
    but then the sample must say so (unlike the template, a gate to review, or a file check).
    In the whole draw (100 files; `make test` gates the first 25), 3 files miss 4 of 468
    targets (session 61; 13 in 8 files earlier), each listed: memory subsets
    where a dim CD27 stain (x0.34-0.46) meets noise (SD 154-225). Before: the matrix x1.14
    with 5% of the T cells left (no CD27 valley on them), transitional B cells at fluorescence
    x2.2-2.5 (QC removes a third of them at the top of CD38 or CD24 and says so); a clipped
    export at fluorescence x2.5 missed 4 until the CD27 cut's far-side valley was searched
    above the T cells' CD27 cut only. Before the CD27 turn was searched above the T cells' CD27
    valley, one missed silently (unswitched memory 0.67: the matrix x1.11, CD20 x2,
    fluorescence x0.43)."""
    table = real_fuzz.run(shared_data / "real", real_fuzz.fuzz_seeds(files))
    assert table["target"].notna().sum() > 4 * files
    quiet = real_fuzz.silent(table)
    assert quiet.empty, quiet[["seed", "population", "f1", "params"]].to_string()


@pytest.mark.parametrize("files", DRAWS)
def test_t_cells_of_perturbed_gvhd_files_hold_or_say_so(shared_data, files):
    """The real GvHD files at other voltages (each stain -0.5 to +0.3 decades), scatter gains
    (x0.6-1.5) and compositions (`benchmarks/gvhd_fuzz.py`, 100 files, the first 25 in `make
    test`): the T cells' median F1 stays >= 0.90, and a T-cell gate below its target and more
    than 0.03 below the best CD3 cut of that file lists the T cells or the lymphocytes
    (measured 2026-12-03: median 0.955, 3 misses, each with a tenth of the T cells left, T
    cells 1-4% of the events, all listed)."""
    table = gvhd_fuzz.run(shared_data / "real", gvhd_fuzz.fuzz_seeds(files))
    t_cells = table[table["population"] == "t_cells"]
    assert len(t_cells) == files and t_cells["f1"].median() >= 0.90
    quiet = gvhd_fuzz.silent(t_cells)
    assert quiet.empty, quiet[["seed", "file", "f1", "bound", "params"]].to_string()


def test_b_cells_running_off_the_top_of_cd20_make_qc_warn(shared_data):
    """Seed 709922625 of label "session 35" (CD20 x2.48, IgD left out): 3,832 events pinned
    at the top of CD20's detector, 28% of the B cells, were removed with a note, but the
    verdict stayed pass and the missed CD20+ and transitional B cells said nothing on the
    cohort page. Now QC warns and names the marker; the real file as acquired (138 B cells at
    CD20's top, 0.14% of its events) keeps its note and stays pass. Since 2026-12-04 the
    pinned B cells are counted where they certainly belong (cytopipe.gating.saturated):
    CD20+ B cells 0.949 -> 0.989, transitional 0.559 -> 0.787, and the warning stays."""
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="t")
    path = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    qc = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg).info["qc"]
    assert qc["verdict"] == "pass" and any(n.startswith("R780-A (CD20): 138 ") for n in qc["notes"])
    table = real_fuzz.run(shared_data / "real", [709922625])
    assert not table["miss"].any(), table.to_string()
    assert (table["file_checks"] == "QC warn").all()
    assert any("counted where they belong" in n for n in qc["notes"] if "(CD20)" in n), qc["notes"]


def test_subset_cuts_are_placed_with_b_cells_pinned_at_the_top_of_cd20(shared_data):
    """Seed 107789691 of label "session 43b": CD20 x1.8 at fluorescence x2.2, a twentieth of
    the naive B cells kept. 1,680 events sat at the top of CD20, half the B cells, and QC held
    them out of placing every cut: the IgD cut saw a memory-rich remainder and went below the
    IgD- B cells (switched memory 0.145, double negative 0.068). Their IgD is known whatever
    their CD20, so the B-cell subsets' cuts are placed with them
    (`cytopipe.gating.saturated.placed`): 0.82, 0.84. Naive B cells stay short (0.50): their
    CD27 is not known (CD20's spill under-compensated), so they count in no subset; the naive
    row says so (`UNDECIDED_SHARE`: 757 pinned events may be naive beside 463 counted), where
    before only the plasmablasts' clamped CD38 cut had the B cells listed."""
    table = real_fuzz.run(shared_data / "real", [107789691]).set_index("population")
    for population in ("b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert table.loc[population, "f1"] >= 0.70, table.to_dict()
    assert "may belong here" in str(table.loc["b_naive", "unlike_template"]), table.to_dict()


def test_b_cells_pinned_at_cd20_x5_place_their_subset_cuts_where_they_certainly_belong(
    shared_data, tmp_path
):
    """The Lyoplate file with CD20 x5: half the B cells at CD20's top. Placed without them, the
    subsets' cuts saw the CD20-dimmer half (double negative 0.581). Placed with them where they
    certainly belong, in the stains whose value they show: 0.714. Counted where they read (as
    a first version did), the pinned B cells whose CD27 reads high (CD20's spill, under-
    compensated) filled the CD27++ CD38++ B cells and the plasmablasts' CD20 cut fell back
    (0.71 -> 0.39)."""
    ref = real_gating._lyoplate_source(shared_data / "real")[1]
    path = real_gating.write_dimmer_stain(shared_data / "real", tmp_path / "b.fcs", "CD20", 5.0)
    masks = real_gating.gated(path)
    f1 = {r["population"]: r["f1"] for r in real_gating._lyoplate_rows("x5", masks, ref)}
    assert f1["b_double_negative"] >= 0.70 and f1["plasmablasts"] >= 0.65, f1


def test_negatives_split_by_the_scale_with_a_wider_upper_half_are_not_cut_between(shared_data):
    """Seed 259807877 of the reported real_fuzz draw with `--photon`: photon noise
    (variance 89 x the signal) and fluorescence x1.93 widen the B cells' CD27- population
    past logicle W 0.5's linear region. The scale splits it in two humps at -0.12 and 0.41 about 0 (0.11); the photon
    noise makes the upper one wider, its peak beyond the lower one's mirror (0.34). The dip
    between them (0.17) was the CD27 cut: 1,274 unswitched memory B cells for openCyto's 153
    (F1 0.19), naive 0.69, nothing said of the cut. Read as the split it is
    (`densities.MIRROR_SLACK`), the cut is the density turn above the upper hump (0.54):
    unswitched memory 0.73, naive 0.95, switched memory 0.85."""
    table = real_fuzz.run(shared_data / "real", [259807877], photon=True).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.90, table.to_dict()
    for population in ("b_unswitched_memory", "b_switched_memory"):
        assert table.loc[population, "f1"] >= 0.70, table.to_dict()


def test_a_last_resort_counts_range_reaches_its_cut_by_the_wider_flank(shared_data):
    """Seed 259807944 of the reported real_fuzz draw with `--photon`: photon noise
    (variance 32 x the signal), CD19 x1.62, half the memory B cells and 58% of the events
    kept. IgD shows no valley and no
    turn; the last resort, the naive peak - 2 SD, takes the SD of the peak's narrower upper
    side (0.059), where photon noise widened the lower one (0.085), and cuts at 0.49 (the best
    cut 0.47): 599 double-negative B cells for openCyto's 220 (F1 0.54), its range 284-1,088
    as its cuts move, nothing said. The range now reaches the cut by the lower side's SD as
    well (`anchors._flank_sd`): 137-1,088, which holds openCyto's count and is said (more than
    5-fold)."""
    table = real_fuzz.run(shared_data / "real", [259807944], photon=True).set_index("population")
    dn = table.loc["b_double_negative"]
    assert dn["ours_low"] <= dn["ref"] <= dn["ours_high"], dn.to_dict()
    assert "b_double_negative: its count ranges" in dn["unlike_template"], dn.to_dict()


def test_the_igd_negative_b_cells_cd27_valley_stands_in_for_a_last_resort(shared_data):
    """Seed 198822555 of real_fuzz --donor --label "61f donor": another donor's memory B cells
    with CD27 x0.6 (closer to the naive B cells'), 5% of the naive B cells and 28% of the
    events (900 B cells). CD27 among all B cells is a continuum: no valley, shoulder or turn,
    and the last resort (majority peak + 3 SD) lay past the window: 6 unswitched memory B
    cells for openCyto's 126 (F1 0.08), transitional 0.49 (said). Among the IgD- B cells
    (`cd27_switched`, placed on its own) CD27- and CD27+ part at a valley, 0.39, where the
    best quadrant's CD27 cut is 0.40; that valley now stands in for the last resort
    (`lends`): unswitched memory 0.77, naive 0.89, transitional 0.97. A panel without IgD has
    no IgD- B cells to look at: the last resort stays, said (placing the lender there raised
    a KeyError in a first version)."""
    table = real_fuzz.run(shared_data / "real", [198822555], donor=True).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.70, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.85 and table.loc["b_transitional", "f1"] >= 0.90
    without = real_fuzz.run(shared_data / "real", [198822555], ["IgD"], donor=True)
    said = without.set_index("population").loc["b_transitional", "unlike_template"]
    assert "cd27: majority peak 0.31 + 3 SD" in said, said


def test_a_miss_no_quadrant_meets_is_told_from_a_misplaced_cut(shared_data):
    """real_fuzz prints, beside each missed IgD x CD27 subset, the best F1 against openCyto an
    IgD and a CD27 cut chosen with its gates reach among our CD20+ B cells. Seed 234035385 of
    real_fuzz --photon --donor --label "62d" (memory B cells' CD27 x0.51, photon noise): their
    CD27 runs into the naive B cells', unswitched memory 0.52 and 0.62 at best, below the
    target 0.70 whatever places the cuts. Seed 198440591 of "62 photon" (half the memory B
    cells, CD27 x0.51 overall): 0.68, where 0.88 is reachable, a misplaced cut (the CD27 turn
    at 0.39 kept halfway to the T cells' CD27 peak, 0.33). The bound is never below our own
    F1 (our cuts are among those it tries), and only quadrant subsets that miss carry one."""
    overlap = real_fuzz.run(shared_data / "real", [234035385], photon=True, donor=True)
    limited = real_fuzz.run(shared_data / "real", [198440591], photon=True)
    for table in (overlap, limited):
        bounded = table[table["best_quadrant_f1"].notna()]
        assert set(bounded["population"]) <= set(real_fuzz.QUADRANTS) and bounded["miss"].all()
        assert (bounded["best_quadrant_f1"] >= bounded["f1"]).all(), bounded.to_dict()
    unsw = overlap.set_index("population").loc["b_unswitched_memory"]
    assert unsw["miss"] and unsw["best_quadrant_f1"] < unsw["target"], unsw.to_dict()
    reachable = limited.set_index("population").loc["b_unswitched_memory"]
    assert reachable["best_quadrant_f1"] >= 0.85, reachable.to_dict()


def test_a_negative_minoritys_igd_dip_is_the_cut_at_a_few_events(shared_data):
    """Seed 447505884 of real_fuzz --label "session 64b": a tenth of the naive B cells and a
    third of the events kept, 1,267 B cells. The IgD- B cells' hump (0.48) is the highest
    peak with most events above it; the IgD+ ones peak at 0.61 and the density dips between
    them at 0.54 (depth 0.22, 2.8 Poisson SDs: the 3 a dip needed elsewhere is not met). The
    cut went 2 SD above the IgD- peak (0.59), through the IgD+ B cells: naive 0.77,
    unswitched memory 0.66. A negative minority's dip needs 2.5 SDs (`MINORITY_DIP_Z`)."""
    table = real_fuzz.run(shared_data / "real", [447505884]).set_index("population")
    assert not table["miss"].any(), table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.9 and table.loc["b_unswitched_memory", "f1"] >= 0.8


def test_igd_negative_memory_b_cells_are_not_spared_as_igd_dim_ones(shared_data):
    """Seed 421294472 of real_fuzz --label "session 65": 21% of the events and 30% of the naive
    B cells kept, fluorescence x0.74, 1,129 B cells. No valley, turn or dip parts the IgD- B
    cells (0.37) from the IgD+ ones (0.52); the last resort (naive peak - 2 SD, 0.34) cut
    through the CD27+ B cells' peak, and the cut moved below it as if they were IgD-dim
    unswitched memory B cells (`anchors.spared_cut`, 0.25): but that peak is the switched
    memory B cells (IgD 0.35), with the unswitched ones (0.49) beside it, two populations by
    BIC. Switched memory 3 for openCyto's 113, double negative 3 for 167, nothing said. Of two
    populations (`mixture.two_means`) only the one nearer the naive majority is spared: 55
    and 35, and the switched memory count's range (0-113) is said."""
    table = real_fuzz.run(shared_data / "real", [421294472]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.5, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.3, table.to_dict()
    assert real_fuzz.silent(table.reset_index()).empty


def test_a_cd27_stain_too_dim_to_part_the_t_cells_is_said(shared_data):
    """Seed 146873553 of real_fuzz --label "session 66": CD27 at a third of its brightness, all
    stains x0.53, noise of SD 169. The B cells' CD27 shows no valley (on the file as acquired
    neither: a density turn), and the turn (0.34) lay past where openCyto's cut parts best
    (0.30): unswitched memory 0.654 for a target of 0.70, nothing said. The T cells, which
    always hold CD27- and CD27+ cells, part at a valley only 0.33 deep (0.96 as acquired): a
    dim stain. The quadrant subsets say so now (`placement.probed`); the file as acquired does
    not."""
    table = real_fuzz.run(shared_data / "real", [146873553])
    assert real_fuzz.silent(table).empty, table.to_dict()
    said = table["unlike_template"].iloc[0]
    assert "cd27: CD27 on t_cells: a shallow valley (0.33)" in said, said
    assert "cd27_switched: CD27 on t_cells" in said, said
    _, acquired = real_gating.gated_sample(
        shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    )
    assert "cd27_t" not in unlike_template(acquired.stats), unlike_template(acquired.stats)


def test_a_last_resort_through_a_transitional_shoulder_gives_way_to_two_populations(
    shared_data,
):
    """Seed 536098328 of real_fuzz --label "session 67": 30% of the naive B cells kept, all
    stains x2.1, noise of SD 201. The transitional B cells are a third of the IgD+ CD27- B
    cells, a shoulder on the naive peak with no valley; the last resort (naive peak + 2 SD,
    0.82) ran through them (transitional 0.489, 356 found for openCyto's 1,070). CD38 x CD24
    shows two populations (cut 0.70), and the last resort keeps under a third of the events
    above that cut: the two populations' cut is taken (`mixture.THROUGH_SHARE`)."""
    table = real_fuzz.run(shared_data / "real", [536098328]).set_index("population")
    assert table.loc["b_transitional", "f1"] >= 0.8, table.to_dict()
    assert not table["miss"].any(), table.to_dict()


def test_a_last_resort_on_negatives_the_scale_split_starts_from_their_upper_half(shared_data):
    """Seed 728542288 of real_fuzz --photon --donor --label "session 68 pd": a tenth of the
    memory B cells kept, fluorescence x2.03, photon noise. The B cells' CD27- negatives are two
    humps the logicle scale made (-0.10 and 0.35 about 0 at 0.11), and with almost no memory B
    cells no valley or turn lies above them: the last resort from the lower hump (0.11) was
    raised to the T cells' valley (0.35) and cut the upper hump in half (naive 0.862, 394
    unswitched memory B cells for openCyto's 3). From the upper hump (`anchors.split_majority`,
    2.1 of its SDs: `upper_half_sd`) the cut lies above the naive B cells (0.55)."""
    table = real_fuzz.run(shared_data / "real", [728542288], photon=True, donor=True)
    table = table.set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.95, table.to_dict()
    assert table.loc["b_unswitched_memory", "ours"] <= 20, table.to_dict()


def test_b_cells_whose_own_cd3_straddles_the_valley_keep_it_out_of_their_gate(shared_data):
    """Seed 74864428 of real_fuzz --photon --label "session 68c": no CD20, CD3 x0.37, all
    stains x2.0, noise SD 217, photon noise. The spill of the B cells' own bright CD19 spreads
    their CD3 up to 0.43, while the CD3 valley of all lymphocytes (their B-cell cut) lies at
    0.157: 44% of the CD19+ lymphocytes above it, B cells 0.697 (710 for openCyto's 1,207). The
    B cells' CD3 cut is then its own (the CD3+ events' peak - 1 SD, `straddled_by`), and the
    sample says why."""
    table = real_fuzz.run(shared_data / "real", [74864428], photon=True).set_index("population")
    assert table.loc["b_cells", "f1"] >= 0.95, table.to_dict()
    assert "spreads across it" in table["unlike_template"].iloc[0], table.to_dict()


def test_a_refit_that_doubles_the_odds_of_lineage_events_is_kept(shared_data):
    """Seed 259807925 of the reported real_fuzz draw: 5% of the lymphocytes and of the naive B
    cells kept, FSC x1.55. The lymphocyte cluster was 74% lineage+, a refit inside it 85-86%
    (odds 2.1x and 2.3x), which neither 1.5x the share nor half the lineage- share allowed: the
    gate kept debris beside the lymphocytes (F1 0.874, CD20+ B cells 0.937, a miss). A refit
    that doubles the odds is kept (`mixture.REFINE_ODDS`): 0.968 and 0.986."""
    table = real_fuzz.run(shared_data / "real", [259807925]).set_index("population")
    assert table.loc["lymphocytes", "f1"] >= 0.95, table.to_dict()
    assert not table["miss"].any(), table.to_dict()


def test_a_shallow_dip_before_a_far_density_turn_is_the_igd_cut(shared_data):
    """Seed 818495628 of label "session 43": a tenth of the naive B cells kept, fluorescence
    x0.8, noise of SD 280. IgD- memory B cells (0.38) and IgD+ B cells (0.56) are two humps
    with a dip between them (depth 0.16: too shallow for a valley), and the density turn below
    the IgD+ majority was read in the IgD- B cells' own lower tail (0.20): switched memory
    0.203, double negative 0.147. A significant dip between the majority and a turn is the
    cut (`densities.dip_before_turn`): 0.86, 0.84."""
    table = real_fuzz.run(shared_data / "real", [818495628]).set_index("population")
    for population in ("b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert table.loc[population, "f1"] >= 0.75, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.88, table.to_dict()


def test_dim_b_cells_above_flat_t_cell_negatives_are_found(shared_data):
    """Seed 888172046 of label "session 36b": CD19 at a fifth of its brightness, noise of SD
    227 and negatives clipped at 0. The T cells' CD19 is flat from -0.03 to 0.32, the B cells
    sit at 0.33-0.47; the T cells' robust reach fell to 0.06, under their median, and the cut
    went where the events run out: 3 CD20+ B cells for 9,762 (said: "check the CD19 stain").
    Now the B cells are found, and the sample says their cut is a dim stain's."""
    table = real_fuzz.run(shared_data / "real", [888172046]).set_index("population")
    assert table.loc["b_cd20pos", "f1"] >= 0.95, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.90, table.to_dict()
    assert "a dim stain?" in table.loc["b_cells", "unlike_template"], table.to_dict()


@functools.cache
def _display_export_with_noise(data) -> pd.DataFrame:
    return real_fuzz.run(data, [888172043]).set_index("population")


@pytest.mark.parametrize(
    "population", ["b_cd20pos", "b_naive", "b_switched_memory", "b_double_negative"]
)
def test_a_display_export_clipped_at_zero_keeps_its_cd27_and_igd_cuts(shared_data, population):
    """Seed 888172043 of label "session 36b": noise of SD 281, exported as display-scale values
    0-4095, every stain pinned at channel 0 (5-18% of the events). 2,364 T cells pile there
    in CD27, and the dip above them (0.21) was the T cells' CD27 cut, the floor of the B cells':
    naive B cells 0.517, unswitched memory 0.110, nothing said. CD27- and CD27+ T cells are
    both many, so that cut is balanced (its pile counts below): 0.46, naive 0.945. The IgD cut
    then lay in the dip above the 45 B cells on channel 0 (0.18: switched memory 0.182, double
    negative 0.105): that pile too counts below (session 37); with no valley, shoulder or
    turn, the cut is the naive B cells' peak - 2 SD (switched memory 0.846, double negative
    0.716). Session 59: read above the 30% of T cells piled on CD19's 0, the T cells' reach
    is their 95% (0.41); the B cells' CD19, spread by the noise, rises from the NK cells with
    no dip, and the cut at that reach + 0.04 left 700 CD20+ B cells out (CD20+ B cells 0.948,
    double negative 0.667): without a dip the cut is the reach itself (0.974, 0.703)."""
    table = _display_export_with_noise(shared_data / "real")
    target = {"b_cd20pos": 0.95, "b_naive": 0.90}.get(population, 0.70)
    assert table.loc[population, "f1"] >= target, table.to_dict()


@functools.cache
def _noisy_cd27_at_the_windows_edge(data) -> pd.DataFrame:
    return real_fuzz.run(data, [956441368]).set_index("population")


@pytest.mark.parametrize(
    ("population", "target"),
    [
        ("b_naive", 0.90),
        ("b_switched_memory", 0.70),
        ("b_unswitched_memory", 0.70),
    ],
)
def test_a_cd27_cut_at_the_windows_edge_above_split_negatives_is_no_cut(
    shared_data, population, target
):
    """Seed 956441368 of label "session 37": noise of SD 211, a tenth of the T cells, a matrix
    given transposed (detected and turned). Both CD27 cuts (T cells', B cells') search from
    0.20; the negatives' two humps (-0.11, 0.35; 0 at 0.11) dip at 0.15, and the window's edge
    on the slope up from that dip was each cut: naive B cells 0.607, unswitched memory 0.086
    (said only for other reasons). The edge is read at the dip's bottom, so the split is seen,
    in the far-side search as well: naive 0.908, switched memory 0.795. Unswitched memory
    stayed at 0.696 (its CD27 cut is the B cells' density turn, 0.51) until the B cells at
    CD20's top counted (0.714, 2026-12-04)."""
    table = _noisy_cd27_at_the_windows_edge(shared_data / "real")
    assert table.loc[population, "f1"] >= target, table.to_dict()


@functools.cache
def _memory_rich_at_dim_fluorescence(data) -> pd.DataFrame:
    return real_fuzz.run(data, [430259667]).set_index("population")


@pytest.mark.parametrize(
    ("population", "target"),
    [
        ("b_switched_memory", 0.70),
        ("b_double_negative", 0.70),
        ("b_naive", 0.90),
        ("b_unswitched_memory", 0.70),
    ],
)
def test_a_memory_rich_files_igd_cut_is_not_below_its_igd_negative_peak(
    shared_data, population, target
):
    """Seed 430259667 of label "session 37c": 5% of the naive B cells, fluorescence x0.43,
    784 B cells. The IgD- memory B cells' narrow peak (0.32) is the highest, 68% of the B cells
    lie above it, and without a valley the cut was that peak - 2 SD (0.21): every IgD- B cell
    IgD+ (switched memory 0.196, double negative 0.119), nothing said. That peak is named as a
    minority's (the sample is unlike the template). Two populations by BIC placed the cut at
    0.41, above openCyto's (0.35): naive 0.893 and unswitched memory 0.699 stayed just under
    their targets. The dip above that peak (depth 0.29) now comes first: 0.902 and 0.710."""
    table = _memory_rich_at_dim_fluorescence(shared_data / "real")
    assert "a negative minority's" in table.loc[population, "unlike_template"], table.to_dict()
    assert table.loc[population, "f1"] >= target, table.to_dict()


def test_a_display_exports_cd27_pile_at_zero_is_no_population(shared_data):
    """Seed 430259683 of label "session 37c": a display-scale export (pinned at 0), 5% of the
    T cells, fluorescence x2.2. 647 B cells sit on CD27's channel 0, and the CD27 window's
    edge (0.20) on the slope up from the dip above them was the cut: naive B cells 0.287,
    unswitched memory 0.098 (said, for other reasons). The B cells' CD27 cut now reads its
    density without that pile, as the IgD cut does."""
    table = real_fuzz.run(shared_data / "real", [430259683]).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.90, table.to_dict()
    for population in ("b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert table.loc[population, "f1"] >= 0.70, table.to_dict()


def test_a_few_cd3_negatives_below_a_dim_spread_do_not_place_the_t_cell_cut(shared_data):
    """File 9 cut to 1,403 events (seed 408324705 of label "session 32b", 10% of the CD3-
    events kept): the scatter gate holds 50 CD3- events at 0, a spread of 230 CD3-dim ones and
    450 T cells. The dip above the 50 was the deepest (0.63 vs 0.58), and the T cells took
    every CD3-dim event (F1 0.844, the best CD3 cut 0.995). Both sides of the CD3 cut are
    always populated, so of two near-equal dips the one with more events on each side wins."""
    table = gvhd_fuzz.run(shared_data / "real", [408324705])
    t_cells = table[table["population"] == "t_cells"].iloc[0]
    assert t_cells["file"] == 9 and t_cells["ref"] < 700
    assert t_cells["f1"] >= 0.90, t_cells.to_dict()


@pytest.mark.parametrize(
    "seed",
    [
        162324561,  # file 5, CD8 +0.12 decades, 30% of its CD8 T cells: 1,385 CD8+ for 93
        709922648,  # file 1, CD8 +0.3 decades, 10% of its CD8 T cells: 720 CD8+ for 31
    ],
)
def test_a_cd8_cut_is_not_the_edge_above_the_log_amplifiers_floor(shared_data, seed):
    """Fresh draws of sessions 35 and 36: the CD4 T cells' CD8 spreads from the log
    amplifier's floor pile into the CD8 search window, the few CD8 T cells' valley is not
    significant, and the window's edge on the slope up from the floor pile's dip was the cut
    (CD4 T cells F1 0.489 and 0.336, CD8 0.128 and 0.105). The pile now counts below, not as a
    peak: the cut falls back to the template's position, listed as unlike the template."""
    table = gvhd_fuzz.run(shared_data / "real", [seed]).set_index("population")
    assert table.loc["t_cd8", "ref"] < 100
    assert table.loc["t_cd4", "f1"] >= 0.95, table.to_dict()
    assert table.loc["t_cd8", "f1"] >= 0.85, table.to_dict()
    assert "t_cd8" in table.loc["t_cd8", "unlike_template"], table.to_dict()


def test_a_cd8_cut_is_a_dip_of_the_t_cells_not_the_edge_of_the_search(shared_data):
    """File 2 with a tenth of its CD8 T cells and CD8 0.29 decades brighter (seed 653698376 of
    label "session 34"): its CD8- events pile up just below the CD8 search window, and the
    window's edge on the slope up from them was deeper than the CD8 valley: 1,208 T cells
    were called CD8+ for 79 (CD4 T cells F1 0.297, CD8 0.117)."""
    table = gvhd_fuzz.run(shared_data / "real", [653698376]).set_index("population")
    assert table.loc["t_cd4", "file"] == 2 and table.loc["t_cd8", "ref"] < 100
    assert table.loc["t_cd4", "f1"] >= 0.95, table.to_dict()
    assert table.loc["t_cd8", "f1"] >= 0.70, table.to_dict()


def test_a_memory_cut_kept_from_its_turn_has_a_count_range_that_reaches_the_turn(shared_data):
    """Seed 406547282 of label "session 55b" (30% of the memory B cells, IgD x1.5, dim
    fluorescence x0.68): the CD27 turn at 0.44 was kept at its limit, 0.38, halfway to the
    T cells' CD27 peak, which agrees better with openCyto over memory-poor files (unswitched
    memory F1 0.58 vs 0.54 on average over 42 of 393) but not on this one: 340 unswitched
    memory B cells for openCyto's 146 (F1 0.60), and one bandwidth either way gave 232-471.
    The range now reaches the turn's count (149-490): the number says how sure it is."""
    table = real_fuzz.run(shared_data / "real", [406547282]).set_index("population")
    row = table.loc["b_unswitched_memory"]
    assert row["ours"] > 1.5 * row["ref"], row.to_dict()  # still the limit's count
    gap = row["ours"] - row["ref"]  # the range's low end closes most of it (before: 44% left)
    assert row["ours_low"] - row["ref"] < 0.1 * gap and row["ours_high"] > row["ours"], (
        row.to_dict()
    )


def test_a_dip_among_the_t_cells_cd27_negatives_is_no_cut_for_a_misplaced_majority(shared_data):
    """Seed 696034395 of label "session 56x" (a panel without CD24 and CD38; fluorescence
    x2.42): the naive B cells' CD27 shows two humps (-0.10 and 0.33), the upper one the
    highest, 69% of the B cells below it: a misplaced majority, so the dip before the density
    turn (0.52, where the memory B cells begin) was searched below that peak and found between
    the naive humps at 0.20, raised to the T cells' CD27 valley (0.34): 2,643 unswitched memory
    B cells for openCyto's 454 (F1 0.29), naive 0.85. That search starts at the T cells' valley
    now, as every CD27 cut does: the turn stands (0.52)."""
    table = real_fuzz.run(shared_data / "real", [696034395], ["CD24", "CD38"])
    f1 = table.set_index("population")["f1"]
    assert f1["b_naive"] >= 0.95 and f1["b_unswitched_memory"] >= 0.8, f1.to_dict()


def test_a_last_resort_igd_cut_has_a_count_range_half_an_sd_either_way(shared_data):
    """Seed 134401500 of label "session 56w" (a panel without CD20; 30% of the naive B cells,
    a quarter of the events): IgD shows no valley, shoulder or turn, and the cut is the naive
    peak - 2 SD (0.45), where openCyto's lies at 1.5 SD (0.49). 84 double-negative B cells for
    openCyto's 185, and one bandwidth either way gave 47-138: the k of a last resort is a
    convention, and its range now reaches half an SD either way."""
    table = real_fuzz.run(shared_data / "real", [134401500], ["CD20"]).set_index("population")
    row = table.loc["b_double_negative"]
    assert row["ours"] < 0.6 * row["ref"], row.to_dict()  # the count stays the last resort's
    assert row["ours_low"] <= row["ref"] <= row["ours_high"], row.to_dict()


def test_a_second_igd_hump_inside_the_last_resort_is_cut_at_the_dip_before_it(shared_data):
    """Seed 331178984 of label "60c" (a panel without CD20 and CD24; a tenth of the naive B
    cells, 30% of the lymphocytes): the IgD- B cells (386) form their own hump at 0.43 beside
    the IgD+ ones (703) at 0.56, the dip between them at 0.48 (depth 0.32) lies within 1 SD of
    the naive peak, where the valley search does not look, and the last resort (the naive peak
    - 2 SD, 0.40) cut through the IgD- hump: double negative 58 for openCyto's 216 (F1 0.39),
    switched memory 0.61. A dip at least 3 Poisson SDs deep between the majority peak and its
    last resort is a second population's edge, as one before a density turn is."""
    table = real_fuzz.run(shared_data / "real", [331178984], ["CD20"]).set_index("population")
    f1 = table["f1"]
    assert f1["b_double_negative"] >= 0.85 and f1["b_naive"] >= 0.93, f1.to_dict()
    assert f1["b_switched_memory"] >= 0.8, f1.to_dict()


def test_a_population_between_the_igd_peak_and_a_far_turn_is_not_left_with_the_majority(
    shared_data,
):
    """Seed 882698777 of label "57c" (a panel without viability, CD20 and CD24; a third of the
    naive B cells, noise SD 265): the IgD- memory B cells are a shoulder at 0.40-0.47 on the
    naive peak's (0.60) lower flank, and IgD's density turn lay below them (0.25, 2.6% of the
    B cells beyond). The 2.5 SD limit (0.44) lies in that shoulder, at 53% of the peak's
    height, so it did not apply, and the turn left every IgD- B cell IgD+: 1,098 unswitched
    memory B cells for openCyto's 454, switched memory 86 for 590 (F1 0.20), double negative
    0.13, nothing said. Such a turn is now no cut: the naive peak - 2 SD is, its count range
    reaches the turn, and the sample says why."""
    table = real_fuzz.run(shared_data / "real", [882698777], ["Live", "CD24"])
    table = table.set_index("population")
    f1 = table["f1"]
    assert f1["b_switched_memory"] >= 0.75 and f1["b_double_negative"] >= 0.75, f1.to_dict()
    assert f1["b_unswitched_memory"] >= 0.7, f1.to_dict()
    said = table.loc["b_switched_memory", "unlike_template"]
    assert "igd: a population lies between its majority peak and its density turn" in said


def test_a_memory_count_kept_from_its_turn_far_off_is_said_unknown(shared_data, tmp_path, capsys):
    """Seed 204517589 of label "57j" (a panel without CD24; 30% of the memory B cells, CD20
    x1.72): the naive B cells' CD27 runs in a long tail, the density turn (0.50) sits near
    openCyto's cut, and the limit halfway to the T cells' CD27 peak (0.27) in that tail was
    the cut: 920 unswitched memory B cells for openCyto's 142 (F1 0.26), nothing said. Its
    range (the turn on one side) was 136-1,107; a range that wide now says the count is not
    known, on the cohort page and from `cytopipe autogate`."""
    seed = 204517589
    table = real_fuzz.run(shared_data / "real", [seed]).set_index("population")
    row = table.loc["b_unswitched_memory"]
    assert row["ours_low"] <= row["ref"] <= row["ours_high"], row.to_dict()
    assert "b_unswitched_memory" in row["unlike_template"], row.to_dict()
    assert "as its cuts move: more than 5-fold" in row["unlike_template"], row.to_dict()

    sample, ref, metadata, spill, compensated = real_gating._compensated_source(
        shared_data / "real"
    )
    keep, params = real_fuzz.draw(
        np.random.default_rng(seed), real_gating.recomposable(sample, ref)
    )
    path = real_fuzz.write(sample, spill, compensated, keep, params, metadata, tmp_path / "f.fcs")
    assert cli.main(["autogate", str(path), "--out", str(tmp_path / "m.parquet")]) == 0
    said = capsys.readouterr().err
    assert "b_unswitched_memory: its count ranges" in said and "more than 5-fold" in said, said


def test_cd4_dim_events_between_cd4_and_cd8_t_cells_are_said(shared_data):
    """File 2 with a third of its T cells and a third of those CD4 T cells (seed 830809204 of
    label "session 55"): 474 T cells show three CD4 populations, CD4- T cells, 35 CD4-dim
    events the experts do not call T cells, and 81 CD4 T cells. The cut below the dim ones
    (the deeper valley) counted them as CD4 T cells (F1 0.854, the best CD4 cut 0.98) and
    nothing was said: too few T cells to judge a gate's shape. A third population is judged
    by its valleys' own significance, at any size."""
    table = gvhd_fuzz.run(shared_data / "real", [830809204]).set_index("population")
    assert table.loc["t_cd4", "file"] == 2 and table.loc["t_cd4", "ref"] < 100
    assert "cd4: 3 populations" in table.loc["t_cd4", "unlike_template"], table.to_dict()


@functools.cache
def _wide_negative_rows(data, debris: float) -> tuple[dict, ...]:
    return tuple(real_gating.wide_negatives(data, debris=debris))


@pytest.mark.parametrize(
    ("debris", "populations"),
    [
        (0.0, ("b_cd20pos", "t_cells")),
        (real_gating.WIDE_DEBRIS, ("b_cd20pos", "t_cells")),
    ],
)
def test_wide_negatives_widen_the_scale_and_keep_b_and_t_cells(shared_data, debris, populations):
    """Noise of SD 500 on every stain (another instrument's negatives, W estimates 1.01-1.05):
    at logicle W 0.5 each negative population split in two humps and the gates cut between
    them (B cells F1 0.11, T cells 0.85); the channels' own W keeps them (0.96, 0.96). With
    half as many undispersed events again (debris at 0 +- 30, which fill the dip at 0 the
    test for a split looks at) the channels keep W 0.5: B cells 0.11, T cells 0.77 until
    valleys at 0 between split negatives were no gates (T cells 0.97, B cells 0.20), and B
    cells with their own peak above the negatives' upper hump were cut below that peak, not
    where the events run out (`anchors.risen_population`: 0.96)."""
    rows = [r for r in _wide_negative_rows(shared_data / "real", debris)
            if r["population"] in populations]  # fmt: skip
    assert len(rows) == len(populations) and all(r["target"] is not None for r in rows)
    for row in rows:
        assert row["f1"] >= row["target"], row


def test_a_widened_channel_is_named_in_the_provenance(shared_data, tmp_path):
    """Which channels got their own W, and why, is in the sample's warnings; the file as
    acquired keeps W 0.5 on every channel and says nothing."""
    path = real_gating.write_wide_negatives(shared_data / "real", tmp_path / "wide.fcs", 500)
    config = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config")
    panel = load_panel(REPO / "config" / "panel.yaml")
    prov = preprocess(str(path), panel, config).info["provenance"]
    widened = [w for w in prov["warnings"] if "transform.logicle.widen)" in w]
    assert len(widened) == 1 and "CD19 (B710-A) W 1.02" in widened[0], prov["warnings"]
    assert all(prov["scales"][m]["W"] > 1.0 for m in ("CD19", "CD3"))
    plain = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    prov = preprocess(str(plain), panel, config).info["provenance"]
    assert not [w for w in prov["warnings"] if "logicle.widen)" in w]
    assert {prov["scales"][m]["W"] for m in ("CD19", "CD20", "CD3")} == {0.5}


def test_the_gates_know_where_zero_falls_on_each_stain(shared_data):
    """Compensated negatives centre on 0: where it falls on each stain's scale goes with the
    sample to the gates (`Preprocessed.zeros`, from the record's provenance, as the workflow's
    gate step reads it), so they know a valley between the two humps of split negatives. Not
    for channel numbers already on a log scale (the GvHD files), which have no 0 to centre on."""
    config = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config")
    panel = load_panel(REPO / "config" / "panel.yaml")
    lyoplate = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    zeros = preprocess(str(lyoplate), panel, config).zeros
    stains = {"viability", "CD3", "CD19", "CD20", "IgD", "CD27", "CD38", "CD24"}
    assert set(zeros) == stains and all(z == pytest.approx(0.5 / 4.5) for z in zeros.values())
    gvhd = shared_data / "real" / "flowcap1_gvhd" / "gvhd_01.fcs"
    assert preprocess(str(gvhd), panel, config, required=SCATTER_ONLY).zeros == {}


@pytest.mark.parametrize(
    "sd, fluorescence, known",
    [(real_gating.CLIPPED_NOISE, 1.0, set()), (0, real_gating.CLIPPED_GAIN, set())],
)
def test_negatives_clipped_at_zero_gate_as_if_they_were_kept(shared_data, sd, fluorescence, known):
    """An export of compensated values that sets negatives to 0 (noise SD 300 on every
    stain): the pile at 0 was a spike beside which the CD27 and IgD valleys fell (naive B
    cells 0.53, double negative 0.03); spread back below 0, B, T and naive B cells meet their
    targets, and every subset meets 0.70 where the same file with its negatives kept does.
    At fluorescence x2.5 without noise the CD27 cut fell between the pile and the naive B
    cells' peak, below the T cells' CD27 cut, and was raised into the naive B cells (naive
    0.56, unswitched memory 0.13). `known`: the misses measured and listed in the README
    (plasmablasts there 0.69: 45 CD20- B cells when their CD38 cut is placed, too few for two
    populations, so the transitional level cuts a quarter of them; 72 and 0.78 unclipped),
    until the plasmablasts at CD38's top counted (0.711, 68 found; 2026-12-04)."""
    rows = real_gating.clipped_negatives(shared_data / "real", sd, fluorescence)
    missed = {r["population"] for r in rows if r["target"] is not None and r["f1"] < r["target"]}
    assert missed == known, [r for r in rows if r["population"] in missed ^ known]


def test_a_pile_at_zero_is_no_density_turn(shared_data):
    """Seed 46899471 of label "session 39b": a display export (0-4095) with IgD at 0.37 of its
    brightness, noise of SD 189 and 5% of the naive B cells: 46 IgD- B cells tied at 0. No IgD
    valley, and the search for a density turn below the IgD+ peak took the edge of that pile
    for one (0.10): switched memory 0.300, double negative 0.244, said only as a turn. Without
    the pile there is no turn; the cut is the IgD+ peak - 2 SD (0.27; the best single cut is
    0.36): switched memory 0.690, double negative 0.580, unswitched memory 0.708."""
    table = real_fuzz.run(shared_data / "real", [46899471]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.65, table.to_dict()
    assert table.loc["b_unswitched_memory", "f1"] >= 0.70, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.55, table.to_dict()


def test_a_small_files_igd_cut_is_placed_on_its_own_b_cells(shared_data):
    """Seed 663318863 of label "session 40": 5% of the lymphocytes and 10% of the naive B
    cells kept, CD27 at 0.62 of its brightness, no viability dye: 163 B cells to place IgD on.
    Under 200 events there was no majority peak, and the cut became the anchor window's lowest
    event - 0.05 (0.35): the window's edge, with the IgD- memory B cells between 0.35 and 0.44
    called IgD+ (switched memory 0.235, double negative 0.114, nothing said). Their own peak
    from 100 events: 0.60 - 2 SD = 0.51 (the best single cut lies at 0.44-0.46)."""
    table = real_fuzz.run(shared_data / "real", [663318863]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.75, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.65, table.to_dict()
    assert table.loc["b_unswitched_memory", "f1"] >= 0.65, table.to_dict()


def test_few_naive_b_cells_are_placed_by_their_median_not_a_mode(shared_data):
    """Seed 857053920 of label "session 39c": 5% of the naive B cells and 10% of the
    lymphocytes kept, CD24 at half its brightness with noise of SD 101: 328 B cells. Among
    the CD38-high ones CD24 shows one population, so the transitional cut is the naive B
    cells' CD24 level + 1 SD. The mode of those 109 CD27- CD38-low B cells (67 of them double
    negative) lay near their top, and the cut at 0.60 was above most transitional B cells
    (median 0.53; F1 0.279). Too few events for a majority peak: their median and its
    spread (0.39; F1 0.931)."""
    table = real_fuzz.run(shared_data / "real", [857053920]).set_index("population")
    assert table.loc["b_transitional", "f1"] >= 0.85, table.to_dict()


def test_a_t_poor_file_without_cd3_keeps_its_cd20_positive_b_cells(shared_data):
    """Seed 494486373 of `real_fuzz.py --label "no cd3 41" --without CD3`: 5% of the T cells
    kept (B cells half the lymphocytes), fluorescence x0.43, noise of SD 169, clipped at 0, and
    no CD3 in the panel. The B cells fill the CD19 negatives' window, so the CD19 cut on all
    lymphocytes found no valley above it and went where the events run out: 10 CD20+ B cells
    for 4,956 (F1 0.002). Where that cut shows no two populations, the CD20+ lymphocytes are B
    cells too (`cd19_lymph_shown`): 0.978."""
    table = real_fuzz.run(shared_data / "real", [494486373], ["CD3"]).set_index("population")
    assert table.loc["b_cd20pos", "f1"] >= 0.95, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.90, table.to_dict()


@functools.cache
def _transitional_majority(data) -> pd.DataFrame:
    return real_fuzz.run(data, [426495205]).set_index("population")


@pytest.mark.parametrize(("population", "target"), [("b_transitional", 0.70), ("b_naive", 0.90)])
def test_naive_b_cells_beside_a_transitional_majority_are_cut_in_cd38_and_cd24(
    shared_data, population, target
):
    """Seed 426495205 of label "session 37e": 5% of the naive B cells kept, so the transitional
    ones (CD38 0.75) outnumber the naive ones (0.57) as early after CAR-T. CD38 dips between
    them at 1.6 Poisson SDs only, and the mixture on CD38 alone reads the naive hump as a
    flank: the cut was the majority peak + 2 SD (0.84), above every transitional B cell
    (F1 0.019, said only as low confidence). In CD38 x CD24 the two are clusters apart (D 2.7),
    cut at 0.67 (openCyto's transitional B cells start at 0.66-0.70)."""
    table = _transitional_majority(shared_data / "real")
    assert table.loc[population, "f1"] >= target, table.to_dict()


@functools.cache
def _lymphopenic_t_poor(data) -> pd.DataFrame:
    return real_fuzz.run(data, [584697342]).set_index("population")


def test_a_lymphopenic_t_poor_files_b_cells_are_not_cut_above_them(shared_data):
    """Seed 584697342 of label "session 38c": 5% of the lymphocytes and a tenth of their T
    cells kept (1,210 lymphocytes, 564 B cells, 190 T cells): post-CAR-T blood once B cells
    return. 13 of the T cells are CD19+ (doublets); with under 200 T cells their 95% quantile
    (0.60) was the CD19 search's start, above the B cells, and the cut went where the events
    run out: 4 B cells (said: 'check the CD19 stain'). Their median and MAD stand in for the
    majority peak: B cells 0.982."""
    table = _lymphopenic_t_poor(shared_data / "real")
    assert table.loc["b_cd20pos", "f1"] >= 0.95, table.to_dict()


@functools.cache
def _memory_majority_in_two_components(data) -> pd.DataFrame:
    return real_fuzz.run(data, [346685685]).set_index("population")


@pytest.mark.parametrize("population", ["b_switched_memory", "b_double_negative"])
def test_a_memory_majority_modelled_by_two_components_is_split_from_the_igd_positive_ones(
    shared_data, population
):
    """Seed 346685685 of label "session 38d": 5% of the naive B cells and a tenth of the T
    cells kept. The IgD- memory B cells' narrow peak (0.46) is the highest and 66% of the B
    cells lie above it: named a minority's peak (session 37), but the mixture that was to
    place the cut gave the IgD- B cells a narrow and a wide component at one place, and only
    neighbouring components were compared (the wide one vs the IgD+ B cells: D 1.92 < 2), so
    the cut stayed below both: switched memory 0.085, double negative 0.033. Components the
    mixture does not dip between are one population first (D 2.6): 0.770 and 0.819. (Naive
    B cells stay at 0.699: CD20 x2.7 runs off the scale and QC removes the B cells there.)"""
    table = _memory_majority_in_two_components(shared_data / "real")
    assert table.loc[population, "f1"] >= 0.70, table.to_dict()


def test_a_pile_at_zero_is_no_population_for_the_viability_or_transitional_cut(shared_data):
    """Seed 2907946 of label "session 44 no cd20": a display export (negatives clipped at 0)
    at fluorescence x2.16 with noise SD 300, a twentieth of the T cells kept, no CD20. 5,764
    events sat at viability 0, the lowest peak, which the viability cut took for the live
    cells: the valley above that pile (0.30) kept 10,895 of 49,264 events and B cells 0.61. A
    pile of ties on the lowest value counts below, not as a peak (`unpiled`), for viability
    and for CD38 among B cells (the dead B cells' pile at CD38 0 had made the transitional cut
    0.30): B cells 0.98, transitional 0.80. Live and dead cells overlap in this file (the best
    viability cut reaches 0.70 against openCyto's), so the dead ones stay in."""
    table = real_fuzz.run(shared_data / "real", [2907946], without=["CD20"])
    f1 = table.set_index("population")["f1"]
    assert f1["b_cells"] >= 0.95 and f1["b_transitional"] >= 0.70, f1.to_dict()


def test_dim_b_cells_whose_peak_rises_less_than_twofold_are_still_a_population(shared_data):
    """Seed 275632680 of label "session 45b": CD19 at 0.3 of its brightness, noise SD 266, no
    CD20. The B cells' CD19 peak (0.53) lies above the T cells' level (0.45), where the density
    is already half of it (1.95x to the peak, 9.5 Poisson SDs): under the twofold rise asked of
    a population, the cut went where the events run out (0.62), above every B cell, and 4 of
    1,109 were found with nothing said. A rise of 1.5x that is RISE_Z Poisson SDs is a
    population too (`anchors.risen_population`): cut at the T cells' level, B cells 0.89
    (the best CD19 cut: 0.93), and the sample says its B cells reach below it."""
    table = real_fuzz.run(shared_data / "real", [275632680]).set_index("population")
    assert table.loc["b_cells", "f1"] >= 0.85, table["f1"].to_dict()
    assert "a dim stain?" in table.loc["b_cells", "unlike_template"]


@pytest.mark.parametrize(
    "seed, population, least",
    [
        (266156248, "t_cells", 0.95),  # file 9, a tenth of its T cells: 0.797 before
        (266156248, "t_cd8", 0.80),  # 0.549 before
        (266156292, "t_cd4", 0.80),  # file 8, a tenth of its CD4 T cells: 0.270 before
    ],
)
def test_the_cd3_dim_cd8ab_band_starts_above_a_cd3_valley_among_cd8ab_cells(
    shared_data, seed, population, least
):
    """Fresh draws of session 45 (label "session 45"): with a tenth of the T cells kept, the
    CD3-dim CD8 alpha-beta band (the T-cell gate's `or:`, from the CD3- cells' 95th
    percentile up) added 119 events to file 9's 212 CD3+ ones: its CD8b stains every cell
    near 0.5, so NK cells in the CD3- cells' top 5% are CD8ab+ too (81 of the experts' 'other'
    cells; T cells 0.797, CD8 T cells 0.549, nothing said), and with them in the T cells
    file 8's CD4 valley moved (CD4 T cells 0.270). Among CD8ab+ cells their CD3 then shows two
    populations, and the band starts at the valley between them (`cd3_ab`); where it shows
    one, as in every real GvHD file, the band is as before."""
    table = gvhd_fuzz.run(shared_data / "real", [seed]).set_index("population")
    assert table.loc[population, "f1"] >= least, table.to_dict()


def test_a_stand_in_lineage_marker_cut_among_its_negatives_is_not_backgating(shared_data):
    """Seed 699468038 of label "session 46 no CD3" (a panel without CD3, 5% of the T cells
    kept, every stain x2.4): CD27 stands in for CD3 in the lymphocyte gate's backgating, and
    its deepest valley lay in its negatives' tail (0.01): 92.5% of the events "CD27+", every
    B cell among them. All but 9 events were lineage+, the backgating showed nothing, and the
    scatter gate took the myeloid cells (lymphocytes 0.41, 9,146 of them "B cells": B cells
    0.70). A stand-in is judged as the marker it stands for: CD27 as T lineage, whose bright
    events must not hold most of the B cells' (`lineage.EXCLUSIVE_LINEAGES`)."""
    table = real_fuzz.run(shared_data / "real", [699468038], ["CD3"]).set_index("population")
    assert table.loc["lymphocytes", "f1"] >= 0.9, table["f1"].to_dict()
    assert table.loc["b_cells", "f1"] >= 0.9, table["f1"].to_dict()


def test_a_turn_between_the_negatives_two_halves_is_searched_again_above_them(shared_data):
    """The same file (seed 699468038 of "session 46 no CD3"): its naive B cells' CD27 shows
    two humps, at -0.12 and 0.33 (negatives wider than the logicle scale's linear region,
    split at 0), and the memory B cells a shoulder above them at 0.6. The valley search knew
    the dip at 0.21 lay between the halves and searched from 0.34, but the cut without a
    valley, the density turn, was measured from the lower half: 0.06, held at the window's
    0.20, and half the naive B cells were unswitched memory (0.19). The turn is measured again
    from above the upper half (0.53; openCyto cuts about there)."""
    table = real_fuzz.run(shared_data / "real", [699468038], ["CD3"]).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.9, table["f1"].to_dict()
    assert table.loc["b_unswitched_memory", "f1"] >= 0.7, table["f1"].to_dict()


def test_a_valley_below_a_search_start_that_dim_positives_lifted_is_the_cut(shared_data):
    """Seed 378249019 of "session 46 no IgD CD3": a panel without CD3, CD20 and IgD, CD19 at
    a third of its brightness, noise SD 134. Without T cells the CD19 cut's search starts at
    the 95th percentile of the events in the negatives' window, and the dim B cells filled it:
    the start (0.45) lay at their peak (0.47), no valley above it, and the cut went where the
    events run out: 12 of 11,028 B cells, nothing said. The valley between the majority peak
    and that start (0.33, depth 0.96) is the cut (`densities.valley_below_start`)."""
    table = real_fuzz.run(shared_data / "real", [378249019], ["IgD", "CD3"])
    assert table.set_index("population").loc["b_cells", "f1"] >= 0.95, table["f1"].to_list()


def test_a_positive_minoritys_peak_above_the_t_cells_valley_is_cut_below(shared_data):
    """Seed 792451951 of "session 47": memory-rich blood (a tenth of the naive B cells kept),
    every stain x0.61, noise SD 250. The CD27- B cells spread flat from -0.15 to 0.35 and the
    highest CD27 peak was the memory B cells' (0.47, SD 0.10; 79% of the B cells below it).
    No valley, no turn: the last resort cut 3 SD above that peak (0.60) and called 15 of 147
    unswitched memory B cells so (0.15), said but wrong. A peak above the T cells' CD27
    valley with most events below it is a positive minority's, and the cut lies below it,
    at that valley here (0.37; openCyto cuts about 0.39)."""
    table = real_fuzz.run(shared_data / "real", [792451951]).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.7, table["f1"].to_dict()
    assert table.loc["b_naive", "f1"] >= 0.85, table["f1"].to_dict()


def test_a_peak_at_the_t_cells_cd27_valley_is_no_positive_minority(shared_data):
    """Seed 752565872 of "session 46b": a clipped export of memory-rich blood with 5% of the
    lymphocytes kept. Its naive B cells' CD27 peak (0.30) lies at the T cells' valley (0.296)
    with 65% of the B cells below it (the clipped pile), and the density at the valley is 0.99
    of the peak's: it rises from nothing, and is no positive minority's peak (`MINORITY_DIP`).
    Cut below it, 192 naive B cells became unswitched memory (9 true)."""
    table = real_fuzz.run(shared_data / "real", [752565872]).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.95, table["f1"].to_dict()


def test_a_noisy_live_peak_does_not_push_the_dead_cells_valley_out_of_reach(shared_data):
    """Seed 230746248 of "session 47b" (a tenth of the lymphocytes, IgD x0.44, noise SD 202):
    noise widened the viability dye's live peak (0.44) so far that its + 4 SD, where the
    valley search starts, lay past the dead cells' valley (0.59) and the window's end: the cut
    fell to the window's 0.80 and the dead B cells stayed live (CD20+ B cells 0.929). With no
    valley beyond that start, one is searched from the peak + 2 SD (`near_sd`)."""
    table = real_fuzz.run(shared_data / "real", [230746248]).set_index("population")
    assert table.loc["b_cd20pos", "f1"] >= 0.95, table["f1"].to_dict()


def test_without_cd3_the_b_cells_cd27_cut_stays_above_the_t_and_nk_cells_valley(shared_data):
    """Seed 458616080 of "session 47 no Live CD3" (no CD3, no viability dye; CD20 x2.15, every
    stain x1.72): the naive B cells' CD27 spreads flat from -0.2 to 0.65, and without T cells
    nothing kept the cut out of it (`not_below: cd27_t` had no T cells): a density turn at
    0.12, held at the window's 0.20, made 2,791 "unswitched memory" B cells of 454 (0.25;
    naive 0.73). With CD3 the T cells' CD27 valley (0.32) starts the search and the turn is
    0.48. Without CD3 the CD19- lymphocytes' CD27 valley (T cells, most CD27+, beside CD27- NK
    cells: 0.38) stands in for it (`cd27_lymph`, used only without CD3: with CD3 the T cells
    that show no valley leave the cut without a floor, as before)."""
    table = real_fuzz.run(shared_data / "real", [458616080], ["Live", "CD3"])
    f1 = table.set_index("population")["f1"]
    assert f1["b_naive"] >= 0.9 and f1["b_unswitched_memory"] >= 0.7, f1.to_dict()


def test_a_stand_in_threshold_is_not_used_where_the_panel_has_its_marker(shared_data):
    """Seed 617826346 of "session 47c" (a twentieth of the T cells, CD19 x0.72, noise SD
    164): its T cells show no CD27 valley, and `cd27_lymph`, the stand-in for their valley in
    a panel without CD3, took over as cd27_t's reference: it lifted the B cells' CD27 search
    to 0.43, past their density turn (0.40), and unswitched memory fell from 0.817 to 0.542.
    A threshold `only_without: [CD3]` is neither placed nor a reference where CD3 is there."""
    table = real_fuzz.run(shared_data / "real", [617826346]).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.75, table["f1"].to_dict()


def test_a_cut_raised_to_its_floor_is_shown_by_the_sample(shared_data):
    """The no-CD3 file of seed 699468038 ("session 46 no CD3"): with `cd27_lymph` its B cells'
    CD27 search starts at the CD19- lymphocytes' valley (0.56), above their turn (0.53), and
    the last resort was raised to that valley. Counted as a last resort, the IgD- B cells'
    cut (`cd27_switched`, the same cut where the sample showed it) searched its own and took
    a dip between the negatives' halves (0.21): switched memory 0.698, double negative 0.584.
    A cut raised to a valley the sample showed is the sample's."""
    table = real_fuzz.run(shared_data / "real", [699468038], ["CD3"]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.8, table["f1"].to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.75, table["f1"].to_dict()


def test_a_count_says_how_far_it_hinges_on_its_cuts(shared_data):
    """The real Lyoplate file: B cells sit above a deep CD19 valley, so moving the cut a
    bandwidth either way moves under 1% of them; its memory subsets are a continuum in IgD and
    CD27 (density turns), so the same move changes them by a quarter or more. The statistics
    say both (count_cut_low / count_cut_high), and openCyto's counts of the quadrant subsets,
    whose cuts lie within 0.01-0.03 of ours, fall inside those ranges. The lymphocytes are a mixture's
    outline: no cut to move, no range."""

    path = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="test")
    pre = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg)
    specs = load_template(REPO / "config" / "gating.yaml")
    gated, _ = gate_events("C01", pre.columns, pre.qc_pass, specs, pre.info, pre.at_top)
    stats = gated.stats.set_index("population")
    low, high, count = stats["count_cut_low"], stats["count_cut_high"], stats["count"]
    ranged = low.notna()
    assert ((low[ranged] <= count[ranged]) & (count[ranged] <= high[ranged])).all()
    for pop in ("b_cells", "b_cd20pos", "t_cells"):
        assert high[pop] - low[pop] < 0.01 * count[pop], pop
    ref = pd.read_csv(path.with_name("lyoplate_bcell_C01_opencyto_gates.csv")).astype(bool)
    for pop in ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative"):
        assert low[pop] <= ref[real_gating.LYOPLATE[pop][0]].sum() <= high[pop], pop
        if pop != "b_naive":  # the majority: a few hundred either way is a few per cent
            assert high[pop] - low[pop] > 0.25 * count[pop], pop
    assert pd.isna(low["lymphocytes"])


@pytest.mark.parametrize("share", [0.03, 0.06])
def test_a_small_files_last_resort_igd_cut_reads_a_steady_majority_peak(shared_data, share):
    """Without a valley or a density turn (a small file: a few hundred B cells), the IgD cut is
    the naive B cells' majority peak - 2 SD. With the bandwidth that suits 200 events, the
    peak of 350-700 naive B cells (flat-topped on the real file) wandered with the draw, and
    so did the cut: over 20 draws of 3% and 6% of the Lyoplate file's B cells, agreement with
    openCyto's IgD gate 0.927 / 0.938 on average, 0.84 / 0.85 at worst (its best single cut:
    0.979). The last resort reads the peak on a density smoothed as for 5,000 events
    (`LAST_RESORT_FULL_EVENTS`), its SD without the extra kernel variance: 0.952 / 0.949, at
    worst 0.88 / 0.90."""
    from cytopipe.gating.anchors import anchor_limits

    path = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    columns, result, keep = _autogate(path)
    b = result.masks["b_cd20pos"]
    igd = columns["IgD"][b]
    ref = pd.read_csv(path.with_name("lyoplate_bcell_C01_opencyto_gates.csv"))
    theirs = ref["Live/CD19andCD20/IgDgate"].to_numpy(bool)[keep][b]
    spec = next(t for s in load_template(REPO / "config" / "gating.yaml") for t in s.thresholds()
                if t.name == "igd")  # fmt: skip
    anchor = {k: v for k, v in spec.params["anchor"].items() if k != "turn_max_sd"}
    rng = np.random.default_rng(7)
    agreement = []
    for _ in range(20):
        drawn = rng.random(igd.size) < share
        limits = anchor_limits(igd[drawn], anchor, float(spec.params.get("bandwidth", 0.02)))
        cut = limits.cut if limits.method == "peak_sd" else None
        if cut is not None:  # the last resort (a turn, where found, is another test's)
            agreement.append(np.mean((igd[drawn] > cut) == theirs[drawn]))
    assert len(agreement) >= 10
    assert np.mean(agreement) > 0.945 and min(agreement) > 0.875


def test_t_cells_piled_on_cd19s_zero_do_not_start_the_b_cells_search_among_nk_cells(
    shared_data,
):
    """Seed 92988803 of `real_fuzz.py --label "session 59"` (a display export: values clipped
    at 0, noise of SD 269; no CD20): a fifth of the T cells sit on CD19's 0, their majority
    peak there with a narrow half-width, so their robust reach was held at their median
    (0.22), the CD19 search started among the CD19-dim NK cells (their peak 0.32) and cut
    there (0.27): 4,188 NK cells called B cells, F1 0.868. The reach is read from the T
    cells' peak above that pile (`majority_peak(unpiled=True)`): 0.40, and the cut falls in
    the valley at 0.45 (F1 0.983)."""
    table = real_fuzz.run(shared_data / "real", [92988803]).set_index("population")
    assert table.loc["b_cells", "f1"] >= 0.95, table.to_dict()


def test_a_turn_at_the_dip_of_split_negatives_is_searched_for_again_above_them(
    shared_data,
):
    """Seed 661653435 of `real_fuzz.py --label "session 48c"` (a tenth of the T cells, 30% of
    the memory B cells, CD27 x0.6, every stain x1.9, noise SD 119): the naive B cells' CD27
    is split by the logicle scale into humps at -0.10 and 0.32 (0 at 0.11), the T cells
    (4,404) show no CD27 valley to stand on, and the B cells' density turn was the dip between
    the two humps (0.11, raised to the window's 0.20): 3,704 unswitched memory B cells for
    147, naive 0.765, said only as a low-confidence cut. A turn there parts no populations;
    it is searched again above the upper hump (0.50; openCyto cuts near 0.46), and a dip
    before it only there: naive 0.977, unswitched memory 0.637."""
    table = real_fuzz.run(shared_data / "real", [661653435]).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.95, table.to_dict()
    assert table.loc["b_unswitched_memory", "f1"] >= 0.5, table.to_dict()


def test_t_cells_without_a_cd3_valley_are_cut_where_their_peak_rises_from_the_negatives(
    shared_data,
):
    """Seed 707874704 of `real_fuzz.py --label "session 49"` (CD3 x0.44 at fluorescence x0.42,
    noise SD 265, 5% of the naive B cells): the T cells' narrow CD3 peak (0.41) rises from the
    CD3- lymphocytes' plateau with no dip between, and the cut fell back to the template's 0.45,
    through the T cells (5,320 of openCyto's 32,421: F1 0.28). The density turn on the peak's
    lower flank, the only one that turns, is the cut (`turns.flank_turn`, 0.28), and the
    sample is listed as unlike the template, for the T cells and for the B cells, whose CD3
    cut stands in for it (`placement.standing_in`)."""
    table = real_fuzz.run(shared_data / "real", [707874704]).set_index("population")
    assert table.loc["t_cells", "f1"] >= 0.95, table.to_dict()
    said = table.loc["t_cells", "unlike_template"]
    assert "t_cells: cd3: no valley" in said, said
    # the B cells' CD3 cut (`cd3_b`, the T cells' peak - 1 SD here) carries cd3's doubt
    assert "b_cells: cd3_b: no valley" in said, said
    assert table.loc["b_cd20pos", "f1"] >= 0.92, table.to_dict()


def test_a_cd27_valley_just_below_the_reference_cut_is_taken_there(shared_data):
    """Seed 71852593 of `real_fuzz.py --label "session 50 no cd3 live" --without CD3 Live`
    (CD19 x0.55, 30% of the naive B cells): the B cells' CD27 valley (0.44) lies just below the
    CD19- lymphocytes' own CD27 valley (0.47, `cd27_lymph`, the floor CD27 is never cut
    below), the search above the floor found none, and the last resort went through the memory
    B cells (0.53: unswitched memory 0.575, nothing said). A valley below the floor, where none
    lies above it, is raised to it and said (`_floored`): 0.83, the sample unlike the
    template."""
    table = real_fuzz.run(shared_data / "real", [71852593], without=["CD3", "Live"])
    table = table.set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.80, table.to_dict()
    assert table.loc["b_switched_memory", "f1"] >= 0.88, table.to_dict()
    said = table.loc["b_unswitched_memory", "unlike_template"]
    assert "cd27: its cut (0.44) lay below cd27_t" in said, said


def test_naive_b_cells_lifted_above_the_t_cells_cd27_valley_are_not_cd27_positive(shared_data):
    """Seed 459695844 of `real_fuzz.py --label "session 50c"` (5% of the lymphocytes and of
    the T cells, CD24 x1.9, without viability and CD38): the naive B cells' CD27 peak (0.38)
    lies above the T cells' own CD27 valley (0.26), 2 SDs clear, with 5.7% of the 560 B cells
    below it, and the cut went 3 SD below that peak as a CD27+ majority's: naive B cells 31
    of openCyto's 476 (F1 0.12). A positive majority leaves CD27- B cells (naive,
    transitional, double negative) below the valley, at least 15% of the events
    (`anchors.NEGATIVE_MIN_SHARE`; the pre-gated export the rule was made for: 46%); here the
    whole population sits higher, and the last resort goes above its peak: 0.97."""
    table = real_fuzz.run(shared_data / "real", [459695844]).set_index("population")
    assert table.loc["b_naive", "ref"] >= 400
    assert table.loc["b_naive", "f1"] >= 0.95, table.to_dict()


def test_a_dip_below_the_reference_cut_with_a_hump_between_is_no_cd27_cut(shared_data):
    """Seed 758315830 of `real_fuzz.py --label "session 50"` (fluorescence x2.4, spillover
    x1.14): the naive B cells' CD27 split in humps at -0.08 and 0.34, the T cells' CD27 valley
    (the floor) at 0.35 on the upper one. The dip at 0.21 between them is below the floor
    with no valley above it, but the density turns down at the upper hump before the floor:
    no valley rising into the positives (`valley_under`). Taken and raised to the floor it
    made 2,278 unswitched memory B cells of openCyto's 454 (F1 0.33); the turn above: 0.80."""
    table = real_fuzz.run(shared_data / "real", [758315830]).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.75, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.95, table.to_dict()


def test_a_transitional_peak_above_spread_naive_b_cells_is_cut_below(shared_data):
    """Seed 663318863 of label "session 40" (5% of the lymphocytes, 10% of the naive B cells,
    CD27 x0.62): among the 103 CD27- IgD+ B cells, 60 transitional ones make a narrow CD38
    peak (0.73) and the naive ones spread below it (0.40-0.68), no valley, too few for two
    populations by BIC. The last resort, the majority peak + 2 SD, went above them all
    (transitional 2 of openCyto's 66: F1 0.059, the plasmablasts' CD38 cut with it, 0.22),
    and nothing was said. 68% of the events lie below that peak: it is the positives', cut
    2 SD below it (0.857; the gate's flag says so: 103 events are too few for the sample to be
    listed as unlike the template)."""
    table = real_fuzz.run(shared_data / "real", [663318863]).set_index("population")
    assert table.loc["b_transitional", "f1"] >= 0.80, table.to_dict()


def test_a_negative_minoritys_igd_peak_is_cut_above_not_below(shared_data):
    """Seed 268194849 of `real_fuzz.py --label "session 51c"` (5% of the naive B cells, 29% of
    all events, CD20 x2): the IgD- memory B cells make the B cells' highest IgD peak (0.47),
    72% of the events above it, no valley, and two populations by BIC part nothing. The last
    resort, that peak - 2 SD, called nearly every IgD- B cell IgD+ (switched memory 15 of
    openCyto's 162, F1 0.12; double negative 6 of 219, 0.05). That peak lies below the T
    cells' IgD reach (`igd_t`): a negative minority's, and the cut goes 2 SD above it, said
    (`anchors.negative_minority`)."""
    table = real_fuzz.run(shared_data / "real", [268194849]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.70, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.70, table.to_dict()
    assert "a negative minority's" in table.loc["b_double_negative", "unlike_template"]


def test_a_negative_minoritys_igd_peak_without_t_cells_is_cut_at_its_dip(shared_data):
    """Seed 836038794 of `real_fuzz.py --label "session 52 no cd3" --without CD3` (5% of the
    naive B cells, noise SD 260, no CD3 stain): the IgD- B cells' peak (0.45) is the highest,
    65% of the B cells above it, beside the IgD+ one (0.58) with a dip between them of depth
    0.16 (3 Poisson SDs; a valley needs 0.3). With no T cells to measure the IgD reach, the
    last resort below that peak stood: switched memory 0.27, double negative 0.22. The
    significant dip above a negative minority's peak is the cut: 0.84, 0.83."""
    table = real_fuzz.run(shared_data / "real", [836038794], without=["CD3"])
    table = table.set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.75, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.75, table.to_dict()
    assert "a negative minority's" in table.loc["b_double_negative", "unlike_template"]


def test_a_negative_minoritys_igd_dip_comes_before_two_gaussians(shared_data):
    """Seed 174932854 of `real_fuzz.py --label "session 71"` (a tenth of the naive B cells,
    stains x1.95, no CD24): the IgD- B cells make the highest IgD peak (0.47), 77% of the B
    cells above it, and a dip (0.53) before the IgD+ ones. Two Gaussians, tried first, are
    equally likely at 0.56, inside the IgD+ B cells, as the narrow IgD- peak sits beside a
    wider IgD+ one: naive 0.871. The dip comes first: 0.940."""
    table = real_fuzz.run(shared_data / "real", [174932854]).set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.90, table.to_dict()
    assert "cut at the dip above it" in table.loc["b_naive", "unlike_template"]


def test_a_turn_below_an_igd_negative_majority_gives_way_to_the_dip_above_it(shared_data):
    """Seed 666994415 of `real_fuzz.py --label "session 54c" --without CD24` (5% of the naive
    B cells and of the T cells, CD27 x2.1, noise of SD 203): the IgD- B cells' peak (0.39) is
    the highest, 69% of the B cells lie above it, and the IgD+ ones peak at 0.51 with a dip
    at 0.46 between (depth 0.20: no valley). The density turn on the IgD+ flank, at 0.24, lay
    below the IgD- peak: every IgD- B cell counted IgD+ (switched memory 0.20, double negative
    0.11). A turn beyond a majority that is not the anchor population gives way to the dip
    between them (`densities.dip_before_turn`), and the sample is unlike the template."""
    table = real_fuzz.run(shared_data / "real", [666994415], without=["CD24"])
    table = table.set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.8, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.8, table.to_dict()
    assert "a minority's peak" in table.loc["b_double_negative", "unlike_template"]


def test_cd8_beta_without_cd8_alpha_among_cd4_t_cells_is_said(shared_data):
    """CD8 beta reaches the cell surface only paired with CD8 alpha, so CD8b+ events among the
    CD4+ CD8(alpha)- T cells are nonspecific binding or spill (`contradicted:`). On the
    FlowCAP-I GvHD files they are 25%, 11% and 25% of our CD4 T cells on files 7, 8 and 9,
    whose CD4 T cells agree least with the experts' (F1 0.879, 0.867, 0.863; the experts left
    most of them out), and 0.5-6% on the six others: those three say so, and only those.
    Their CD8 T cells say so too: file 9's experts count most of them as CD8 T cells (CD8
    alpha dim), and ours were short by them (F1 0.864, 0.875 and 0.917 on files 9, 7, 8) with
    nothing said (`instead:`)."""
    from cytopipe.preprocess.sample import SCATTER_ONLY

    said = {}
    for name in real_gating.GVHD_FILES:
        path = shared_data / "real" / "flowcap1_gvhd" / f"{name}.fcs"
        _, gated = real_gating.gated_sample(path, SCATTER_ONLY)
        said[name] = unlike_template(gated.stats)
    flagged = {n for n, s in said.items() if "CD8 beta without CD8 alpha" in s}
    assert flagged == {"gvhd_07", "gvhd_08", "gvhd_09"}, said
    assert "t_cd4: 224 of its 909 events CD8b+" in said["gvhd_09"], said["gvhd_09"]
    short = {n for n, s in said.items() if "t_cd8: t_cd4 holds" in s and "t_cd8 may be short" in s}
    assert short == flagged, said


def test_a_density_turn_beyond_a_population_is_not_the_majoritys(shared_data):
    """Seed 409296085 of `real_fuzz.py --label "session 51"` (10% of the naive B cells, 30% of
    the T cells, exported compensated with noise of SD 278, no matrix): the IgD- B cells (38%)
    overlap the IgD+ ones with no valley. The strongest convex stretch of the IgD density lay
    at 0.17, where the IgD- B cells' lower flank meets the noise, with 45% of the B cells
    between it and the first stretch (0.44): cut there, switched memory 0.17, double negative
    0.10. Past the first the density stays nearly level, past the strongest it keeps falling
    (`densities.majority_turn`): 0.84, 0.82."""
    table = real_fuzz.run(shared_data / "real", [409296085]).set_index("population")
    assert table.loc["b_switched_memory", "f1"] >= 0.80, table.to_dict()
    assert table.loc["b_double_negative", "f1"] >= 0.80, table.to_dict()


def test_a_bend_in_the_majoritys_own_tail_is_not_the_turn(shared_data):
    """Seed 294401008 of `real_fuzz.py --label "session 52b"` (half of the memory B cells,
    every stain at 0.45 of its brightness, no viability or CD24 stain): the naive B cells'
    CD27 has a long upper tail, and its strongest convex stretch (z 2.3, 0.26) bent that
    tail, the density falling as fast past it; the memory B cells' own (z 2.2, 0.40) lies
    above, the density level past it. Cut at the strongest, 846 unswitched memory B cells for
    openCyto's 220 (F1 0.41); at the stretch past which the density falls least, 0.75."""
    table = real_fuzz.run(shared_data / "real", [294401008]).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.70, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.97, table.to_dict()


def test_plasmablasts_without_a_valley_are_cut_at_the_least_density_beside_cd20_memory(
    shared_data, tmp_path
):
    """95% of the Lyoplate file's events, drawn at random (the same sample acquired again):
    the CD20 dip between the plasmablasts and the CD20+ memory B cells among CD27hi CD38hi B
    cells is too shallow for a valley in these draws, and two populations by BIC part them.
    The plasmablasts' CD20-low continuum is no Gaussian: its wide component's tail outweighs
    the memory B cells' far into them. Where both were equally likely (CD20 0.74-0.76) the
    plasmablasts scored 0.73-0.77 against openCyto, mean 0.753 (0.835 on the whole file, cut
    at its dip 0.70); at the mixture's least density (0.72-0.74) 0.77-0.80, mean 0.790."""
    sample, ref, metadata = real_gating._lyoplate_source(shared_data / "real")
    scores = []
    for seed in (10, 11, 13, 15, 16, 17):
        keep = np.random.default_rng(seed).random(len(ref)) < 0.95
        path = real_gating._write_like(sample, sample.events[keep], tmp_path / "95.fcs", metadata)
        _, result, qc = _autogate(path)
        flag = result.thresholds["cd20_pb"].flag
        assert "two populations" in flag and "least density" in flag, (seed, flag)
        theirs = ref["Live/CD19and!CD20/Plasmablasts"].to_numpy(bool)[keep][qc]
        scores.append(f1_score(result.masks["plasmablasts"], theirs))
    assert min(scores) >= 0.75 and np.mean(scores) >= 0.78, scores


def test_count_ranges_with_events_at_a_stains_top_hold_the_count(shared_data, tmp_path):
    """real_fuzz "session 58b" seed 952069051 (CD27, CD38 and CD20 bright enough to pin
    hundreds of B cells at a stain's top): those events are placed on where their values are
    known but counted in no gate below their parent's, and the ranges as cuts move were taken
    on the events placed on: more left CD27hi CD38hi B cells than were counted ("-1-279").
    The ranges are taken on the events counted."""
    sample, ref, metadata, spill, compensated = real_gating._compensated_source(
        shared_data / "real"
    )
    rng = np.random.default_rng(952069051)
    keep, params = real_fuzz.draw(rng, real_gating.recomposable(sample, ref))
    path = real_fuzz.write(sample, spill, compensated, keep, params, metadata, tmp_path / "f.fcs")
    cfg = validated(read_yaml(REPO / "config" / "config.yaml", "config"), "config", source="test")
    pre = preprocess(str(path), load_panel(REPO / "config" / "panel.yaml"), cfg)
    specs = load_template(REPO / "config" / "gating.yaml")
    gated, _ = gate_events("f", pre.columns, pre.qc_pass, specs, pre.info, pre.at_top)
    said = unlike_template(gated.stats)
    assert "events at a stain's top may belong here" in said, said
    ranged = gated.stats.dropna(subset=["count_cut_low"])
    assert len(ranged) >= 8
    low, high = ranged["count_cut_low"], ranged["count_cut_high"]
    assert ((low >= 0) & (low <= ranged["count"]) & (ranged["count"] <= high)).all(), ranged


def _reconstituted(data, path, seed: int, naive: float, memory: float, b_cells: float = 1.0):
    """The Lyoplate file early after CAR-T: every transitional B cell kept, `naive` of the
    other naive ones, `memory` of the memory B cells and plasmablasts, then `b_cells` of the B
    cells left; B-lineage events openCyto does not call B cells thinned alike. (file, kept
    events, openCyto's gates)."""
    sample, ref, metadata = real_gating._lyoplate_source(data)
    rng = np.random.default_rng(seed)
    gate = {k: ref[k].to_numpy(bool) for k in ref.columns}
    transitional = gate["Live/CD19andCD20/Transitional"]
    naive_ones = gate["Live/CD19andCD20/IgD+CD27-"] & ~transitional
    plasmablasts = gate["Live/CD19and!CD20"]
    b_lineage = gate["Live/CD19andCD20"] | plasmablasts
    keep = np.ones(len(ref), dtype=bool)
    keep[naive_ones & (rng.random(len(ref)) > naive)] = False
    memory_ones = gate["Live/CD19andCD20"] & ~naive_ones & ~transitional
    keep[(memory_ones | plasmablasts) & (rng.random(len(ref)) > memory)] = False
    if b_cells < 1.0:
        keep[b_lineage & keep & (rng.random(len(ref)) > b_cells)] = False
    others = real_gating.recomposable(sample, ref)["other_b_lineage"] & ~plasmablasts
    keep[others & (rng.random(len(ref)) > np.mean(keep[b_lineage]))] = False
    return real_gating._write_like(sample, sample.events[keep], path, metadata), keep, ref


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_igd_dim_transitional_b_cells_are_not_split_among_cd27_negative_values(
    shared_data, tmp_path, seed
):
    """Early reconstitution on the real file: every transitional B cell kept, 5% of the other
    naive ones, 1% of the memory B cells and plasmablasts. openCyto's ~130 double-negative B
    cells are then IgD-dim transitional ones, CD27- like the rest. The CD27 cut among the IgD-
    B cells (no valley there; the all-B-cell CD27 cut a last resort, so not taken over) split
    them in two by BIC at 0.22-0.23, below the T cells' own CD27 valley (0.29): 104-132
    "switched memory" B cells for openCyto's 4-6, double negative 0.35-0.36, nothing said. A
    cut among CD27- values parts no populations: not below that valley (`not_below: cd27_t`),
    the all-B-cell cut stands, double negative 0.90-0.95."""
    path, keep, ref = _reconstituted(shared_data / "real", tmp_path / "r.fcs", seed, 0.05, 0.01)
    _, result, qc = _autogate(path)
    dn = ref["Live/CD19andCD20/IgD-CD27-"].to_numpy(bool)[keep][qc]
    assert dn.sum() >= 100
    assert result.thresholds["cd27_switched"].value >= result.thresholds["cd27_t"].value
    assert f1_score(result.masks["b_double_negative"], dn) >= 0.85


@pytest.mark.parametrize(
    "seed, naive, b_cells", [(12, 0.02, 0.1), (22, 0.02, 0.05), (23, 0.01, 0.15)]
)
def test_transitional_b_cells_too_many_for_naive_ones_are_cut_at_their_own_edge(
    shared_data, tmp_path, seed, naive, b_cells
):
    """B cells returning after CAR-T, most of them transitional: 50-190 B cells, under 25
    naive ones below the transitional CD38 level, too few to place the naive B cells' CD24
    level (`cd24_naive`), which fell back to the template's 0.69, and the transitional cut
    (no CD24 valley) with it: 8 of openCyto's 97 transitional B cells found (F1 0.15). Where
    that level is not measured, the CD38-high B cells are the transitional ones, cut at their
    own median - 2 SD (`lone_without_reference`): 0.96-0.98, and the phenotype at return, the
    clinical figure, is read from a cut this sample showed."""
    path, keep, ref = _reconstituted(
        shared_data / "real", tmp_path / "r.fcs", seed, naive, 0.01, b_cells
    )
    _, result, qc = _autogate(path)
    assert result.thresholds["cd24_naive"].method == "fallback"
    transitional = ref["Live/CD19andCD20/Transitional"].to_numpy(bool)[keep][qc]
    assert transitional.sum() >= 40
    assert f1_score(result.masks["b_transitional"], transitional) >= 0.9


@pytest.mark.parametrize("seed", [21, 30])
def test_a_lone_cd38_population_above_the_nk_and_t_cells_is_the_transitional_one(
    shared_data, tmp_path, seed
):
    """B cells returning after CAR-T, 110-120 transitional beside 20-30 naive ones: no CD38
    valley parts them. Seed 21: no mixture either, and the last resort read the one
    population as the naive majority the template expects, its peak + 2 SD above them all (2
    found). Seed 30: two Gaussians by BIC within the transitional B cells themselves (0.69),
    the naive CD24 level read on their lower half, and the transitional cut above them all (0
    found). Nothing was said. NK cells' CD38 median and 95% of the T cells' lie between naive
    and transitional B cells' (Lyoplate: 0.55, 0.64 and 0.63, 0.73): a lone population above
    both, or two above them, is the upper one, cut below it (`upper_above`): 0.96-0.98, its
    flag says so, and the sample is unlike the template at any size (a cut's look is judged
    from 500 events, `MIN_SHAPE_EVENTS`; this reading was decided, not seen)."""
    path, keep, ref = _reconstituted(
        shared_data / "real", tmp_path / "r.fcs", seed, 0.02, 0.01, 0.1
    )
    _, result, qc = _autogate(path)
    transitional = ref["Live/CD19andCD20/Transitional"].to_numpy(bool)[keep][qc]
    assert transitional.sum() >= 100
    assert f1_score(result.masks["b_transitional"], transitional) >= 0.9
    placed = result.thresholds["cd38_tr"]
    assert placed.unlike and "- 2 SD" in placed.flag, placed  # below the peak, and why
    if seed == 21:  # no mixture: the NK and T cells' level decided, said at any size
        assert "lies above cd38_nk and cd38_t" in placed.flag, placed
        assert unlike_reason("cd38_tr", placed), placed


def test_a_lymphopenic_files_naive_majority_is_not_read_as_transitional(shared_data):
    """Seed 481531763 of `real_fuzz.py --label "session 36b"` (a tenth of the lymphocytes,
    fluorescence x0.44): other cells in the lymphocyte gate pull the CD3- CD19- lymphocytes'
    CD38 median to 0.45, below the naive B cells' lone peak (0.51). Judged by the NK cells'
    median alone, the naive majority was the upper population: transitional B cells 0.882 ->
    0.432. The T cells' 95% (0.59) is the higher level and keeps it naive."""
    table = real_fuzz.run(shared_data / "real", [481531763]).set_index("population")
    assert table.loc["b_transitional", "f1"] >= 0.85, table.to_dict()


@pytest.mark.parametrize("seed", [60, 61])
def test_forty_returning_b_cells_are_cut_on_their_own_events_not_the_t_cells(
    shared_data, tmp_path, seed
):
    """40-50 B cells back after CAR-T (10% of the naive ones, 5% of memory, then 3% of those),
    about half of them transitional. Under 50 events the IgD and CD27 cuts took the T cells'
    (IgD peak + 3 SD: 0.59, inside the naive B cells; the T cells' CD27 valley 0.29, below the
    naive B cells' CD27 top 0.40): naive 8 of 46 and 12 of 37, and with the CD38 cut then at
    the template's position the transitional CD24 cut fell back to 0.69 (transitional 7 of 23,
    3 of 25). From 30 events the B cells' own majority places the IgD and CD27 cuts (their edge
    as the anchor measures it), and from 20 CD38-high ones the lone transitional population is
    cut at its own median - 2 SD: naive 0.93-0.95, transitional 0.94."""
    path, keep, ref = _reconstituted(
        shared_data / "real", tmp_path / "r.fcs", seed, 0.10, 0.05, 0.03
    )
    _, result, qc = _autogate(path)
    gate = {k: ref[k].to_numpy(bool)[keep][qc] for k in ref.columns}
    assert 30 <= result.masks["b_cd20pos"].sum() <= 50
    naive = gate["Live/CD19andCD20/IgD+CD27-"]
    assert f1_score(result.masks["b_naive"], naive) >= 0.85
    transitional = gate["Live/CD19andCD20/Transitional"]
    assert f1_score(result.masks["b_transitional"], transitional) >= 0.85


def test_a_turn_lost_to_the_widened_smoothing_of_a_small_file_is_read_finer(shared_data):
    """Seed 235828503 of `real_fuzz.py --label "session 72"` (30% of the lymphocytes, stains
    x0.51, CD19 x2.1): 3,400 B cells, the IgD- ones a shoulder (0.35) on the naive B cells'
    lower flank (peak 0.52), no valley. The turn is read on a density smoothed wider below
    10,000 events (`TURN_FULL_EVENTS`), and at 3,400 that smoothing flattened the shoulder:
    no turn, and the last resort (peak - 2 SD, 0.41) cut into the naive B cells (double
    negative 0.700, 434 for openCyto's 235). Where the widened density shows no turn, the
    unwidened one is read: 0.37, where openCyto's labels part best (0.372)."""
    table = real_fuzz.run(shared_data / "real", [235828503]).set_index("population")
    assert table.loc["b_double_negative", "f1"] >= 0.9, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.97, table.to_dict()


def test_a_finer_turn_nearer_than_the_last_resort_is_not_the_cut(shared_data):
    """Seed 558905962 of `real_fuzz.py --label "session 71b"` (5% of the naive B cells, half
    the memory ones, noise of SD 145): 2,289 B cells, no IgD turn on the widened density and
    one at 0.45 on the unwidened, 1.4 SDs below the naive peak (0.55), nearer it than the last
    resort (0.41) and 0.02-0.03 past where openCyto's labels part best (0.42-0.43). Taken, it
    left unswitched memory at 0.817 (0.861 at the last resort): a finer turn counts only past
    the last resort (`turns.read_turn`)."""
    table = real_fuzz.run(shared_data / "real", [558905962]).set_index("population")
    assert table.loc["b_unswitched_memory", "f1"] >= 0.85, table.to_dict()
    assert table.loc["b_naive", "f1"] >= 0.93, table.to_dict()


def test_a_fallen_back_reference_still_says_how_far_its_split_negatives_reach(shared_data):
    """Seed 3496447 of `real_fuzz.py --label "session 72b pd" --photon --donor` (noise of SD
    297, photon noise, the memory B cells' CD27 x0.72, no CD20): the scale splits the T cells'
    CD27 negatives in two (0 at 0.11, the dip at 0.21), and above their upper hump (0.36) no
    valley parts the CD27+ T cells: cd27_t falls back to the template. The B cells' CD27 then
    had no floor, and a dip at 0.20 in the naive B cells' own split negatives was the cut
    before the density turn (0.53): naive 0.506, unswitched memory 0.113, 5,825 for openCyto's
    454, said only as a misplaced majority. The reference's negatives reach its upper hump
    whether or not a valley follows, and a dip before the turn is searched above it
    (`Placer._dip_floor`): the cut is the turn, naive 0.912, unswitched memory 0.423 (the
    best quadrant 0.531)."""
    table = real_fuzz.run(shared_data / "real", [3496447], photon=True, donor=True)
    table = table.set_index("population")
    assert table.loc["b_naive", "f1"] >= 0.9, table.to_dict()
    assert table.loc["b_unswitched_memory", "f1"] >= 0.4, table.to_dict()


def test_dim_b_cells_whose_near_flank_covers_the_search_start_are_a_risen_population(
    shared_data,
):
    """Seed 820015561 of `real_fuzz.py --label "session 73b pd" --photon --donor` (no CD20,
    CD19 x0.36, noise of SD 226, a tenth of the T cells, half of the events outside the
    lymphocytes): the T cells' CD19 reaches 0.39 and the search starts at 0.43, on the near
    flank of the B cells' own peak (0.47). The density there was 1/1.48 of that peak's, under
    the rise a population of its own needs (1.5), so the cut went where the events run out:
    10 B cells for openCyto's 11,028, said only as a count that ranges 8-9,074. The rise is
    now read from the lower of the densities at the start and at the T cells' level (3.9x):
    B cells 0.954, cut at that level and said to be a dim stain. Not from the least density
    below the start: test_autogate_random.py's aplasia file with CD19-dim NK cells."""
    table = real_fuzz.run(shared_data / "real", [820015561], photon=True, donor=True)
    b = table.set_index("population").loc["b_cells"]
    assert b["f1"] >= 0.95, table.to_dict()
    assert "a dim stain?" in b["unlike_template"], b["unlike_template"]
