"""The results folder contract: where every artifact lives, which cohort tables exist and their
columns and types, and how a missing value is written.

Why one place: the layout used to be spelled out wherever a file was written or read (the
per-sample commands, collect, the longitudinal tables, clustering, the report and the Snakemake
rules), so a file renamed or a column added in one place and not the others showed up only as a
missing input, or an empty report section, at the end of a long run. Everything here is names,
paths and column lists: no I/O and no other cytopipe import, so every layer and the Snakefile can
use it.

Layout of a results folder (RESULTS):

    preprocessed/{sample}.parquet     events on the gating scale, plus the QC column
    preprocessed/{sample}.json        the preprocessing record: status, provenance, QC, panel
    samples/{sample}/sample.json      the sample's record (status, stage, error, qc, ...)
    samples/{sample}/stats.tsv        population statistics (cytopipe.gating.stats.STATS_COLUMNS)
    samples/{sample}/plots.json       density plots of the gates
    samples/{sample}/gates.parquet    one boolean column per population, one row per event
    samples/{sample}/gates.xml        the placed gates as Gating-ML 2.0 on the file's channels
    samples/{sample}/clusters.json    the sample mapped onto the cohort clustering model
    model/som.npz                     the cohort clustering model
    tables/                           cohort tables (TABLE_FILES), cohort_summary.json and
                                      cohort_export.csv
    report/                           the HTML report
    logs/                             the workflow's job logs: {step}.log, {step}/{sample}.log

Missing values: the convention is an empty cell (NA_REP), which every longitudinal table uses.
Readers take an empty cell and "NaN" alike as missing (MISSING_VALUES; pandas' defaults include
both), because the tables written with cytopipe.atomic.write_tsv (each sample's stats.tsv and
the collect tables in NAN_TABLES) spell a missing value "NaN" (NAN_REP). They keep that spelling
so a rerun on the same input writes byte-identical files; a new table uses NA_REP. Today:

    file                                   writer                        missing number
    samples/{sample}/stats.tsv             gate (atomic.write_tsv)       NaN   (NAN_REP)
    tables/sample_status.tsv               collect (atomic.write_tsv)    NaN   (NAN_REP)
    tables/failures.tsv                    collect (atomic.write_tsv)    NaN   (NAN_REP)
    tables/sample_stats.tsv                collect (atomic.write_tsv)    NaN   (NAN_REP)
    tables/population_stats.tsv            longitudinal (clinical.tables) empty (NA_REP)
    tables/sample_states.tsv               longitudinal (clinical.tables) empty (NA_REP)
    tables/patients.tsv                    longitudinal (clinical.tables) empty (NA_REP)
    tables/km.tsv                          longitudinal (clinical.tables) empty (NA_REP)
    tables/cohort_export.csv               longitudinal (clinical.tables) empty (NA_REP)

In the "NaN" tables only a missing value (NaN/None) is written "NaN": an empty text (a root
population's parent, a sample without error or warnings) is an empty cell there too, so a text
column reads back as "" either way (the report fills missing text with ""). Making the two
spellings one would change the bytes of stats.tsv and collect's tables (a population without
events has NaN percentages and medians), so it waits for a change that rewrites them anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

# ----------------------------------------------------------------------------- folders and files

PREPROCESSED = "preprocessed"
SAMPLES = "samples"
TABLES = "tables"
MODEL = "model"
REPORT = "report"
LOGS = "logs"

SAMPLE_RECORD = "sample.json"
SAMPLE_STATS = "stats.tsv"
SAMPLE_PLOTS = "plots.json"
SAMPLE_GATES = "gates.parquet"
SAMPLE_GATINGML = "gates.xml"
SAMPLE_CLUSTERS = "clusters.json"
SAMPLE_LEARNED = "learned.json"  # the learned gating model's opinion (gating_model)
SAMPLE_EXPERT = "expert.json"  # agreement with the expert's own gating (expert_gates)
CLUSTER_MODEL = "som.npz"
EVENTS_SUFFIX = ".parquet"
RECORD_SUFFIX = ".json"


def preprocessed_events_path(results: str | os.PathLike, sample_id: str) -> Path:
    """RESULTS/preprocessed/{sample}.parquet: the events on the gating scale."""
    return Path(results) / PREPROCESSED / f"{sample_id}{EVENTS_SUFFIX}"


def preprocessed_record_path(results: str | os.PathLike, sample_id: str) -> Path:
    """RESULTS/preprocessed/{sample}.json: the preprocessing record."""
    return Path(results) / PREPROCESSED / f"{sample_id}{RECORD_SUFFIX}"


def record_path_beside(events_path: str | os.PathLike) -> Path:
    """The preprocessing record beside an events file (preprocessed/{sample}.json)."""
    return Path(events_path).with_suffix(RECORD_SUFFIX)


def sample_id_of_events(events_path: str | os.PathLike) -> str:
    """results/preprocessed/{sample}.parquet -> sample."""
    return Path(events_path).name.removesuffix(EVENTS_SUFFIX)


def samples_folder(results: str | os.PathLike) -> Path:
    """RESULTS/samples: one folder per sample."""
    return Path(results) / SAMPLES


def sample_folder(results: str | os.PathLike, sample_id: str) -> Path:
    """RESULTS/samples/{sample}: the folder of one sample's own outputs."""
    return samples_folder(results) / sample_id


def sample_record_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_RECORD


def sample_stats_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_STATS


def sample_plots_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_PLOTS


def sample_gates_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_GATES


def sample_gatingml_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_GATINGML


def sample_clusters_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_CLUSTERS


def sample_learned_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_LEARNED


def sample_expert_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SAMPLE_EXPERT


def flowjo_workspace_path(results: str | os.PathLike, batch: str) -> Path:
    """RESULTS/flowjo/{batch}.wsp: one batch's automated gates as a FlowJo 10 workspace."""
    return Path(results) / "flowjo" / f"{batch}.wsp"


def cluster_model_path(results: str | os.PathLike) -> Path:
    """RESULTS/model/som.npz: the cohort clustering model."""
    return Path(results) / MODEL / CLUSTER_MODEL


def tables_folder(results: str | os.PathLike) -> Path:
    return Path(results) / TABLES


def table_path(results: str | os.PathLike, name: str) -> Path:
    """RESULTS/tables/{name}.tsv for a table of TABLE_FILES."""
    return tables_folder(results) / TABLE_FILES[name]


def cohort_summary_path(results: str | os.PathLike) -> Path:
    return tables_folder(results) / COHORT_SUMMARY


def cohort_export_path(results: str | os.PathLike) -> Path:
    return tables_folder(results) / COHORT_EXPORT


def report_folder(results: str | os.PathLike) -> Path:
    return Path(results) / REPORT


def log_path(results: str | os.PathLike, step: str, sample_id: str | None = None) -> Path:
    """RESULTS/logs/{step}.log for a cohort step, RESULTS/logs/{step}/{sample}.log per sample."""
    if sample_id is None:
        return Path(results) / LOGS / f"{step}.log"
    return Path(results) / LOGS / step / f"{sample_id}.log"


# ----------------------------------------------------------------------------- cohort tables

# `cytopipe collect`: every sample's record and statistics.
COLLECT_TABLES = ("sample_status", "failures", "sample_stats")
# `cytopipe longitudinal`: states, patients and Kaplan-Meier (plus the summary and the export).
LONGITUDINAL_TABLES = ("population_stats", "sample_states", "patients", "km")
TABLE_FILES = {name: f"{name}.tsv" for name in (*COLLECT_TABLES, *LONGITUDINAL_TABLES)}
COHORT_SUMMARY = "cohort_summary.json"
COHORT_EXPORT = "cohort_export.csv"
EXPORT_DICTIONARY_FILE = "cohort_export_dictionary.tsv"  # column -> meaning, beside the export
# Everything `cytopipe longitudinal` writes into tables/, in the order it writes them.
LONGITUDINAL_FILES = (
    *(TABLE_FILES[name] for name in LONGITUDINAL_TABLES),
    COHORT_SUMMARY,
    COHORT_EXPORT,
    EXPORT_DICTIONARY_FILE,
)

# Columns. stats.tsv, sample_stats and population_stats start with the gating statistics
# (cytopipe.gating.stats.STATS_COLUMNS, one median column per panel marker); population_stats
# adds patient_id, day, age_years, disease, cells_per_ul and abs_method
# (cytopipe.clinical.counts.add_absolute_counts).

# sample_status.tsv: one row per sheet row (collect)
SAMPLE_STATUS_COLUMNS = [
    "sample_id",
    "patient_id",
    "day",
    "status",
    "stage",
    "error",
    "warnings",
    "qc_verdict",
    "events_in",
    "events_kept",
    "pct_kept",
    "bead_events_found",
    "n_flagged_gates",
    "n_gates_to_review",
    "unlike_template",
]

# failures.tsv: the rows of failed samples, with their file
FAILURES_COLUMNS = ["sample_id", "patient_id", "path", "stage", "error"]

# sample_states.tsv: one row per classified sample (cytopipe.clinical.states)
SAMPLE_STATE_COLUMNS = [
    "patient_id",
    "sample_id",
    "day",
    "age_years",
    "b_cells",
    "lymphocytes",
    "b_pct_lymphocytes",
    "b_cells_per_ul",
    "abs_method",
    "b_cells_low",
    "b_cells_high",
    "b_pct_low",
    "b_pct_high",
    "b_per_ul_low",
    "b_per_ul_high",
    "lod_pct",
    "lloq_pct",
    "lod_per_ul",
    "lloq_per_ul",
    "below_lloq",
    "events_needed",
    "cd20_pct_lymphocytes",
    "plasmablast_pct_b",
    "frac_naive",
    "frac_transitional",
    "frac_unswitched_memory",
    "frac_switched_memory",
    "frac_double_negative",
    "frac_plasmablast",
    "state",
    "below_threshold",
    "ref_low",
    "ref_high",
    "ref_source_band",
    "ref_position",
    "qc_verdict",
    # beyond the contract: why a state is special, and which gates were flagged
    "note",
    "gate_flags",
]

# patients.tsv: one row per patient (cytopipe.clinical.patients)
# CAR-T kinetics per patient (cytopipe.clinical.car_kinetics; empty without a CAR channel)
CAR_T_COLUMNS = [
    "car_t_samples",
    "car_t_cmax_per_ul",
    "car_t_tmax_day",
    "car_t_auc_0_28",
    "car_t_auc_end_day",
    "car_t_last_detected_day",
]
PATIENT_COLUMNS = [
    "patient_id",
    "disease",
    "age_at_infusion",
    "n_samples",
    "baseline_b_pct",
    "baseline_b_per_ul",
    "aplasia_start_day",
    "aplasia_end_day",
    "aplasia_duration_days",
    "last_aplastic_day",
    "reconstitution_day",
    "reconstituted",
    "censored",
    "last_followup_day",
    "counting_method",
    "phenotype_at_return",
    "frac_naive_transitional_at_return",
    "frac_memory_at_return",
    "frac_plasmablast_at_return",
    "flag_memory_return",
    "flag_memory_return_day",
    "flags",
    *CAR_T_COLUMNS,
]

# km.tsv: the Kaplan-Meier table (cytopipe.clinical.kaplan_meier)
KM_COLUMNS = [
    "day", "at_risk", "events", "censored", "still_aplastic", "still_aplastic_low",
    "still_aplastic_high",
]  # fmt: skip

# cohort_export.csv: one row per patient, definitions as def_* columns
# cohort_export.csv: column -> its meaning; the order is the file's, and the meanings are written
# beside it as cohort_export_dictionary.tsv (a pooled analysis reads both)
EXPORT_DICTIONARY = {
    "centre": "the centre's code (config longitudinal.centre; empty when not set)",
    "patient_id": "pseudonymous patient id, as in the sample sheet",
    "disease": "disease, as in the sample sheet",
    "age_at_infusion": "age in years at CAR-T infusion",
    "n_samples": "samples with statistics",
    "n_failed_samples": "samples that failed (no statistics): follow-up may be shorter than planned",
    "counting_method": "how cells/uL were counted (single_platform_beads, dual_platform, none; + when mixed)",
    "baseline_b_pct": "B cells, % of lymphocytes, last pre-infusion sample",
    "baseline_b_per_ul": "B cells/uL, last pre-infusion sample",
    "aplasia_start_day": "first post-infusion day in aplasia",
    "last_aplastic_day": "last day in aplasia before reconstitution (or before the end of follow-up)",
    "reconstitution_day": "first confirmed day at/above the threshold after aplasia",
    "reconstitution_interval": "reconstitution happened after last_aplastic_day and by reconstitution_day (interval-censored)",
    "days_to_reconstitution_or_censoring": "Kaplan-Meier time: reconstitution_day, or last_followup_day when censored",
    "reconstituted": "True when B cells returned (event)",
    "censored": "True when follow-up ended in aplasia",
    "last_followup_day": "last classifiable post-infusion day",
    "phenotype_at_return": "dominant B-cell class at reconstitution",
    "flags": "notes on the patient's course (blips, unconfirmed reconstitution, memory return)",
    "car_t_cmax_per_ul": "CAR+ T cells: highest cells/uL of a post-infusion sample (Cmax)",
    "car_t_tmax_day": "CAR+ T cells: day of Cmax (Tmax)",
    "car_t_auc_0_28": "CAR+ T cells: area under cells/uL from day 0 to 28 (trapezoidal; cells/uL x days)",
    "car_t_auc_end_day": "day the AUC ends: 28, or the last sample before day 28",
    "car_t_last_detected_day": "CAR+ T cells: last post-infusion day with at least the LOD in events (persistence)",
    "def_aplasia_pct_lymphocytes": "aplasia threshold, % of lymphocytes",
    "def_aplasia_cells_per_ul": "aplasia threshold, cells/uL",
    "def_baseline_rule": "which samples are the baseline",
    "def_confirmation_rule": "how reconstitution is confirmed",
    "def_reconstitution_rule": "point_estimate or lower_bound (95% interval) against the threshold",
    "def_phenotype_rule": "how the phenotype at return is computed",
    "def_memory_return_fraction": "memory-return flag threshold (fraction of B cells)",
    "def_memory_flag_rule": "when the memory-return flag is raised",
    "def_lod_events": "limit of detection, events",
    "def_lloq_events": "lower limit of quantification, events",
    "def_limits_source": "where LOD and LLOQ come from",
    "def_reference_ranges_source": "age reference ranges, each source with its ages",
    "gating_template_sha256": "SHA-256 of the gating template the workflow configured (empty: not known)",
    "cytopipe_version": "cytopipe that computed the row",
}
EXPORT_COLUMNS = list(EXPORT_DICTIONARY)

TABLE_COLUMNS = {
    "sample_status": SAMPLE_STATUS_COLUMNS,
    "failures": FAILURES_COLUMNS,
    "sample_states": SAMPLE_STATE_COLUMNS,
    "patients": PATIENT_COLUMNS,
    "km": KM_COLUMNS,
    "cohort_export": EXPORT_COLUMNS,
}

# ----------------------------------------------------------------------------- types and values

SAMPLE_STATUS_DTYPES = {"events_in": "Int64", "events_kept": "Int64"}  # counts, missing allowed
PATIENT_BOOL_COLUMNS = ("reconstituted", "censored", "flag_memory_return")
# Columns holding whole days or counts: written as integers ("28", not "28.0") when whole.
WHOLE_NUMBER_COLUMNS = frozenset(
    {
        "day",
        "b_cells",
        "lymphocytes",
        "n_samples",
        "aplasia_start_day",
        "aplasia_end_day",
        "aplasia_duration_days",
        "reconstitution_day",
        "last_followup_day",
        "flag_memory_return_day",
        "last_aplastic_day",
        "n_failed_samples",
        "days_to_reconstitution_or_censoring",
        "car_t_samples",
        "car_t_tmax_day",
        "car_t_auc_end_day",
        "car_t_last_detected_day",
        "at_risk",
        "events",
        "censored",
        "count",
    }
)
# What a reader must parse: True/False columns, and columns that stay text (a sample called
# "0012" must not become 12).
BOOL_COLUMNS = (*PATIENT_BOOL_COLUMNS, "below_threshold", "below_lloq")
TEXT_COLUMNS = (
    "sample_id",
    "patient_id",
    "status",
    "stage",
    "error",
    "warnings",
    "qc_verdict",
    "flag",
    "as_template",
    "unlike_template",
    "flags",
    "gate_flags",
    "note",
    "state",
    "disease",
    "phenotype_at_return",
    "ref_source_band",
    "ref_position",
    "abs_method",
    "path",
    "population",
    "parent",
    "gate_method",
)

NA_REP = ""  # the convention: a missing value is an empty cell
NAN_REP = "NaN"  # cytopipe.atomic.write_tsv's default: stats.tsv and NAN_TABLES spell it so
NAN_TABLES = frozenset(COLLECT_TABLES)  # the cohort tables written with NAN_REP (collect's)
MISSING_VALUES = (NA_REP, NAN_REP)  # a reader takes both as missing
