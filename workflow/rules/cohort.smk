# Whole-cohort steps: they read every sample's small outputs, never the events.


rule collect:
    """Every sample's record and statistics in cohort tables, failed samples listed."""
    input:
        sheet=config["samples"],
        records=expand(f"{RESULTS}/samples/{{sample}}/sample.json", sample=SAMPLE_IDS),
        stats=expand(f"{RESULTS}/samples/{{sample}}/stats.tsv", sample=SAMPLE_IDS),
    output:
        status=f"{RESULTS}/tables/sample_status.tsv",
        failures=f"{RESULTS}/tables/failures.tsv",
        stats=f"{RESULTS}/tables/sample_stats.tsv",
    params:
        tables=lambda wildcards, output: os.path.dirname(output.status),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.status)),
        date_tolerance=(config.get("sample_checks") or {}).get("date_tolerance_days", 1),
    log:
        f"{RESULTS}/logs/collect.log",
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
        population=f"{RESULTS}/tables/population_stats.tsv",
        states=f"{RESULTS}/tables/sample_states.tsv",
        patients=f"{RESULTS}/tables/patients.tsv",
        km=f"{RESULTS}/tables/km.tsv",
        summary=f"{RESULTS}/tables/cohort_summary.json",
        export=f"{RESULTS}/tables/cohort_export.csv",
    params:
        tables=lambda wildcards, output: os.path.dirname(output.export),
        settings=settings("longitudinal"),
    log:
        f"{RESULTS}/logs/longitudinal.log",
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
        plots=expand(f"{RESULTS}/samples/{{sample}}/plots.json", sample=SAMPLE_IDS),
        clusters=expand(f"{RESULTS}/samples/{{sample}}/clusters.json", sample=SAMPLE_IDS),
    output:
        index=f"{RESULTS}/report/index.html",
    params:
        out=lambda wildcards, output: os.path.dirname(output.index),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.index)),
        settings=settings("report"),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "cytopipe report --results {params.results:q} --out {params.out:q} "
        "--settings {params.settings:q} 2> {log:q}"


rule report_figures:
    """The main cohort plots as standalone HTML for Snakemake's own `--report`."""
    input:
        rules.longitudinal.output,
    output:
        swimmer=report(
            f"{RESULTS}/report/figures/swimmer.html",
            caption="../report/swimmer.rst",
            category="Cohort",
        ),
        km=report(
            f"{RESULTS}/report/figures/km.html",
            caption="../report/km.rst",
            category="Cohort",
        ),
    params:
        out=lambda wildcards, output: os.path.dirname(output.swimmer),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(os.path.dirname(output.swimmer))),
    log:
        f"{RESULTS}/logs/report_figures.log",
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "cytopipe report-figures --results {params.results:q} --out {params.out:q} 2> {log:q}"
