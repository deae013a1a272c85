"""Spillover from keywords (and archive dialects), FlowJo CSV and single-stain controls;
compensation equal to FlowKit's."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import flowio
import flowkit
import numpy as np
import pytest
from flowutils.compensate import compensate as fu_compensate

from cytopipe import cli
from cytopipe.errors import FcsError
from cytopipe.ingest.fcs import FcsSample, read_fcs
from cytopipe.preprocess import compensation as comp


@pytest.fixture(scope="module")
def comp_example(shared_data: Path) -> FcsSample:
    return read_fcs(shared_data / "flowkit" / "test_comp_example.fcs")


def flowkit_comp(path: Path, compensation) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = flowkit.Sample(str(path), ignore_offset_error=True)
        s.apply_compensation(compensation)
        return s.get_events("comp")


def assert_float32_equal(ours: np.ndarray, ref: np.ndarray) -> None:
    """Equal to FlowKit's float64 result rounded to float32 (at most 1 ulp, BLAS order)."""
    assert ours.dtype == np.float32
    np.testing.assert_array_max_ulp(ours, ref.astype(np.float32), maxulp=1)


def test_keyword_spillover_equals_flowkit(shared_data: Path, comp_example: FcsSample) -> None:
    # test_comp_example's SPILL is an identity matrix (its real matrix is the FlowJo CSV below)
    spill = comp.spillover_from_keywords(comp_example)
    assert spill.source == "SPILL keyword" and len(spill.channels) == 14 and spill.warnings == []
    np.testing.assert_array_equal(spill.matrix, np.eye(14))
    ours = comp.compensate(comp_example.events, comp_example.pnn, spill)
    ref = flowkit_comp(
        shared_data / "flowkit" / "test_comp_example.fcs", comp_example.keywords["spill"]
    )
    assert_float32_equal(ours, ref)
    # 100715.fcs (FACSAria) has a real 13-detector SPILL
    path = shared_data / "flowio" / "fcs_files" / "100715.fcs"
    sample = read_fcs(path)
    spill = comp.spillover_from_keywords(sample)
    assert len(spill.channels) == 13 and not np.allclose(spill.matrix, np.eye(13))
    ours = comp.compensate(sample.events, sample.pnn, spill)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = flowkit.Sample(str(path))
        s.apply_compensation(sample.keywords["spill"])
        ref = s.get_events("comp")
    assert_float32_equal(ours, ref)
    untouched = [i for i, n in enumerate(sample.pnn) if n not in spill.channels]
    np.testing.assert_array_equal(ours[:, untouched], sample.events[:, untouched])
    assert not np.array_equal(ours, sample.events)


def test_flowjo_csv_equals_flowkit(shared_data: Path, comp_example: FcsSample) -> None:
    csv = shared_data / "flowkit" / "comp_complete_example.csv"
    spill = comp.read_spillover_csv(csv, comp_example.pnn)
    assert spill.source == "FlowJo CSV comp_complete_example.csv"
    ours = comp.compensate(comp_example.events, comp_example.pnn, spill)
    assert_float32_equal(
        ours, flowkit_comp(shared_data / "flowkit" / "test_comp_example.fcs", str(csv))
    )


def test_flowutils_matrix_and_events(shared_data: Path, comp_example: FcsSample) -> None:
    folder = shared_data / "flowutils"
    events = np.load(folder / "test_comp_event_data.npy")
    spill = comp.read_spillover_csv(folder / "test_comp_matrix.csv", comp_example.pnn)
    idx = [comp_example.pnn.index(c) for c in spill.channels]
    ref = fu_compensate(events, spill.matrix, idx)
    ours = comp.compensate(events.astype(np.float32), comp_example.pnn, spill)
    assert_float32_equal(ours, ref)
    with pytest.raises(FcsError) as info:
        comp.read_spillover_csv(folder / "test_comp_matrix_missing_row.csv", comp_example.pnn)
    assert (
        "13 rows for 14 channels" in info.value.what
        and "test_comp_matrix_missing_row.csv" in str(info.value)
    )


def test_csv_dialects(tmp_path: Path, comp_example: FcsSample) -> None:
    base = comp.spillover_from_keywords(comp_example)
    names = base.channels
    rows = [";".join(f"{v:.6g}".replace(".", ",") for v in r) for r in base.matrix]
    semi = tmp_path / "semi.csv"
    semi.write_text(";".join(names) + "\n" + "\n".join(rows) + "\n")
    np.testing.assert_allclose(
        comp.read_spillover_csv(semi, comp_example.pnn).matrix, base.matrix, atol=1e-6
    )
    # row labels in the first column, rows in another order
    order = list(reversed(range(len(names))))
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text(
        "\t"
        + "\t".join(names)
        + "\n"
        + "\n".join(
            names[i] + "\t" + "\t".join(repr(float(v)) for v in base.matrix[i]) for i in order
        )
    )
    np.testing.assert_array_equal(
        comp.read_spillover_csv(labelled, comp_example.pnn).matrix, base.matrix
    )
    other = tmp_path / "other_panel.csv"
    other.write_text("FITC-A,PE-A\n1,0.1\n0.2,1\n")
    with pytest.raises(FcsError, match="does not have"):
        comp.read_spillover_csv(other, comp_example.pnn)
    with pytest.raises(FcsError, match="cannot read"):
        comp.read_spillover_csv(tmp_path / "missing.csv", comp_example.pnn)


# ---------------------------------------------------------------------------------------------
# Keyword dialects seen in archives
# ---------------------------------------------------------------------------------------------

PNN = ["FS", "SS", "FL1", "FL2", "FL3", "Time"]
M = np.array([[1.0, 0.25, 0.031], [0.0125, 1.0, 0.5], [0.0, 0.075, 1.0]])


def spill_text(names: list[str], values: list[str], sep: str = ",") -> str:
    return sep.join([str(len(names)), *names, *values])


def plain_values(fmt=lambda v: repr(float(v))) -> list[str]:
    return [fmt(v) for v in M.ravel()]


def test_standard_and_navios_channel_numbers() -> None:
    std = comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], plain_values()), PNN)
    assert std.channels == ["FL1", "FL2", "FL3"] and std.warnings == []
    np.testing.assert_array_equal(std.matrix, M)
    navios = comp.parse_spillover(spill_text(["3", "4", "5"], plain_values()), PNN)
    assert navios.channels == ["FL1", "FL2", "FL3"] and "by number" in navios.warnings[0]
    np.testing.assert_array_equal(navios.matrix, M)
    with pytest.raises(FcsError, match="does not have"):
        comp.parse_spillover(spill_text(["3", "4", "9"], plain_values()), PNN)


def test_spillover_naming_the_detector_maps_to_its_area_channel() -> None:
    """'FITC' in the matrix, 'FITC-A' (beside 'FITC-H') in the file: the area channel, with a
    warning; the sample failed with 'names channels the file does not have' before."""
    pnn = ["FSC-A", "SSC-A", "FITC-A", "FITC-H", "PE-A", "APC-A"]
    spill = comp.parse_spillover(spill_text(["FITC", "PE", "APC"], plain_values()), pnn)
    assert spill.channels == ["FITC-A", "PE-A", "APC-A"]
    assert "area channel" in spill.warnings[0]
    np.testing.assert_array_equal(spill.matrix, M)


def test_spillover_naming_the_markers_maps_by_pns_in_one_warning() -> None:
    """A matrix on the markers ('CD3', not 'FITC-A'), as some exporters write it: each label to
    the channel whose $PnS it is, said in one line (one line per label before: 8 on the
    Lyoplate file, the sample page's warnings full of them)."""
    pnn = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A"]
    pns = ["", "", "CD3", "CD19", "CD20"]
    spill = comp.parse_spillover(spill_text(["CD3", "CD19", "CD20"], plain_values()), pnn, pns)
    assert spill.channels == ["FITC-A", "PE-A", "APC-A"]
    assert spill.warnings == [
        "spillover labels matched by $PnS to channels: CD3 -> FITC-A, CD19 -> PE-A, CD20 -> APC-A"
    ]
    np.testing.assert_array_equal(spill.matrix, M)


def test_a_compensation_matrix_stored_as_the_spillover_is_inverted_back() -> None:
    """FCS 3.0's $COMP was written as the spillover or as its inverse: the inverse applied as
    a spillover spilled every signal twice (the Lyoplate file so stored: unswitched memory
    0.85 -> 0.26, plasmablasts 0.84 -> 0.56, said only as 'check the compensation'). A matrix
    with clearly negative spill whose inverse has none is the compensation matrix: its
    inverse is used, and said; a spillover with a slightly negative value is kept as given."""
    pnn = ["FITC-A", "PE-A", "APC-A"]
    stored = comp.parse_spillover(
        spill_text(pnn, [repr(float(v)) for v in np.linalg.inv(M).ravel()]), pnn
    )
    np.testing.assert_allclose(stored.matrix, M, atol=1e-12)
    assert (
        len(stored.warnings) == 1 and "a compensation matrix, not a spillover" in stored.warnings[0]
    )
    fitted = M.copy()
    fitted[2, 0] = -0.005  # a fit from single stains can dip below zero
    kept = comp.parse_spillover(spill_text(pnn, [repr(float(v)) for v in fitted.ravel()]), pnn)
    np.testing.assert_array_equal(kept.matrix, fitted)
    assert kept.warnings == []
    measured = M.copy()
    measured[2, 0] = -0.02  # clearly negative, but its inverse is no spillover either
    assert (
        comp.parse_spillover(
            spill_text(pnn, [repr(float(v)) for v in measured.ravel()]), pnn
        ).warnings
        == []
    )


def test_decimal_commas() -> None:
    euro = [f"{v:.4f}".replace(".", ",") for v in M.ravel()]
    semi = comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], euro, sep=";"), PNN)
    np.testing.assert_allclose(semi.matrix, M, atol=1e-4)
    commas = comp.parse_spillover(
        spill_text(["FL1", "FL2", "FL3"], euro), PNN
    )  # "0,2500" split in two
    np.testing.assert_allclose(commas.matrix, M, atol=1e-4)
    assert "decimal commas" in commas.warnings[0]
    mixed = [("1" if v == 1 else f"{v:.4f}".replace(".", ",")) for v in M.ravel()]
    with pytest.raises(FcsError, match="decimal commas"):
        comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], mixed), PNN)


def test_partial_case_pns_percent_and_unnamed() -> None:
    sub = comp.parse_spillover("2,FL3,FL1,1,0.5,0.1,1", PNN)
    assert sub.channels == ["FL3", "FL1"]
    case = comp.parse_spillover(spill_text(["fl1", " FL2 ", "Fl3"], plain_values()), PNN)
    assert case.channels == ["FL1", "FL2", "FL3"]
    pns = ["", "", "CD19 PE", "CD3 FITC", "CD45 PC5", ""]
    by_pns = comp.parse_spillover(
        spill_text(["CD19 PE", "CD3 FITC", "CD45 PC5"], plain_values()), PNN, pns
    )
    assert by_pns.channels == ["FL1", "FL2", "FL3"]
    pct = comp.parse_spillover(
        spill_text(["FL1", "FL2", "FL3"], [repr(float(v) * 100) for v in M.ravel()]), PNN
    )
    np.testing.assert_allclose(pct.matrix, M)
    eye6 = ",".join(["6", *[repr(float(v)) for v in np.eye(6).ravel()]])
    unnamed = comp.parse_spillover(eye6, PNN)  # FCS 2.0 $COMP: n == $PAR, no names
    assert unnamed.channels == PNN and "no channel names" in unnamed.warnings[0]
    with pytest.raises(FcsError, match="without channel names"):
        comp.parse_spillover("3," + ",".join(plain_values()), PNN)
    assert comp.parse_spillover("0", PNN) is None


def test_bad_matrices() -> None:
    with pytest.raises(FcsError, match="needs 3 names and 9 values"):
        comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], plain_values()[:-2]), PNN)
    with pytest.raises(FcsError, match="not numbers"):
        comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], [*plain_values()[:-1], "abc"]), PNN)
    with pytest.raises(FcsError, match="NaN"):
        comp.parse_spillover(spill_text(["FL1", "FL2", "FL3"], [*plain_values()[:-1], "nan"]), PNN)
    with pytest.raises(FcsError, match="channel count"):
        comp.parse_spillover("FL1,FL2,1,0,0,1", PNN)
    with pytest.raises(FcsError, match="twice"):
        comp.parse_spillover("2,FL1,fl1,1,0,0,1", PNN)
    with pytest.raises(FcsError, match="does not have"):
        comp.parse_spillover("2,FL1,APC-A,1,0.2,0,1", PNN)


def test_compensate_refusals() -> None:
    events = np.ones((10, len(PNN)), dtype=np.float32)
    singular = comp.Spillover(["FL1", "FL2"], np.array([[1.0, 1.0], [1.0, 1.0]]), "test matrix")
    with pytest.raises(FcsError, match="singular"):
        comp.compensate(events, PNN, singular)
    missing = comp.Spillover(["FL1", "APC-A"], np.eye(2), "test matrix")
    with pytest.raises(FcsError, match=r"does not have: \['APC-A'\]"):
        comp.compensate(events, PNN, missing)
    wrong = comp.Spillover(["FL1", "FL2"], np.eye(3), "test matrix")
    with pytest.raises(FcsError, match="shape"):
        comp.compensate(events, PNN, wrong)


def write_with_spill(path: Path, spill: str) -> Path:
    """A small FCS 3.1 file whose SPILL keyword is `spill`."""
    events = np.random.default_rng(5).normal(1000, 200, size=(200, 4)).astype(np.float32)
    with open(path, "wb") as fh:
        flowio.create_fcs(
            fh,
            events.ravel().tolist(),
            ["FSC-A", "SSC-A", "FITC-A", "PE-A"],
            metadata_dict={"SPILL": spill},
        )
    return path


def test_singular_spillover_error_names_the_file(tmp_path: Path) -> None:
    """The matrix parses, but cannot be inverted: the error a user sees (raised when the pipeline
    compensates) names the FCS file the SPILL keyword came from, and says what to do."""
    path = write_with_spill(tmp_path / "tube 7.fcs", "2,FITC-A,PE-A,1,1,1,1")
    sample = read_fcs(path)
    spill = comp.spillover_from_keywords(sample)
    with pytest.raises(FcsError, match="singular") as info:
        comp.compensate(sample.events, sample.pnn, spill)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert "SPILL keyword" in info.value.what and info.value.hint
    with pytest.raises(FcsError, match="singular") as info:
        comp.compensation_matrix(spill)
    assert str(path) in str(info.value)
    # a FlowJo CSV matrix: the error names the CSV file
    csv = tmp_path / "batch 3 comp.csv"
    csv.write_text("FITC-A,PE-A\n1,0.5\n2,1\n")
    spill = comp.read_spillover_csv(csv, sample.pnn)
    with pytest.raises(FcsError, match="singular") as info:
        comp.compensate(sample.events, sample.pnn, spill)
    assert info.value.path == str(csv) and str(csv) in str(info.value) and info.value.hint


def test_keyword_precedence_and_absence(comp_example: FcsSample) -> None:
    kw = dict(comp_example.keywords)
    kw["spillover"] = "2,PE-A,Ax488-A,1,0.1,0.2,1"
    sample = FcsSample(
        comp_example.path,
        comp_example.events,
        comp_example.pnn,
        comp_example.pns,
        comp_example.pnr,
        kw,
    )
    spill = comp.spillover_from_keywords(sample)
    assert spill.source == "$SPILLOVER keyword" and spill.channels == ["PE-A", "Ax488-A"]
    assert any("SPILL keyword" in w for w in spill.warnings)
    kw = {k: v for k, v in comp_example.keywords.items() if k != "spill"}
    none = FcsSample(
        comp_example.path,
        comp_example.events,
        comp_example.pnn,
        comp_example.pns,
        comp_example.pnr,
        kw,
    )
    assert comp.spillover_from_keywords(none) is None


def test_every_real_spillover(shared_data: Path) -> None:
    """Every matrix stored in the reference files parses and compensates like flowutils."""
    files = {
        "flowio/fcs_files/100715.fcs": "SPILL keyword",
        "flowio/fcs_files/G11.fcs": "$SPILLOVER keyword",
        "flowio/fcs_files/B01 KC-A-W---91-US.fcs": "$SPILLOVER keyword",
        "flowkit/index_sorted/index_sorted_example.fcs": "SPILL keyword",
        "flowio/fcs_files/variable_int_example.fcs": "SPILL keyword",
    }
    for rel, source in files.items():
        sample = read_fcs(shared_data / rel)
        spill = comp.spillover_from_keywords(sample)
        assert spill.source == source, rel
        idx = [sample.pnn.index(c) for c in spill.channels]
        ref = fu_compensate(sample.events.astype(np.float64), spill.matrix, idx)
        assert_float32_equal(comp.compensate(sample.events, sample.pnn, spill), ref)
    # The Sony file names one detector 'xxxx...' (anonymized); its row/column are identity.
    sony = comp.spillover_from_keywords(read_fcs(shared_data / files_key(files, "variable_int")))
    assert len(sony.channels) == 15 and any("identity" in w for w in sony.warnings)


def files_key(files: dict[str, str], part: str) -> str:
    return next(k for k in files if part in k)


def test_compensate_in_place_and_memory() -> None:
    rng = np.random.default_rng(1)
    pnn = [f"C{i}" for i in range(10)]
    events = rng.normal(1000, 200, size=(1_000_000, 10)).astype(np.float32)
    m = np.eye(6) + rng.uniform(0, 0.1, size=(6, 6)) * (1 - np.eye(6))
    spill = comp.Spillover(pnn[2:8], m, "test matrix")
    expected = events.copy()
    expected[:, 2:8] = (events[:, 2:8].astype(np.float64) @ np.linalg.inv(m)).astype(np.float32)
    tracemalloc.start()
    out = comp.compensate(events, pnn, spill, out=events)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out is events
    np.testing.assert_array_max_ulp(out, expected, maxulp=1)
    assert peak < 0.2 * events.nbytes, peak  # blocks, not full-size temporaries
    spill_scattered = comp.Spillover(
        ["C9", "C0"], np.array([[1.0, 0.1], [0.0, 1.0]]), "test matrix"
    )
    again = comp.compensate(expected, pnn, spill_scattered)
    np.testing.assert_allclose(again[:, 0], expected[:, 0] - 0.1 * expected[:, 9], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Single-stain controls (flowCore compdata)
# ---------------------------------------------------------------------------------------------


def read_flowcore_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    cols = [c.strip('"') for c in lines[0]]
    rows = {ln[0].strip('"'): [float(v) for v in ln[1:]] for ln in lines[1:]}
    return cols, np.array([rows[c] for c in cols])


def test_single_stain_matches_flowcore_compref1(shared_data: Path) -> None:
    folder = shared_data / "flowcore" / "compdata"
    unstained, stains = comp.read_comp_match(folder / "comp_match", folder / "data")
    assert set(stains) == {"FL1-H", "FL2-H", "FL3-H", "FL4-H"}
    cols, ref = read_flowcore_matrix(folder / "compref1")
    controls = {c: read_fcs(stains[c]) for c in cols}
    spill = comp.compute_spillover(read_fcs(unstained), controls)
    assert spill.channels == cols and spill.source == "single-stain controls"
    assert np.abs(spill.matrix - ref).max() < 0.01
    np.testing.assert_allclose(spill.matrix, ref, atol=1e-6)  # same method: we match closely
    # a control assigned to the wrong detector is noticed
    swapped = dict(controls)
    swapped["FL1-H"], swapped["FL2-H"] = controls["FL2-H"], controls["FL1-H"]
    bad = comp.compute_spillover(read_fcs(unstained), swapped)
    assert any("brighter in" in w for w in bad.warnings)
    with pytest.raises(FcsError, match="no single-stain control"):
        comp.compute_spillover(read_fcs(unstained), controls, channels=[*cols, "FL5-H"])


@pytest.mark.parametrize("matrix", ["bare detectors", "Comp- channels", "none"])
def test_a_flowjo_export_of_compensated_data_is_not_compensated_twice(
    shared_data: Path, tmp_path: Path, matrix: str
) -> None:
    """FlowJo writes compensated channels as 'Comp-<detector>' and keeps the acquisition's
    $SPILLOVER naming the bare detectors; other exporters name the 'Comp-' channels in the
    matrix (applied again before session 25: transitional B cells 0.89 -> 0.76, nothing said)
    or write none (then called uncompensated). The Lyoplate file exported each way must give
    the events of the file itself, and a file whose detectors carry no prefix is compensated
    as ever."""
    from array import array

    from cytopipe.config import defaults
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.sample import preprocess

    src = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    s = read_fcs(src)
    spill = comp.spillover_from_keywords(s)
    done = comp.compensate(s.events, s.pnn, spill)
    names = [p if p.startswith(("FSC", "SSC")) else f"Comp-{p}" for p in s.pnn]
    keyword = {
        "bare detectors": {"$SPILLOVER": s.keywords["spillover"]},
        "Comp- channels": {"$SPILLOVER": ",".join(
            [str(len(spill.channels)), *(f"Comp-{c}" for c in spill.channels),
             *(f"{v:.6g}" for v in np.asarray(spill.matrix).ravel())]
        )},
        "none": {},
    }[matrix]  # fmt: skip
    export = tmp_path / "exported.fcs"
    with open(export, "wb") as fh:
        flowio.create_fcs(
            fh, array("f", np.ascontiguousarray(done, "<f4").tobytes()), names, list(s.pns),
            metadata_dict={**keyword, **{f"p{i}r": format(r, ".0f") for i, r in enumerate(s.pnr, 1)}},
        )  # fmt: skip
    assert comp.compensated_on_export(read_fcs(export)).startswith("channels named 'Comp-")
    assert comp.compensated_on_export(s) is None
    panel, cfg = (
        load_panel(Path(__file__).parent.parent / "config" / "panel.yaml"),
        defaults("config"),
    )
    ours, theirs = preprocess(str(export), panel, cfg), preprocess(str(src), panel, cfg)
    assert ours.info["provenance"]["spillover_source"] == "compensated on export"
    assert not ours.info["provenance"].get("uncompensated")
    assert theirs.info["provenance"]["spillover_source"] == "$SPILLOVER keyword"
    for marker in ("CD3", "CD19", "CD20", "IgD", "CD27"):
        assert np.allclose(ours.columns[marker], theirs.columns[marker], atol=1e-4), marker


def test_a_digital_file_without_a_spillover_matrix_says_so(
    shared_data: Path, tmp_path: Path, capsys
):
    """The Lyoplate file stored without its $SPILLOVER kept its lymphocytes, T and B cells and
    lost every B-cell subset (naive 0.00), each cut flagged only as a fallback: the sample now
    carries a warning that its stains are gated uncompensated, also listed on the cohort page.
    An analog instrument's file (FACSCalibur, 1024 channels: compensated in hardware) and a
    file with a matrix get none."""
    from array import array

    from cytopipe.clinical.sample_checks import compensation_notes
    from cytopipe.config import defaults
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.sample import preprocess

    src = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    s = read_fcs(src)
    bare = tmp_path / "no_spillover.fcs"
    with open(bare, "wb") as fh:
        flowio.create_fcs(
            fh, array("f", np.ascontiguousarray(s.events, "<f4").tobytes()), list(s.pnn),
            list(s.pns), metadata_dict={f"p{i}r": format(r, ".0f") for i, r in enumerate(s.pnr, 1)},
        )  # fmt: skip
    panel = load_panel(Path(__file__).parent.parent / "config" / "panel.yaml")
    cfg = defaults("config")

    gvhd = shared_data / "real" / "flowcap1_gvhd" / "gvhd_01.fcs"
    prov = {p.stem: preprocess(str(p), panel, cfg, required=()).info["provenance"]
            for p in (bare, src, gvhd)}  # fmt: skip
    assert "no spillover matrix in the file" in " ".join(prov["no_spillover"]["warnings"])
    for other in (src.stem, gvhd.stem):
        assert "no spillover matrix" not in " ".join(prov[other]["warnings"])
    # ... and the cohort page lists it (sample_status warnings), not only its own page
    listed = compensation_notes({sid: {"provenance": p} for sid, p in prov.items()})
    assert list(listed) == ["no_spillover"] and "gated uncompensated" in listed["no_spillover"]
    # ... and `cytopipe autogate` on the file by hand says it too
    assert cli.main(["autogate", str(bare), "--out", str(tmp_path / "o.parquet")]) == 0
    assert "cytopipe autogate: no spillover matrix in the file" in capsys.readouterr().err


def test_an_identity_spillover_matrix_says_the_stains_are_uncompensated(shared_data: Path):
    """FACSDiva writes an identity SPILL when no compensation was set up at acquisition:
    FlowKit's test_comp_example.fcs carries a 14x14 identity beside the lab's real matrix (a
    CSV). 'Compensated with the file's matrix' left its stains as stored, nothing said; now the
    sample says they are gated uncompensated (and the cohort page lists it). With the lab's
    matrix given, and for a file whose matrix compensates (Lyoplate), nothing is said."""
    from cytopipe.config import defaults
    from cytopipe.ingest.panel import load_panel
    from cytopipe.preprocess.sample import preprocess

    panel = load_panel(Path(__file__).parent.parent / "config" / "panel.yaml")
    cfg = defaults("config")
    identity = shared_data / "flowkit" / "test_comp_example.fcs"
    prov = preprocess(str(identity), panel, cfg, required=()).info["provenance"]
    assert "is the identity for its stains" in (prov["uncompensated"] or "")
    assert prov["spillover_source"] == "SPILL keyword"
    lab = shared_data / "flowkit" / "comp_complete_example.csv"
    given = preprocess(str(identity), panel, cfg, spill_csv=str(lab), required=())
    assert given.info["provenance"]["uncompensated"] is None
    lyoplate = shared_data / "real" / "lyoplate_bcell" / "lyoplate_bcell_C01.fcs"
    assert preprocess(str(lyoplate), panel, cfg).info["provenance"]["uncompensated"] is None
