"""The state of every timepoint: baseline, aplasia, not_depleted, reconstituted or unknown.

Per sample, the B-cell numbers the states need (wide form of the population statistics), below or
at/above the aplasia threshold, then per patient in day order the states and notes of the
definitions (cytopipe.clinical.definitions), with the age reference band of each sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cytopipe.clinical.counts import NONE
from cytopipe.clinical.definitions import validate_config
from cytopipe.clinical.reference_ranges import reference_bands, reference_position
from cytopipe.clinical.uncertainty import add_uncertainty, not_evaluable
from cytopipe.errors import CytopipeError
from cytopipe.gating.placement import LOW_CONFIDENCE
from cytopipe.results import SAMPLE_STATE_COLUMNS

BASELINE, APLASIA, RECONSTITUTED, NOT_DEPLETED, UNKNOWN, NOT_EVALUABLE = (
    "baseline",
    "aplasia",
    "reconstituted",
    "not_depleted",
    "unknown",
    "not_evaluable",
)
NOTE_BLIP = "unconfirmed_blip"
NOTE_LAST = "unconfirmed_last_timepoint"
NOTE_AGAIN = "below_threshold_after_reconstitution"
NOTE_NO_B = "b_cells_unavailable"


SUBSETS = {
    "frac_naive": "b_naive",
    "frac_transitional": "b_transitional",
    "frac_unswitched_memory": "b_unswitched_memory",
    "frac_switched_memory": "b_switched_memory",
    "frac_double_negative": "b_double_negative",
    "frac_plasmablast": "plasmablasts",
}


def below_threshold(
    pct_lymphocytes: np.ndarray, cells_per_ul: np.ndarray, cfg: Mapping
) -> pd.Series:
    """True/False per timepoint (pandas boolean with <NA> when neither value is known)."""
    pct, per_ul = (np.asarray(a, dtype=float) for a in (pct_lymphocytes, cells_per_ul))
    below = (pct < cfg["aplasia_pct_lymphocytes"]) | (per_ul < cfg["aplasia_cells_per_ul"])
    known = np.isfinite(pct) | np.isfinite(per_ul)
    return pd.Series(pd.array(np.where(known, below, False), dtype="boolean")).where(known)


def classify_timepoints(
    days: np.ndarray, below: list[bool | None], *, confirm_with_next: bool = True
) -> tuple[list[str], list[str]]:
    """States and notes for ONE patient's timepoints sorted by day (see
    cytopipe.clinical.definitions)."""
    n = len(days)
    states, notes = [""] * n, [""] * n
    post = []
    for i in range(n):
        if days[i] < 0:
            states[i] = BASELINE
        elif below[i] is None:
            states[i], notes[i] = UNKNOWN, NOTE_NO_B
        else:
            post.append(i)
    phase = "before"  # before aplasia -> "aplasia" -> "reconstituted" (-> "aplasia" ...)
    for k, i in enumerate(post):
        nxt = post[k + 1] if k + 1 < len(post) else None
        if below[i]:
            states[i] = APLASIA
            if phase == "reconstituted":
                notes[i] = NOTE_AGAIN
            phase = "aplasia"
        elif phase == "before":
            states[i] = NOT_DEPLETED
        elif phase == "reconstituted":
            states[i] = RECONSTITUTED
        elif not confirm_with_next or (nxt is not None and not below[nxt]):
            states[i], phase = RECONSTITUTED, "reconstituted"
        elif nxt is None:
            states[i], notes[i], phase = RECONSTITUTED, NOTE_LAST, "reconstituted"
        else:
            states[i], notes[i] = APLASIA, NOTE_BLIP
    return states, notes


def sample_table(population_stats: pd.DataFrame) -> pd.DataFrame:
    """One row per sample with the B-cell numbers the states need (wide form of the stats)."""
    pop = population_stats
    if pop.duplicated(["sample_id", "population"]).any():
        dup = pop.loc[pop.duplicated(["sample_id", "population"]), ["sample_id", "population"]]
        first = dup.iloc[0]
        raise CytopipeError(
            f"sample statistics list population {first['population']!r} twice for sample "
            f"{first['sample_id']!r}",
            hint="regenerate tables/sample_stats.tsv from the per-sample stats",
        )
    meta = pop.groupby("sample_id", sort=False)[
        ["patient_id", "day", "age_years", "disease"]
    ].first()
    count = pop.pivot(index="sample_id", columns="population", values="count")
    pct_l = pop.pivot(index="sample_id", columns="population", values="pct_lymphocytes")
    per_ul = pop.pivot(index="sample_id", columns="population", values="cells_per_ul")
    method = pop.pivot(index="sample_id", columns="population", values="abs_method")
    conf = (
        pop.pivot(index="sample_id", columns="population", values="confidence")
        if "confidence" in pop
        else pd.DataFrame(index=meta.index)
    )

    def col(frame: pd.DataFrame, name: str) -> pd.Series:
        series = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        return pd.to_numeric(series, errors="coerce").reindex(meta.index)

    out = meta.copy()
    b, lymph = col(count, "b_cells"), col(count, "lymphocytes")
    out["b_cells"], out["lymphocytes"] = b, lymph
    out["lymphocyte_confidence"] = col(conf, "lymphocytes")
    if "as_template" in pop:  # the gates' looks (cytopipe.gating.placement.judged): the
        # B-cell gate's, and the CD20+ B cells' the subsets are cut among
        for column, population in (("b_gate_look", "b_cells"), ("subset_look", "b_cd20pos")):
            look = pop[pop["population"] == population].set_index("sample_id")["as_template"]
            out[column] = look.reindex(meta.index).fillna("").astype(str)
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = (b / lymph.where(lymph > 0)) * 100.0
        out["b_pct_lymphocytes"] = col(pct_l, "b_cells").fillna(computed)
        out["b_cells_per_ul"] = col(per_ul, "b_cells")
        abs_method = (
            method["b_cells"] if "b_cells" in method else pd.Series(NONE, index=method.index)
        )
        out["abs_method"] = abs_method.reindex(meta.index).fillna(NONE)
        cd20 = col(pct_l, "b_cd20pos")
        out["cd20_pct_lymphocytes"] = cd20.fillna(
            col(count, "b_cd20pos") / lymph.where(lymph > 0) * 100
        )
        b_pos = b.where(b > 0)
        out["plasmablast_pct_b"] = col(count, "plasmablasts") / b_pos * 100.0
        for column, population in SUBSETS.items():
            out[column] = col(count, population) / b_pos
    flag = pop["flag"].fillna("").astype(str) if "flag" in pop else pd.Series("", index=pop.index)
    flagged = pop[flag != ""]
    gate_flags = (
        (flagged["population"] + ":" + flag[flag != ""]).groupby(flagged["sample_id"]).agg(",".join)
    )
    out["gate_flags"] = gate_flags.reindex(out.index).fillna("")
    return out.reset_index()


DOUBT_NOTE = (
    "lymphocyte gate in doubt (confidence {:.2f}): the % of lymphocytes, and the call made on "
    "it, may be off; review the gate"
)


B_GATE_DOUBT = "B-cell gate unlike the template"
B_GATE_NOTE = B_GATE_DOUBT + " ({}): the call may be off, review the gate"


SUBSET_DOUBT = "B-cell subsets in doubt"
SUBSET_NOTE = SUBSET_DOUBT + " (CD20+ B cells unlike the template: {}): the phenotype may be off"


def _subsets_in_doubt(frame: pd.DataFrame) -> np.ndarray:
    """Samples whose naive, memory and transitional B cells were cut among CD20+ B cells unlike
    the template, at any timepoint: with CD20 masked by anti-CD20 therapy (rituximab, which
    many patients had before CAR-T) most B cells are CD20- and the subsets are a remnant's.
    The phenotype at return, and the baseline that memory return is compared with, read them."""
    return _unlike_template(frame, "subset_look")


def _b_gate_in_doubt(frame: pd.DataFrame, states: pd.Series) -> np.ndarray:
    """Post-infusion calls made on a B-cell gate whose sample did not look as the template
    expects. In aplasia the gate falls back but looks as expected (no CD19+ population, one
    where one is); a failed CD19 stain also leaves no CD19+ B cells, and its CD3- CD20+
    lymphocytes outside the gate (`missed:` in the template) are what tell it apart: an aplasia
    call on such a sample is not to be read without a look."""
    return _called(states) & _unlike_template(frame, "b_gate_look")


def _unlike_template(frame: pd.DataFrame, look: str) -> np.ndarray:
    """Samples whose gate `look` (a sample_table column) says 'no: ...'."""
    if look not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[look].fillna("").astype(str).str.startswith("no").to_numpy()


def _one_part(look: str) -> str:
    """A gate's 'no: why; why' as one part of a note (whose parts '; ' separates)."""
    return look.removeprefix("no: ").replace("; ", ", ")


def _denominator_in_doubt(frame: pd.DataFrame, states: pd.Series) -> np.ndarray:
    """Post-infusion calls made on a lymphocyte gate placed with low confidence. The aplasia
    rule is a share of the lymphocytes (and a dual-platform count is that share times the blood
    count): a gate that holds debris or monocytes beside a lymphopenic sample's few lymphocytes
    makes the share smaller and can call aplasia where there is none, while its B-cell count
    is right. Bead counts do not depend on it, but the % rule still does."""
    if "lymphocyte_confidence" not in frame:
        return np.zeros(len(frame), dtype=bool)
    conf = pd.to_numeric(frame["lymphocyte_confidence"], errors="coerce").to_numpy(dtype=float)
    return _called(states) & (conf < LOW_CONFIDENCE)


def _called(states: pd.Series) -> np.ndarray:
    """The post-infusion calls a gate in doubt can move."""
    return states.isin([APLASIA, RECONSTITUTED, NOT_DEPLETED]).to_numpy()


def _add_notes(notes: pd.Series, where: np.ndarray, texts) -> None:
    """Append `texts` to the notes `where` is True (a note's parts are '; '-separated)."""
    notes[where] = [
        "; ".join(p for p in (n, t) if p) for n, t in zip(notes[where], texts, strict=True)
    ]


def assign_states(samples: pd.DataFrame, cfg: Mapping) -> pd.DataFrame:
    """sample_states: per-sample B-cell numbers + state, threshold, reference band and position."""
    cfg = validate_config(cfg)
    frame = samples.sort_values(["patient_id", "day", "sample_id"], kind="stable").reset_index(
        drop=True
    )
    frame = add_uncertainty(frame, cfg)
    if cfg["reconstitution_rule"] == "lower_bound":  # at/above only when the interval is
        below = below_threshold(frame["b_pct_low"], frame["b_per_ul_low"], cfg)
    else:
        below = below_threshold(frame["b_pct_lymphocytes"], frame["b_cells_per_ul"], cfg)
    blind = not_evaluable(frame, cfg)
    below[blind] = pd.NA
    frame["below_threshold"] = below.array  # nullable: <NA> when the state is unknown
    states = pd.Series("", index=frame.index, dtype=object)
    notes = pd.Series("", index=frame.index, dtype=object)
    for _, idx in frame.groupby("patient_id", sort=False).groups.items():
        flags = [None if pd.isna(v) else bool(v) for v in below.loc[idx]]
        s, n = classify_timepoints(
            frame.loc[idx, "day"].to_numpy(dtype=float),
            flags,
            confirm_with_next=cfg["confirm_with_next"],
        )
        states.loc[idx], notes.loc[idx] = s, n
    post = blind & (frame["day"].to_numpy(dtype=float) >= 0)
    states[post] = NOT_EVALUABLE
    notes[post] = [
        f"not evaluable: {int(n)} lymphocytes acquired, {int(k)} needed to see the aplasia "
        "threshold above the LOD"
        for n, k in zip(
            frame.loc[post, "lymphocytes"], frame.loc[post, "events_needed"], strict=True
        )
    ]
    doubt = _denominator_in_doubt(frame, states)
    if doubt.any():
        confidence = frame.loc[doubt, "lymphocyte_confidence"]
        _add_notes(notes, doubt, [DOUBT_NOTE.format(c) for c in confidence])
    for doubt, look, text in (
        (_b_gate_in_doubt(frame, states), "b_gate_look", B_GATE_NOTE),
        (_subsets_in_doubt(frame), "subset_look", SUBSET_NOTE),
    ):
        if doubt.any():
            reasons = frame.loc[doubt, look]
            _add_notes(notes, doubt, [text.format(_one_part(why)) for why in reasons])
    frame["state"], frame["note"] = states, notes
    bands = reference_bands(frame["age_years"].to_numpy(dtype=float), cfg["reference_ranges"])
    frame[bands.columns] = bands.to_numpy()
    for name in ("ref_low", "ref_high"):
        frame[name] = frame[name].astype(float)
    frame["ref_position"] = reference_position(
        frame["b_cells_per_ul"], frame["ref_low"], frame["ref_high"]
    )
    for name in ("note", "gate_flags", "qc_verdict"):
        if name not in frame:
            frame[name] = ""
    return frame[SAMPLE_STATE_COLUMNS]
