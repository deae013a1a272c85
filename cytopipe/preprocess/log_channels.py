"""Fluorescence stored as log-amplifier channel numbers, with no $PnE that says so.

Why: FACSCalibur-era files (and archives redistributed from them, e.g. FlowCAP-I) hold each
fluorescence value as the channel number (0-1023) of a log amplifier; the log is already in
the number. Without $PnE "4,0" nothing in the file says so, and a logicle on top of it squeezes
every population into the top of the scale: on the FlowCAP-I GvHD files the T-cell gate fell
from F1 0.71-0.98 (scale as stored) to 0.23-0.54 (logicle), silently.

The data say it: on a linear 10-bit channel the unstained and dim cells sit within a few
channels of zero (median at 0-1% of the range in every linear 1024-channel channel of
../shared/data), while log channel numbers put the negative population a decade or more above
zero (GvHD: median at 7-35% of the range). A channel of at most MAX_CHANNELS whose median lies
above MIN_MEDIAN_SHARE of its range is put on the gating scale as stored (a fraction of its
range), and the sample's provenance says so; `transform.log_channels: off` or a marker's own
`per_marker` scale turns this off.
"""

from __future__ import annotations

import numpy as np

MAX_CHANNELS = 1024  # 10-bit: the log-amplifier era; a decoded $PnE channel tops out near 10^4
MIN_MEDIAN_SHARE = 0.05


def stored_as_log_channels(raw: np.ndarray, top: float) -> bool:
    """True when a fluorescence channel's values look like log-amplifier channel numbers."""
    if not (0 < top <= MAX_CHANNELS) or raw.size == 0:
        return False
    finite = raw[np.isfinite(raw)]
    return finite.size > 0 and float(np.median(finite)) >= MIN_MEDIAN_SHARE * top


def note(channel: str, raw: np.ndarray, top: float) -> str:
    share = float(np.median(raw[np.isfinite(raw)])) / top
    return (
        f"{channel}: values look like log-amplifier channel numbers without $PnE (median at "
        f"{share:.0%} of a {top:g}-channel range, where linear data sit near zero): put on the "
        "gating scale as stored (linear); set transform.log_channels: off or the marker's "
        "transform.per_marker scale to override"
    )
