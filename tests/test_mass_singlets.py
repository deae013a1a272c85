"""Mass cytometry singlets: two cells acquired as one event make a longer ion cloud with twice
the DNA. The template gates them out on event length x DNA, cut relative to the file's own
singlets (its event-length and DNA peaks), so any push rate or intercalator brightness works.
Measured on the Lyoplate file made a mass cytometry acquisition with 8% doublets (2026-12-03):
2,557 of 6,531 doublets kept and 79 of 81,638 cells lost; inside openCyto's lymphocytes T
cells F1 0.930 -> 0.966 and unswitched memory 0.696 -> 0.782 with the gate (real_gating)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, benchmark

from cytopipe.gating.autogate import autogate
from cytopipe.gating.sample import event_masks
from cytopipe.gating.template import load_template

real_gating = benchmark("real_gating")
PNN = ["Ir191Di", "Ir193Di", "Event_length", "Pt195Di", "Nd142Di", "Sm147Di"]
PNS = ["191Ir_DNA1", "193Ir_DNA2", "Event_length", "cisplatin", "CD3", "CD19"]


def _helios(rng: np.random.Generator, n: int) -> np.ndarray:
    """Cells as ion counts: two DNA channels, cisplatin, CD3 (T cells), CD19 (B cells)."""
    t = rng.random(n) < 0.6
    b = ~t & (rng.random(n) < 0.4)
    dna = rng.lognormal(np.log(1000), rng.uniform(0.15, 0.25), (n, 2))
    return np.column_stack([
        dna, rng.poisson(2, n), np.where(t, rng.poisson(300, n), rng.poisson(2, n)),
        np.where(b, rng.poisson(200, n), rng.poisson(1, n)),
    ]).astype(float)  # fmt: skip


def _gated(path):
    pre = real_gating.preprocessed(path)
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    result = autogate(load_template(REPO / "config" / "gating.yaml"), columns)
    return result, event_masks(result.masks, pre.qc_pass)


@pytest.mark.parametrize("pushes", [(12.0, 2.0), (22.0, 4.0), (40.0, 9.0)])
def test_doublets_leave_on_event_length_and_dna_at_any_push_rate(tmp_path, pushes):
    """Cells of 12, 22 or 40 pushes (one instrument's setting is another's doublet), 8%
    doublets: most leave, nearly every cell stays, and the gate says what it cut on."""
    rng = np.random.default_rng(int(pushes[0]))
    n = 6000
    events, k = real_gating.with_doublets(_helios(rng, n), n, rng, pushes=pushes)
    path = real_gating.write_fcs(tmp_path / "helios.fcs", events, PNN, PNS, {"$CYT": "Helios"})
    result, masks = _gated(path)
    singlets = masks["singlets"].to_numpy()
    doublet = np.arange(len(events)) >= n
    assert np.mean(singlets[doublet]) <= 0.5, np.sum(singlets[doublet])
    assert np.mean(singlets[~doublet]) >= 0.99, np.sum(~singlets[~doublet])
    assert result.plotted["singlets"][:2] == ("Event_length", "DNA")
    assert "event_length" in result.thresholds and "dna_doublets" in result.thresholds
    # on the file's own scale (singlets near 0.5) the cut lies where a singlet's length ends,
    # whatever the push rate: about 1.5x a singlet's
    assert 0.65 <= result.thresholds["event_length"].value <= 0.9


def test_without_event_length_the_singlets_pass_and_say_so(tmp_path):
    """A mass cytometry file without an event length channel: no singlets gate, said."""
    rng = np.random.default_rng(3)
    path = real_gating.write_fcs(tmp_path / "helios.fcs", _helios(rng, 3000),
                                 [c for c in PNN if c != "Event_length"],
                                 [c for c in PNS if c != "Event_length"], {"$CYT": "Helios"})  # fmt: skip
    result, masks = _gated(path)
    assert "singlets" in result.passed and masks["singlets"].sum() == masks["cells"].sum()
    assert result.methods["singlets"][2].startswith("not gated: no")


def test_event_length_past_its_declared_range_is_neither_saturated_nor_doubted(tmp_path):
    """CyTOF software sets no fixed $PnR for event length: lengths past it are no saturated
    detector and no wrong range (the sample was a QC warning before 2026-12-03)."""
    rng = np.random.default_rng(5)
    events, _ = real_gating.with_doublets(_helios(rng, 3000), 3000, rng)
    tops = [65536, 65536, 24, 65536, 65536, 65536]  # event length declared up to 24 pushes
    path = real_gating.write_fcs(
        tmp_path / "helios.fcs", events, PNN, PNS, {"$CYT": "Helios"}, tops
    )
    pre = real_gating.preprocessed(path)
    assert pre.qc_pass.all() and pre.info["qc"]["verdict"] == "pass", pre.info["qc"]
    assert "declared range" not in " ".join(pre.info["provenance"]["warnings"])
