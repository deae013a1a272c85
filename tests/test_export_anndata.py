"""`cytopipe export-anndata`: gated samples of a results folder as AnnData that `anndata` reads
back with the same events, markers and gate memberships, and the provenance."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from cytopipe import cli
from cytopipe import results as layout
from cytopipe.synth.cohort import synth_cohort


def test_anndata_holds_our_events_and_memberships(tmp_path):
    sheet = synth_cohort(tmp_path / "cohort", 1, 6, 8_000, "mixed", timepoints=(-7, 14))
    results = tmp_path / "results"
    for row in sheet.itertuples():
        events = layout.preprocessed_events_path(results, row.sample_id)
        info = layout.preprocessed_record_path(results, row.sample_id)
        events.parent.mkdir(parents=True, exist_ok=True)
        assert cli.main(["preprocess", row.path, "--sample-id", row.sample_id, "--out-events",
                         str(events), "--out-info", str(info)]) == 0  # fmt: skip
        folder = layout.sample_folder(results, row.sample_id)
        assert cli.main(["gate", str(events), "--info", str(info), "--out-dir", str(folder)]) == 0
    out = tmp_path / "cohort.h5ad"
    assert cli.main(["export-anndata", "--results", str(results), "--out", str(out),
                     "--per-sample", "3000"]) == 0  # fmt: skip
    adata = ad.read_h5ad(out)
    assert adata.n_obs == 2 * 3000 and "CAR" in adata.var_names and "CD19" in adata.var_names
    for sid in sheet["sample_id"]:
        mine = adata[adata.obs["sample_id"] == sid]
        rows = mine.obs["event"].to_numpy()
        events = pd.read_parquet(layout.preprocessed_events_path(results, sid))
        assert events["qc_pass"].to_numpy()[rows].all()  # QC-kept events only
        for j, marker in enumerate(adata.var_names):
            np.testing.assert_array_equal(mine.X[:, j], events[marker].to_numpy()[rows])
        gates = pd.read_parquet(layout.sample_gates_path(layout.sample_folder(results, sid)))
        for pop in ("lymphocytes", "b_cells", "car_t"):
            np.testing.assert_array_equal(mine.obs[pop].to_numpy(), gates[pop].to_numpy()[rows])
        assert sid in adata.uns["cytopipe"]["provenance"]
    assert adata.uns["cytopipe"]["per_sample"] == 3000
