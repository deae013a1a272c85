"""Absolute counts: single platform (beads) and dual platform, checked against hand arithmetic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cytopipe.clinical.counts import (
    DUAL,
    NONE,
    SINGLE,
    add_absolute_counts,
    bead_data_complete,
    dual_platform,
    single_platform,
    with_beads_found,
)
from cytopipe.errors import ConfigError


def _stats(sample_id: str, lymphocytes: int, b_cells: int) -> list[dict]:
    return [
        {"sample_id": sample_id, "population": "leukocytes", "count": 4 * lymphocytes,
         "pct_lymphocytes": np.nan},
        {"sample_id": sample_id, "population": "lymphocytes", "count": lymphocytes,
         "pct_lymphocytes": 100.0},
        {"sample_id": sample_id, "population": "b_cells", "count": b_cells,
         "pct_lymphocytes": 100.0 * b_cells / lymphocytes},
    ]  # fmt: skip


def test_single_platform_formula_by_hand():
    # 500 B-cell events, 10,000 bead events, 50,000 beads in the tube, 50 uL blood:
    # 500 / 10000 * 50000 / 50 = 50 cells/uL
    assert single_platform(500, 10_000, 50_000, 50) == pytest.approx(50.0)
    # vectorized, with missing/zero bead data giving NaN instead of inf
    out = single_platform(
        [500, 500, 500], [10_000, 0, np.nan], [50_000, 50_000, 50_000], [50, 50, 50]
    )
    assert out[0] == pytest.approx(50.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_dual_platform_formula_by_hand():
    # 5 % of lymphocytes x 2000 lymphocytes/uL = 100 cells/uL
    assert dual_platform(5.0, 2000.0) == pytest.approx(100.0)
    assert np.isnan(dual_platform(5.0, np.nan))


def test_bead_data_complete_needs_all_three_positive():
    ok = bead_data_complete(
        [1000, 1000, 0, 1000], [50_000, np.nan, 50_000, 50_000], [50, 50, 50, -1]
    )
    assert ok.tolist() == [True, False, False, False]


def test_add_absolute_counts_prefers_beads_and_records_method():
    stats = pd.DataFrame(
        _stats("S_beads", 2000, 500) + _stats("S_both", 2000, 500)
        + _stats("S_dual", 2000, 100) + _stats("S_none", 2000, 100)
        + _stats("S_partial", 1000, 30)
    )  # fmt: skip
    sheet = pd.DataFrame(
        {
            "sample_id": ["S_beads", "S_both", "S_dual", "S_none", "S_partial"],
            "patient_id": ["P1", "P1", "P2", "P2", "P3"],
            "day": [-7, 28, -7, 28, 90],
            "age_years": [10.0, 10.1, 40.0, 40.1, 5.0],
            "disease": ["SLE", "SLE", "SSc", "SSc", "JDM"],
            "abs_lymphocytes": [np.nan, 1500.0, 1800.0, np.nan, 1200.0],
            "bead_events": [10_000, 20_000, np.nan, np.nan, 5000],
            "beads_per_test": [50_000, 50_000, np.nan, np.nan, 50_000],
            "volume_ul": [50.0, 100.0, np.nan, np.nan, np.nan],  # S_partial: no volume
        }
    )
    out = add_absolute_counts(stats, sheet)
    b = out[out["population"] == "b_cells"].set_index("sample_id")
    # beads only: 500/10000*50000/50 = 50
    assert b.loc["S_beads", "cells_per_ul"] == pytest.approx(50.0)
    assert b.loc["S_beads", "abs_method"] == SINGLE
    # both available: single platform wins: 500/20000*50000/100 = 12.5 (dual would be 375)
    assert b.loc["S_both", "cells_per_ul"] == pytest.approx(12.5)
    assert b.loc["S_both", "abs_method"] == SINGLE
    # dual: 100/2000 = 5 % x 1800 = 90
    assert b.loc["S_dual", "cells_per_ul"] == pytest.approx(90.0)
    assert b.loc["S_dual", "abs_method"] == DUAL
    assert np.isnan(b.loc["S_none", "cells_per_ul"]) and b.loc["S_none", "abs_method"] == NONE
    # incomplete bead data falls back to dual: 30/1000 = 3 % x 1200 = 36
    assert b.loc["S_partial", "cells_per_ul"] == pytest.approx(36.0)
    assert b.loc["S_partial", "abs_method"] == DUAL
    # above lymphocytes there is no % of lymphocytes: no dual count, but beads still count
    leuk = out[out["population"] == "leukocytes"].set_index("sample_id")
    assert np.isnan(leuk.loc["S_dual", "cells_per_ul"]) and leuk.loc["S_dual", "abs_method"] == NONE
    assert leuk.loc["S_beads", "cells_per_ul"] == pytest.approx(8000 / 10_000 * 50_000 / 50)
    # the sheet's patient, day, age and disease travel with every row
    assert b.loc["S_dual", "patient_id"] == "P2" and b.loc["S_dual", "day"] == -7
    assert b.loc["S_partial", "disease"] == "JDM" and b.loc["S_partial", "age_years"] == 5.0
    assert len(out) == len(stats)


def test_stats_from_another_sheet_are_refused():
    stats = pd.DataFrame(_stats("S_unknown", 100, 10))
    sheet = pd.DataFrame({"sample_id": ["S1"], "patient_id": ["P1"], "day": [0],
                          "age_years": [1.0], "disease": ["SLE"]})  # fmt: skip
    with pytest.raises(ConfigError, match="S_unknown"):
        add_absolute_counts(stats, sheet)


def test_bead_events_found_in_the_file_count_where_the_sheet_gives_none():
    """A single-platform tube whose sheet gives the beads per test and the volume but not the
    bead events: QC's bead count of the file (sample_status' bead_events_found) fills in; a
    count the sheet gives is kept, a file without beads leaves the gap (dual platform)."""
    sheet = pd.DataFrame({
        "sample_id": ["S_file", "S_sheet", "S_none"], "patient_id": ["P1", "P1", "P1"],
        "day": [0, 30, 60], "bead_events": [np.nan, 8_000, np.nan],
        "beads_per_test": [50_000] * 3, "volume_ul": [50] * 3,
        "abs_lymphocytes": [np.nan, np.nan, 1500],
    })  # fmt: skip
    status = pd.DataFrame(
        {"sample_id": ["S_file", "S_sheet", "S_none"], "bead_events_found": [10_000, 9_000, 0]}
    )
    filled = with_beads_found(sheet, status)
    assert filled["bead_events"].tolist()[:2] == [10_000, 8_000]
    assert np.isnan(filled["bead_events"].iloc[2])
    stats = pd.DataFrame(
        _stats("S_file", 2000, 500) + _stats("S_sheet", 2000, 500) + _stats("S_none", 2000, 30)
    )
    out = add_absolute_counts(stats, filled).set_index(["sample_id", "population"])
    # 500 / 10000 * 50000 / 50 = 50 cells/uL; 500 / 8000 * 50000 / 50 = 62.5
    assert out.loc[("S_file", "b_cells"), "cells_per_ul"] == pytest.approx(50.0)
    assert out.loc[("S_sheet", "b_cells"), "cells_per_ul"] == pytest.approx(62.5)
    assert out.loc[("S_file", "b_cells"), "abs_method"] == SINGLE
    assert out.loc[("S_none", "b_cells"), "abs_method"] == DUAL
    assert with_beads_found(sheet, None) is sheet
