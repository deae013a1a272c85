"""FCS reading: exact values on every real file, clear refusals of bad files, provenance, privacy."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tracemalloc
import warnings
from pathlib import Path

import flowio
import flowkit
import numpy as np
import pytest

from cytopipe.commands import ingest as ingest_commands
from cytopipe.errors import FcsError
from cytopipe.ingest import keywords as fcs
from cytopipe.ingest.fcs import read_fcs, read_text
from cytopipe.ingest.keywords import public_keywords

# ---------------------------------------------------------------------------------------------
# Reference values: FlowKit's Sample(path).get_events("raw"), with the options FlowKit needs
# ---------------------------------------------------------------------------------------------

# Files FlowKit opens only with an option (and the warning we must record instead).
FLOWKIT_OPTIONS = {"test_comp_example.fcs": {"ignore_offset_error": True}}
# Files FlowKit's Sample cannot open at all; the reference is flowio (FlowKit's parser) with the
# options named, preprocessed as FlowKit does. Sony files carry an anonymized $TIMESTEP
# ('xxxxxxxxx') that makes FlowKit raise, so their Time stays unscaled (we warn).
FLOWIO_ONLY = {
    "coulter.lmd": {"nextdata_offset": 0, "ignore_offset_error": True},
    "variable_int_example.fcs": {},
    "data_start_offset_discrepancy_example.fcs": {"ignore_offset_discrepancy": True},
    "data_stop_offset_discrepancy_example.fcs": {"ignore_offset_discrepancy": True},
}
EXPECTED_WARNINGS = {
    "test_comp_example.fcs": ["one past the last data byte"],
    "coulter.lmd": ["one past the last data byte", "more than one dataset"],
    "variable_int_example.fcs": ["$TIMESTEP"],
    "data_start_offset_discrepancy_example.fcs": ["DATA offsets disagree", "HEADER says 5555-6188"],
    "data_stop_offset_discrepancy_example.fcs": ["DATA offsets disagree", "HEADER says 6081-6944"],
    "0877408774.B08": ["empty keyword values"],
    "0877408774.E07": ["empty keyword values"],
    "0877408774.F06": ["empty keyword values"],
    "data1.fcs": ["empty keyword values"],
}


def all_fcs_files(root: Path) -> list[Path]:
    """Every FCS file under the reference data, found by content (.fcs, .lmd, .B08, none...)."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                if fh.read(3) == b"FCS":
                    found.append(p)
    return found


def reference_raw(path: Path) -> np.ndarray:
    name = path.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in FLOWIO_ONLY:
            fd = flowio.FlowData(str(path), **FLOWIO_ONLY[name])
            if fd.text.get("timestep", "").strip() == "xxxxxxxxx":
                del fd.text["timestep"]
            return fd.as_array(preprocess=True)
        return flowkit.Sample(str(path), **FLOWKIT_OPTIONS.get(name, {})).get_events("raw")


@pytest.fixture(scope="module")
def real_files(shared_data: Path) -> list[Path]:
    files = all_fcs_files(shared_data)
    assert len(files) >= 22, f"expected the 22 reference FCS files, found {len(files)}"
    return files


def test_every_real_file_equals_flowkit(real_files: list[Path]) -> None:
    for path in real_files:
        sample = read_fcs(path)
        ref = reference_raw(path)
        ev = sample.events
        assert ev.dtype == np.float32 and ev.flags.c_contiguous, path.name
        assert ev.shape == ref.shape, path.name
        np.testing.assert_array_equal(ev, ref.astype(np.float32), err_msg=path.name)
        assert len(sample.pnn) == len(sample.pns) == len(sample.pnr) == ev.shape[1]
        assert sample.provenance["n_events"] == ev.shape[0]
        for needle in EXPECTED_WARNINGS.get(path.name, []):
            assert any(needle in w for w in sample.provenance["warnings"]), (
                path.name,
                needle,
                sample.provenance["warnings"],
            )
        if path.name not in EXPECTED_WARNINGS:
            assert sample.provenance["warnings"] == [], (path.name, sample.provenance["warnings"])


def test_truth_arrays(shared_data: Path) -> None:
    truth = shared_data / "flowio" / "truth"
    b01 = read_fcs(shared_data / "flowio" / "fcs_files" / "B01 KC-A-W---91-US.fcs")
    np.testing.assert_array_equal(
        b01.events, np.load(truth / "B01 KC-A-W---91-US_preprocessed_events.npy").astype(np.float32)
    )
    data1 = read_fcs(shared_data / "flowkit" / "gate_ref" / "data1.fcs")
    np.testing.assert_allclose(
        data1.events, np.load(truth / "data1_preprocessed.npy"), rtol=1e-6, atol=0
    )
    original = np.load(
        truth / "data1_original_events.npy"
    )  # stored channel numbers, before $PnE/$PnG
    gains = np.array([float(data1.keywords.get(f"p{i}g", 1) or 1) for i in range(1, 9)])
    linear = np.array([data1.keywords[f"p{i}e"].startswith("0") for i in range(1, 9)])
    np.testing.assert_allclose(
        data1.events[:, linear], original[:, linear] / gains[linear], rtol=1e-6
    )


def test_comp_example_truth_is_unscaled_raw(shared_data: Path) -> None:
    """flowkit/test_comp_example.npy is a header-less float64 dump of the stored values: equal
    to ours everywhere except Time, which FlowKit (and we) multiply by $TIMESTEP."""
    sample = read_fcs(shared_data / "flowkit" / "test_comp_example.fcs")
    stored = np.fromfile(shared_data / "flowkit" / "test_comp_example.npy", dtype="<f8").reshape(
        sample.events.shape
    )
    t = sample.pnn.index("Time")
    others = [i for i in range(stored.shape[1]) if i != t]
    np.testing.assert_array_equal(sample.events[:, others], stored[:, others].astype(np.float32))
    step = float(sample.keywords["timestep"])
    np.testing.assert_array_equal(sample.events[:, t], (stored[:, t] * step).astype(np.float32))


def test_fcs2_empty_values_and_all_channels(shared_data: Path) -> None:
    """These FACSCalibur files write empty values as doubled delimiters; flowio loses channel 6
    (FL1-A) in the TEXT, we read all 8 names as flowCore does."""
    sample = read_fcs(shared_data / "flowcore" / "0877408774.B08")
    assert len(sample.pnn) == int(sample.keywords["par"]) == 8
    assert sample.pnn[5] == "FL1-A" and sample.pnn[-1] == "Time"
    assert not any("\\" in k for k in sample.keywords)


def test_lmd_second_dataset(shared_data: Path) -> None:
    path = shared_data / "flowio" / "fcs_files" / "coulter.lmd"
    first, second = read_fcs(path), read_fcs(path, dataset=1)
    assert first.provenance["fcs_version"] == "2.0" and second.provenance["fcs_version"] == "3.0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)[1].as_array(
            preprocess=True
        )
    np.testing.assert_array_equal(second.events, ref.astype(np.float32))
    with pytest.raises(FcsError, match="dataset 2 does not exist"):
        read_fcs(path, dataset=2)


def test_file_untouched_and_provenance(shared_data: Path) -> None:
    path = shared_data / "flowio" / "fcs_files" / "G11.fcs"
    before = os.stat(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sample = read_fcs(path)
    after = os.stat(path)
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    prov = sample.provenance
    json.dumps(prov)
    assert prov["sha256"] == digest
    assert prov["file"] == "G11.fcs" and prov["size_bytes"] == before.st_size
    assert prov["fcs_version"] == "3.1" and prov["cytometer"] == sample.keywords["cyt"]
    assert prov["n_events"] == 5785 and prov["n_channels"] == 12
    assert prov["datatype"] == "F" and prov["byte_order"] == "little"
    assert prov["cytopipe_version"]
    assert prov["acquisition_date"] and prov["acquisition_date"][:2] in ("19", "20")


def test_acquisition_date_forms() -> None:
    assert fcs.acquisition_date({"date": "08-Sep-06"}) == "2006-09-08"
    assert fcs.acquisition_date({"date": "28-JUN-2019"}) == "2019-06-28"
    assert fcs.acquisition_date({"begindatetime": "2023-01-02T10:00:00+01:00"}) == "2023-01-02"
    assert fcs.acquisition_date({"date": "sometime"}) == "sometime"
    assert fcs.acquisition_date({}) is None


# ---------------------------------------------------------------------------------------------
# Generated files with known truth
# ---------------------------------------------------------------------------------------------


def build_fcs(
    keywords: dict[str, str],
    data: bytes,
    *,
    version: str = "FCS3.1",
    header_data: tuple[int, int] | None = None,
) -> bytes:
    """A complete FCS file with consistent HEADER/TEXT offsets (keywords given with '$')."""
    kw = {
        k: v
        for k, v in keywords.items()
        if k.upper()
        not in (
            "$BEGINDATA",
            "$ENDDATA",
            "$BEGINSTEXT",
            "$ENDSTEXT",
            "$BEGINANALYSIS",
            "$ENDANALYSIS",
        )
    }
    kw.update(
        {
            "$BEGINDATA": "#" * 20,
            "$ENDDATA": "#" * 20,
            "$BEGINANALYSIS": "0",
            "$ENDANALYSIS": "0",
            "$BEGINSTEXT": "0",
            "$ENDSTEXT": "0",
        }
    )
    esc = lambda s: str(s).replace("/", "//")  # noqa: E731
    text = ("/" + "".join(f"{esc(k)}/{esc(v)}/" for k, v in kw.items())).encode()
    text_end = 58 + len(text) - 1
    start, stop = text_end + 1, text_end + len(data)
    text = text.replace(b"#" * 20, f"{start:020d}".encode(), 1).replace(
        b"#" * 20, f"{stop:020d}".encode(), 1
    )
    hs, he = header_data if header_data is not None else (start, stop)
    if he > 99_999_999:  # FCS 3.1: offsets that do not fit in 8 digits are 0 in the HEADER
        hs, he = 0, 0
    header = f"{version}    {58:>8}{text_end:>8}{hs:>8}{he:>8}{0:>8}{0:>8}".encode()
    assert len(header) == 58
    return header + text + data


def float_keywords(names: list[str], n: int, **extra: str) -> dict[str, str]:
    kw = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(len(names)),
        "$TOT": str(n),
    }
    for i, name in enumerate(names, 1):
        kw.update({f"$P{i}N": name, f"$P{i}B": "32", f"$P{i}E": "0,0", f"$P{i}R": "262144"})
    kw.update(extra)
    return kw


def mutate(
    src: Path,
    dst: Path,
    set_: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    data: bytes | None = None,
    **build,
) -> Path:
    """Rebuild a good file with some keywords changed or removed (and optionally new DATA)."""
    sample = read_fcs(src)
    kw = {"$" + k.upper(): v for k, v in read_text(src).items()}
    for k in drop:
        kw.pop(k, None)
    kw.update(set_ or {})
    if data is None:
        lo, hi = sample.provenance["data_offsets"]
        data = src.read_bytes()[lo : hi + 1]
    dst.write_bytes(build_fcs(kw, data, **build))
    return dst


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    events = rng.normal(1000, 300, size=(500, 4)).astype(np.float32)
    path = tmp_path / "good.fcs"
    with open(path, "wb") as fh:
        flowio.create_fcs(
            fh,
            events.ravel().tolist(),
            ["FSC-A", "SSC-A", "PE-A", "Time"],
            opt_channel_names=["", "", "CD19", ""],
            metadata_dict={"$CYT": "TestCyt", "$SRC": "patient 17", "$TIMESTEP": "0.5"},
        )
    return path, events


def test_generated_float_file(good) -> None:
    path, events = good
    sample = read_fcs(path)
    expected = events.copy()
    expected[:, 3] *= np.float32(0.5)  # Time x $TIMESTEP, as FlowKit
    np.testing.assert_array_equal(sample.events, expected)
    assert sample.pnn == ["FSC-A", "SSC-A", "PE-A", "Time"]
    assert sample.pns == ["", "", "CD19", ""]
    assert sample.keywords["cyt"] == "TestCyt"


@pytest.mark.parametrize("order", ["<", ">"])
def test_integer_masks_log_and_gain(tmp_path: Path, order: str) -> None:
    """16-bit big/little-endian integers: $PnR=1024 masks the top bits, $PnE decodes log
    amplification, $PnG divides; expected values computed here from the FCS standard."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 65536, size=(300, 3), dtype=np.uint16)
    kw = {
        "$BYTEORD": "1,2" if order == "<" else "2,1",
        "$DATATYPE": "I",
        "$MODE": "L",
        "$PAR": "3",
        "$TOT": "300",
    }
    kw.update({"$P1N": "FSC-H", "$P1B": "16", "$P1R": "1024", "$P1E": "0,0", "$P1G": "4"})
    kw.update({"$P2N": "FL1-H", "$P2B": "16", "$P2R": "1024", "$P2E": "4,1"})
    kw.update({"$P3N": "FL2-H", "$P3B": "16", "$P3R": "65536", "$P3E": "0,0"})
    path = tmp_path / "int.fcs"
    path.write_bytes(build_fcs(kw, stored.astype(f"{order}u2").tobytes(), version="FCS2.0"))
    sample = read_fcs(path)
    masked = (stored & 1023).astype(np.float64)
    np.testing.assert_array_equal(sample.events[:, 0], (masked[:, 0] / 4).astype(np.float32))
    np.testing.assert_array_equal(
        sample.events[:, 1], (10 ** (4 * masked[:, 1] / 1024)).astype(np.float32)
    )
    np.testing.assert_array_equal(sample.events[:, 2], stored[:, 2].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = flowkit.Sample(str(path)).get_events("raw")
    np.testing.assert_array_equal(sample.events, ref.astype(np.float32))


def test_double_and_mixed_width(tmp_path: Path) -> None:
    values = (np.arange(40).reshape(10, 4) * 1.5).astype(">f8")
    kw = {"$BYTEORD": "4,3,2,1", "$DATATYPE": "D", "$MODE": "L", "$PAR": "4", "$TOT": "10"}
    for i in range(1, 5):
        kw.update({f"$P{i}N": f"C{i}", f"$P{i}B": "64", f"$P{i}R": "262144"})
    path = tmp_path / "double.fcs"
    path.write_bytes(build_fcs(kw, values.tobytes()))
    np.testing.assert_array_equal(read_fcs(path).events, values.astype(np.float32))

    rec = np.zeros(5, dtype=[("a", "<u1"), ("b", "<u4"), ("c", "<u2")])
    rec["a"], rec["b"], rec["c"] = [1, 2, 3, 4, 5], [70000, 2, 3, 4, 5], [9, 8, 7, 6, 5]
    kw = {"$BYTEORD": "1,2,3,4", "$DATATYPE": "I", "$MODE": "L", "$PAR": "3", "$TOT": "5"}
    for i, (b, r) in enumerate([(8, 256), (32, 1 << 20), (16, 65536)], 1):
        kw.update({f"$P{i}N": f"C{i}", f"$P{i}B": str(b), f"$P{i}R": str(r)})
    path = tmp_path / "mixed.fcs"
    path.write_bytes(build_fcs(kw, rec.tobytes()))
    ev = read_fcs(path).events
    np.testing.assert_array_equal(
        ev, np.stack([rec["a"], rec["b"], rec["c"]], axis=1).astype(np.float32)
    )


def test_keyword_name_with_escaped_delimiter(tmp_path: Path) -> None:
    """FCS 3.1 sec. 3.2.9: a delimiter inside a keyword name is written doubled ('MY//KEY' is
    the keyword MY/KEY). It must not switch the reader to the FCS 2.0 'doubled delimiter =
    empty value' reading, which cuts every value holding a delimiter ($CYT, $PnN, $DATE)."""
    names = ["FSC-A", "SSC-A", "PE/Cy7-A", "Time"]
    n = 50
    events = np.random.default_rng(11).normal(1000, 300, size=(n, 4)).astype("<f4")
    extra = {"$CYT": "Acme/Flow 3", "MY/KEY": "x", "$DATE": "08/09/2006"}
    kw = float_keywords(names, n, **extra)
    path = tmp_path / "escaped_key.fcs"
    path.write_bytes(build_fcs(kw, events.tobytes()))
    assert b"/MY//KEY/x/" in path.read_bytes()  # the delimiter really is escaped in the key
    sample = read_fcs(path)
    assert sample.keywords["my/key"] == "x"
    assert "my" not in sample.keywords and "key" not in sample.keywords
    assert sample.keywords["cyt"] == "Acme/Flow 3"
    assert sample.keywords["date"] == "08/09/2006"
    assert sample.pnn == names
    assert [sample.keywords[f"p{i}n"] for i in range(1, 5)] == names
    assert sample.provenance["warnings"] == []
    np.testing.assert_array_equal(sample.events, events)


def test_fcs2_empty_value_before_a_keyword_is_still_read(tmp_path: Path) -> None:
    """'$P1S//$P2N/SSC-A/' swallows $P2N when '//' is read as an escaped delimiter; read as an
    empty $P1S value (as FCS 2.0 writers meant it) the keywords are complete."""
    names = ["FSC-A", "SSC-A", "FL1-H"]
    events = np.arange(30, dtype="<f4").reshape(10, 3)
    kw = float_keywords(names, 10, **{"$P1S/$P2N": "SSC-A"})
    del kw["$P2N"]
    path = tmp_path / "empty_value.fcs"
    path.write_bytes(build_fcs(kw, events.tobytes()))
    sample = read_fcs(path)
    assert sample.pnn == names and sample.keywords["p1s"] == ""
    assert any("empty keyword values" in w for w in sample.provenance["warnings"])
    np.testing.assert_array_equal(sample.events, events)


def test_text_that_cannot_be_split_consistently_is_refused(tmp_path: Path) -> None:
    """Read with escaped delimiters, $P2N is swallowed by '$P1S/$P2N'; read with empty values,
    $CYT 'Acme/Flow' is cut and leaves a keyword without a name: neither reading can be trusted."""
    kw = float_keywords(["FSC-A", "SSC-A", "FL1-H"], 10, **{"$CYT": "Acme/Flow"})
    kw["$P1S/$P2N"] = "SSC-A"
    del kw["$P2N"]
    path = tmp_path / "inconsistent text.fcs"
    path.write_bytes(build_fcs(kw, np.zeros((10, 3), dtype="<f4").tobytes()))
    exc = assert_refused(path, "cannot be split into keyword/value pairs consistently")
    assert str(path) in str(exc) and "$P2N" in exc.what
    assert "re-export" in exc.hint
    with pytest.raises(FcsError, match="consistently"):
        read_text(path)


def test_memory_is_one_copy(tmp_path: Path) -> None:
    """Reading costs about one float32 copy of the events (chunked DATA conversion)."""
    n, p = 400_000, 12
    data = np.random.default_rng(0).random((n, p), dtype=np.float32).astype(">f4")
    kw = float_keywords([f"C{i}" for i in range(p)], n)
    kw["$BYTEORD"] = "4,3,2,1"
    kw["$P1G"] = "2"
    path = tmp_path / "big.fcs"
    path.write_bytes(build_fcs(kw, data.tobytes()))
    del data
    tracemalloc.start()
    sample = read_fcs(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < sample.events.nbytes + 6_000_000, (peak, sample.events.nbytes)


# ---------------------------------------------------------------------------------------------
# Bad input: one exception class, with file name, what is wrong and what to do
# ---------------------------------------------------------------------------------------------


def assert_refused(path: Path, needle: str) -> FcsError:
    with pytest.raises(FcsError) as info:
        read_fcs(path)
    exc = info.value
    assert path.name in str(exc) and exc.hint, str(exc)
    assert needle.lower() in exc.what.lower(), (needle, exc.what)
    return exc


def test_not_fcs_empty_missing(tmp_path: Path) -> None:
    (tmp_path / "notes.fcs").write_text("patient notes, not cytometry\n" * 5)
    assert_refused(tmp_path / "notes.fcs", "not an FCS file")
    (tmp_path / "empty.fcs").write_bytes(b"")
    assert_refused(tmp_path / "empty.fcs", "not an FCS file")
    with pytest.raises(FcsError, match="file not found"):
        read_fcs(tmp_path / "missing.fcs")
    with pytest.raises(FcsError, match="directory"):
        read_fcs(tmp_path)


def test_truncated(good, tmp_path: Path) -> None:
    path, _ = good
    raw = path.read_bytes()
    for cut, needle in [(30, "truncated"), (300, "TEXT segment"), (len(raw) - 7, "DATA segment")]:
        bad = tmp_path / f"cut{cut}.fcs"
        bad.write_bytes(raw[:cut])
        assert_refused(bad, needle)


def test_bad_keywords(good, tmp_path: Path) -> None:
    src, _ = good
    cases = {
        "tot": ({"$TOT": "499"}, (), "$TOT=499"),
        "zero": ({"$TOT": "0"}, (), "no events"),
        "datatype": ({"$DATATYPE": "X"}, (), "unknown $DATATYPE"),
        "ascii": ({"$DATATYPE": "A"}, (), "ASCII"),
        "empty_name": ({"$P2N": "  "}, (), "channel 2 has no name"),
        "no_name": ({}, ("$P2N",), "channel 2 has no name"),
        "dupe": ({"$P2N": "FSC-A"}, (), "duplicate channel names"),
        "byteord": ({"$BYTEORD": "3,4,1,2"}, (), "$BYTEORD"),
        "mode": ({"$MODE": "U"}, (), "histogram"),
        "par": ({"$PAR": "four"}, (), "$PAR"),
        "bits": ({"$P3B": "16"}, (), "$PnB=32"),
        "range": ({"$P1R": "big"}, (), "$P1R"),
        "gain": ({"$P1G": "1,5"}, (), "$P1G"),
        "log": ({"$P1E": "x"}, (), "$P1E"),
    }
    for name, (set_, drop, needle) in cases.items():
        assert_refused(mutate(src, tmp_path / f"{name}.fcs", set_, drop), needle)
    zero = mutate(src, tmp_path / "zero_data.fcs", {"$TOT": "0"}, data=b"")
    assert_refused(zero, "no events")


def test_int_bits_unsupported(tmp_path: Path) -> None:
    kw = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "I",
        "$MODE": "L",
        "$PAR": "1",
        "$TOT": "4",
        "$P1N": "A",
        "$P1B": "12",
        "$P1R": "4096",
    }
    path = tmp_path / "packed.fcs"
    path.write_bytes(build_fcs(kw, b"\0" * 6))
    assert_refused(path, "bit widths")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_events(tmp_path: Path, value: float) -> None:
    events = np.ones((20, 2), dtype="<f4")
    events[13, 1] = value
    path = tmp_path / "nan.fcs"
    path.write_bytes(build_fcs(float_keywords(["A", "B"], 20), events.tobytes()))
    exc = assert_refused(path, "NaN or infinite")
    assert "event 13" in exc.what


def test_offsets_that_cannot_be_trusted(good, tmp_path: Path) -> None:
    src, _ = good
    size = src.stat().st_size
    # HEADER and TEXT disagree and neither explains $TOT: refused.
    raw = bytearray(mutate(src, tmp_path / "x.fcs").read_bytes())
    kw = read_text(tmp_path / "x.fcs")
    start = int(kw["begindata"])
    bad = build_fcs({"$" + k.upper(): v for k, v in kw.items()}, bytes(raw[start:]) + b"\0" * 8)
    (tmp_path / "padded.fcs").write_bytes(bad)
    assert_refused(tmp_path / "padded.fcs", "$TOT=500")
    # HEADER says something impossible but TEXT agrees with $TOT: read, with a warning.
    ok = mutate(src, tmp_path / "hdr.fcs", header_data=(10, size * 10))
    sample = read_fcs(ok)
    assert any("DATA offsets disagree" in w for w in sample.provenance["warnings"])
    np.testing.assert_array_equal(sample.events, read_fcs(src).events)
    # Corrupt HEADER text offsets far beyond the file.
    raw = bytearray(src.read_bytes())
    raw[18:26] = b"99999999"
    (tmp_path / "text.fcs").write_bytes(bytes(raw))
    assert_refused(tmp_path / "text.fcs", "TEXT segment offsets")


def test_huge_tot_refused_before_allocation(good, tmp_path: Path) -> None:
    src, _ = good
    path = mutate(src, tmp_path / "huge.fcs", {"$TOT": str(10**12)})
    tracemalloc.start()
    with pytest.raises(FcsError):
        read_fcs(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000


# ---------------------------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------------------------


def test_public_keywords_drop_identifying(shared_data: Path) -> None:
    kw = read_text(shared_data / "flowio" / "fcs_files" / "G11.fcs")
    for key in ("src", "op", "fil", "smno", "inst", "com", "proj", "exp", "cells"):
        assert key in kw, key  # the file really has them
    public = public_keywords(kw)
    assert not set(public) & set(fcs.IDENTIFYING)
    assert not any(k.startswith("#") for k in public)  # vendor free text
    assert "date" not in public and "btim" not in public
    for key in ("par", "tot", "datatype", "cyt", "p1n", "p3s", "p1r", "spillover"):
        assert key in public, key
    allowed = public_keywords(kw, ["$OP", "#LASER*"])
    assert allowed["op"] == kw["op"] and "#laser1color" in allowed and "src" not in allowed


def test_public_keywords_clinical_free_text(shared_data: Path) -> None:
    """100715.fcs carries clinical data in vendor keywords (age, seroconversion date...)."""
    kw = read_text(shared_data / "flowio" / "fcs_files" / "100715.fcs")
    assert "cd age" in kw
    public = public_keywords(kw)
    assert "cd age" not in public and "export user name" not in public and "src" not in public
    assert all(fcs._SAFE_CHANNEL.fullmatch(k) or k in fcs.SAFE_KEYWORDS for k in public)


# ---------------------------------------------------------------------------------------------
# fcs-info command
# ---------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cytopipe")
    ingest_commands.add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_fcs_info_text_and_json(shared_data: Path, capsys) -> None:
    path = shared_data / "flowio" / "fcs_files" / "data_stop_offset_discrepancy_example.fcs"
    assert run_cli(["fcs-info", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "FCS 3.0" in out
        and "S1400EXi" in out
        and "events:      2" in out
        and "DATA offsets disagree" in out
    )
    assert (
        run_cli(["fcs-info", str(shared_data / "flowkit" / "test_comp_example.fcs"), "--json"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["n_events"] == 10703 and info["spillover"]["source"] == "SPILL keyword"
    assert [c["pnn"] for c in info["channels"]][:2] == ["FSC-A", "FSC-W"]
    assert "op" not in info and "src" not in json.dumps(info["channels"])


def test_fcs_info_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.fcs").write_bytes(b"FCS3.1" + b"x" * 10)
    with pytest.raises(FcsError, match="bad.fcs"):
        run_cli(["fcs-info", str(tmp_path / "bad.fcs")])
