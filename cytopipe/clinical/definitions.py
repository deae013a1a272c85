"""Definitions of B-cell aplasia and reconstitution after CD19 CAR-T, and the `longitudinal`
settings they are computed with.

Paediatric CAR-T cohorts in autoimmunity are small and only comparable when every centre uses the
same definitions, so the definitions are implemented exactly as below, are configurable under
`longitudinal:` in config/config.yaml, and are written into every output (`definitions()`).

Definitions (defaults in brackets):
- Aplasia at a timepoint: CD19+ B cells (population `b_cells`) below `aplasia_pct_lymphocytes`
  [1.0] % of lymphocytes, OR below `aplasia_cells_per_ul` [10] cells/uL when an absolute count is
  known. Below EITHER threshold is aplasia: a lymphopenic patient with 2 % B cells of 300
  lymphocytes/uL has 6 B cells/uL and is aplastic by count. When neither value can be computed
  (no b_cells population, no lymphocytes) the timepoint is "unknown" and ignored by the episode
  logic (listed in `note`).
- Baseline: samples with day < 0. Day 0 (the infusion day) counts as post-infusion.
- States of post-infusion timepoints, in day order:
  * "aplasia": below threshold; the first such timepoint starts the aplasia episode.
  * "not_depleted": at/above threshold before any aplasia was seen.
  * "reconstituted": at/above threshold after aplasia, confirmed by the next classifiable
    timepoint also being at/above threshold (`confirm_with_next` [true]). When there is no next
    timepoint the reconstitution is accepted unconfirmed (note "unconfirmed_last_timepoint") as
    DESIGN.md says "confirmed by the next timepoint when one exists". Later at/above timepoints
    stay "reconstituted".
  * An at/above timepoint inside aplasia whose next timepoint is below again is NOT a
    reconstitution: it keeps state "aplasia" with below_threshold False and note
    "unconfirmed_blip", and the patient gets a flag.
  * A below-threshold timepoint after reconstitution is "aplasia" again (note
    "below_threshold_after_reconstitution", patient flag); returning above it needs confirmation
    again. The patient-level episode is the FIRST one.
- Per patient: aplasia_start_day = first post-infusion timepoint below threshold;
  reconstitution_day = day of the first confirmed at/above timepoint (days since infusion);
  aplasia_end_day = reconstitution_day, or last follow-up when censored; aplasia_duration_days =
  aplasia_end_day - aplasia_start_day; censored = aplasia began and follow-up ended before
  reconstitution. The baseline is the last pre-infusion sample.
- Phenotype of returning B cells at the reconstitution timepoint, as fractions of b_cells:
  naive/transitional = b_naive (the IgD+CD27- quadrant, which contains the CD24hi CD38hi
  transitional cells; b_transitional is used only when b_naive is missing), memory = unswitched +
  switched memory, plasmablast = plasmablasts; the dominant class is `phenotype_at_return`,
  "not evaluable" when every fraction is missing or 0 (empty when B cells never returned).
- flag_memory_return: at any reconstituted timepoint, (switched memory + plasmablasts) / b_cells
  exceeds `memory_return_fraction` [0.25] OR exceeds the same fraction at baseline (only when the
  baseline itself was not below the aplasia threshold, e.g. after prior rituximab, because a few
  residual cells give no meaningful fraction); the flag text says which ("possible return of
  disease-driving B-cell clones").
- Age reference band: the band of `reference_ranges.bands` with min_age <= age_years < max_age
  (age at sampling); b_cells_per_ul is "below"/"within"/"above" [low, high] or "unknown".
- Kaplan-Meier of time to reconstitution, time origin = infusion (day 0): event = reconstitution
  at reconstitution_day, censored at last follow-up when follow-up ended in aplasia. Patients
  never depleted (or without post-infusion data) are excluded and listed in cohort_summary.json.
- cohort_export.csv carries the definitions as COLUMNS (def_*, cytopipe_version) on every row,
  not a comment block, so rows pooled from several centres keep the definitions they were computed
  with and any CSV reader can load the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cytopipe import __version__
from cytopipe.config import freeze, validated
from cytopipe.errors import ConfigError

INTERVALS = (
    "exact 95%: Garwood (Poisson) for B-cell events, Clopper-Pearson for % of lymphocytes, "
    "conditional binomial for cells/uL from bead counts; dual-platform cells/uL carry the % "
    "interval times the absolute lymphocyte count, whose own error is not known"
)
RECONSTITUTION_RULES = {
    "point_estimate": "at/above the aplasia threshold when the value is",
    "lower_bound": "at/above the aplasia threshold only when the lower end of its exact 95% "
    "interval is",
}


def validate_config(cfg: Mapping | None) -> Mapping:
    """The `longitudinal` mapping with defaults applied (read-only); ConfigError naming the bad
    key. The config schema checks each value (unknown keys are errors: a misspelt threshold
    silently falling back to its default would change every patient's state without anyone
    noticing); the rules relating values of the reference bands are checked here."""
    s = validated({} if cfg is None else cfg, "config", section="longitudinal")
    out = {
        **s,
        **{k: float(s[k]) for k in ("aplasia_pct_lymphocytes", "aplasia_cells_per_ul")},
        "memory_return_fraction": float(s["memory_return_fraction"]),
        "reference_ranges": _reference_ranges(s["reference_ranges"]),
    }
    if s["limits"]["lloq_events"] < s["limits"]["lod_events"]:
        _config_error("longitudinal.limits.lloq_events", "must be at least lod_events")
    return freeze(out)


def _config_error(key: str, what: str) -> None:
    raise ConfigError(
        f"config key '{key}': {what}", hint="fix it under `longitudinal:` in config/config.yaml"
    )


def _reference_ranges(ranges: Mapping) -> dict:
    """Bands sorted by age, numbers as floats, each with a label; bands must not overlap."""
    key = "longitudinal.reference_ranges"
    clean = []
    for i, band in enumerate(ranges["bands"]):
        where = f"{key}.bands[{i}]"
        values = {k: float(band[k]) for k in ("min_age", "max_age", "low", "high")}
        if values["min_age"] >= values["max_age"]:
            _config_error(f"{where}.max_age", "must be greater than min_age")
        if values["low"] > values["high"]:
            _config_error(f"{where}.high", "must be at least low")
        label = band.get("label")
        values["label"] = str(label) if label else band_label(values["min_age"], values["max_age"])
        values["source"] = str(band.get("source") or ranges["source"])
        clean.append(values)
    clean.sort(key=lambda b: b["min_age"])
    for previous, band in zip(clean, clean[1:], strict=False):
        if band["min_age"] < previous["max_age"]:
            _config_error(
                f"{key}.bands",
                f"bands {previous['label']} and {band['label']} overlap",
            )
    return {"source": sources_text(clean), "unit": ranges["unit"], "bands": clean}


def sources_text(bands: list[Mapping]) -> str:
    """Every source the bands cite, each with the ages it covers: a band taken from another
    study (adults) must not be cited as the children's one."""
    spans: dict[str, list[str]] = {}
    for band in bands:
        spans.setdefault(band["source"], []).append(band["label"])
    if len(spans) == 1:
        return next(iter(spans))
    return " | ".join(f"{', '.join(labels)}: {src}" for src, labels in spans.items())


def band_label(min_age: float, max_age: float) -> str:
    """Human label: months below one year ("3-6 mo"), years above ("12-18 y", "18+ y")."""
    if max_age <= 1.0:
        return f"{format_number(min_age * 12)}-{format_number(max_age * 12)} mo"
    if max_age >= 100:
        return f"{format_number(min_age)}+ y"
    return f"{format_number(min_age)}-{format_number(max_age)} y"


def format_number(x: float) -> str:
    """A number as short text for labels and messages: 28.0 -> "28", 0.25 -> "0.25", at most
    two decimals."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def confirmation_rule(cfg: Mapping) -> str:
    if cfg["confirm_with_next"]:
        return (
            "first post-infusion timepoint at or above threshold after aplasia, confirmed by the "
            "next timepoint also at or above threshold; accepted unconfirmed when it is the last "
            "timepoint"
        )
    return "first post-infusion timepoint at or above threshold after aplasia (no confirmation)"


def definitions(cfg: Mapping) -> dict:
    """Every definition an output depends on, for cohort_summary.json and the reports."""
    pct, per_ul = cfg["aplasia_pct_lymphocytes"], cfg["aplasia_cells_per_ul"]
    ranges = cfg["reference_ranges"]
    return {
        "aplasia": (
            f"CD19+ B cells (b_cells) < {pct:g}% of lymphocytes, or < {per_ul:g} cells/uL when an "
            "absolute count is known (below either threshold = aplasia)"
        ),
        "aplasia_pct_lymphocytes": pct,
        "aplasia_cells_per_ul": per_ul,
        "baseline": "samples with day < 0; day 0 (infusion) counts as post-infusion",
        "reconstitution": confirmation_rule(cfg),
        "confirm_with_next": cfg["confirm_with_next"],
        "unconfirmed_blip": (
            "an at/above-threshold timepoint followed by aplasia stays in aplasia (note "
            "unconfirmed_blip)"
        ),
        "aplasia_duration": (
            "reconstitution_day - aplasia_start_day, or last follow-up - aplasia_start_day when "
            "censored"
        ),
        "phenotype_at_return": (
            "fractions of b_cells at the reconstitution timepoint: naive/transitional = b_naive "
            "(IgD+CD27-, contains transitional), memory = unswitched + switched memory, "
            "plasmablast = plasmablasts; the largest is reported, 'not evaluable' when every "
            "fraction is missing or 0"
        ),
        "memory_return_fraction": cfg["memory_return_fraction"],
        "memory_return_rule": (
            f"flag when (switched memory + plasmablasts) / b_cells > "
            f"{cfg['memory_return_fraction']:g} or > the baseline fraction at any reconstituted "
            "timepoint"
        ),
        "absolute_counts": (
            "single platform (cell events / bead events x beads per test / volume uL) when bead "
            "data is complete, else dual platform (% of lymphocytes / 100 x absolute lymphocytes)"
        ),
        "kaplan_meier": (
            "time from infusion to reconstitution; censored at last follow-up when follow-up "
            "ended in aplasia; never-depleted patients excluded"
        ),
        "reference_ranges": {
            "source": ranges["source"],
            "unit": ranges["unit"],
            "bands": [
                {k: band[k] for k in ("label", "min_age", "max_age", "low", "high", "source")}
                for band in ranges["bands"]
            ],
            "rule": "band with min_age <= age at sampling < max_age",
        },
        "limits": {
            "lod_events": cfg["limits"]["lod_events"],
            "lloq_events": cfg["limits"]["lloq_events"],
            "source": cfg["limits"]["source"],
            "rule": (
                "each sample's LOD and LLOQ in % of lymphocytes and cells/uL given its events; "
                "values below the LLOQ read '< LLOQ'; 'not evaluable' when the aplasia "
                "threshold is below the LOD on every criterion and the B cells found do not "
                "settle it (lower bound not above the threshold)"
            ),
        },
        "intervals": INTERVALS,
        "reconstitution_rule": RECONSTITUTION_RULES[cfg["reconstitution_rule"]],
        "skip_failed_qc": cfg["skip_failed_qc"],
        "cytopipe_version": __version__,
    }


def longitudinal_settings(cfg: Mapping, source: str | os.PathLike | None = None) -> dict:
    """The validated `longitudinal` section of a whole workflow config."""
    try:
        return validate_config(cfg.get("longitudinal"))
    except ConfigError as exc:
        raise ConfigError(exc.what, path=source, hint=exc.hint) from None
