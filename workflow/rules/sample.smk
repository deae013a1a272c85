# Per-sample steps. Grouped so a cluster runs one job per sample, not one per step.


rule preprocess:
    """Read the FCS file, harmonize the panel, compensate, transform and QC its events."""
    input:
        fcs=lambda wc: existing(SAMPLES.loc[wc.sample, "path"]),
        panel=config["panel"],
        spill=spillover_csv,
    output:
        events=str(layout.preprocessed_events_path(RESULTS, SAMPLE)),
        info=PREPROCESS_RECORD,
    params:
        path=lambda wc: SAMPLES.loc[wc.sample, "path"],
        settings=settings("compensation", "transform", "qc", "keyword_allowlist"),
        contents=preprocess_contents,
        spill=lambda wc, input: f"--spillover-csv {input.spill!r}" if input.spill else "",
    log:
        str(layout.log_path(RESULTS, "preprocess", SAMPLE)),
    group:
        "sample"
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((800 + 4 * input_mb(input)) * attempt),
        runtime=lambda wc, input: int(3 + input_mb(input) / 50),
    shell:
        "cytopipe preprocess {params.path:q} --sample-id {wildcards.sample:q} "
        "--settings {params.settings:q} --panel {input.panel:q} {params.spill} "
        "--out-events {output.events:q} --out-info {output.info:q} 2> {log:q}"


rule gate:
    """Gate one sample with the template; write its statistics and density plots."""
    input:
        events=rules.preprocess.output.events,
        info=rules.preprocess.output.info,
        template=config["gating"],
    output:
        record=str(layout.sample_record_path(SAMPLE_DIR)),
        stats=str(layout.sample_stats_path(SAMPLE_DIR)),
        plots=str(layout.sample_plots_path(SAMPLE_DIR)),
        masks=str(layout.sample_gates_path(SAMPLE_DIR)),
        gatingml=str(layout.sample_gatingml_path(SAMPLE_DIR)),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.record),
        template=content_hash(config["gating"]),
    log:
        str(layout.log_path(RESULTS, "gate", SAMPLE)),
    group:
        "sample"
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((800 + 4 * input_mb(input)) * attempt),
        runtime=lambda wc, input: int(3 + input_mb(input) / 50),
    shell:
        "cytopipe gate {input.events:q} --info {input.info:q} --template {input.template:q} "
        "--out-dir {params.out_dir:q} 2> {log:q}"
