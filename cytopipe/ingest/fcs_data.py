"""Channel layout and DATA segment: how the TEXT keywords say events are stored, which bytes
hold them, and how those bytes become FlowKit's 'raw' values.

Interpretation only, no file I/O: cytopipe.ingest.fcs reads the bytes (in one pass for
read_fcs, block by block for LazyEvents) and hands each block to `_convert_chunk`, so both
readers decode exactly alike. The value semantics (masks, $TIMESTEP, $PnE, $PnG) are listed in
cytopipe.ingest.fcs's docstring.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cytopipe.errors import FcsError
from cytopipe.ingest.fcs_text import HEADER_SIZE, MAX_PAR, _fail, _is_int, _kw_float, _kw_int, _Text

# --------------------------------------------------------------------------------------------
# Channel layout and DATA segment
# --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    n_events: int
    n_channels: int
    datatype: str
    byteorder: str  # '<' or '>'
    widths: list[int]  # bits per channel
    dtype: np.dtype  # dtype of one event row (plain or structured)
    uniform: bool
    masks: np.ndarray | None  # per-channel integer mask (None if no channel needs one)
    # float64 scaling, FlowKit's order: x * tmul; log decode where decades > 0; / gain
    tmul: np.ndarray
    decades: np.ndarray
    log0: np.ndarray
    prange: np.ndarray
    gain: np.ndarray
    scaled: np.ndarray  # bool per channel: goes through the float64 path

    @property
    def event_bytes(self) -> int:
        return sum(self.widths) // 8


def _byteorder(kw: Mapping[str, str], widths: list[int], path: str) -> str:
    raw = kw.get("byteord", "").strip()
    parts = [p.strip() for p in raw.split(",")] if raw else []
    if parts and all(_is_int(p) for p in parts):
        nums = [int(p) for p in parts]
        if nums == list(range(1, len(nums) + 1)):
            return "<"
        if nums == list(range(len(nums), 0, -1)):
            return ">"
    if all(w == 8 for w in widths):
        return "<"  # byte order is irrelevant for single bytes
    raise _fail(
        path,
        f"unsupported $BYTEORD {raw[:30]!r}",
        hint="only little-endian (1,2,3,4) and big-endian (4,3,2,1) files can be read",
    )


def _next_pow2(x: int) -> int:
    return 1 if x <= 0 else 1 << (x - 1).bit_length()


def _channel_layout(
    kw: Mapping[str, str], path: str, warnings: list[str]
) -> tuple[_Layout, list[str], list[str], list[float]]:
    mode = kw.get("mode", "L").strip().upper() or "L"
    if mode != "L":
        raise _fail(
            path,
            f"$MODE={mode} (histogram data) is not list-mode event data",
            hint="only list-mode ($MODE=L) FCS files hold events",
        )
    n_ch = _kw_int(kw, "par", path)
    if not 1 <= n_ch <= MAX_PAR:
        raise _fail(path, f"$PAR={n_ch} channels is impossible")
    n_ev = _kw_int(kw, "tot", path, default=-1)
    datatype = kw.get("datatype", "").strip().upper()
    if datatype not in ("I", "F", "D", "A"):
        raise _fail(
            path,
            f"unknown $DATATYPE {datatype[:10]!r}",
            hint="FCS DATA must be I (integer), F (float) or D (double)",
        )
    if datatype == "A":
        raise FcsError(
            "ASCII DATA ($DATATYPE=A) is not supported",
            path=path,
            hint="re-export the file as FCS 3.1 with float data (e.g. from FlowJo)",
        )

    pnn, pns, pnr, widths = [], [], [], []
    for i in range(1, n_ch + 1):
        name = kw.get(f"p{i}n")
        if name is None or not name.strip():
            raise FcsError(
                f"channel {i} has no name ($P{i}N missing or empty)",
                path=path,
                hint="every channel needs a $PnN name; fix the keyword or re-export the file",
            )
        pnn.append(name.strip())
        pns.append(kw.get(f"p{i}s", "").strip())
        if f"p{i}r" not in kw:
            raise _fail(path, f"required keyword $P{i}R is missing")
        pnr.append(_kw_float(kw, f"p{i}r", path))
        bits = kw.get(f"p{i}b", "").strip()
        if not _is_int(bits):
            raise _fail(path, f"$P{i}B (bits of channel {i}) is {bits[:10]!r}, not a number")
        widths.append(int(bits))
    dupes = sorted(n for n, c in Counter(pnn).items() if c > 1)
    if dupes:
        raise FcsError(
            f"duplicate channel names {dupes}",
            path=path,
            hint="channel ($PnN) names must be unique; rename them in the acquisition software or FlowJo",
        )

    order = _byteorder(kw, widths, path)
    if datatype in ("F", "D"):
        want = 32 if datatype == "F" else 64
        bad = [i + 1 for i, w in enumerate(widths) if w != want]
        if bad:
            raise _fail(
                path, f"$DATATYPE={datatype} needs $PnB={want} but channels {bad[:8]} say otherwise"
            )
        dtype = np.dtype(f"{order}f{want // 8}")
        uniform = True
    else:
        bad = [i + 1 for i, w in enumerate(widths) if w not in (8, 16, 32, 64)]
        if bad:
            raise FcsError(
                f"integer channels {bad[:8]} have bit widths {sorted({widths[i - 1] for i in bad})} (only 8, 16, 32, 64 are supported)",
                path=path,
                hint="re-export the file as FCS 3.1 with float data",
            )
        uniform = len(set(widths)) == 1
        if uniform:
            dtype = np.dtype(f"{order}u{widths[0] // 8}")
        else:
            dtype = np.dtype([(f"c{i}", f"{order}u{w // 8}") for i, w in enumerate(widths)])

    masks = None
    if datatype == "I":
        limits = []
        for i, (w, r) in enumerate(zip(widths, pnr, strict=True)):
            top = _next_pow2(int(np.ceil(r))) if r > 0 else 0
            if r <= 0:
                warnings.append(
                    f"$P{i + 1}R={r:g} is not positive; channel {pnn[i]} not range-masked"
                )
            limits.append(top - 1 if 0 < top < 2**w else 2**w - 1)
        if any(lim < 2**w - 1 for lim, w in zip(limits, widths, strict=True)):
            masks = np.array(limits, dtype=np.uint64)

    tmul = np.ones(n_ch)
    decades = np.zeros(n_ch)
    log0 = np.ones(n_ch)
    gain = np.ones(n_ch)
    time_index = None
    for i, name in enumerate(pnn):
        if name.lower() == "time":
            time_index = i  # the last one wins, as in flowio
    if time_index is not None and "timestep" in kw:
        text = kw["timestep"].strip()
        if text:
            try:
                step = float(text)
            except ValueError:
                step = None
            if step is None or not np.isfinite(step):
                warnings.append(
                    f"$TIMESTEP {text[:20]!r} is not a number; Time left in acquisition ticks (unscaled)"
                )
            else:
                tmul[time_index] = step
    for i in range(n_ch):
        e = kw.get(f"p{i + 1}e")
        if e is not None and e.strip():
            parts = [p.strip() for p in e.split(",")]
            try:
                f1, f2 = (float(p) for p in parts)
            except ValueError:
                raise _fail(path, f"$P{i + 1}E {e[:20]!r} is not 'decades,offset'") from None
            if not (np.isfinite(f1) and np.isfinite(f2)) or f1 < 0 or f1 > 100:
                raise _fail(path, f"$P{i + 1}E {e[:20]!r} is out of range")
            if f1 > 0:
                decades[i], log0[i] = f1, (f2 if f2 != 0 else 1.0)
                if pnr[i] <= 0:
                    raise _fail(
                        path,
                        f"channel {pnn[i]} is log-amplified ($P{i + 1}E={e.strip()}) but $P{i + 1}R={pnr[i]:g}",
                    )
                if datatype in ("F", "D"):
                    warnings.append(
                        f"{pnn[i]}: float data with log amplification $P{i + 1}E={e.strip()}; decoded as FlowKit does"
                    )
        g = kw.get(f"p{i + 1}g")
        if g is not None and g.strip() and i != time_index:
            value = _kw_float(kw, f"p{i + 1}g", path)
            if value not in (0.0, 1.0):
                gain[i] = value
    prange = np.array([r if r > 0 else 1.0 for r in pnr])
    scaled = (tmul != 1.0) | (decades > 0) | (gain != 1.0)
    if datatype == "I" and max(widths) == 64:
        scaled[:] = True  # exact float64 rounding first, as FlowKit does
    layout = _Layout(
        n_ev,
        n_ch,
        datatype,
        order,
        widths,
        dtype,
        uniform,
        masks,
        tmul,
        decades,
        log0,
        prange,
        gain,
        scaled,
    )
    return layout, pnn, pns, pnr


def _data_segment(
    text: _Text, layout: _Layout, file_size: int, path: str, warnings: list[str]
) -> tuple[int, int]:
    """Choose the DATA byte range [start, stop) and the event count, cross-checking the HEADER,
    the TEXT offsets and $TOT; a range that cannot be explained is refused."""
    kw, hdr, base = text.keywords, text.header, text.base
    header_range = hdr.data
    text_range = None
    if _is_int(kw.get("begindata")) and _is_int(kw.get("enddata")):
        text_range = (int(kw["begindata"].strip()), int(kw["enddata"].strip()))
    v2 = hdr.version == "2.0"
    candidates: list[tuple[str, tuple[int, int]]] = []
    if v2 or text_range is None:
        candidates.append(("HEADER", header_range))
        if text_range is not None:
            candidates.append(("TEXT", text_range))
    else:
        candidates.append(("TEXT", text_range))
        candidates.append(("HEADER", header_range))
    ebytes = layout.event_bytes
    t0, t1 = hdr.text

    def check(rng: tuple[int, int]) -> tuple[str, int, int] | None:
        start, stop = rng
        if start < HEADER_SIZE or stop < start or (start <= t1 and stop >= t0):
            return None  # impossible, or overlapping the TEXT segment
        size = stop - start + 1
        fits = base + start + size <= file_size
        fits_exclusive = base + start + size - 1 <= file_size
        need = layout.n_events * ebytes if layout.n_events >= 0 else None
        if need is None:
            if size % ebytes == 0 and fits:
                return ("ok", start, size)
            if (size - 1) % ebytes == 0 and fits_exclusive:
                return ("exclusive", start, size - 1)
            return None
        if size == need and fits:
            return ("ok", start, size)
        if size == need + 1 and fits_exclusive:
            return ("exclusive", start, size - 1)
        return None

    results = [(name, rng, check(rng)) for name, rng in candidates if rng != (0, 0)]
    chosen = next(((n, r, c) for n, r, c in results if c is not None), None)
    if chosen is None:
        first = results[0] if results else None
        if layout.n_events == 0:
            raise FcsError(
                "file has no events ($TOT=0)",
                path=path,
                hint="acquisition recorded nothing; leave this file out of the analysis",
            )
        if first is None:
            raise _fail(path, "no DATA segment offsets (HEADER and TEXT are both empty)")
        start, stop = first[1]
        size = stop - start + 1
        if base + stop >= file_size:
            raise _fail(
                path,
                f"DATA segment ({first[0]} offsets {start}-{stop}) runs past the end of the file ({file_size} bytes): the file is truncated",
                hint="copy the file again from the instrument or archive",
            )
        if layout.n_events >= 0:
            raise _fail(
                path,
                f"$TOT={layout.n_events} events x {ebytes} bytes = {layout.n_events * ebytes} bytes, but the DATA segment ({first[0]} offsets {start}-{stop}) holds {size} bytes",
                hint="$TOT or the DATA offsets are corrupt; the events cannot be trusted",
            )
        raise _fail(
            path,
            f"DATA segment of {size} bytes is not a whole number of {ebytes}-byte events and $TOT is missing",
        )
    name, rng, (how, start, size) = chosen
    if layout.n_events < 0:
        layout.n_events = size // ebytes
        warnings.append(f"$TOT missing; {layout.n_events} events inferred from the DATA size")
    if how == "exclusive":
        warnings.append(
            f"DATA end offset {rng[1]} ({name}) is one past the last data byte; read {size} bytes as FlowKit does (ignore_offset_error)"
        )
    for other, orng, _ in results:
        if other != name and orng != rng:
            warnings.append(
                f"DATA offsets disagree: {name} says {rng[0]}-{rng[1]}, {other} says {orng[0]}-{orng[1]}; used {name} (it matches $TOT and the file size)"
            )
    if layout.n_events == 0:
        raise FcsError(
            "file has no events ($TOT=0)",
            path=path,
            hint="acquisition recorded nothing; leave this file out of the analysis",
        )
    return base + start, size


def _convert_chunk(buf: bytes | bytearray | memoryview, layout: _Layout, out: np.ndarray) -> None:
    """Decode `len(out)` events of raw DATA bytes into float32 `out` (FlowKit's 'raw' values)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # NaN/inf refused later
        _convert(buf, layout, out)


def _convert(buf: bytes | bytearray | memoryview, layout: _Layout, out: np.ndarray) -> None:
    rows = out.shape[0]
    if layout.uniform:
        raw = np.frombuffer(buf, dtype=layout.dtype, count=rows * layout.n_channels)
        raw = raw.reshape(rows, layout.n_channels)
    else:
        rec = np.frombuffer(buf, dtype=layout.dtype, count=rows)
        raw = np.empty((rows, layout.n_channels), dtype=np.uint64)
        for i in range(layout.n_channels):
            raw[:, i] = rec[f"c{i}"]
    if layout.masks is not None:
        raw = raw & layout.masks.astype(raw.dtype)
    scaled = layout.scaled
    if not scaled.all():
        out[...] = raw  # one cast of the whole block; scaled columns are overwritten below
    if not scaled.any():
        return
    idx = np.flatnonzero(scaled)
    x = raw[:, idx].astype(np.float64)
    x *= layout.tmul[idx]  # FlowKit's order: time step, then log decoding, then gain
    dec = layout.decades[idx]
    logs = np.flatnonzero(dec > 0)
    if logs.size:
        li = idx[logs]
        x[:, logs] = (10 ** (dec[logs] * x[:, logs] / layout.prange[li])) * layout.log0[li]
    x /= layout.gain[idx]
    out[:, idx] = x
