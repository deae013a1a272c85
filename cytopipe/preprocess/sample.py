"""One sample from FCS file to events on the gating scale: ingest -> panel -> compensate ->
scale (each channel's top from `ranges`) -> QC. Pure of workflow concerns: the command that
writes the outputs is cytopipe.commands.sample."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cytopipe import __version__
from cytopipe.config import defaults
from cytopipe.ingest import mass_cytometry, panel, spectral
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.keywords import public_keywords
from cytopipe.preprocess import (
    clipped,
    compensation,
    log_channels,
    matrix_orientation,
    qc,
    ranges,
    transforms,
    uncompensated,
)

SCATTER = panel.SCATTER
NOT_STAINS = (*SCATTER, "Time", panel.EVENT_LENGTH)
TRANSFORM = defaults("config", "transform")  # `transform:` keys a caller's mapping leaves out


# The workflow tracks B cells: a file without CD19 fails with the channels it has, so a panel
# file that misses the lab's CD19 name is fixed at once. Evaluations of other panels (a T-cell
# panel) pass `required=SCATTER_ONLY`; gates whose markers are missing are then skipped.
REQUIRED = ("FSC-A", "SSC-A", "CD19")
SCATTER_ONLY = ("FSC-A", "SSC-A")
# Instruments that record only pulse heights (FACSCalibur): the height stands in for the area.
HEIGHT_FOR_AREA = {"FSC-A": "FSC-H", "SSC-A": "SSC-H"}


QC_COLUMN = "qc_pass"
AT_TOP = "at_top:"  # event table: at_top:<stain>, `Preprocessed.at_top`


def event_table(pre: Preprocessed) -> pd.DataFrame:
    """The sample's events as the workflow stores them: one column per marker, `qc_pass`, and
    `at_top:<stain>` for the stains with events removed only for their tops."""
    df = pd.DataFrame(pre.columns)
    df[QC_COLUMN] = pre.qc_pass
    for marker, rows in pre.at_top.items():
        df[AT_TOP + marker] = rows
    return df


def split_event_table(
    df: pd.DataFrame,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """`event_table`'s columns back: markers, `qc_pass`, `at_top` (a table written before
    `at_top` existed has none)."""
    at_top = {c[len(AT_TOP) :]: df[c].to_numpy(dtype=bool) for c in df if c.startswith(AT_TOP)}
    markers = {c: df[c].to_numpy() for c in df if c != QC_COLUMN and not c.startswith(AT_TOP)}
    return markers, df[QC_COLUMN].to_numpy(dtype=bool), at_top


@dataclass
class Preprocessed:
    """One sample on the gating scale: canonical marker -> float32 values, in file event order."""

    columns: dict[str, np.ndarray]
    qc_pass: np.ndarray
    info: dict = field(default_factory=dict)
    # stain -> events QC removed only because stains sat at their tops, at this one's top
    # (qc.saturated_stains: gate; cytopipe.gating.saturated)
    at_top: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def zeros(self) -> dict[str, float]:
        return scale_zeros(self.info)


def scale_zeros(info: Mapping) -> dict[str, float]:
    """Stain -> where 0 falls on its gating scale (logicle and arcsinh scales, from the
    record's provenance; not channel numbers already on a log scale): compensated negatives
    centre there (`cytopipe.gating.densities.split_negatives`)."""
    records = (info.get("provenance") or {}).get("scales") or {}
    zeros = {}
    for marker, record in records.items():
        scale = transforms.Scale.from_record(record)
        if marker not in NOT_STAINS and scale.kind in ("logicle", "arcsinh", "asinh"):
            zeros[marker] = float(scale.forward(np.zeros(1))[0])
    return zeros


def scale_channel(
    marker: str, raw: np.ndarray, top: float, tcfg: Mapping
) -> tuple[np.ndarray, transforms.Scale]:
    """Scatter as a fraction of the channel's top; fluorescence on logicle (T from config,
    or the channel's top when config sets none) or arcsinh.

    top: the channel's range, from `ranges.channel_range` (its $PnR unless that is nominal).

    `transform.per_marker` overrides the scale or its parameters for one marker; `w: auto`
    estimates logicle W from the data's negative spread as FlowJo does. The default is one
    fixed W for all samples (the gate search limits assume one scale), widened only for a
    channel whose negatives it splits (`transform.logicle.widen`, `logicle_w`).
    """
    top = top if top and top > 0 else ranges.DEFAULT_TOP
    if marker in SCATTER:
        scale = transforms.Scale.linear(float(top))
        return (raw / np.float32(top)).astype(np.float32), scale
    tcfg = {**TRANSFORM, **tcfg}
    own = (tcfg["per_marker"] or {}).get(marker) or {}
    kind = own.get("scale", tcfg["fluorescence"])
    if kind == "linear":  # values already on a log scale (log-amplifier channel numbers)
        scale = transforms.Scale.linear(float(top))
        return (raw / np.float32(top)).astype(np.float32), scale
    if kind == MASS_CYTOMETRY:
        return MASS_SCALE.forward(raw).astype(np.float32), MASS_SCALE
    if kind == "arcsinh":
        cof = float(own.get("cofactor", tcfg["arcsinh_cofactor"]))
        scale = transforms.Scale.arcsinh(cof)
        return scale.forward(raw).astype(np.float32), scale
    lp = {**TRANSFORM["logicle"], **(tcfg["logicle"] or {})}
    lp.update({k: own[k] for k in ("t", "w", "m", "a") if k in own})
    t, m, a = float(lp.get("t") or top), float(lp["m"]), float(lp["a"])
    widen = "w" not in own and bool(lp.get("widen", True))
    scale = transforms.Scale.logicle(t, logicle_w(raw, t, m, lp["w"], widen), m, a)
    return scale.forward(raw).astype(np.float32), scale


# Mass cytometry: ion counts on the field's arcsinh (cofactor 5), scaled so that 65,536 counts
# is 1 (Gating-ML's asinh, T 65,536, M = asinh(65,536 / 5) / ln 10), whatever $PnR declares:
# its linear region is the few counts of a negative cell. The Lyoplate file as mass cytometry
# counts with dim stains (100 units per ion): a logicle topped at a declared $PnR of 2,048
# resolved single ion counts as populations (negatives in humps: CD20+ B cells F1 0.005), one
# topped at 65,536 compressed them (switched memory 0.06); on this scale 0.94 and 0.76 at
# either $PnR (at 30 units per ion both scales within 0.01, plasmablasts 0.76 -> 0.82).
MASS_CYTOMETRY = "mass_cytometry"
MASS_SCALE = transforms.Scale(
    "mass_cytometry",
    "asinh",
    (("T", 65536.0), ("M", float(np.arcsinh(65536.0 / 5.0) / np.log(10))), ("A", 0.0)),
)


def event_length(raw: np.ndarray) -> tuple[np.ndarray, transforms.Scale]:
    """Mass cytometry's event length, linear in units of twice the file's median: the singlets
    sit near 0.5 whatever the instrument's push rate or the file's $PnR (which CyTOF software
    sets to no fixed range), their doublets' longer ion clouds beyond."""
    values = raw[np.isfinite(raw) & (raw > 0)]
    scale = transforms.Scale.linear(2.0 * float(np.median(values)) if values.size else 1.0)
    return scale.forward(raw).astype(np.float32), scale


# `zero_dip` below which a channel's negatives count as split at the configured W, on the
# Lyoplate file with noise on every stain: 0.48-0.60 at SD 500 and 0.57-0.72 at SD 400 (the B or
# T-cell cut in the dip), 0.64-0.92 at SD 300 (cuts holding either way); 1.02-1.05 for its
# CD20 as acquired and under-compensated x0.7 (estimates 0.89 and 1.03)
SPLIT_DIP = 0.7


def logicle_w(raw: np.ndarray, t: float, m: float, w: float | str, widen: bool) -> float:
    """Logicle W of one channel: `w`, or the data's own estimate (FlowJo's, from the 5th
    percentile of the negatives) where `w` is 'auto', or where `widen` and the negatives split
    in two humps at `w` (`zero_dip` under SPLIT_DIP) and the estimate is wider. Why widen:
    negatives wider than W's linear region show as two humps and the gates cut between them
    (the Lyoplate file with noise of SD 500 added to every detector, another instrument's
    negatives: B cells F1 0.11 at W 0.5, 0.96 widened; at SD 400 the CD3 cut fell in the
    negatives' dip and every lymphocyte was a T cell, estimates 0.92-0.99). Why only then: one W
    for every sample keeps the template's limits on one scale, and the estimate alone runs high
    where a few events lie far below zero (the file under-compensated x0.7: CD20 1.03, no
    split, plasmablasts 0.76 -> 0.59 when widened)."""
    if w == "auto":
        return transforms.estimate_logicle_w(raw, t, m)
    if not widen:
        return float(w)
    # the dip first: it reads a subsample, the estimate every negative value
    if transforms.zero_dip(raw, t, float(w), m) >= SPLIT_DIP:
        return float(w)
    return max(transforms.estimate_logicle_w(raw, t, m), float(w))


def _widened_notes(scales: Mapping, tcfg: Mapping, pnn: Sequence[str], idx: Mapping) -> list[str]:
    """One note naming the channels whose logicle W was widened beyond the configured one."""
    w = {**TRANSFORM["logicle"], **(tcfg.get("logicle") or {})}["w"]
    if w == "auto":
        return []
    own = {m: s.p["W"] for m, s in scales.items() if s.kind == "logicle"}
    wide = [
        f"{m} ({pnn[idx[m]]}) W {v:.2f}"
        for m, v in own.items()
        if v > float(w) and "w" not in (tcfg["per_marker"] or {}).get(m, {})
    ]
    if not wide:
        return []
    return [
        f"negatives too wide for logicle W {float(w):g} (they split in two humps there) on "
        f"{', '.join(wide)}: each gated at the W estimated from its own negatives "
        "(transform.logicle.widen)"
    ]


def _unclipped(
    events: np.ndarray, stains: Sequence[str], idx: Mapping, tcfg: Mapping, pnn: Sequence[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The stain channels whose negatives the writing software clipped at a floor, spread back
    below it (`clipped.unclipped`; not log-amplifier channels, whose floor is channel 0), and
    a note for each; nothing where `transform.unclip` is off."""
    if tcfg.get("unclip", "mirror") == "off" or tcfg["fluorescence"] == "linear":
        return {}, []
    linear = {m for m, own in (tcfg["per_marker"] or {}).items() if own.get("scale") == "linear"}
    raws, notes = {}, []
    for marker in stains:
        if marker in linear:
            continue
        raw, found = clipped.unclipped(events[:, idx[marker]])
        if found is not None:
            raws[marker] = raw
            notes.append(clipped.note(f"{marker} ({pnn[idx[marker]]})", *found, len(raw)))
    return raws, notes


def _display_ranges(
    events: np.ndarray, stains: Mapping[str, int], tops: Mapping, tcfg: Mapping, pnn: Sequence[str]
) -> tuple[dict, list[str]]:
    """`tops` with the range display-scale values fill (log_channels.display_ranges) where a
    file keeps the acquisition's, and one note; `transform.log_channels: off` turns it off."""
    if tcfg.get("log_channels", "auto") == "off":
        return tops, []
    channels = {pnn[i]: (events[:, i], tops[i].top) for i in stains.values()}
    shown = log_channels.display_ranges(channels)
    if not shown:
        return tops, []
    out = dict(tops)
    for i in stains.values():
        out[i] = dataclasses.replace(tops[i], top=shown[pnn[i]])
    note = (
        f"stain values lie within 0-{max(shown.values()):g} under declared ranges of "
        f"{max(tops[i].declared for i in stains.values()):g}: display-scale channel values (an export "
        "of gated data), each read on the range it fills"
    )
    return out, [note]


def _filled_ranges(
    events: np.ndarray, groups: Mapping[str, Sequence[int]], tops: Mapping, pnn: Sequence[str]
) -> tuple[dict, list[str]]:
    """`tops` with each group of channels (name: column indices) read on the range its values
    fill where the declared one lies far above them (`ranges.filled_top`), and a note each."""
    out, notes = dict(tops), []
    for name, cols in groups.items():
        floor = None if name == "scatter" else ranges.DEFAULT_TOP
        top = ranges.filled_top([events[:, i] for i in cols], [tops[i].top for i in cols], floor)
        if top is None:
            continue
        declared = max(tops[i].top for i in cols)
        for i in cols:
            out[i] = dataclasses.replace(tops[i], top=top, basis="the range the values fill")
        notes.append(
            f"{name} values lie below 1/{ranges.FAR_ABOVE} of their declared range "
            f"{declared:,.0f} ({', '.join(pnn[i] for i in cols)}): read on {top:,.0f}, the range "
            "they fill"
        )
    return out, notes


def _log_channels(
    events: np.ndarray, idx: Mapping[str, int], tops: Mapping, tcfg: Mapping, pnn: Sequence[str]
) -> tuple[dict, list[str], set[str]]:
    """The transform settings with a linear scale for every fluorescence channel stored as
    log-amplifier channel numbers (log_channels), a note for each, and their $PnN."""
    tcfg = {**TRANSFORM, **tcfg}
    if tcfg.get("log_channels", "auto") == "off" or tcfg["fluorescence"] == "linear":
        return tcfg, [], set()
    own = dict(tcfg.get("per_marker") or {})
    candidates = {
        marker: i
        for marker, i in idx.items()
        if marker not in NOT_STAINS and "scale" not in (own.get(marker) or {})
    }
    channels = {pnn[i]: (events[:, i], tops[i].top) for i in candidates.values()}
    found = log_channels.log_channel_markers(channels)
    labels = {pnn[i]: f"{marker} ({pnn[i]})" for marker, i in candidates.items()}
    for marker, i in candidates.items():
        if pnn[i] in found:
            own[marker] = {**(own.get(marker) or {}), "scale": "linear"}
    notes = log_channels.notes(found, channels, labels)
    return {**tcfg, "per_marker": own}, notes, set(found)


def preprocess(
    path: str,
    panel_map: panel.Panel,
    cfg: Mapping,
    spill_csv: str | None = None,
    required: Sequence[str] = REQUIRED,
) -> Preprocessed:
    sample = read_fcs(path)
    idx = panel.match_channels(panel_map, sample.pnn, sample.pns)
    layout_notes = _heights_for_areas(idx)
    if panel.scatterless(idx):
        layout_notes.append(panel.NO_SCATTER)
    two_stains = panel.two_stain_notes(panel_map, sample.pnn, sample.pns, idx)
    panel.require_markers(idx, required, sample.pnn, sample.pns, path)

    stains = [m for m in idx if m not in NOT_STAINS]
    scaled = {m: i for m, i in idx.items() if m != "Time"}
    mass = mass_cytometry.detected(sample.keywords, sample.pnn)
    transform = cfg["transform"]
    if mass:  # its own scale: no log-amplifier channel numbers, no clipped negatives to restore
        transform = {**transform, "fluorescence": MASS_CYTOMETRY, "log_channels": "off",
                     "unclip": "off"}  # fmt: skip
    tops = ranges.channel_ranges(
        sample.events,
        {i: ranges.declared_top(sample, i) for i in scaled.values()},
        sample.pnn,
        path,
    )
    nominal = {m: tops[i] for m, i in scaled.items() if tops[i].replaced}
    tops, display_notes = _display_ranges(
        sample.events, {m: idx[m] for m in stains}, tops, transform, sample.pnn
    )
    groups = {"stain": [] if mass else [idx[m] for m in stains],
              "scatter": [idx[m] for m in SCATTER if m in idx]}  # fmt: skip
    tops, filled_notes = _filled_ranges(sample.events, groups, tops, sample.pnn)
    tcfg, log_notes, as_stored = _log_channels(sample.events, idx, tops, transform, sample.pnn)
    spill = (
        compensation.read_spillover_csv(spill_csv, sample.pnn, sample.pns) if spill_csv else None
    )
    exported = None
    if spill is None and cfg["compensation"]["default"] == "keyword":
        exported = compensation.compensated_on_export(sample)
        spill = None if exported else compensation.spillover_from_keywords(sample)
    # a linear matrix does not compensate channel numbers (a log scale)
    not_applied = spill and log_channels.matrix_not_applied(spill.source, spill.channels, as_stored)
    spill = None if not_applied else spill
    turned = None  # the note when the matrix was applied transposed (its data showed it)
    if spill is not None:
        spill, turned = matrix_orientation.oriented(sample.events, sample.pnn, spill)
    spill_source = (
        spill.source
        if spill
        else "compensated on export"
        if exported
        else "not applied: channel numbers"
        if not_applied
        else "none"
    )
    stain_channels = [idx[m] for m in stains if sample.pnn[idx[m]] not in as_stored]
    missing = None  # why the stains are gated uncompensated, when they are
    unmixed = spectral.detected(sample.keywords)
    if mass and spill is None:
        layout_notes.append(mass_cytometry.note(mass))
    elif unmixed:
        layout_notes.append(spectral.note(unmixed))
    elif (
        spill is None and not (exported or not_applied) and cfg["compensation"]["default"] != "none"
    ):
        missing = uncompensated.missing_spillover_note(sample, stain_channels)
    elif spill is not None and spill_csv is None:  # the file's own matrix
        missing = uncompensated.identity_spillover_note(sample, spill, stain_channels)
    events = (
        compensation.compensate(sample.events, sample.pnn, spill)
        if spill is not None
        else sample.events
    )

    columns: dict[str, np.ndarray] = {}
    scales: dict[str, transforms.Scale] = {}
    raws, clip_notes = _unclipped(events, stains, idx, tcfg, sample.pnn)
    for marker, i in idx.items():
        if marker == "Time":
            columns[marker] = np.ascontiguousarray(events[:, i], dtype=np.float32)
            continue
        raw = raws.get(marker, events[:, i])
        if marker == panel.EVENT_LENGTH:
            columns[marker], scales[marker] = event_length(raw)
            continue
        columns[marker], scales[marker] = scale_channel(marker, raw, tops[i].top, tcfg)
    widened = _widened_notes(scales, tcfg, sample.pnn, idx)

    fluorescence = {m: columns[m] for m in stains}
    qc_result = qc.qc_sample(
        sample, idx, fluorescence, cfg["qc"], tops={idx[m]: r.top - 1 for m, r in nominal.items()}
    )
    # a mass cytometry file's stains are read on one arcsinh whatever $PnR declares (its note
    # says so), its event length in its own median: a wrong declared range moves none of them
    # and is no reason to doubt the sample
    range_notes = [r.note(f"{marker} ({sample.pnn[idx[marker]]})") for marker, r in nominal.items()
                   if not mass or marker in SCATTER]  # fmt: skip
    info = {
        "provenance": {
            **sample.provenance,
            "warnings": [
                *sample.provenance.get("warnings", []),
                *(spill.warnings if spill is not None else []),
                *([exported] if exported else []),
                *([not_applied] if not_applied else []),
                *([missing] if missing else []),
                *range_notes,
                *layout_notes,
                *two_stains,
                *display_notes,
                *filled_notes,
                *log_notes,
                *clip_notes,
                *widened,
            ],
            "ranges_replaced": {m: dataclasses.asdict(r) for m, r in nominal.items()},
            "spillover_source": spill_source,
            "uncompensated": missing,  # the note (None: compensated), also on the cohort page
            "matrix_turned": turned,  # likewise
            "spillover_channels": spill.channels if spill is not None else [],
            # the matrix itself: exported gates name it instead of "the file's own" (FCS), which
            # not every tool reads from every instrument's keywords
            "spillover_matrix": spill.matrix.tolist() if spill is not None else [],
            "transform": {m: str(sc) for m, sc in scales.items()},
            "scales": {m: sc.to_record() for m, sc in scales.items()},
            "cytopipe_version": __version__,
        },
        "panel": {
            m: f"{sample.pnn[i]} ({sample.pns[i]})" if sample.pns[i] else sample.pnn[i]
            for m, i in idx.items()
        },
        "channels": {m: sample.pnn[i] for m, i in idx.items()},  # marker -> $PnN
        "qc": _doubt_ranges(qc_result.record(), range_notes),
        "qc_timeline": qc_result.timeline(),
        "keywords": public_keywords(sample.keywords, cfg.get("keyword_allowlist") or ()),
    }
    marker_of = {i: m for m, i in idx.items()}
    at_top = {marker_of[i]: rows for i, rows in qc_result.at_top.items()}
    return Preprocessed(columns, qc_result.keep, info, at_top)


def _heights_for_areas(idx: dict[str, int]) -> list[str]:
    """Use a scatter height channel as the area one when the file has no area channel (in
    place); the notes say so. Singlets then pass (no FSC-A vs FSC-H to compare)."""
    notes = []
    for area, height in HEIGHT_FOR_AREA.items():
        if area not in idx and height in idx:
            idx[area] = idx.pop(height)
            notes.append(f"{height} used as {area}: the file has no {area} channel")
    return notes


def _doubt_ranges(record: dict, notes: list[str]) -> dict:
    """A sample whose declared ranges were wrong is at least a QC warning, with the reason: its
    B-cell numbers then say so wherever they are shown, never silently."""
    if not notes:
        return record
    verdict = "warn" if record["verdict"] == "pass" else record["verdict"]
    return {**record, "verdict": verdict, "notes": [*record["notes"], *notes]}
