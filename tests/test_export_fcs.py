"""`cytopipe export-fcs`: one gated population of a real file as FCS, with the original channels,
values, spillover and keywords, readable by cytopipe and FlowKit; the original is untouched."""

from __future__ import annotations

import hashlib
import shutil
import warnings

import flowkit as fk
import numpy as np
import pandas as pd

from cytopipe import cli
from cytopipe.ingest.fcs import read_fcs
from cytopipe.preprocess.compensation import spillover_from_keywords


def test_b_cells_of_a_real_file_exported_with_its_channels_and_keywords(shared_data, tmp_path):
    src = tmp_path / "lyoplate.fcs"
    shutil.copy(shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs", src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    gates = tmp_path / "m.parquet"
    assert cli.main(["autogate", str(src), "--out", str(gates)]) == 0
    out = tmp_path / "b.fcs"
    assert cli.main(["export-fcs", str(src), "--gates", str(gates), "--population", "b_cells",
                     "--out", str(out)]) == 0  # fmt: skip
    original, exported = read_fcs(src), read_fcs(out)
    rows = pd.read_parquet(gates)["b_cells"].to_numpy()
    assert exported.n_events == rows.sum() > 1000
    np.testing.assert_array_equal(exported.events, original.events[rows])
    assert exported.pnn == original.pnn and exported.pns == original.pns
    assert exported.pnr == original.pnr
    np.testing.assert_allclose(spillover_from_keywords(exported).matrix,
                               spillover_from_keywords(original).matrix)  # fmt: skip
    for key in ("cyt", "date", "btim"):
        assert exported.keywords[key] == original.keywords[key], key
    assert exported.keywords["cytopipe_population"] == "b_cells"
    assert before in exported.keywords["cytopipe_source"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fk.Sample(str(out)).event_count == rows.sum()
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before  # archive untouched


def test_a_membership_of_another_file_is_refused(shared_data, tmp_path, capsys):
    gates = tmp_path / "m.parquet"
    pd.DataFrame({"b_cells": np.ones(10, dtype=bool)}).to_parquet(gates)
    fcs = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    code = cli.main(["export-fcs", str(fcs), "--gates", str(gates), "--population", "b_cells",
                     "--out", str(tmp_path / "x.fcs")])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        code != 0
        and "10 rows but the file 81638 events" in err
        and not (tmp_path / "x.fcs").exists()
    )
