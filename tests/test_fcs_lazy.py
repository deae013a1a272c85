"""Lazy FCS reading (open_fcs): the same values as read_fcs, decoded only where asked, so
apply-gates runs on files larger than memory in memory of a few chunks plus the masks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fcs import all_fcs_files, build_fcs, float_keywords

from cytopipe.errors import FcsError
from cytopipe.gating.apply import apply_strategy, apply_strategy_chunked
from cytopipe.gating.gatingml import read_gatingml, write_gatingml
from cytopipe.gating.sample_columns import event_source_from_fcs
from cytopipe.gating.strategy import Strategy
from cytopipe.ingest import fcs
from cytopipe.ingest.fcs import LazyEvents, open_fcs, read_fcs

INVALID_GML = {"gml_range_gate_attr_testing.xml"}  # not Gating-ML (see the compliance tests)


def assert_same_events(lazy: LazyEvents, full: np.ndarray, seed: int = 0) -> None:
    """Slices (inside and across read blocks), single rows, columns, fancy and boolean rows."""
    n = len(full)
    assert isinstance(lazy, LazyEvents) and len(lazy) == n
    assert lazy.shape == full.shape and lazy.dtype == full.dtype == np.float32
    np.testing.assert_array_equal(lazy[:], full)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        i, j = sorted(rng.integers(0, n + 1, 2))
        np.testing.assert_array_equal(lazy[i:j], full[i:j])
        np.testing.assert_array_equal(lazy[i:j, -1], full[i:j, -1])
    np.testing.assert_array_equal(lazy[-1], full[-1])
    np.testing.assert_array_equal(lazy[n // 2, 0], full[n // 2, 0])
    np.testing.assert_array_equal(lazy[::3], full[::3])
    rows = rng.integers(-n, n, min(n, 2000))
    np.testing.assert_array_equal(lazy[rows], full[rows])
    np.testing.assert_array_equal(lazy[rows, :2], full[rows, :2])
    mask = rng.random(n) < 0.3
    np.testing.assert_array_equal(lazy[mask], full[mask])
    assert lazy[n:].shape == (0, full.shape[1])
    with pytest.raises(IndexError):
        lazy[n]


# ---------------------------------------------------------------------------------------------
# Same values as read_fcs
# ---------------------------------------------------------------------------------------------


def test_every_real_file_equals_read_fcs(shared_data: Path, monkeypatch) -> None:
    """Small read blocks (4 KB) so even the small reference files are read across blocks."""
    monkeypatch.setattr(fcs, "CHUNK_BYTES", 4096)
    files = all_fcs_files(shared_data)
    assert len(files) >= 22
    for k, path in enumerate(files):
        datasets = [0, 1] if path.suffix == ".lmd" else [0]
        for ds in datasets:
            full = read_fcs(path, dataset=ds)
            lazy = open_fcs(path, dataset=ds)
            assert_same_events(lazy.events, full.events, seed=k)
            assert (lazy.pnn, lazy.pns, lazy.pnr) == (full.pnn, full.pns, full.pnr)
            assert lazy.keywords == full.keywords
            prov = {key: v for key, v in lazy.provenance.items() if key != "reader"}
            assert prov == full.provenance
            assert lazy.n_events == full.n_events


def int_file(tmp_path: Path, order: str, n: int = 3000) -> Path:
    """16-bit integers with $PnR masking, log amplification and gain (the read_fcs test set)."""
    stored = np.random.default_rng(3).integers(0, 65536, size=(n, 3), dtype=np.uint16)
    kw = {"$BYTEORD": "1,2" if order == "<" else "2,1", "$DATATYPE": "I", "$MODE": "L"}
    kw.update({"$PAR": "3", "$TOT": str(n)})
    kw.update({"$P1N": "FSC-H", "$P1B": "16", "$P1R": "1024", "$P1E": "0,0", "$P1G": "4"})
    kw.update({"$P2N": "FL1-H", "$P2B": "16", "$P2R": "1024", "$P2E": "4,1"})
    kw.update({"$P3N": "FL2-H", "$P3B": "16", "$P3R": "65536", "$P3E": "0,0"})
    path = tmp_path / f"int{order}.fcs"
    path.write_bytes(build_fcs(kw, stored.astype(f"{order}u2").tobytes(), version="FCS2.0"))
    return path


def mixed_file(tmp_path: Path, order: str, n: int = 2500) -> Path:
    """8/32/16-bit integer channels in one event (a structured dtype)."""
    o = order
    rec = np.zeros(n, dtype=[("a", f"{o}u1"), ("b", f"{o}u4"), ("c", f"{o}u2")])
    rng = np.random.default_rng(5)
    rec["a"], rec["b"] = rng.integers(0, 256, n), rng.integers(0, 2**32, n, dtype=np.uint64)
    rec["c"] = rng.integers(0, 2**16, n)
    kw = {"$BYTEORD": "1,2,3,4" if o == "<" else "4,3,2,1", "$DATATYPE": "I", "$MODE": "L"}
    kw.update({"$PAR": "3", "$TOT": str(n)})
    for i, (b, r) in enumerate([(8, 256), (32, 1 << 20), (16, 65536)], 1):
        kw.update({f"$P{i}N": f"C{i}", f"$P{i}B": str(b), f"$P{i}R": str(r)})
    path = tmp_path / f"mixed{o}.fcs"
    path.write_bytes(build_fcs(kw, rec.tobytes()))
    return path


def float_file(tmp_path: Path, order: str, kind: str, n: int = 4000) -> Path:
    """float32 (with a gain and a Time channel scaled by $TIMESTEP) or float64 events."""
    width = 4 if kind == "F" else 8
    values = np.random.default_rng(9).normal(1000, 300, size=(n, 4)).astype(f"{order}f{width}")
    kw = float_keywords(["FSC-A", "SSC-A", "PE-A", "Time"], n, **{"$TIMESTEP": "0.25"})
    kw["$BYTEORD"] = "1,2,3,4" if order == "<" else "4,3,2,1"
    kw["$DATATYPE"] = kind
    kw["$P2G"] = "2"
    for i in range(1, 5):
        kw[f"$P{i}B"] = str(8 * width)
    path = tmp_path / f"{kind}{order}.fcs"
    path.write_bytes(build_fcs(kw, values.tobytes()))
    return path


@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("kind", ["int", "mixed", "F", "D"])
def test_generated_files_equal_read_fcs(tmp_path: Path, monkeypatch, order: str, kind: str):
    monkeypatch.setattr(fcs, "CHUNK_BYTES", 2048)
    if kind == "int":
        path = int_file(tmp_path, order)
    elif kind == "mixed":
        path = mixed_file(tmp_path, order)
    else:
        path = float_file(tmp_path, order, kind)
    full = read_fcs(path)
    assert_same_events(open_fcs(path).events, full.events)
    assert np.asarray(open_fcs(path).events).tobytes() == full.events.tobytes()


# ---------------------------------------------------------------------------------------------
# Refusals: up front where read_fcs checks without events, per block for NaN/inf
# ---------------------------------------------------------------------------------------------


def test_bad_files_refused_at_open(tmp_path: Path) -> None:
    good = float_file(tmp_path, "<", "F", n=100)
    raw = good.read_bytes()
    cases = {
        "truncated": (raw[:-10], "truncated"),
        "not_fcs": (b"hello world" * 10, "not an FCS file"),
        "bad_tot": (raw.replace(b"$TOT/100/", b"$TOT/101/"), "$TOT=101"),
    }
    for name, (data, needle) in cases.items():
        path = tmp_path / f"{name}.fcs"
        path.write_bytes(data)
        with pytest.raises(FcsError) as lazy_err:
            open_fcs(path)
        with pytest.raises(FcsError) as full_err:
            read_fcs(path)
        assert needle in lazy_err.value.what and lazy_err.value.what == full_err.value.what
    with pytest.raises(FcsError, match="not found"):
        open_fcs(tmp_path / "missing.fcs")


def test_nan_refused_when_its_block_is_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fcs, "CHUNK_BYTES", 16 * 100)  # 100 events of 4 float32 per read
    n = 1000
    values = np.random.default_rng(1).random((n, 4)).astype("<f4")
    values[733, 2] = np.nan
    path = tmp_path / "nan.fcs"
    path.write_bytes(build_fcs(float_keywords(list("ABCD"), n), values.tobytes()))
    with pytest.raises(FcsError, match="NaN"):
        read_fcs(path)
    lazy = open_fcs(path).events  # opening does not read the events
    np.testing.assert_array_equal(lazy[:700], values[:700])
    for key in (slice(600, 800), 733, [5, 733], slice(None)):
        with pytest.raises(FcsError, match="first at event 733, channels \\[2\\]"):
            lazy[key]


def test_file_changed_after_open_is_refused(tmp_path: Path) -> None:
    path = float_file(tmp_path, "<", "F", n=100)
    lazy = open_fcs(path).events
    lazy[:10]
    os.utime(path, ns=(0, 0))
    with pytest.raises(FcsError, match="changed since it was opened"):
        lazy[:10]


def test_provenance_hash_is_honest(tmp_path: Path) -> None:
    path = float_file(tmp_path, "<", "F", n=100)
    hashed = open_fcs(path)
    assert hashed.provenance["sha256"] == read_fcs(path).provenance["sha256"]
    assert hashed.provenance["sha256"] == fcs.file_sha256(path)
    unhashed = open_fcs(path, sha256=False)
    assert unhashed.provenance["sha256"] is None
    assert "not computed" in unhashed.provenance["sha256_note"]


# ---------------------------------------------------------------------------------------------
# Gating through the lazy source equals gating in memory
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data1_sources(shared_data: Path):
    path = shared_data / "flowkit" / "gate_ref" / "data1.fcs"
    return event_source_from_fcs(read_fcs(path)), event_source_from_fcs(open_fcs(path))


def test_compliance_masks_equal_with_lazy_source(shared_data: Path, data1_sources) -> None:
    memory, lazy = data1_sources
    gml = shared_data / "flowkit" / "gate_ref" / "gml"
    names = [n for n in sorted(p.name for p in gml.glob("*.xml")) if n not in INVALID_GML]
    assert len(names) >= 40
    for name in names:
        strategy = read_gatingml(gml / name)
        expected = apply_strategy_chunked(strategy, memory, chunk_events=1000)
        got = apply_strategy_chunked(strategy, lazy, chunk_events=1000)
        assert list(got) == list(expected), name
        for pid in expected:
            assert np.array_equal(got[pid], expected[pid]), (name, pid)
    # the unchunked path works on the lazy source too (it decodes what it indexes)
    strategy = read_gatingml(gml / "gml_all_gates.xml")
    whole = apply_strategy(strategy, lazy)
    chunked = apply_strategy_chunked(strategy, memory, chunk_events=4096, fast=False)
    assert all(np.array_equal(whole[p], chunked[p]) for p in chunked)


def test_apply_gates_library_equals_in_memory(shared_data: Path, data1_sources) -> None:
    """apply_gates (lazy reader, recycled chunk buffers) on every gate of the reference set."""
    from cytopipe.commands.gates import apply_gates

    ref = shared_data / "flowkit" / "gate_ref"
    strategy, got = apply_gates(
        ref / "gml" / "gml_all_gates.xml", ref / "data1.fcs", chunk_events=999
    )
    expected = apply_strategy_chunked(strategy, data1_sources[0], chunk_events=4096)
    assert list(got) == list(expected)
    assert all(np.array_equal(got[p], expected[p]) for p in expected)


# ---------------------------------------------------------------------------------------------
# A generated file, written without holding it in memory
# ---------------------------------------------------------------------------------------------

EXTRA = ["FL5-H", "FL6-H", "FL7-H", "FL8-H"]
STRATEGY_FILES = [
    "gml_parent_rect1_rect_par1_gate.xml",  # spectrumMatrix, logicle + hyperlog, nested
    "gml_poly1_gate.xml",  # FCS compensation: the generated file carries a $SPILLOVER
    "gml_ellipse1_gate.xml",
    "gml_ratio_range1_gate.xml",
]


def write_fcs_streaming(path: Path, data1: np.ndarray, pnn: list[str], n: int, seed: int) -> None:
    """Big-endian float32 FCS 3.1 file of `n` events resampled from data1 with noise, written
    chunk by chunk (memory-flat): DATA offsets > 99,999,999 go in TEXT only, as FCS 3.1 says."""
    names = pnn + EXTRA
    kw = float_keywords(names, n, **{"$BYTEORD": "4,3,2,1", "$TIMESTEP": "1"})
    fl = ["FL1-H", "FL2-H", "FL3-H"]
    kw["$SPILLOVER"] = "3," + ",".join(fl) + ",1,0.1,0.02,0.05,1,0.1,0.01,0.03,1"
    kw.update({"$BEGINDATA": "#" * 20, "$ENDDATA": "#" * 20})
    esc = lambda s: str(s).replace("/", "//")  # noqa: E731
    text = ("/" + "".join(f"{esc(k)}/{esc(v)}/" for k, v in kw.items())).encode()
    start = 58 + len(text)
    stop = start + n * len(names) * 4 - 1
    text = text.replace(b"#" * 20, f"{start:020d}".encode(), 1)
    text = text.replace(b"#" * 20, f"{stop:020d}".encode(), 1)
    hs, he = (start, stop) if stop <= 99_999_999 else (0, 0)
    header = f"FCS3.1    {58:>8}{start - 1:>8}{hs:>8}{he:>8}{0:>8}{0:>8}".encode()
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(header + text)
        for lo in range(0, n, 1 << 18):
            k = min(n, lo + (1 << 18)) - lo
            base = data1[rng.integers(0, len(data1), k)]
            base *= rng.normal(1.0, 0.05, base.shape).astype(np.float32)
            extra = rng.gamma(2.0, 300.0, (k, len(EXTRA))).astype(np.float32)
            fh.write(np.hstack([base, extra]).astype(">f4").tobytes())


def merged_strategy(gml: Path, out: Path) -> Path:
    parts = [read_gatingml(gml / name) for name in STRATEGY_FILES]
    merged = Strategy([], {}, {}, {})
    for s in parts:
        merged.gates += [g for g in s.gates if g.id not in {h.id for h in merged.gates}]
        merged.dims.update(s.dims)
        merged.scales.update(s.scales)
        merged.matrices.update(s.matrices)
    write_gatingml(merged, out)
    return out


@pytest.fixture(scope="module")
def generated(shared_data: Path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lazy")
    ref = shared_data / "flowkit" / "gate_ref"
    d1 = read_fcs(ref / "data1.fcs")
    xml = merged_strategy(ref / "gml", root / "strategy.xml")
    return {"root": root, "data1": d1.events, "pnn": d1.pnn, "xml": xml}


def test_generated_file_masks_equal(generated, tmp_path: Path) -> None:
    path = tmp_path / "gen.fcs"
    write_fcs_streaming(path, generated["data1"], generated["pnn"], 150_000, seed=2)
    strategy = read_gatingml(generated["xml"])
    assert len(strategy.population_ids()) >= 5
    memory = event_source_from_fcs(read_fcs(path))
    lazy = event_source_from_fcs(open_fcs(path))
    assert lazy.spill is not None and memory.spill is not None
    expected = apply_strategy(strategy, memory, fast=True)
    got = apply_strategy_chunked(strategy, lazy, chunk_events=10_000)
    for pid in expected:
        assert np.array_equal(got[pid], expected[pid]), pid
        assert 0 < np.count_nonzero(got[pid]) < len(got[pid]), pid  # the gates do select


def peak_rss_bytes(argv: list[str]) -> int:
    """Peak RSS of a command, measured in a fresh child so no earlier child counts."""
    probe = textwrap.dedent(
        """
        import resource, subprocess, sys
        subprocess.run(sys.argv[1:], check=True)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1]) * 1024  # Linux reports KiB


def apply_gates_cmd(xml: Path, fcs_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cytopipe.cli", "apply-gates", str(xml), str(fcs_path)] + [
        "--out",
        str(out),
        "--stats",
        str(out.with_suffix(".tsv")),
    ]


def check_bounded_memory(generated, n: int, tmp_path: Path) -> None:
    tiny, big = tmp_path / "tiny.fcs", tmp_path / "big.fcs"
    write_fcs_streaming(tiny, generated["data1"], generated["pnn"], 2_000, seed=3)
    write_fcs_streaming(big, generated["data1"], generated["pnn"], n, seed=4)
    xml = generated["xml"]
    base = peak_rss_bytes(apply_gates_cmd(xml, tiny, tmp_path / "tiny.parquet"))
    peak = peak_rss_bytes(apply_gates_cmd(xml, big, tmp_path / "big.parquet"))
    n_ch = len(generated["pnn"]) + len(EXTRA)
    matrix = n * n_ch * 4
    n_pop = len(read_gatingml(xml).population_ids())
    masks = n * n_pop
    growth = peak - base
    print(
        f"\napply-gates on {n} events x {n_ch} channels: float32 matrix {matrix / 2**20:.0f} MiB,"
        f" masks {masks / 2**20:.0f} MiB ({n_pop} populations); peak RSS {peak / 2**20:.0f} MiB,"
        f" tiny file {base / 2**20:.0f} MiB, growth {growth / 2**20:.0f} MiB"
        f" = {growth / matrix:.2f}x matrix, growth - masks = {(growth - masks) / matrix:.2f}x"
    )
    assert growth < 0.5 * matrix
    assert growth - masks < 0.25 * matrix
    out = pd.read_parquet(tmp_path / "big.parquet")
    stats = pd.read_csv(tmp_path / "big.tsv", sep="\t")
    assert len(out) == n and list(out.columns) == read_gatingml(xml).population_ids()
    assert stats["count"].tolist() == [int(out[c].sum()) for c in out.columns]
    assert (stats["count"] > 0).all()


def test_apply_gates_memory_is_bounded(generated, tmp_path: Path) -> None:
    """3.5 M events x 12 channels (160 MiB of float32): apply-gates grows by the masks and a
    few chunks, not by the event matrix (read_fcs would add all of it)."""
    check_bounded_memory(generated, 3_500_000, tmp_path)


@pytest.mark.slow
def test_apply_gates_memory_is_bounded_50m(generated, tmp_path: Path) -> None:
    check_bounded_memory(generated, 50_000_000, tmp_path)
