"""Property: a mutated FCS file is either read (consistent, finite events) or refused with
FcsError -- never another exception, never a hang, never a huge allocation.

Mutations: flipped bytes (weighted to HEADER and TEXT, where parsing happens), files cut short,
HEADER offsets overwritten, and keyword values ($TOT, $PAR, $PnB, offsets, ...) replaced by
huge, negative, empty or non-numeric text.
"""

from __future__ import annotations

import re
import signal
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cytopipe.errors import FcsError
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.keywords import public_keywords
from cytopipe.preprocess.compensation import spillover_from_keywords

SOURCES = [
    "flowkit/simple_line_example/data_set_simple_line_100.fcs",  # FCS 3.1 float
    "flowio/fcs_files/variable_int_example.fcs",  # FCS 3.0 mixed 16/32-bit integers, SPILL
    "flowio/fcs_files/data_stop_offset_discrepancy_example.fcs",  # HEADER/TEXT disagree
    "flowcore/0877408774.B08",  # FCS 2.0 big-endian integers, log channels, empty values
]
KEYWORDS = [
    b"$TOT",
    b"$PAR",
    b"$P1B",
    b"$P2B",
    b"$DATATYPE",
    b"$BYTEORD",
    b"$BEGINDATA",
    b"$ENDDATA",
    b"$P1N",
    b"$P2N",
    b"$P1R",
    b"$P3E",
    b"$P1G",
    b"$NEXTDATA",
    b"$TIMESTEP",
    b"$MODE",
    b"SPILL",
    b"$BEGINSTEXT",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"0",
            b"-1",
            b"1000000000000",
            b"99999999999999999999",
            b"nan",
            b"inf",
            b"1e308",
            b"x",
            b"4,3,2,1",
            b"1,2",
            b"3,4,1,2",
            b"F",
            b"D",
            b"I",
            b"A",
            b"64",
            b"12",
            b"FSC-H",
            b"1,FL1-H,nan",
        ]
    ),
    st.integers(-(10**15), 10**15).map(lambda i: str(i).encode()),
    st.binary(max_size=12),
)
MEMORY_LIMIT = 64 * 2**20  # bytes traced per read; the sources are at most 170 kB


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def _raise(*_):
        raise Hang(f"read took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def originals(shared_data: Path) -> list[bytes]:
    return [(shared_data / rel).read_bytes() for rel in SOURCES]


def text_end(raw: bytes) -> int:
    field = raw[18:26].strip()
    return int(field) if field.isdigit() and int(field) < len(raw) else min(len(raw), 4096)


@st.composite
def mutations(draw, originals: list[bytes]) -> bytes:
    raw = bytearray(originals[draw(st.integers(0, len(originals) - 1))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip_text", "cut", "offset", "keyword", "keyword"]))
        if not raw:
            break
        if kind in ("flip", "flip_text"):
            lo = 0 if kind == "flip" else min(10, len(raw) - 1)  # flip_text keeps the magic
            hi = len(raw) - 1 if kind == "flip" else min(len(raw) - 1, text_end(bytes(raw)))
            hi = max(hi, lo)  # a TEXT end before byte 10 (cut or broken offsets): flip byte 10
            for _ in range(draw(st.integers(1, 8))):
                raw[draw(st.integers(lo, hi))] = draw(st.integers(0, 255))
        elif kind == "cut":
            if draw(st.booleans()):
                keep = draw(st.integers(0, len(raw) - 1))
            else:  # near the end: inside DATA
                keep = len(raw) - draw(st.integers(1, len(raw)))
            del raw[keep:]
        elif kind == "offset":
            start = 10 + 8 * draw(st.integers(0, 5))
            value = draw(
                st.one_of(
                    st.integers(0, 99_999_999).map(lambda i: f"{i:>8}".encode()),
                    st.binary(min_size=8, max_size=8),
                )
            )
            raw[start : start + 8] = value
        else:
            raw = bytearray(
                replace_keyword(
                    bytes(raw), draw(st.sampled_from(KEYWORDS)), draw(VALUES), draw(st.booleans())
                )
            )
    return bytes(raw)


def replace_keyword(raw: bytes, key: bytes, value: bytes, keep_length: bool) -> bytes:
    if len(raw) < 59:
        return raw
    delim = raw[58:59]
    m = re.search(
        re.escape(delim + key + delim) + b"([^" + re.escape(delim) + b"]*)" + re.escape(delim),
        raw,
        re.IGNORECASE,
    )
    if m is None:
        return raw
    old = m.group(1)
    if keep_length:
        value = (value + b" " * len(old))[: len(old)] if len(old) else value[:0]
    return raw[: m.start(1)] + value + raw[m.end(1) :]


def check_one(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with time_limit(5):
            try:
                sample = read_fcs(path)
            except FcsError as exc:
                assert exc.what and exc.path == str(path)
                return
            n, p = sample.events.shape
            assert sample.events.dtype == np.float32 and sample.events.flags.c_contiguous
            assert n == sample.provenance["n_events"] > 0 and p == len(sample.pnn) == len(
                sample.pns
            ) == len(sample.pnr)
            assert len(set(sample.pnn)) == p and all(sample.pnn)
            assert np.isfinite(sample.events).all()
            public_keywords(sample.keywords)
            try:
                spillover_from_keywords(sample)
            except FcsError:
                pass
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MEMORY_LIMIT, peak
    finally:
        tracemalloc.stop()


def test_mutated_files_read_or_refused(originals: list[bytes], tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mutant.fcs"

    @settings(
        max_examples=250,
        deadline=2000,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutations(originals))
    def run(data: bytes) -> None:
        check_one(path, data)

    run()


def test_unmutated_sources_read(originals: list[bytes], tmp_path: Path) -> None:
    """The property is not vacuous: every source file is read as is."""
    for i, data in enumerate(originals):
        path = tmp_path / f"src{i}.fcs"
        path.write_bytes(data)
        assert read_fcs(path).events.shape[0] > 0


SPILL_TOKENS = st.sampled_from(
    ["3", "0", "-2", "FL1", "fl2", "FL3", "9", "1", "0,5", "0.5", "nan", "", " ", "1e400", "x"]
)


@settings(max_examples=250, deadline=1000, database=None)
@given(
    st.one_of(
        st.lists(SPILL_TOKENS, max_size=16).map(",".join),
        st.lists(SPILL_TOKENS, max_size=16).map(";".join),
        st.text(max_size=40),
    )
)
def test_spillover_text_parsed_or_refused(text: str) -> None:
    from cytopipe.preprocess.compensation import Spillover, compensate, parse_spillover

    pnn = ["FS", "SS", "FL1", "FL2", "FL3"]
    try:
        spill = parse_spillover(text, pnn)
    except FcsError as exc:
        assert exc.what
        return
    if spill is None:
        return
    assert isinstance(spill, Spillover) and set(spill.channels) <= set(pnn)
    assert spill.matrix.shape == (len(spill.channels),) * 2 and np.isfinite(spill.matrix).all()
    try:
        out = compensate(np.ones((4, 5), dtype=np.float32), pnn, spill)
    except FcsError:
        return
    assert out.dtype == np.float32 and out.shape == (4, 5)
