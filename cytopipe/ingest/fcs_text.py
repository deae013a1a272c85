"""HEADER and TEXT segments of an FCS file: offsets, keyword/value pairs, chained datasets.

The TEXT rules are the fragile part of reading archives (a doubled delimiter is a literal one in
FCS 3.1 but an empty value for some FCS 2.0 writers; padding, missing final delimiters,
duplicate keywords, supplemental TEXT, $NEXTDATA chains), so they live here on their own:
cytopipe.ingest.fcs asks this module for one dataset's keywords and offsets and never looks at
TEXT bytes itself. Every refusal is an FcsError built by `_fail`, every repair a warning.

Keyword names follow flowio's convention (lower case, leading ``$`` removed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cytopipe.errors import FcsError

HEADER_SIZE = 58
KNOWN_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
MAX_PAR = 100_000  # more parameters than any instrument writes: a corrupt $PAR


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
