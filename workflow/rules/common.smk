import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

import cytopipe.results as layout
from cytopipe.ingest.archive import check_reachable
from cytopipe.clinical.samplesheet import load_sample_sheet

# Rules call `cytopipe`: use the one installed beside this Snakemake, even when the venv is
# not activated (e.g. `.venv/bin/snakemake ...` or a cluster job).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

# Every path below RESULTS comes from cytopipe.results (`layout`), the one description of the
# results folder that the commands and the report use too. Its functions take the wildcard
# "{sample}" as a sample id. RESULTS is spelled as those paths spell it ("results/" or
# "./results" would otherwise make the Snakefile's targets differ from the outputs).
RESULTS = str(Path(config["results"]))
SAMPLE = "{sample}"
SAMPLE_DIR = layout.sample_folder(RESULTS, SAMPLE)
SAMPLES = load_sample_sheet(config["samples"], check_files=False)
validate(SAMPLES, "../schemas/samples.schema.yaml")
SAMPLES = SAMPLES.set_index("sample_id", drop=False)
SAMPLE_IDS = list(SAMPLES.index)
PREPROCESS_RECORD = str(layout.preprocessed_record_path(RESULTS, SAMPLE))
# An archive that went offline must not turn good results into "file not found" records. The
# modes that run no job (unlock after a crash, clean metadata, list rules, lint) must still work
# while it is offline: a crashed run is often why one is there.
NO_JOB_MODES = {"--unlock", "--cleanup-metadata", "--cm", "--list-rules", "--list", "-l",
                "--list-target-rules", "--lt", "--lint"}  # fmt: skip
if not NO_JOB_MODES & set(sys.argv):
    check_reachable(zip(SAMPLE_IDS, SAMPLES["path"]), PREPROCESS_RECORD)


wildcard_constraints:
    batch=r"[A-Za-z0-9._-]+",
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",  # the sheet's sample_id rule; a list of 10,000 ids makes the DAG quadratic


def settings(*sections):
    """The config sections a step depends on, as JSON: a change reruns only that step."""
    return json.dumps({k: config.get(k) for k in sections}, sort_keys=True)


_HASHES = {}


def content_hash(path):
    """A file's content as a job parameter: a file restored with `cp -p` or `rsync -t` is
    older than the outputs yet different, and modification times alone would keep stale
    results. Read once per run (every sample's job asks)."""
    if path not in _HASHES:
        try:
            with open(path, "rb") as fh:
                _HASHES[path] = hashlib.file_digest(fh, "sha256").hexdigest()[:20]
        except OSError:
            _HASHES[path] = "unreadable"  # the step that reads it reports the problem itself
    return _HASHES[path]


def spillover_csv(wildcards):
    """Per-batch FlowJo CSV spillover matrix, when config names one for the sample's batch."""
    batches = config["compensation"].get("batches") or {}
    batch = SAMPLES.loc[wildcards.sample].get("batch", None)
    return batches.get(str(batch), []) if batch is not None and not pd.isna(batch) else []


def preprocess_contents(wildcards):
    """The panel's and the batch spillover CSV's content (see content_hash)."""
    csv = spillover_csv(wildcards)
    return [content_hash(f) for f in (config["panel"], *([csv] if csv else []))]


def existing(path):
    """A sample's FCS file as an input only when it exists; a file never seen (a wrong path)
    then fails its own sample (listed in the report) instead of stopping the whole cohort's
    DAG. A file that was seen before and is gone stopped the run above (check_reachable)."""
    return path if os.path.exists(path) else []


def sheet_text(column):
    """A sample-sheet column's non-blank values as text, by sample id (read once at parse: a
    lookup per sample costs seconds on an archive of 10,000 files)."""
    if column not in SAMPLES:
        return {}
    values = SAMPLES[column].dropna().astype(str).str.strip()
    return values[values != ""].to_dict()


# each sample's batch (sheet column `batch`; "all" without one), as a file name
BATCH_OF = {
    s: re.sub(r"[^A-Za-z0-9._-]+", "_", b)
    for s, b in {**dict.fromkeys(SAMPLE_IDS, "all"), **sheet_text("batch")}.items()
}
BATCHES = sorted(set(BATCH_OF.values()))


def batch_samples(batch):
    return [s for s in SAMPLE_IDS if BATCH_OF[s] == batch]


# the expert's gating of a sample's file (sheet column `expert_gates`), where there is one
EXPERT_GATES = sheet_text("expert_gates")
EXPERT_SAMPLES = [s for s in SAMPLE_IDS if s in EXPERT_GATES]


def input_mb(input):
    return sum(os.path.getsize(f) for f in input if os.path.exists(f)) / 1e6


CLUSTERING = config.get("clustering", "config/clustering.yaml")


def clustering_sections(*names):
    """The clustering settings a step depends on, as JSON: editing the annotation rules reruns
    only the map steps (which annotate again), not the training."""
    try:
        with open(CLUSTERING) as fh:
            raw = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError):
        raw = {}  # cluster-train reports the unreadable file itself
    return json.dumps({k: raw.get(k) for k in names}, sort_keys=True, default=str)
