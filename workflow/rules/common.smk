import json
import os
import sys

import pandas as pd
import yaml

from cytopipe.samplesheet import load_sample_sheet

# Rules call `cytopipe`: use the one installed beside this Snakemake, even when the venv is
# not activated (e.g. `.venv/bin/snakemake ...` or a cluster job).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

RESULTS = config["results"]
SAMPLES = load_sample_sheet(config["samples"], check_files=False)
validate(SAMPLES, "../schemas/samples.schema.yaml")
SAMPLES = SAMPLES.set_index("sample_id", drop=False)
SAMPLE_IDS = list(SAMPLES.index)


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",  # the sheet's sample_id rule; a list of 10,000 ids makes the DAG quadratic


def settings(*sections):
    """The config sections a step depends on, as JSON: a change reruns only that step."""
    return json.dumps({k: config.get(k) for k in sections}, sort_keys=True)


def spillover_csv(wildcards):
    """Per-batch FlowJo CSV spillover matrix, when config names one for the sample's batch."""
    batches = config["compensation"].get("batches") or {}
    batch = SAMPLES.loc[wildcards.sample].get("batch", None)
    return batches.get(str(batch), []) if batch is not None and not pd.isna(batch) else []


def existing(path):
    """A sample's FCS file as an input only when it exists; a missing file then fails its
    own sample (listed in the report) instead of stopping the whole cohort's DAG."""
    return path if os.path.exists(path) else []


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
