"""Fluorescence stored as log-amplifier channel numbers (or display-scale channel values),
with no $PnE that says so.

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

The median alone is one channel's voltage away from the wrong answer: GvHD file 3's CD4 sits
at 7% of the range, and file 2 with its stains 0.3 decades lower (another instrument's
voltages) put CD3 at 4.7%, below the bar: logicle on channel numbers, T cells F1 0.92 -> 0.33,
nothing said. An amplifier mode is set per instrument channel, but a file is written by one
instrument: a channel of the same range as one that clearly holds channel numbers is read
as channel numbers too (`like`), unless its name says linear (Beckman's 'FL3 Lin' beside
'FL3 Log', Guava's '-HLin').

Archives of gated data hold the same kind of values on 12 bits: FlowJo's channel values and
flowWorkspace's transformed data run 0-4095 on a biexponential display scale (the Lyoplate
file's own archive did; so stored with `$PnR` 4096, its B and T cells were F1 0, logicle on
top of a logicle). Hence MAX_CHANNELS 4096: a linear 12-bit channel's dim cells sit near zero
just as a 10-bit one's do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

MAX_CHANNELS = 4096  # 10-bit log amplifiers, 12-bit display scales; a decoded $PnE channel
# tops out near 10^4, a digital instrument's at 2^18 and above
MIN_DISPLAY_TOP = 1024  # a display scale has at least 10 bits
LINEAR_NAME = re.compile(r"lin(ear)?$|\blin(ear)?\b", re.IGNORECASE)
MIN_MEDIAN_SHARE = 0.05


def stored_as_log_channels(raw: np.ndarray, top: float) -> bool:
    """True when a fluorescence channel's values look like log-amplifier channel numbers."""
    if not (0 < top <= MAX_CHANNELS) or raw.size == 0:
        return False
    finite = raw[np.isfinite(raw)]
    return finite.size > 0 and float(np.median(finite)) >= MIN_MEDIAN_SHARE * top


def log_channel_markers(
    channels: Mapping[str, tuple[np.ndarray, float]],
) -> dict[str, str | None]:
    """The channels (name: values, range) that hold log channel numbers, each mapped to None
    where its own median says so, else to the channel of the same range that does."""
    own = [name for name, (raw, top) in channels.items() if stored_as_log_channels(raw, top)]
    found: dict[str, str | None] = dict.fromkeys(own)
    for name, (_, top) in channels.items():
        like = [o for o in own if channels[o][1] == top]
        if name not in found and like and top <= MAX_CHANNELS and not LINEAR_NAME.search(name):
            found[name] = like[0]
    return found


def display_ranges(channels: Mapping[str, tuple[np.ndarray, float]]) -> dict[str, float]:
    """The stain channels (name: values, declared range) whose values are display-scale
    channel numbers under the acquisition's range, each mapped to the range they fill (1024,
    2048 or 4096); empty unless every one of two or more lies within [0, MAX_CHANNELS] under a
    larger declared range and one of them then holds channel numbers. An export of gated data
    can keep the acquisition's $PnR (the Lyoplate file as 0-4095 display values under $PnR
    262144: B cells F1 0, logicle on top of the display scale); an instrument's own values
    reach far higher on at least one stain, and its negatives lie below zero."""
    if len(channels) < 2:
        return {}
    shown = {}
    for name, (raw, top) in channels.items():
        if top <= MAX_CHANNELS or raw.size == 0 or not raw.min() >= 0:
            return {}  # an instrument's own negatives (or NaN: not an export of display values)
        high = float(raw.max())
        if not MIN_DISPLAY_TOP / 2 < high <= MAX_CHANNELS:  # not a dim channel's own values
            return {}
        shown[name] = float(2 ** int(np.ceil(np.log2(high))))
    at = {name: (channels[name][0], top) for name, top in shown.items()}
    return shown if log_channel_markers(at) else {}


def notes(
    found: Mapping[str, str | None],
    channels: Mapping[str, tuple[np.ndarray, float]],
    labels: Mapping[str, str],
) -> list[str]:
    """One line per range and reason for the channels `log_channel_markers` found (`labels`:
    how each is named, e.g. 'CD3 (FL3-H)'), not one per channel: a file holds them all."""
    groups: dict[tuple[float, str | None], list[str]] = {}
    for name, like in found.items():
        groups.setdefault((channels[name][1], like), []).append(name)
    out = []
    for (top, like), names in groups.items():
        shares = [
            float(np.median(channels[n][0][np.isfinite(channels[n][0])])) / top for n in names
        ]
        at = f"{min(shares):.0%}" if len(names) == 1 else f"{min(shares):.0%}-{max(shares):.0%}"
        why = (
            f"like {like} of the same {top:g}-channel range (own median at {at})"
            if like is not None
            else f"without $PnE (median at {at} of a {top:g}-channel range, where linear data "
            "sit near zero)"
        )
        out.append(
            f"{', '.join(labels[n] for n in names)}: values look like log-amplifier channel "
            f"numbers {why}: put on the gating scale as stored (linear); set "
            "transform.log_channels: off or the marker's transform.per_marker scale to override"
        )
    return out


def matrix_not_applied(source: str, channels: Sequence[str], as_stored: set[str]) -> str | None:
    """A note when a spillover matrix covers channels that hold channel numbers (`as_stored`),
    else None. A matrix is linear: on a log or display scale it mixes logarithms (the Lyoplate
    file as 0-4095 display values with its $SPILLOVER kept: plasmablasts 0.79 -> 0.58,
    double negative 0.89 -> 0.79, nothing said). Such values were compensated before they
    were written (in the amplifier, or by the software that exported them), so the matrix is
    not applied."""
    on = [c for c in channels if c in as_stored]
    if not on:
        return None
    return (
        f"the spillover matrix ({source}) was not applied: {', '.join(on)} hold channel numbers "
        "(a log or display scale), which a linear matrix does not compensate; such values are "
        "compensated before they are written"
    )
