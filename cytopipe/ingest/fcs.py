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

Keyword names follow flowio's convention (lower case, leading ``$`` removed) so code written
against FlowKit's ``Sample.metadata`` keeps working.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from cytopipe import __version__
from cytopipe.errors import FcsError

HEADER_SIZE = 58
KNOWN_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
CHUNK_BYTES = 1 << 20  # DATA is decoded in pieces of this size (cache-sized, bounded memory)
MAX_PAR = 100_000  # more parameters than any instrument writes: a corrupt $PAR

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
# HEADER and TEXT
# --------------------------------------------------------------------------------------------


@dataclass
class _Header:
    version: str
    text: tuple[int, int]
    data: tuple[int, int]
    analysis: tuple[int, int]


@dataclass
class _Text:
    """Parsed TEXT of one dataset (offsets absolute in the file)."""

    base: int  # absolute byte offset of this dataset's HEADER
    header: _Header
    keywords: dict[str, str]
    warnings: list[str]


def _fail(path: str, what: str, hint: str | None = None) -> FcsError:
    return FcsError(
        what,
        path=path,
        hint=hint
        or "the file is damaged or not a list-mode FCS file; re-export it from the acquisition software",
    )


def _header_int(raw: bytes, lo: int, hi: int, name: str, path: str, required: bool) -> int:
    field_ = raw[lo:hi].strip()
    if not field_:
        if required:
            raise _fail(path, f"HEADER field {name} (bytes {lo}-{hi - 1}) is empty")
        return 0
    if not field_.isdigit():
        if required:
            raise _fail(path, f"HEADER field {name} is not a number: {field_[:16]!r}")
        return 0
    return int(field_)


def _parse_header(raw: bytes, path: str) -> tuple[_Header, list[str]]:
    warnings: list[str] = []
    if len(raw) < HEADER_SIZE:
        if raw[:3] == b"FCS":
            raise _fail(
                path, f"file is truncated: {len(raw)} bytes, shorter than the 58-byte FCS HEADER"
            )
        raise _fail(
            path,
            "not an FCS file (empty or too short)",
            hint="check the path points to an FCS file",
        )
    if raw[:3] != b"FCS":
        raise _fail(
            path,
            f"not an FCS file: it starts with {raw[:6]!r}, not 'FCS'",
            hint="check the path points to an FCS file",
        )
    version = raw[3:6].decode("ascii", "replace")
    if not re.fullmatch(r"\d\.\d", version):
        raise _fail(path, f"HEADER version {raw[:6]!r} is not FCSn.n")
    if version not in KNOWN_VERSIONS:
        warnings.append(f"unknown FCS version {version}; read as FCS 3.1")
    text = (
        _header_int(raw, 10, 18, "TEXT start", path, True),
        _header_int(raw, 18, 26, "TEXT end", path, True),
    )
    data = (
        _header_int(raw, 26, 34, "DATA start", path, False),
        _header_int(raw, 34, 42, "DATA end", path, False),
    )
    analysis = (
        _header_int(raw, 42, 50, "ANALYSIS start", path, False),
        _header_int(raw, 50, 58, "ANALYSIS end", path, False),
    )
    return _Header(version, text, data, analysis), warnings


def _split_text(raw: bytes) -> tuple[list[bytes], bool]:
    """Split a TEXT segment on its delimiter (its first byte); a doubled delimiter is a literal
    one (FCS 3.1 sec. 3.2.9). Returns the tokens and whether the final delimiter was missing."""
    delim = raw[:1]
    tokens: list[bytes] = []
    cur = bytearray()
    i, n = 1, len(raw)
    while i < n:
        j = raw.find(delim, i)
        if j < 0:
            cur += raw[i:]
            tokens.append(bytes(cur))
            return tokens, True
        cur += raw[i:j]
        if j + 1 < n and raw[j + 1 : j + 2] == delim:
            cur += delim
            i = j + 2
            continue
        tokens.append(bytes(cur))
        cur = bytearray()
        i = j + 1
    if cur:
        tokens.append(bytes(cur))
        return tokens, True
    return tokens, False


def _decode(token: bytes) -> str:
    """TEXT is UTF-8 in FCS 3.1; older files use Latin-1 or the instrument's code page."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return token.decode("latin-1")


def _escaped_tokens(raw: bytes) -> tuple[list[bytes], bool]:
    """The FCS 3.1 reading (sec. 3.2.9): a doubled delimiter is a literal delimiter."""
    delim = raw[:1]
    tokens, unterminated = _split_text(raw)
    if len(tokens) % 2 and raw.endswith(delim + delim) and tokens[-1].endswith(delim):
        tokens[-1:] = [tokens[-1][:-1], b""]  # "/key//" at the very end: an empty last value
        unterminated = False
    return tokens, unterminated


def _empty_value_tokens(raw: bytes) -> tuple[list[bytes], bool]:
    """The FCS 2.0 writers' reading: a doubled delimiter is an empty value (flowCore's
    emptyValue=TRUE); CellQuest files need it."""
    tokens = raw[1:].split(raw[:1])
    unterminated = bool(tokens and tokens[-1])
    return (tokens if unterminated else tokens[:-1]), unterminated


# The start of a keyword name: standard ($), vendor sigils (# & @) and vendor-prefixed standard
# keywords (BD$...). After a delimiter inside a keyword name it means the keyword swallowed the
# next one: the doubled delimiter was an empty value, not an escaped delimiter.
_KEYWORD_START = re.compile(rb"[$#&@]|[A-Za-z]{1,4}\$")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _key_problems(tokens: list[bytes], delim: bytes, escaped: bool) -> list[str]:
    """Keyword names that cannot be keyword names under this reading of the doubled
    delimiters (empty, control characters, another keyword inside)."""
    problems = []
    for k in tokens[::2]:
        if not k.strip():
            problems.append("a keyword has no name (a value holding a delimiter was cut)")
        elif _CONTROL.search(k):
            problems.append(f"keyword {_decode(k)[:40]!r} holds control characters")
        elif escaped and delim in k:
            parts = k.split(delim)
            if not parts[0].strip() or any(
                not p.strip() or _KEYWORD_START.match(p.strip()) for p in parts[1:]
            ):
                problems.append(
                    f"keyword {_decode(k)[:60]!r} has another keyword inside it (an empty "
                    "value written as a doubled delimiter?)"
                )
    return problems


def _missing_required(tokens: list[bytes], version: str | None) -> set[str]:
    """Keywords the FCS version requires (and the reader needs) that this reading lacks."""
    if version is None:  # supplemental TEXT: nothing is required there
        return set()
    kw: dict[str, str] = {}
    for k, v in zip(tokens[::2], tokens[1::2], strict=False):
        kw.setdefault(_norm_keyword(k), _decode(v))
    v2 = version == "2.0"
    required = ["par", "datatype", "byteord", *(() if v2 else ("tot", "begindata", "enddata"))]
    missing = {f"${k.upper()}" for k in required if not kw.get(k, "").strip()}
    par = kw.get("par", "").strip()
    if _is_int(par) and int(par) <= MAX_PAR:
        per = "NBR" if v2 else "NBRE"
        for i in range(1, int(par) + 1):
            missing |= {f"$P{i}{x}" for x in per if not kw.get(f"p{i}{x.lower()}", "").strip()}
    return missing


def _choose_reading(
    raw: bytes, escaped: tuple[list[bytes], bool], path: str, segment: str, version: str | None
) -> tuple[list[bytes], bool, str | None]:
    """A keyword name holds a delimiter after unescaping: either the name really holds one
    (legal, FCS 3.1 sec. 3.2.9) or an FCS 2.0 writer wrote an empty value as a doubled
    delimiter. Keep the escaped reading unless it breaks the keyword structure and the
    empty-value reading does not; refuse the TEXT if both break it (never guess)."""
    delim = raw[:1]
    empty = _empty_value_tokens(raw)
    miss_e, miss_v = _missing_required(escaped[0], version), _missing_required(empty[0], version)
    common = miss_e & miss_v  # missing either way: the reader's business, not the split's
    prob_e = _key_problems(escaped[0], delim, True) + _missing_text(miss_e - common)
    if not prob_e:
        return *escaped, None
    prob_v = _key_problems(empty[0], delim, False) + _missing_text(miss_v - common)
    if not prob_v:
        note = f"{segment} has empty keyword values (doubled delimiters read as empty values, as flowCore does)"
        return *empty, note
    raise _fail(
        path,
        f"{segment} segment cannot be split into keyword/value pairs consistently: with doubled "
        f"delimiters as literal ones, {prob_e[0]}; with doubled delimiters as empty values, "
        f"{prob_v[0]}",
        hint="re-export the file from the acquisition software",
    )


def _missing_text(missing: set[str]) -> list[str]:
    """One problem naming the first few missing keywords in file order ($P2N before $P10N),
    so the message points at the channel whose keyword was swallowed."""

    def order(name: str) -> tuple[int, str]:
        m = re.fullmatch(r"\$P(\d+)(\w)", name)
        return (int(m.group(1)), m.group(2)) if m else (0, name)

    names = sorted(missing, key=order)
    return [f"required keywords {', '.join(names[:6])} are missing"] if names else []


def _norm_keyword(token: bytes) -> str:
    """Keyword names as flowio gives them: stripped, lower case, leading '$' removed."""
    key = _decode(token).strip()
    return (key[1:] if key.startswith("$") else key).lower()


def _parse_keywords(
    raw: bytes, path: str, segment: str, version: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """Keyword/value pairs of a TEXT segment. `version` (the HEADER's) lets an ambiguous TEXT
    be checked for the keywords that version requires; None for supplemental TEXT."""
    warnings: list[str] = []
    if len(raw) < 2:
        raise _fail(path, f"{segment} segment is empty")
    delim = raw[:1]
    if delim.isalnum() or delim == b"$":
        raise _fail(path, f"{segment} segment does not start with a delimiter (found {delim!r})")
    pad = bytes(c for c in b" \x00\r\n\t" if bytes([c]) != delim)
    raw = delim + raw[1:].rstrip(pad)  # instruments pad TEXT with spaces or NULs
    tokens, unterminated = _escaped_tokens(raw)
    if any(delim in k for k in tokens[::2]):
        tokens, unterminated, note = _choose_reading(
            raw, (tokens, unterminated), path, segment, version
        )
        if note:
            warnings.append(note)
    if unterminated:
        warnings.append(f"{segment} segment does not end with its delimiter")
    if len(tokens) % 2:
        if tokens[-1].strip():
            warnings.append(
                f"{segment}: keyword {_decode(tokens[-1])[:40]!r} has no value; ignored"
            )
        tokens = tokens[:-1]
    keywords: dict[str, str] = {}
    duplicates = []
    for k, v in zip(tokens[::2], tokens[1::2], strict=True):
        key = _norm_keyword(k)
        if not key:
            continue
        if key in keywords:
            duplicates.append(key)
            continue
        keywords[key] = _decode(v)
    if duplicates:
        warnings.append(
            f"{segment}: duplicate keywords kept at their first value: {sorted(set(duplicates))[:10]}"
        )
    return keywords, warnings


def _read_at(fh, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def _kw_int(kw: Mapping[str, str], key: str, path: str, *, default: int | None = None) -> int:
    value = kw.get(key)
    if value is None or not value.strip():
        if default is not None:
            return default
        raise _fail(path, f"required keyword ${key.upper()} is missing")
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise _fail(path, f"keyword ${key.upper()} is not a whole number: {text[:30]!r}")
    return int(text)


def _kw_float(kw: Mapping[str, str], key: str, path: str) -> float:
    text = kw[key].strip()
    try:
        value = float(text)
    except ValueError:
        raise _fail(path, f"keyword ${key.upper()} is not a number: {text[:30]!r}") from None
    if not np.isfinite(value):
        raise _fail(path, f"keyword ${key.upper()} is not finite: {text[:30]!r}")
    return value


def _read_dataset_text(fh, base: int, file_size: int, path: str) -> _Text:
    """HEADER + TEXT (+ supplemental TEXT) of the dataset whose HEADER starts at `base`."""
    header, warnings = _parse_header(_read_at(fh, base, HEADER_SIZE), path)
    t0, t1 = header.text
    if t0 < HEADER_SIZE or t1 <= t0 or base + t1 >= file_size:
        where = "beyond the end of the file" if base + t1 >= file_size else "impossible"
        raise _fail(
            path,
            f"TEXT segment offsets {t0}-{t1} are {where} (file has {file_size} bytes)",
            hint="the file is truncated or its HEADER is corrupt; re-export it",
        )
    keywords, more = _parse_keywords(
        _read_at(fh, base + t0, t1 - t0 + 1), path, "TEXT", header.version
    )
    warnings += more
    s0 = (
        _kw_int(keywords, "beginstext", path, default=0)
        if _is_int(keywords.get("beginstext"))
        else 0
    )
    s1 = _kw_int(keywords, "endstext", path, default=0) if _is_int(keywords.get("endstext")) else 0
    if s0 and s1 > s0 and (s0, s1) != (t0, t1):
        if base + s1 >= file_size or (s0 <= t1 and s1 >= t0):
            warnings.append(f"supplemental TEXT offsets {s0}-{s1} are invalid; ignored")
        else:
            try:
                extra, more = _parse_keywords(
                    _read_at(fh, base + s0, s1 - s0 + 1), path, "supplemental TEXT"
                )
            except FcsError as exc:
                warnings.append(f"supplemental TEXT unreadable ({exc.what}); ignored")
            else:
                warnings += more
                for key, value in extra.items():
                    keywords.setdefault(key, value)
    return _Text(base, header, keywords, warnings)


_DIGITS = re.compile(r"\+?[0-9]+")


def _is_int(value: str | None) -> bool:
    return value is not None and _DIGITS.fullmatch(value.strip()) is not None


def _locate_dataset(fh, dataset: int, file_size: int, path: str) -> _Text:
    """Follow $NEXTDATA to the requested dataset (LMD files hold an FCS 2.0 dataset, then a
    3.0 one); loops and offsets outside the file are refused."""
    if dataset < 0:
        raise FcsError(
            f"dataset index must be >= 0, got {dataset}",
            path=path,
            hint="use --dataset 0 for the first dataset",
        )
    base, seen = 0, set()
    for index in range(dataset + 1):
        text = _read_dataset_text(fh, base, file_size, path)
        if index == dataset:
            return text
        nxt = text.keywords.get("nextdata", "0").strip()
        step = int(nxt) if _is_int(nxt) else 0
        if step == 0:
            raise FcsError(
                f"file holds {index + 1} dataset(s); dataset {dataset} does not exist",
                path=path,
                hint=f"use a dataset index below {index + 1}",
            )
        base += step
        if base in seen or base + HEADER_SIZE > file_size:
            raise _fail(
                path, f"$NEXTDATA of dataset {index} points outside the file or loops ({base})"
            )
        seen.add(base)
    raise AssertionError("unreachable")


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


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}


def acquisition_date(keywords: Mapping[str, str]) -> str | None:
    """ISO date of acquisition from $BEGINDATETIME (FCS 3.2) or $DATE (dd-mmm-yyyy; other
    orders seen in archives are tried); the raw text when it cannot be parsed."""
    bdt = keywords.get("begindatetime", "").strip()
    if bdt:
        try:
            return _dt.datetime.fromisoformat(bdt.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            pass
    raw = keywords.get("date", "").strip()
    if not raw:
        return bdt or None
    m = re.fullmatch(r"(\d{1,2})[-/ .]([A-Za-z]{3})[A-Za-z]*[-/ .](\d{2,4})", raw)
    try:
        if m:
            year = int(m.group(3))
            year = year + (2000 if year < 70 else 1900) if year < 100 else year
            return _dt.date(year, _MONTHS[m.group(2).upper()], int(m.group(1))).isoformat()
        for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"):
            try:
                return _dt.datetime.strptime(raw, fmt).date().isoformat()
            except ValueError:
                continue
    except (KeyError, ValueError):
        pass
    return raw


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


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------

# Standard FCS keywords that describe the instrument and the data layout, never the person.
# Anything else (operator, source/patient, file name, comments, project, plate names, dates,
# vendor free text) is dropped from outputs unless the config allowlists it.
SAFE_KEYWORDS = frozenset(
    """
    byteord datatype mode nextdata par tot begindata enddata beginanalysis endanalysis
    beginstext endstext timestep cyt cytsn sys spillover spill comp unicode abrt lost
    csmode csvbits vol tr flowrate gate originality unstainedcenters unstainedinfo
    """.split()
)
# Per-channel technical keywords: $PnN, $PnS, $PnR, $PnB, $PnE, $PnG, $PnV, $PnL, $PnO, $PnP,
# $PnT, $PnF, $PnD, $PnTYPE, $PnDATATYPE, $PnDET, $PnCALIBRATION, $PnFEATURE, $PnANALYTE, $PnTAG.
_SAFE_CHANNEL = re.compile(
    r"p\d+(n|s|r|b|e|g|v|l|o|p|t|f|d|type|datatype|det|calibration|feature|analyte|tag)"
)
IDENTIFYING = ("src", "op", "fil", "smno", "inst", "com", "proj", "exp", "cells")


def _norm_key(key: str) -> str:
    key = str(key).strip()
    return (key[1:] if key.startswith("$") else key).lower()


def public_keywords(keywords: Mapping[str, str], allowlist: Iterable[str] = ()) -> dict[str, str]:
    """Keywords safe to put in outputs and reports: standard technical keywords only, plus those
    the allowlist names (names or glob patterns, case-insensitive, with or without '$')."""
    allowed = [_norm_key(a) for a in allowlist]
    out: dict[str, str] = {}
    for key, value in keywords.items():
        k = _norm_key(key)
        if (
            k in SAFE_KEYWORDS
            or _SAFE_CHANNEL.fullmatch(k)
            or any(fnmatch.fnmatchcase(k, a) for a in allowed)
        ):
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Command line: fcs-info
# --------------------------------------------------------------------------------------------
