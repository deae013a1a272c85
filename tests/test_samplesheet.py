"""Sample sheet validation: every error names the line in the file and the field to fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cytopipe.clinical.samplesheet import load_sample_sheet
from cytopipe.errors import ConfigError

HEADER = ["sample_id", "patient_id", "path", "day", "collection_date", "infusion_date",
          "birth_date", "abs_lymphocytes", "age_years", "disease"]  # fmt: skip


def _row(sample_id, patient="P1", day="", collection="", infusion="", birth="", alc="", age="",
         path=None, disease="SLE"):  # fmt: skip
    return [sample_id, patient, path or f"fcs/{sample_id}.fcs", str(day), collection, infusion,
            birth, str(alc), str(age), disease]  # fmt: skip


def _good_rows() -> list[list[str]]:
    return [
        _row("P1_BL", day=-7, alc=1500, age=12.5),
        _row("P1_D028", day=28, alc=600, age=12.6),
        _row("P2_BL", "P2", collection="2023-01-03", infusion="2023-01-10", birth="2010-01-10"),
        _row("P2_D090", "P2", collection="2023-04-10", infusion="2023-01-10", birth="2010-01-10"),
    ]


def _write(tmp_path: Path, rows, header=HEADER, files=True) -> Path:
    if files:
        (tmp_path / "fcs").mkdir(exist_ok=True)
        for r in rows:
            if len(r) > 2:
                p = tmp_path / r[2]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"FCS3.1")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return sheet


def _error(sheet: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_sample_sheet(sheet, base_dir=sheet.parent, **kwargs)
    return str(info.value)


def test_valid_sheet_derives_day_and_age(tmp_path):
    sheet = load_sample_sheet(_write(tmp_path, _good_rows()), base_dir=tmp_path)
    assert list(sheet["sample_id"]) == ["P1_BL", "P1_D028", "P2_BL", "P2_D090"]
    assert sheet["day"].tolist() == [-7, 28, -7, 90]  # 2023-04-10 - 2023-01-10 = 90 days
    assert sheet["day"].dtype == np.int64
    # age from birth and collection date: 2010-01-10 -> 2023-01-03 = 4741 days
    assert sheet.loc[2, "age_years"] == pytest.approx(4741 / 365.25)
    assert sheet.loc[0, "age_years"] == 12.5
    assert sheet.loc[1, "abs_lymphocytes"] == 600.0 and np.isnan(sheet.loc[2, "abs_lymphocytes"])
    # optional standard columns that the file lacks exist, empty
    assert sheet["bead_events"].isna().all() and sheet["batch"].isna().all()


def test_extra_columns_are_carried_and_typed(tmp_path):
    rows = [r + [str(i * 10)] for i, r in enumerate(_good_rows())]
    sheet = load_sample_sheet(_write(tmp_path, rows, HEADER + ["true_b_cells"]), base_dir=tmp_path)
    assert sheet["true_b_cells"].tolist() == [0, 10, 20, 30]


def test_relative_paths_resolve_against_base_dir(tmp_path, monkeypatch):
    sheet = _write(tmp_path, _good_rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # default base = cwd, where fcs/ does not exist
    with pytest.raises(ConfigError, match="file not found"):
        load_sample_sheet(sheet)
    assert len(load_sample_sheet(sheet, base_dir=tmp_path)) == 4
    assert len(load_sample_sheet(sheet, check_files=False)) == 4


def _assert_names(message: str, line: int, field: str) -> None:
    assert re.search(rf"row {line}\b[^;]*field '{field}'", message), message


def test_missing_required_column(tmp_path):
    header = [h for h in HEADER if h != "patient_id"]
    rows = [[v for h, v in zip(HEADER, r, strict=True) if h != "patient_id"] for r in _good_rows()]
    message = _error(_write(tmp_path, rows, header, files=False))
    _assert_names(message, 1, "patient_id")


def test_missing_day_column_and_dates(tmp_path):
    header = ["sample_id", "patient_id", "path"]
    message = _error(_write(tmp_path, [["S1", "P1", "fcs/S1.fcs"]], header))
    _assert_names(message, 1, "day")


def test_missing_file(tmp_path):
    rows = _good_rows()
    sheet = _write(tmp_path, rows)
    (tmp_path / "fcs" / "P1_D028.fcs").unlink()
    message = _error(sheet)
    _assert_names(message, 3, "path")
    assert "P1_D028.fcs" in message


def test_duplicate_sample(tmp_path):
    rows = _good_rows() + [_row("P1_D028", day=56)]
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 6, "sample_id")
    assert "duplicate" in message and "row 3" in message


def test_non_numeric_day_and_count(tmp_path):
    rows = _good_rows()
    rows[1][3] = "d28"
    rows[0][7] = "many"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 3, "day")
    _assert_names(message, 2, "abs_lymphocytes")
    assert "'d28' is not a number" in message


def test_negative_count(tmp_path):
    rows = _good_rows()
    rows[1][7] = "-600"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 3, "abs_lymphocytes")
    assert "negative" in message


def test_a_blood_count_in_10_9_per_litre_is_refused(tmp_path):
    """A count typed as the lab reports it in 10^9/L (1.5 for 1,500 cells/uL) would make
    every absolute B-cell count 1000x too small and call aplasia by the per-uL rule."""
    rows = _good_rows()
    rows[1][7] = "0.6"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 3, "abs_lymphocytes")
    assert "10^9/L" in message and "600" in message


def test_a_sheet_of_whole_number_counts_in_10_9_per_litre_is_refused(tmp_path):
    rows = _good_rows()
    rows[0][7], rows[1][7] = "2", "1"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 2, "abs_lymphocytes")
    assert "every blood count" in message
    rows[0][7] = "25"  # a deep lymphopenia beside a baseline in cells/uL is no unit slip
    assert len(load_sample_sheet(_write(tmp_path, rows), base_dir=tmp_path)) == 4


def test_a_stained_volume_in_ml_is_refused(tmp_path):
    rows = [[*r, "100"] for r in _good_rows()]
    rows[1][-1] = "0.05"
    message = _error(_write(tmp_path, rows, header=[*HEADER, "volume_ul"]))
    _assert_names(message, 3, "volume_ul")
    assert "mL" in message and "50 for 0.05 mL" in message


def test_collection_before_birth(tmp_path):
    rows = _good_rows()
    rows[2][6] = "2023-02-01"  # born after the sample was taken
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 4, "collection_date")
    assert "before birth_date" in message


def test_day_cannot_be_derived(tmp_path):
    rows = _good_rows()
    rows[3][4] = ""  # no collection date and no day
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 5, "day")
    assert "cannot be derived" in message


def test_day_disagreeing_with_dates(tmp_path):
    rows = _good_rows()
    rows[3][3] = "91"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 5, "day")
    assert "= 90 days" in message


def test_bad_date_and_unsafe_id(tmp_path):
    rows = _good_rows()
    rows[2][4] = "03/01/2023"
    rows[0][0] = "../P1 BL"
    rows[0][2] = "fcs/x.fcs"
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 4, "collection_date")
    _assert_names(message, 2, "sample_id")


def test_patient_without_baseline_is_an_error_unless_allowed(tmp_path):
    rows = _good_rows() + [_row("P3_D028", "P3", day=28)]
    sheet = _write(tmp_path, rows)
    message = _error(sheet)
    _assert_names(message, 6, "day")
    assert "'P3' has no baseline" in message
    loaded = load_sample_sheet(sheet, base_dir=tmp_path, require_baseline=False)
    assert "P3_D028" in set(loaded["sample_id"])


def test_infusion_date_must_be_one_per_patient(tmp_path):
    rows = _good_rows()
    rows[3][5] = "2023-01-11"
    rows[3][3] = ""
    message = _error(_write(tmp_path, rows))
    _assert_names(message, 5, "infusion_date")


def test_all_problems_reported_together_with_line_numbers_after_comments(tmp_path):
    rows = _good_rows()
    sheet = _write(tmp_path, rows)
    lines = sheet.read_text().splitlines()
    lines.insert(1, "# exported from the lab database")
    lines.insert(2, "")
    lines[4] = lines[4].replace("\t28\t", "\tx\t")  # P1_D028 is now on line 5
    sheet.write_text("\n".join(lines) + "\n")
    (tmp_path / "fcs" / "P2_D090.fcs").unlink()  # on line 7
    with pytest.raises(ConfigError) as info:
        load_sample_sheet(sheet, base_dir=tmp_path)
    problems = info.value.problems
    assert len(problems) == 2
    _assert_names(problems[0], 5, "day")
    _assert_names(problems[1], 7, "path")
    assert str(sheet) in str(info.value)


def test_wrong_number_of_fields(tmp_path):
    rows = _good_rows()
    rows[1] = rows[1][:5]
    message = _error(_write(tmp_path, rows, files=False))
    assert "row 3" in message and "fields" in message


def test_unreadable_sheet(tmp_path):
    with pytest.raises(ConfigError, match="cannot read sample sheet"):
        load_sample_sheet(tmp_path / "nope.tsv")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_sample_sheet(empty)


def test_a_field_starting_with_a_quote_does_not_swallow_later_rows(tmp_path):
    """Regression: csv quoting read `"B1 (re-run` as an open quoted field that ran to the end
    of the file, and every later row vanished without an error."""
    rows = _good_rows()
    rows[1][-1] = '"B1 (re-run'
    rows[2][-1] = 'JDM "flare"'
    sheet = load_sample_sheet(_write(tmp_path, rows), base_dir=tmp_path)
    assert list(sheet["sample_id"]) == ["P1_BL", "P1_D028", "P2_BL", "P2_D090"]
    assert sheet["disease"].tolist() == ["SLE", '"B1 (re-run', 'JDM "flare"', "SLE"]


def test_a_line_with_a_tab_too_many_stops_with_its_line_number(tmp_path):
    rows = _good_rows()
    rows[2][-1] = '"SLE\tre-run"'  # quotes do not protect a tab: the line has 11 fields
    assert "row 4: has 11 tab-separated fields but the header has 10" in _error(
        _write(tmp_path, rows)
    )


@pytest.mark.parametrize("day", ["1e9", "-20000"])
def test_a_day_decades_from_infusion_is_refused(tmp_path, day):
    rows = _good_rows()
    rows[1][3] = day
    assert re.search(
        r"row 3, field 'day': .* is more than 9125 days", _error(_write(tmp_path, rows))
    )


def test_a_date_typo_decades_from_infusion_is_refused(tmp_path):
    rows = _good_rows()
    rows[3][4] = "2093-04-10"  # collection date typed with the wrong century digit
    assert "row 5, field 'day': 25658 is more than 9125 days" in _error(_write(tmp_path, rows))
