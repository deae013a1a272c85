"""QC duplicated events: many events equal in every channel mean a stuck acquisition or a
broken export (see cytopipe.preprocess.qc's docstring for the rule and its threshold).

Its own module because finding twins among 10 M events without copying the matrix needs a
hash of each row's bit pattern, computed in blocks, and one sort of the hashes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# --- duplicated events -------------------------------------------------------------------------

_HASH_SEED = np.uint64(0x243F6A8885A308D3)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64
_HASH_ROWS = 1 << 14  # events per block of the hash pass (measured fastest on 12 channels)


def _words(block: np.ndarray, pad: np.ndarray | None) -> np.ndarray:
    """The bit pattern of each row as uint64 words: two float32 channels per word, half the
    passes of one per channel. A row that is not a whole number of 8 bytes is first copied
    into `pad` (zero bytes at the end; one small block, in cache)."""
    if pad is None:
        return block.view(np.uint64)
    m, nbytes = block.shape[0], block.shape[1] * block.dtype.itemsize
    pad[:m, :nbytes] = block.view(np.uint8)
    return pad[:m].view(np.uint64)


def _row_hashes(raw: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each event's bit pattern over all channels, computed in cache-sized row
    blocks (memory: the hashes and one block). Equal events get equal hashes; each step is a
    bijection, so events differing only in the last word never collide, and two other events
    collide with probability ~2^-64 (~3e-6 for any pair among 10 M events). Equality is
    bitwise: -0.0 and 0.0 differ, which can only hide duplicates, never invent them."""
    n = raw.shape[0]
    out = np.empty(n, dtype=np.uint64)
    rows = min(_HASH_ROWS, n)
    h = np.empty(rows, dtype=np.uint64)
    shifted = np.empty(rows, dtype=np.uint64)
    nbytes = raw.shape[1] * raw.dtype.itemsize
    pad = np.zeros((rows, -(-nbytes // 8) * 8), dtype=np.uint8) if nbytes % 8 else None
    for a in range(0, n, rows):
        words = _words(np.ascontiguousarray(raw[a : a + rows]), pad)
        m = words.shape[0]
        hb, sb = h[:m], shifted[:m]
        hb.fill(_HASH_SEED)
        for c in range(words.shape[1]):
            hb ^= words[:, c]
            hb *= _HASH_MUL
            np.right_shift(hb, np.uint64(29), out=sb)
            hb ^= sb
        out[a : a + m] = hb
    return out


def duplicate_fraction(raw: np.ndarray) -> float:
    """Share of events (0-1) equal in every channel to at least one other event of the file.

    Vectorized: one hash per event (`_row_hashes`), one sort, neighbours compared; about
    0.4 s for 10 M events x 12 float32 channels on 2 shared cores (np.unique over the rows
    takes 5 s), with no copy of the event matrix (80 MB of hashes for 10 M events)."""
    n = raw.shape[0]
    if n < 2 or raw.shape[1] == 0:
        return 0.0
    h = _row_hashes(raw)
    h.sort()
    same = h[1:] == h[:-1]
    twin = np.zeros(n, dtype=bool)
    twin[1:] = same
    twin[:-1] |= same
    return float(np.count_nonzero(twin)) / n


def _distinct_bits(pnr: Sequence[float] | None, n_ch: int) -> float:
    """log2 of how many distinct events the channel ranges allow: $PnR levels per channel (a
    float32 mantissa, 24 bits, when the range is unknown)."""
    if pnr is None:
        return 24.0 * n_ch
    return sum(math.log2(r) if math.isfinite(r) and r >= 2 else 24.0 for r in map(float, pnr))


def _duplicate_check(
    raw: np.ndarray, pnr: Sequence[float] | None, s: Mapping
) -> tuple[bool, str | None]:
    """(fail, note) of the duplicated-events rule (see the module docstring)."""
    n, n_ch = raw.shape
    if n < 2 or n_ch == 0 or s["fail_duplicate_pct"] >= 100:
        return False, None
    bits = _distinct_bits(pnr, n_ch)
    if bits < 2 * math.log2(n):  # equal events are then expected by chance
        return False, (
            f"duplicate check skipped: {n_ch} channel(s) allow about 2^{bits:.0f} distinct "
            f"events, too few to tell {n} events apart"
        )
    pct = 100.0 * duplicate_fraction(raw)
    if pct <= s["fail_duplicate_pct"]:
        return False, None
    return True, (
        f"{pct:.1f}% of events are exact duplicates of another event in every channel "
        f"(> {s['fail_duplicate_pct']:g}%); the acquisition or export is broken: fail"
    )
