# Cohort clustering (FlowSOM-style, cytopipe.cluster): one model trained on a pooled subsample of
# every sample's gated lymphocytes, then each sample mapped onto it, so a metacluster means the
# same cells at every timepoint. Needs common.smk (RESULTS, layout, SAMPLE, SAMPLE_DIR, SAMPLE_IDS,
# input_mb) and the preprocess/gate rules of sample.smk.
#
# The map step depends on the cohort model, so it cannot join a sample's group job.
#
# Both steps also read each sample's preprocessing record (preprocessed/{sample}.json, the scales
# to undo for the common clustering scale) beside its events file: the same preprocess job writes
# both, so the events input already orders the jobs, and listing the records as inputs too cost
# a third more DAG planning time on 2,000 samples (benchmarks/bench_dag.py).

rule cluster_train:
    """Train the cohort's SOM + consensus metaclusters on pooled gated lymphocytes."""
    input:
        events=expand(str(layout.preprocessed_events_path(RESULTS, SAMPLE)), sample=SAMPLE_IDS),
        gates=expand(str(layout.sample_gates_path(SAMPLE_DIR)), sample=SAMPLE_IDS),
    output:
        model=str(layout.cluster_model_path(RESULTS)),
    params:
        config=CLUSTERING,
        training=clustering_sections(
            "markers", "population", "scale", "training", "som", "metaclustering"
        ),
    log:
        str(layout.log_path(RESULTS, "cluster_train")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 2
    resources:
        # one sample's marker columns at a time + the pooled subsample (5000 events per sample)
        mem_mb=lambda wc, input: int(
            1000 + 4 * max([input_mb([f]) for f in input.events] or [0]) + 0.5 * len(input.events)
        ),
        runtime=lambda wc, input: int(10 + input_mb(input) / 200),
    shell:
        "cytopipe cluster-train --events {input.events:q} --gates {input.gates:q} "
        "--config {params.config:q} --out {output.model:q} > {log:q} 2>&1"


rule cluster_map:
    """Map one sample onto the cohort model: metacluster counts, annotation, agreement with the
    gates; a failed sample gets a "not available" record."""
    input:
        events=rules.preprocess.output.events,
        gates=rules.gate.output.masks,
        stats=rules.gate.output.stats,
        model=rules.cluster_train.output.model,
        config=CLUSTERING,
    output:
        clusters=str(layout.sample_clusters_path(SAMPLE_DIR)),
    params:
        config=content_hash(CLUSTERING),
    log:
        str(layout.log_path(RESULTS, "cluster_map", SAMPLE)),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    # a rare native abort ("terminate called without an active exception": one sample's job in
    # a CI run of sessions 40 and 42, never in 156 runs by hand) failed the whole local run:
    # one retry (a deterministic failure still fails and is reported)
    retries: 1
    resources:
        mem_mb=lambda wc, input: int(800 + 4 * input_mb([input.events, input.gates])),
        runtime=lambda wc, input: int(10 + input_mb([input.events]) / 100),
    shell:
        "cytopipe cluster-map {input.events:q} --gates {input.gates:q} "
        "--stats {input.stats:q} --model {input.model:q} "
        "--config {input.config:q} --sample-id {wildcards.sample:q} "
        "--out {output.clusters:q} > {log:q} 2>&1"
