# Whole-cohort steps: they read every sample's small outputs, never the events.


rule collect:
    """Every sample's record and statistics in cohort tables, failed samples listed."""
    input:
        sheet=config["samples"],
        records=expand(str(layout.sample_record_path(SAMPLE_DIR)), sample=SAMPLE_IDS),
        stats=expand(str(layout.sample_stats_path(SAMPLE_DIR)), sample=SAMPLE_IDS),
    output:
        status=str(layout.table_path(RESULTS, "sample_status")),
        failures=str(layout.table_path(RESULTS, "failures")),
        stats=str(layout.table_path(RESULTS, "sample_stats")),
    params:
        tables=lambda wildcards, output: os.path.dirname(output.status),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.status)),
        date_tolerance=(config.get("sample_checks") or {}).get("date_tolerance_days", 1),
    log:
        str(layout.log_path(RESULTS, "collect")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "cytopipe collect --samples {input.sheet:q} --results {params.results:q} "
        "--out {params.tables:q} --date-tolerance-days {params.date_tolerance} 2> {log:q}"


rule longitudinal:
    """B-cell state per timepoint, aplasia and reconstitution per patient, cohort export."""
    input:
        sheet=config["samples"],
        stats=rules.collect.output.stats,
        status=rules.collect.output.status,
    output:
        population=str(layout.table_path(RESULTS, "population_stats")),
        states=str(layout.table_path(RESULTS, "sample_states")),
        patients=str(layout.table_path(RESULTS, "patients")),
        km=str(layout.table_path(RESULTS, "km")),
        summary=str(layout.cohort_summary_path(RESULTS)),
        export=str(layout.cohort_export_path(RESULTS)),
    params:
        tables=lambda wildcards, output: os.path.dirname(output.export),
        settings=settings("longitudinal"),
    log:
        str(layout.log_path(RESULTS, "longitudinal")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "cytopipe longitudinal --stats {input.stats:q} --status {input.status:q} "
        "--samples {input.sheet:q} --settings {params.settings:q} --out {params.tables:q} 2> {log:q}"


rule report:
    """Interactive HTML report: cohort, patient and sample pages."""
    input:
        rules.longitudinal.output,
        rules.collect.output,
        plots=expand(str(layout.sample_plots_path(SAMPLE_DIR)), sample=SAMPLE_IDS),
        clusters=expand(str(layout.sample_clusters_path(SAMPLE_DIR)), sample=SAMPLE_IDS),
        learned=(
            expand(str(layout.sample_learned_path(SAMPLE_DIR)), sample=SAMPLE_IDS)
            if config["gating_model"]["path"]
            else []
        ),
        expert=expand(str(layout.sample_expert_path(SAMPLE_DIR)), sample=EXPERT_SAMPLES),
    output:
        index=str(layout.report_folder(RESULTS) / "index.html"),
    params:
        out=lambda wildcards, output: os.path.dirname(output.index),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.index)),
        settings=settings("report"),
    log:
        str(layout.log_path(RESULTS, "report")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "cytopipe report --results {params.results:q} --out {params.out:q} "
        "--settings {params.settings:q} 2> {log:q}"


rule flowjo_workspace:
    """One batch's automated gates as a FlowJo 10 workspace: every sample with its own gates,
    compensation and transforms, so the lab reviews and corrects them in FlowJo."""
    input:
        gatingml=lambda wc: [
            str(layout.sample_gatingml_path(layout.sample_folder(RESULTS, s)))
            for s in batch_samples(wc.batch)
        ],
    output:
        wsp=str(layout.flowjo_workspace_path(RESULTS, "{batch}")),
    params:
        fcs=lambda wc: [SAMPLES.loc[s, "path"] for s in batch_samples(wc.batch)],
    log:
        str(layout.log_path(RESULTS, "flowjo_workspace", "{batch}")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: int(1000 + 50 * len(input.gatingml)),
        runtime=lambda wc, input: int(5 + len(input.gatingml) / 20),
    shell:
        "cytopipe export-flowjo --gatingml {input.gatingml:q} --fcs {params.fcs:q} "
        "--out {output.wsp:q} > {log:q} 2>&1"


rule report_figures:
    """The main cohort plots as standalone HTML for Snakemake's own `--report`."""
    input:
        rules.longitudinal.output,
    output:
        swimmer=report(
            str(layout.report_folder(RESULTS) / "figures" / "swimmer.html"),
            caption="../report/swimmer.rst",
            category="Cohort",
        ),
        km=report(
            str(layout.report_folder(RESULTS) / "figures" / "km.html"),
            caption="../report/km.rst",
            category="Cohort",
        ),
    params:
        out=lambda wildcards, output: os.path.dirname(output.swimmer),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(os.path.dirname(output.swimmer))),
    log:
        str(layout.log_path(RESULTS, "report_figures")),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "cytopipe report-figures --results {params.results:q} --out {params.out:q} 2> {log:q}"
