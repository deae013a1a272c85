"""Reading FCS files an archive can trust: exact values, clear refusals, provenance, privacy.

Archived files come from many instruments and decades, and some are broken. The rule is: read
exactly what FlowKit reads (``Sample(path).get_events("raw")``) where the file can be trusted,
refuse with an :class:`FcsError` saying what is wrong where it cannot, and never guess silently
(every repair we make is recorded in ``provenance["warnings"]``).

Why we parse HEADER/TEXT/DATA ourselves instead of calling ``flowio.FlowData``:

* flowio reads DATA into ``array.array`` and converts it to a float64 NumPy array (three copies
  of the events, two of them 8 bytes per value); a 10 M x 20 file would need ~4 GB. We read the
  DATA segment in cache-sized chunks straight into one preallocated float32 array, hashing the
  file in the same pass, so memory is one copy of the events.
* flowio removes every ``$`` from TEXT *values* (not only the keyword prefix), raises plain
  ``ValueError``/``struct.error``/``KeyError`` on damaged files, trusts ``$TOT`` without checking
  it against the DATA size, and cannot read files whose ``$TIMESTEP`` is not a number (the Sony
  files in the reference data).
* The value semantics are FlowKit's (flowio ``as_array(preprocess=True)``), reproduced exactly in
  float64 and cast once to float32:
  - integer channels are masked to the next power of two of ``$PnR`` when ``$PnB`` is wider;
  - the Time channel (the last channel whose ``$PnN`` is ``time``, case-insensitive) is
    multiplied by ``$TIMESTEP`` and its ``$PnG`` is ignored;
  - ``$PnE`` = f1,f2 with f1 > 0 is decoded as ``10 ** (f1 * x / $PnR) * f2`` (f2 = 0 -> 1),
    for any data type, as FlowKit does;
  - every other channel is divided by ``$PnG`` when it is present and not 0 or 1.
  Tests check equality with FlowKit/flowio and with the ``.npy`` truth files on every real file.

The reader is split by job: cytopipe.ingest.fcs_text parses HEADER and TEXT,
cytopipe.ingest.fcs_data lays out the channels and decodes DATA bytes,
cytopipe.ingest.keywords says which keywords are public; this module reads the file
(one pass, or lazily) and is the public API.

Keyword names follow flowio's convention (lower case, leading ``$`` removed) so code written
against FlowKit's ``Sample.metadata`` keeps working.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from cytopipe import __version__
from cytopipe.errors import FcsError
from cytopipe.ingest.fcs_data import _channel_layout, _convert_chunk, _data_segment, _Layout
from cytopipe.ingest.fcs_text import _fail, _is_int, _locate_dataset, _Text
from cytopipe.ingest.keywords import acquisition_date, public_keywords

CHUNK_BYTES = 1 << 20  # DATA is decoded in pieces of this size (cache-sized, bounded memory)

__all__ = [
    "FcsSample",
    "FcsError",
    "read_fcs",
    "open_fcs",
    "LazyEvents",
    "file_sha256",
    "read_text",
    "public_keywords",
]


@dataclass
class FcsSample:
    """One FCS dataset: events on FlowKit's 'raw' scale plus everything needed to trust them."""

    path: str
    events: np.ndarray  # float32 (n_events, n_channels), C-contiguous, file event order
    pnn: list[str]
    pns: list[str]
    pnr: list[float]
    keywords: dict[str, str]
    provenance: dict = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])


# --------------------------------------------------------------------------------------------
# Keywords only
# --------------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike, *, dataset: int = 0) -> dict[str, str]:
    """TEXT keywords only (no DATA): cheap look at a file, e.g. for triage or sample sheets."""
    path = os.fspath(path)
    with _open(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        return dict(_locate_dataset(fh, dataset, size, path).keywords)


def _open(path: str):
    try:
        return open(path, "rb")  # read-only: input files are never modified
    except FileNotFoundError:
        raise FcsError("file not found", path=path, hint="check the path") from None
    except IsADirectoryError:
        raise FcsError(
            "is a directory, not an FCS file", path=path, hint="give the path of an .fcs file"
        ) from None
    # Any other OSError (permission denied, an I/O error on a flaky share) is the machine's,
    # not the file's: it propagates, so the job fails and is retried (cytopipe.errors).


# --------------------------------------------------------------------------------------------
# Reading DATA in one pass
# --------------------------------------------------------------------------------------------


def _read_events(
    fh, layout: _Layout, start: int, size: int, file_size: int, sha, path: str
) -> np.ndarray:
    """One sequential pass over the file: hash everything, decode DATA chunk by chunk into one
    preallocated float32 array (memory = one copy of the events plus a 4 MB buffer)."""
    events = np.empty((layout.n_events, layout.n_channels), dtype=np.float32)
    fh.seek(0)
    _hash_range(fh, start, sha, path)
    rows_per_chunk = max(1, CHUNK_BYTES // layout.event_bytes)
    buf = bytearray(rows_per_chunk * layout.event_bytes)
    view = memoryview(buf)
    finite = True
    for lo in range(0, layout.n_events, rows_per_chunk):
        hi = min(layout.n_events, lo + rows_per_chunk)
        nbytes = (hi - lo) * layout.event_bytes
        got = fh.readinto(view[:nbytes])
        if got != nbytes:
            raise _fail(path, "file ended inside the DATA segment (changed while reading?)")
        sha.update(view[:nbytes])
        _convert_chunk(view[:nbytes], layout, events[lo:hi])
        finite = finite and bool(np.isfinite(events[lo:hi]).all())
    fh.seek(start + size)
    _hash_range(fh, file_size - start - size, sha, path)
    if not finite:
        bad = ~np.isfinite(events)
        rows = np.flatnonzero(bad.any(axis=1))
        cols = np.flatnonzero(bad.any(axis=0))
        raise FcsError(
            f"{rows.size} events hold NaN or infinite values (first at event {int(rows[0])}, channels {cols.tolist()[:8]})",
            path=path,
            hint="the DATA segment is corrupt or was written by faulty software; re-export the file",
        )
    return events


def _hash_range(fh, nbytes: int, sha, path: str) -> None:
    while nbytes > 0:
        block = fh.read(min(nbytes, CHUNK_BYTES))
        if not block:
            raise _fail(path, "file ended early while reading (changed while reading?)")
        sha.update(block)
        nbytes -= len(block)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


@dataclass
class _Dataset:
    """Everything known about one dataset before its events are decoded."""

    stat: os.stat_result
    text: _Text
    warnings: list[str]
    layout: _Layout
    pnn: list[str]
    pns: list[str]
    pnr: list
    start: int
    size: int


def _parse_dataset(fh, dataset: int, path: str) -> _Dataset:
    """HEADER, TEXT, channel layout and DATA offsets, checked: shared by both readers."""
    st = os.fstat(fh.fileno())
    text = _locate_dataset(fh, dataset, st.st_size, path)
    warnings = list(text.warnings)
    kw = text.keywords
    layout, pnn, pns, pnr = _channel_layout(kw, path, warnings)
    start, size = _data_segment(text, layout, st.st_size, path, warnings)
    if _is_int(kw.get("nextdata")) and int(kw["nextdata"]) != 0:
        warnings.append(f"file holds more than one dataset; read dataset {dataset}")
    return _Dataset(st, text, warnings, layout, pnn, pns, pnr, start, size)


def _sample(path: str, events, ds: _Dataset, dataset: int, digest: str | None) -> FcsSample:
    provenance = _provenance(
        path, ds.stat.st_size, digest, ds.text, ds.layout, dataset, ds.start, ds.size, ds.warnings
    )
    pnr = [float(r) for r in ds.pnr]
    return FcsSample(path, events, ds.pnn, ds.pns, pnr, dict(ds.text.keywords), provenance)


def read_fcs(path: str | os.PathLike, *, dataset: int = 0) -> FcsSample:
    """Read one dataset of an FCS file (LMD files: dataset 0 is the FCS 2.0 one).

    Raises FcsError for anything that cannot be read or trusted: not FCS, truncated, offsets or
    $TOT that do not explain the DATA size, unknown $DATATYPE/$BYTEORD, empty or duplicate
    channel names, zero events, NaN/inf values. Repairs that FlowKit also makes (DATA end one
    past the last byte, HEADER/TEXT offsets that disagree where one of them matches $TOT) are
    made and recorded in provenance["warnings"].
    """
    path = os.fspath(path)
    with _open(path) as fh:
        ds = _parse_dataset(fh, dataset, path)
        sha = hashlib.sha256()
        events = _read_events(fh, ds.layout, ds.start, ds.size, ds.stat.st_size, sha, path)
    return _sample(path, events, ds, dataset, sha.hexdigest())


# --------------------------------------------------------------------------------------------
# Lazy reading: files larger than memory
# --------------------------------------------------------------------------------------------


class LazyEvents:
    """Read-only, array-like view of one dataset's events, decoded from the file on demand.

    `events[i:j]` reads just those rows' bytes and decodes them with the same `_convert_chunk`
    as `read_fcs`, so values are identical; nothing else is kept in memory. Rows are read with
    plain file reads into a reused buffer, not an np.memmap: pages of a memory map that were
    touched stay in the process's resident set until the kernel needs them back, so gating a
    file through a map shows (and may hold) the whole file in RSS.

    Indexing: a row key (slice, int, integer or boolean array), optionally followed by column
    keys as for a 2-D ndarray (`events[i:j, k]`, `events[rows, k]`). The result is a fresh
    float32 ndarray. NaN/inf values are refused with FcsError when the rows holding them are
    decoded (read_fcs refuses them up front, which needs all events). `np.asarray(events)`
    decodes everything: only for files that fit in memory.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, path: str, layout: _Layout, start: int, size: int, stat: os.stat_result):
        self.path = path
        self._layout = layout
        self._start = start
        self._size = size
        self._stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        self._rows_per_read = max(1, CHUNK_BYTES // layout.event_bytes)

    @property
    def shape(self) -> tuple[int, int]:
        return (self._layout.n_events, self._layout.n_channels)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 matrix if it were materialized."""
        return self.size * 4

    def __len__(self) -> int:
        return self._layout.n_events

    def __repr__(self) -> str:
        return f"LazyEvents({os.path.basename(self.path)!r}, shape={self.shape}, dtype=float32)"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("LazyEvents cannot be viewed as an array without decoding (a copy)")
        out = self._decode_range(0, len(self))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = (key[0], key[1:]) if key else (slice(None), ())
        else:
            rows, cols = key, ()
        n = len(self)
        if rows is Ellipsis:
            rows = slice(None)
        if isinstance(rows, slice):
            lo, hi, step = rows.indices(n)
            if step == 1:
                out = self._decode_range(lo, max(lo, hi))
            else:
                out = self._decode_rows(np.arange(lo, hi, step, dtype=np.int64))
        elif isinstance(rows, int | np.integer):
            i = int(rows)
            if not -n <= i < n:
                raise IndexError(f"event {i} is out of range for {n} events")
            i %= n
            out = self._decode_range(i, i + 1)[0]
        elif rows is None:
            raise TypeError("LazyEvents does not support np.newaxis")
        else:
            out = self._decode_rows(self._row_indices(rows))
        if not cols:
            return out
        return out[(slice(None), *cols)] if out.ndim == 2 else out[cols]

    # ---- decoding

    def _row_indices(self, rows) -> np.ndarray:
        n = len(self)
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean row index of shape {idx.shape} for {n} events")
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError("rows must be a slice, an int, or a 1-D integer or boolean array")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"event index out of range for {n} events")
        return np.where(idx < 0, idx + n, idx)

    def decode_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Decode events [start, start + len(out)) into `out` (float32, n_channels wide).

        For callers that recycle their own buffers (one chunk at a time), so decoding a chunk
        allocates nothing."""
        hi = start + out.shape[0]
        if not 0 <= start <= hi <= len(self):
            raise IndexError(f"events {start}..{hi} are out of range for {len(self)} events")
        if out.dtype != np.float32 or out.shape[1:] != (self._layout.n_channels,):
            raise ValueError(f"out must be float32 of shape (k, {self._layout.n_channels})")
        if hi > start:
            with self._reader() as read:
                for a in range(start, hi, self._rows_per_read):
                    b = min(hi, a + self._rows_per_read)
                    self._convert(read(a, b), out[a - start : b - start], a)
        return out

    def _decode_range(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi), read piece by piece into one reused buffer."""
        out = np.empty((hi - lo, self._layout.n_channels), dtype=np.float32)
        return self.decode_into(lo, out)

    def _decode_rows(self, idx: np.ndarray) -> np.ndarray:
        """Arbitrary rows (any order, repeats): the sorted rows are read block by block over
        the span they cover, skipping gaps, so memory is one block plus the output."""
        out = np.empty((idx.size, self._layout.n_channels), dtype=np.float32)
        if not idx.size:
            return out
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        ebytes = self._layout.event_bytes
        with self._reader() as read:
            pos = 0
            while pos < sidx.size:
                a = int(sidx[pos])
                end = int(np.searchsorted(sidx, a + self._rows_per_read, side="left"))
                b = int(sidx[end - 1]) + 1
                raw = np.frombuffer(read(a, b), dtype=np.uint8).reshape(b - a, ebytes)
                picked = raw[sidx[pos:end] - a]
                part = np.empty((end - pos, self._layout.n_channels), dtype=np.float32)
                self._convert(memoryview(picked).cast("B"), part, sidx[pos:end])
                out[order[pos:end]] = part
                pos = end
        return out

    def _convert(self, buf, out: np.ndarray, events: int | np.ndarray) -> None:
        """Decode into `out`; `events` = file index of out's first row, or of every row."""
        _convert_chunk(buf, self._layout, out)
        if not np.isfinite(out).all():
            bad = ~np.isfinite(out)
            rows = np.flatnonzero(bad.any(axis=1))
            cols = np.flatnonzero(bad.any(axis=0))
            first = events + rows[0] if isinstance(events, int) else events[rows[0]]
            raise FcsError(
                f"{rows.size} events hold NaN or infinite values in the block being read "
                f"(first at event {int(first)}, channels {cols.tolist()[:8]}); open_fcs "
                "checks values when they are read, not when the file is opened",
                path=self.path,
                hint="the DATA segment is corrupt or was written by faulty software; re-export the file",
            )

    def _reader(self):
        """Context giving read(a, b) -> memoryview of the raw bytes of events [a, b); refuses a
        file that changed since it was opened (the checks made then would no longer hold)."""
        return _RowReader(self)


class _RowReader:
    def __init__(self, ev: LazyEvents):
        self.ev = ev
        self.fh = None
        self.buf = bytearray(ev._rows_per_read * ev._layout.event_bytes)

    def __enter__(self):
        self.fh = _open(self.ev.path)
        st = os.fstat(self.fh.fileno())
        if (st.st_size, st.st_mtime_ns, st.st_ino) != self.ev._stamp:
            self.fh.close()
            raise FcsError(
                "file changed since it was opened",
                path=self.ev.path,
                hint="do not modify input files while they are analysed; open it again",
            )
        return self.read

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def read(self, a: int, b: int) -> memoryview:
        ebytes = self.ev._layout.event_bytes
        nbytes = (b - a) * ebytes
        if nbytes > len(self.buf):
            self.buf = bytearray(nbytes)
        view = memoryview(self.buf)[:nbytes]
        self.fh.seek(self.ev._start + a * ebytes)
        if self.fh.readinto(view) != nbytes:
            raise _fail(self.ev.path, "file ended inside the DATA segment (changed while reading?)")
        return view


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a whole file in one streaming pass (memory-flat: one 1 MB block)."""
    path = os.fspath(path)
    sha = hashlib.sha256()
    with _open(path) as fh:
        _hash_range(fh, os.fstat(fh.fileno()).st_size, sha, path)
    return sha.hexdigest()


def open_fcs(path: str | os.PathLike, *, dataset: int = 0, sha256: bool = True) -> FcsSample:
    """Open one dataset of an FCS file without loading its events: `.events` is a LazyEvents.

    For files larger than memory (gating chunk by chunk). Everything read_fcs checks before
    decoding is checked here too (HEADER, TEXT, channel layout, DATA offsets, $TOT against
    the DATA size), with the same repairs and provenance warnings. What needs every event is
    deferred: NaN/inf are refused with FcsError when the rows holding them are decoded.
    `sha256=True` hashes the file in a streaming pass now (one extra read of the file, flat
    memory); with False, provenance["sha256"] is None and provenance["sha256_note"] says so.
    """
    path = os.fspath(path)
    with _open(path) as fh:
        ds = _parse_dataset(fh, dataset, path)
    events = LazyEvents(path, ds.layout, ds.start, ds.size, ds.stat)
    digest = None
    if sha256:
        digest = file_sha256(path)
        with events._reader():  # the hash is of the file the events will be read from
            pass
    sample = _sample(path, events, ds, dataset, digest)
    sample.provenance["reader"] = "open_fcs (lazy: events decoded on demand, NaN/inf checked then)"
    if not sha256:
        sample.provenance["sha256_note"] = (
            "not computed (open_fcs(..., sha256=False)); see file_sha256"
        )
    return sample


def _provenance(
    path: str,
    file_size: int,
    sha256: str,
    text: _Text,
    layout: _Layout,
    dataset: int,
    start: int,
    size: int,
    warnings: list[str],
) -> dict:
    kw = text.keywords
    return {
        "file": os.path.basename(path),
        "sha256": sha256,
        "size_bytes": int(file_size),
        "fcs_version": text.header.version,
        "dataset": int(dataset),
        "cytometer": kw.get("cyt", "").strip() or None,
        "acquisition_date": acquisition_date(kw),
        "acquisition_time": kw.get("btim", "").strip() or None,
        "n_events": int(layout.n_events),
        "n_channels": int(layout.n_channels),
        "datatype": layout.datatype,
        "byte_order": "little" if layout.byteorder == "<" else "big",
        "bits_per_channel": sorted(set(layout.widths)),
        "data_offsets": [int(start), int(start + size - 1)],
        "warnings": list(warnings),
        "cytopipe_version": __version__,
    }
