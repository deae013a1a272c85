"""Spillover matrices from wherever archives keep them, and compensation as one matrix solve.

A spillover matrix S (rows = fluorochrome, columns = detector, the FCS $SPILLOVER convention)
says how much of each dye lands in each detector: observed = true @ S, so compensated events
are ``x @ inv(S)`` on the spillover channels (FlowKit/flowutils compute the same thing as
``solve(S.T, x.T).T``). Archives store S in many dialects; each dialect we accept is listed in
:func:`parse_spillover`, and anything we cannot map onto the file's channels unambiguously is an
FcsError rather than a guess.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cytopipe.errors import FcsError
from cytopipe.preprocess import inverse_matrix

# Keywords holding a spillover matrix, in order of preference (keys as flowio normalizes them:
# lower case, leading '$' removed), with how we name them in provenance.
SPILL_KEYWORDS = (
    ("spillover", "$SPILLOVER keyword"),
    ("spill", "SPILL keyword"),
    ("comp", "$COMP keyword"),
)
COMP_CHUNK_ROWS = 1 << 15  # events per block: all channels of a 32-channel file in float64 is 8 MB
MAX_CONDITION = 1e12  # beyond this the inverse amplifies float32 rounding into nonsense


@dataclass
class Spillover:
    """A spillover (spectrum) matrix: rows = fluorochromes, columns = detectors. The one type
    for the pipeline's compensation and for gating strategies (Gating-ML and FlowJo matrices, a
    file's own spillover), so all are checked and inverted alike (`compensation_matrix`)."""

    channels: list[str]  # $PnN of the spilled detectors, in matrix order
    # (k, k) float64, rows = source fluorochrome, columns = detector
    matrix: np.ndarray = field(compare=False)
    source: str  # e.g. "$SPILLOVER keyword", "FlowJo CSV comp.csv", "single-stain controls"
    warnings: list[str] = field(default_factory=list)  # repairs made while reading it
    # The file the matrix came from (the FCS file of a keyword, the CSV, the unstained control):
    # errors found when it is applied, long after it was read, must still name that file.
    path: str | None = None
    # Gating strategies: the id compensation refs name (a spectrumMatrix id, "FCS" for the
    # file's own), and the rows' fluorochrome names, which dims may use instead of detectors.
    id: str | None = None
    fluorochromes: tuple[str, ...] = ()

    @property
    def detectors(self) -> tuple[str, ...]:
        """The channels, by Gating-ML's name for them (the matrix's columns)."""
        return tuple(self.channels)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")


def _number(token: str, decimal_comma: bool) -> float | None:
    t = token.strip()
    if decimal_comma:
        t = t.replace(",", ".")
    try:
        return float(t)
    except ValueError:
        return None


def _split_tokens(text: str) -> tuple[list[str], bool]:
    """Split a keyword matrix into tokens; returns tokens and whether commas are decimal marks.

    ';' as the list separator means the values may use ',' as the decimal mark (European
    locale); tab- or newline-separated matrices are accepted as well."""
    s = text.strip().strip(",;")
    if ";" in s:
        return [t.strip() for t in s.split(";")], True
    if "\t" in s or "\n" in s:
        return [t.strip() for t in re.split(r"[\t\r\n]+", s)], True
    return [t.strip() for t in s.split(",")], False


def _merge_decimal_commas(values: list[str], n: int) -> list[str] | None:
    """`0,123` written in a comma-separated list: every value was split into an integer part and
    a fraction part, so there are exactly 2 n^2 tokens, each pair (integer, digits)."""
    if len(values) != 2 * n * n:
        return None
    ints, fracs = values[0::2], values[1::2]
    if all(_INT.fullmatch(a) for a in ints) and all(re.fullmatch("[0-9]+", b) for b in fracs):
        return [f"{a}.{b}" for a, b in zip(ints, fracs, strict=True)]
    return None


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def _resolve_names(
    names: Sequence[str], pnn: Sequence[str], pns: Sequence[str] | None, warnings: list[str]
) -> list[str | None]:
    """Map matrix labels onto $PnN: exact, then case/whitespace-insensitive, then channel numbers
    (Beckman Navios writes 1-based indices), then a unique $PnS match, then the detector's area
    channel ('FITC' for 'FITC-A': some software names the detector). None = unknown."""
    exact = set(pnn)
    by_norm: dict[str, list[str]] = {}
    for p in pnn:
        by_norm.setdefault(_norm(p), []).append(p)
    if (
        names
        and all(_INT.fullmatch(n.strip()) for n in names)
        and not all(n in exact for n in names)
    ):
        idx = [int(n) for n in names]
        if all(1 <= i <= len(pnn) for i in idx):
            warnings.append(
                f"spillover names channels by number ({', '.join(names[:6])}...); mapped to $PnN"
            )
            return [pnn[i - 1] for i in idx]
    by_pns: dict[str, list[str]] = {}
    for p, s in zip(pnn, pns or [""] * len(pnn), strict=True):
        if s:
            by_pns.setdefault(_norm(s), []).append(p)
    out: list[str | None] = []
    by_marker, by_area = [], []  # (label, channel) pairs, said once each
    for name in names:
        label = name.strip().strip("<>").strip()
        bare = label[5:] if label.lower().startswith("comp-") else label  # FlowJo's prefix
        if label in exact:
            out.append(label)
        elif bare in exact:
            out.append(bare)
        elif len(by_norm.get(_norm(label), [])) == 1:
            out.append(by_norm[_norm(label)][0])
        elif len(by_pns.get(_norm(label), [])) == 1:
            out.append(by_pns[_norm(label)][0])
            by_marker.append(f"{label} -> {out[-1]}")
        elif len(by_norm.get(_norm(f"{label}-A"), [])) == 1:  # the detector, not its area
            out.append(by_norm[_norm(f"{label}-A")][0])
            by_area.append(f"{label} -> {out[-1]}")
        else:
            out.append(None)
    if by_marker:
        warnings.append(f"spillover labels matched by $PnS to channels: {', '.join(by_marker)}")
    if by_area:
        warnings.append(f"spillover labels matched to their area channels: {', '.join(by_area)}")
    return out


def _finish(
    names: list[str],
    matrix: np.ndarray,
    pnn: Sequence[str],
    pns: Sequence[str] | None,
    source: str,
    path: str | None,
    warnings: list[str],
) -> Spillover:
    """Check a parsed matrix against the file's channels and normalize it."""
    k = len(names)
    if matrix.shape != (k, k):
        raise FcsError(
            f"{source}: spillover matrix is {matrix.shape[0]}x{matrix.shape[1] if matrix.ndim == 2 else '?'} for {k} channels",
            path=path,
            hint="the matrix must be square with one row and column per named channel",
        )
    if not np.isfinite(matrix).all():
        raise FcsError(
            f"{source}: spillover matrix holds NaN or infinite values",
            path=path,
            hint="fix or replace the matrix",
        )
    resolved = _resolve_names(names, pnn, pns, warnings)
    unknown = [i for i, r in enumerate(resolved) if r is None]
    if unknown:
        eye = np.eye(k)
        trivial = [
            i
            for i in unknown
            if np.array_equal(matrix[i], eye[i]) and np.array_equal(matrix[:, i], eye[:, i])
        ]
        if len(trivial) < len(unknown):
            bad = [names[i] for i in unknown if i not in trivial]
            raise FcsError(
                f"{source}: spillover names channels the file does not have: {bad[:8]}",
                path=path,
                hint=f"the file's channels ($PnN) are {list(pnn)[:24]}; use a matrix for this panel",
            )
        keep = [i for i in range(k) if i not in trivial]
        warnings.append(
            f"{source}: dropped channels not in the file whose spillover is identity: {[names[i] for i in trivial]}"
        )
        matrix = matrix[np.ix_(keep, keep)]
        resolved = [resolved[i] for i in keep]
    channels = [str(r) for r in resolved]
    dupes = sorted(c for c, count in Counter(channels).items() if count > 1)
    if dupes:
        raise FcsError(
            f"{source}: spillover names channels twice: {dupes}",
            path=path,
            hint="each channel may appear once in the matrix",
        )
    diag = np.diag(matrix)
    if diag.size and np.allclose(diag, 100.0):
        matrix = matrix / 100.0
        warnings.append(f"{source}: values are percentages (diagonal 100); divided by 100")
    spill = inverse_matrix.stored_inverse(matrix)
    if spill is not None:
        warnings.append(
            f"{source}: a compensation matrix, not a spillover (off-diagonal values down to "
            f"{matrix[~np.eye(k, dtype=bool)].min():.3g}, its inverse's all at least "
            f"{inverse_matrix.NEGATIVE_SPILL:g}); its inverse used"
        )
        matrix, diag = spill, np.diag(spill)
    if diag.size and not np.allclose(diag, 1.0, atol=1e-6):
        warnings.append(
            f"{source}: diagonal is not 1 ({np.round(diag, 4).tolist()[:8]}); used as given"
        )
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    return Spillover(channels, matrix, source, warnings, None if path is None else os.fspath(path))


def parse_spillover(
    text: str,
    pnn: Sequence[str],
    pns: Sequence[str] | None = None,
    *,
    source: str = "spillover keyword",
    path: str | None = None,
) -> Spillover | None:
    """Parse a $SPILLOVER-style string: ``n, name_1..name_n, s_11, s_12, ..., s_nn``.

    Dialects accepted (each recorded in Spillover.warnings): names given as 1-based channel
    numbers (Beckman Navios), ';'/tab separated with decimal commas, comma separated with every
    value written ``0,123``, no names at all when n equals the channel count (FCS 2.0 $COMP),
    percentages (diagonal 100), labels matching $PnS or differing in case, and channels absent
    from the file whose row and column are identity (dropped). n = 0 means no matrix (None).
    """
    warnings: list[str] = []
    tokens, decimal_comma = _split_tokens(text)
    if not tokens or not _INT.fullmatch(tokens[0]):
        raise FcsError(
            f"{source}: does not start with the channel count: {text[:40]!r}",
            path=path,
            hint="expected 'n,name1,...,namen,values...'",
        )
    n = int(tokens[0])
    if n == 0:
        return None
    rest = tokens[1:]
    if n < 0 or n > 10_000 or len(rest) < n * n:
        raise FcsError(
            f"{source}: spillover of {n} channels needs {n} names and {n * n} values, found {len(rest)} entries",
            path=path,
            hint="the matrix is truncated or its channel count is wrong",
        )
    if len(rest) == n + n * n:
        names, values = rest[:n], rest[n:]
    elif len(rest) == n * n:
        if n != len(pnn):
            raise FcsError(
                f"{source}: {n}x{n} matrix without channel names, but the file has {len(pnn)} channels",
                path=path,
                hint="give the matrix as a CSV with channel names (--spillover-csv)",
            )
        names, values = list(pnn), rest
        warnings.append(
            f"{source}: matrix has no channel names; applied to all {n} channels in file order"
        )
    else:
        merged = _merge_decimal_commas(rest[n:], n) if not decimal_comma else None
        if merged is None:
            raise FcsError(
                f"{source}: spillover of {n} channels needs {n} names and {n * n} values, found {len(rest)} entries",
                path=path,
                hint="the matrix is truncated, has extra entries, or mixes decimal commas with comma separators",
            )
        names, values = rest[:n], merged
        warnings.append(
            f"{source}: values written with decimal commas (e.g. {values[0]!r}); read as decimals"
        )
    nums = [_number(v, decimal_comma) for v in values]
    bad = [v for v, x in zip(values, nums, strict=True) if x is None]
    if bad:
        raise FcsError(
            f"{source}: spillover values are not numbers: {bad[:5]}",
            path=path,
            hint="fix or replace the matrix",
        )
    matrix = np.array(nums, dtype=np.float64).reshape(n, n)
    return _finish([str(x) for x in names], matrix, pnn, pns, source, path, warnings)


def spillover_from_keywords(sample) -> Spillover | None:
    """The spillover stored in the file ($SPILLOVER, SPILL, $COMP, in that order); None if it has
    none. A matrix that is present but unusable raises FcsError (never silently skipped)."""
    kw = sample.keywords
    found = [(key, label) for key, label in SPILL_KEYWORDS if kw.get(key, "").strip()]
    for key, label in found:
        spill = parse_spillover(kw[key], sample.pnn, sample.pns, source=label, path=sample.path)
        if spill is None:
            continue
        others = [lbl for k, lbl in found if k != key and kw[k].strip() != kw[key].strip()]
        if others:
            spill.warnings.append(
                f"file also has {', '.join(others)} with different content; used {label}"
            )
        return spill
    return None


def compensated_on_export(sample) -> str | None:
    """A note when the file's data are compensated already, else None.

    FlowJo exports compensated data as channels named 'Comp-<detector>'. It keeps the
    acquisition's $SPILLOVER, which names the bare detectors; other exporters write the matrix
    on the 'Comp-' channels themselves, or none. Applying a matrix again would compensate
    twice (the Lyoplate file so exported, its matrix naming the 'Comp-' channels: transitional
    B cells 0.89 -> 0.76, nothing said), and no matrix is no reason to call the stains
    uncompensated. Recognised when every detector the stored matrix names is a 'Comp-' channel
    of the file, with or without the prefix in the matrix (archives of FlowJo exports are
    common in public repositories), or when 'Comp-' channels come with no matrix."""
    prefixed = {_norm(p)[5:] for p in sample.pnn if _norm(p).startswith("comp-")}
    if not prefixed:
        return None
    bare = {_norm(p) for p in sample.pnn}
    named = None  # the detectors of the first matrix keyword the file has
    for key, label in SPILL_KEYWORDS:
        tokens = _split_tokens(sample.keywords.get(key, ""))[0]
        if not tokens or not _INT.fullmatch(tokens[0]) or int(tokens[0]) == 0:
            continue
        names = [_norm(t.strip("<>")) for t in tokens[1 : 1 + int(tokens[0])]]
        names = [n[5:] if n.startswith("comp-") else n for n in names]
        if names and all(n in prefixed and n not in bare for n in names):
            return (
                f"channels named 'Comp-<detector>' (an export of compensated data): the "
                f"file's {label} names the same detectors and was not applied again"
            )
        named = named or names
    if named is None:
        return (
            "channels named 'Comp-<detector>' (an export of compensated data) and no matrix "
            "in the file: gated as exported"
        )
    return None


def read_spillover_csv(
    path: str | os.PathLike, pnn: Sequence[str], pns: Sequence[str] | None = None
) -> Spillover:
    """A FlowJo-style CSV/TSV matrix: a header row of detector names, then one row per
    fluorochrome (optionally starting with its name); ',', ';' or tab separated."""
    path = os.fspath(path)
    source = f"FlowJo CSV {os.path.basename(path)}"
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        with open(path, encoding="latin-1", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise FcsError(
            f"cannot read spillover matrix: {exc.strerror}",
            path=path,
            hint="check the path in the config",
        ) from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise FcsError(
            "spillover matrix file is empty", path=path, hint="export the matrix again from FlowJo"
        )
    first = lines[0]
    delim = "\t" if "\t" in first else (";" if ";" in first else ",")
    decimal_comma = delim != ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    rows = [[c.strip() for c in r] for r in rows]
    header = rows[0]
    if header and header[0] == "":
        header = header[1:]
    while header and header[-1] == "":
        header = header[:-1]
    k = len(header)
    body = rows[1:]
    names_in_rows = [r[0] for r in body if r and _number(r[0], decimal_comma) is None]
    labelled = len(names_in_rows) == len(body) and len(body) > 0
    values = []
    for i, r in enumerate(body, 2):
        cells = r[1:] if labelled else r
        while cells and cells[-1] == "":
            cells = cells[:-1]
        if len(cells) != k:
            raise FcsError(
                f"line {i} has {len(cells)} values for {k} channels",
                path=path,
                hint="every row of the matrix needs one value per channel in the header",
            )
        nums = [_number(c, decimal_comma) for c in cells]
        if any(x is None for x in nums):
            raise FcsError(
                f"line {i} has values that are not numbers: {[c for c, x in zip(cells, nums, strict=True) if x is None][:5]}",
                path=path,
                hint="fix the matrix file",
            )
        values.append(nums)
    if len(values) != k:
        raise FcsError(
            f"matrix has {len(values)} rows for {k} channels in its header",
            path=path,
            hint="the matrix must be square (a row is missing or extra); export it again from FlowJo",
        )
    matrix = np.array(values, dtype=np.float64).reshape(k, k)
    warnings: list[str] = []
    if labelled:
        row_names = _resolve_names(names_in_rows, pnn, pns, warnings)
        col_names = _resolve_names(header, pnn, pns, warnings)
        if row_names != col_names:
            if sorted(map(str, row_names)) != sorted(map(str, col_names)) or None in row_names:
                raise FcsError(
                    "row names do not match the column names",
                    path=path,
                    hint="rows and columns must name the same channels",
                )
            order = [row_names.index(c) for c in col_names]
            matrix = matrix[order]
    return _finish(header, matrix, pnn, pns, source, path, warnings)


# --------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------


def compensation_matrix(spill: Spillover) -> np.ndarray:
    """inv(S) in float64; refuses matrices whose inverse would be meaningless."""
    m = np.asarray(spill.matrix, dtype=np.float64)
    k = len(spill.channels)
    if m.ndim != 2 or m.shape != (k, k):
        raise FcsError(
            f"{spill.source}: spillover matrix shape {m.shape} does not match its {k} channels",
            path=spill.path,
            hint="the matrix must be square with one row per channel",
        )
    if not np.isfinite(m).all():
        raise FcsError(
            f"{spill.source}: spillover matrix holds NaN or infinite values",
            path=spill.path,
            hint=_replace_hint(spill),
        )
    try:
        cond = np.linalg.cond(m)
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        cond, inv = np.inf, None
    if inv is None or not np.isfinite(cond) or cond > MAX_CONDITION:
        raise FcsError(
            f"{spill.source}: spillover matrix is singular (condition number {cond:.3g}): two "
            "rows are (nearly) identical or a diagonal is 0, so it cannot be undone",
            path=spill.path,
            hint=_replace_hint(spill),
        )
    return inv


def _replace_hint(spill: Spillover) -> str:
    """What to do about an unusable matrix depends on where it came from."""
    if spill.source.startswith("FlowJo CSV"):
        return "recompute the matrix and export it again from FlowJo"
    if spill.source == "single-stain controls":
        return "check the single-stain controls and their channel assignment, then recompute"
    if spill.source.startswith("spectrumMatrix"):
        return "fix or replace this matrix in the Gating-ML file or FlowJo workspace"
    return (
        "fix the spillover in the acquisition software and re-export the file, or give a "
        "corrected matrix for its batch with --spillover-csv"
    )


def compensate(
    events: np.ndarray,
    pnn: Sequence[str],
    spill: Spillover,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Compensated float32 events: the spillover channels become ``x @ inv(S)`` (computed in
    float64 per block, as FlowKit does), other channels are copied unchanged.

    Works block by block into one preallocated output (``out`` may be ``events`` itself for
    in-place work), so a 10 M event file needs no extra full-size copies."""
    if events.ndim != 2 or events.shape[1] != len(pnn):
        raise FcsError(
            f"{spill.source}: events have {events.shape[-1]} columns for {len(pnn)} channel names",
            path=spill.path,
            hint="this is a bug in the caller",
        )
    missing = [c for c in spill.channels if c not in pnn]
    if missing:
        raise FcsError(
            f"{spill.source}: spillover names channels the sample does not have: {missing[:8]}",
            path=spill.path,
            hint=f"the sample's channels are {list(pnn)[:24]}; use a matrix for this panel",
        )
    if len(set(spill.channels)) != len(spill.channels):
        raise FcsError(
            f"{spill.source}: spillover names a channel twice",
            path=spill.path,
            hint="each channel may appear once in the matrix",
        )
    index = [list(pnn).index(c) for c in spill.channels]
    if out is None:
        out = np.array(events, dtype=np.float32, order="C", copy=True)
    else:
        if out.shape != events.shape or out.dtype != np.float32:
            raise ValueError("out must be a float32 array of the events' shape")
        if out is not events:
            out[...] = events
    cols = np.array(index)
    raw64 = np.empty((min(COMP_CHUNK_ROWS, len(events)), len(pnn)))
    comp = np.empty((len(cols), len(raw64)))
    for lo in range(0, events.shape[0], COMP_CHUNK_ROWS):
        hi = min(events.shape[0], lo + COMP_CHUNK_ROWS)
        n = hi - lo
        spill_product(events[lo:hi], spill, index, spill.channels, raw64[:n], comp[:, :n])
        out[lo:hi, cols] = comp[:, :n].T
    return out


def spill_product(
    raw: np.ndarray,
    spill: Spillover,
    detector_idx: Sequence[int],
    names: Sequence[str],
    raw64: np.ndarray,
    out: np.ndarray,
) -> None:
    """The one compensation kernel: compensated values of detectors `names` for the events
    `raw` (all channels of some rows), written detector-major into `out` (len(names) x rows).

    The inverse's columns for `names` are embedded in a (names x channels) matrix with zero
    columns for non-detector channels, so events need no column gather, and the product runs
    in float64 (`raw64`: a caller's scratch buffer of raw's shape). FlowKit solves the same
    system with np.linalg.solve; a product with the inverse differs from it only in the last
    bits (~1e-16 relative), is several times faster and computes just the detectors needed.
    """
    inv = _inverse(spill)
    weights = np.zeros((len(names), raw.shape[1]))
    cols = [spill.channels.index(d) for d in names]
    weights[:, list(detector_idx)] = inv[:, cols].T
    np.copyto(raw64, raw)
    np.matmul(weights, raw64.T, out=out)


_INVERSES: dict[tuple, np.ndarray] = {}  # a few matrices per run, asked for by every chunk


def _inverse(spill: Spillover) -> np.ndarray:
    """inv(S) with the full checks of `compensation_matrix`, once per distinct matrix."""
    mat = np.ascontiguousarray(spill.matrix, dtype=np.float64)
    key = (mat.tobytes(), mat.shape, tuple(spill.channels), spill.source, spill.path)
    if key not in _INVERSES:
        if len(_INVERSES) >= 16:
            _INVERSES.clear()
        _INVERSES[key] = compensation_matrix(spill)
    return _INVERSES[key]


# --------------------------------------------------------------------------------------------
# Single-stain controls
# --------------------------------------------------------------------------------------------


def compute_spillover(
    unstained,
    stained: Mapping[str, object],
    *,
    channels: Sequence[str] | None = None,
    gate: Callable[[object], np.ndarray] | None = None,
) -> Spillover:
    """Spillover from single-stain controls, as flowCore's ``spillover(method="median")``.

    For each stain (``stained`` maps the stain's own detector $PnN to its control sample), the
    median of every detector on the control minus the unstained control's median (floored at 0,
    as flowCore does) divided by the same for the stain's own detector. Rows and columns follow
    ``stained``'s order (or ``channels``). ``gate`` may return a boolean mask of the events of a
    control to use (e.g. a scatter gate on cells); by default all events are used, which is how
    flowCore's reference ``compref1`` was computed.
    """
    if not stained:
        raise FcsError(
            "no single-stain controls given", hint="give one control per fluorochrome detector"
        )
    detectors = list(channels) if channels is not None else list(stained)
    missing_controls = [c for c in detectors if c not in stained]
    if missing_controls:
        raise FcsError(
            f"no single-stain control for {missing_controls}",
            hint="give one control per channel of the matrix",
        )
    base = _control_medians(unstained, detectors, gate, "unstained control")
    rows = []
    warnings: list[str] = []
    for det in detectors:
        sample = stained[det]
        med = _control_medians(sample, detectors, gate, f"{det} control")
        signal = np.maximum(med - base, 0.0)
        own = signal[detectors.index(det)]
        if not own > 0:
            raise FcsError(
                f"{det} single-stain control is not brighter than the unstained control in {det}",
                path=getattr(sample, "path", None),
                hint="check the control/channel assignment (e.g. comp_match) and that the stain worked",
            )
        if signal.max() > own:
            other = detectors[int(np.argmax(signal))]
            warnings.append(f"{det} control is brighter in {other} than in its own detector")
        rows.append(signal / own)
    matrix = np.array(rows, dtype=np.float64)
    path = getattr(unstained, "path", None)
    return Spillover(detectors, matrix, "single-stain controls", warnings, path)


def _control_medians(sample, detectors: Sequence[str], gate, label: str) -> np.ndarray:
    pnn = list(sample.pnn)
    absent = [d for d in detectors if d not in pnn]
    if absent:
        raise FcsError(
            f"{label} has no channels {absent}",
            path=getattr(sample, "path", None),
            hint=f"its channels are {pnn[:24]}",
        )
    data = sample.events[:, [pnn.index(d) for d in detectors]]
    if gate is not None:
        mask = np.asarray(gate(sample), dtype=bool)
        data = data[mask]
    if data.shape[0] == 0:
        raise FcsError(
            f"{label} has no events (after gating)",
            path=getattr(sample, "path", None),
            hint="check the control file and gate",
        )
    return np.median(data.astype(np.float64), axis=0)


def read_comp_match(
    path: str | os.PathLike, directory: str | os.PathLike | None = None
) -> tuple[str, dict[str, str]]:
    """flowCore's ``comp_match`` table (``filename,channel`` rows, one ``unstained``): returns the
    unstained control's path and detector -> control path, in file order."""
    path = os.fspath(path)
    folder = os.fspath(directory) if directory is not None else os.path.dirname(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise FcsError(
            f"cannot read control table: {exc.strerror}", path=path, hint="check the path"
        ) from None
    if rows and [c.strip().lower() for c in rows[0]][:2] == ["filename", "channel"]:
        rows = rows[1:]
    unstained, stains = None, {}
    for r in rows:
        if len(r) < 2:
            raise FcsError(
                f"row {r} needs 'filename,channel'", path=path, hint="one control per line"
            )
        name, channel = r[0].strip(), r[1].strip()
        full = os.path.join(folder, name)
        if channel.lower() == "unstained":
            unstained = full
        elif channel in stains:
            raise FcsError(f"two controls for {channel}", path=path, hint="one control per channel")
        else:
            stains[channel] = full
    if unstained is None or not stains:
        raise FcsError(
            "control table needs one 'unstained' row and at least one stain",
            path=path,
            hint="e.g. 060909.001,unstained",
        )
    return unstained, stains
