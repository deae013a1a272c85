# Samples an expert gated too (sheet column `expert_gates`): the template's gates against the
# expert's, population by population (config expert_gates), outlined on the sample page.


rule expert_map:
    """Agreement of one sample's automated gates with the expert's gating of the same file,
    and the expert's populations outlined on the gates' density plots (expert.json)."""
    input:
        events=rules.preprocess.output.events,
        gates=rules.gate.output.masks,
        plots=rules.gate.output.plots,
        expert=lambda wc: EXPERT_GATES[wc.sample],
    output:
        expert=str(layout.sample_expert_path(SAMPLE_DIR)),
    params:
        fcs=lambda wc: SAMPLES.loc[wc.sample, "path"],
        settings=settings("expert_gates"),
    log:
        str(layout.log_path(RESULTS, "expert_map", SAMPLE)),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: int(800 + 6 * input_mb([input.events, input.gates])),
        runtime=lambda wc, input: int(5 + input_mb([input.events]) / 100),
    shell:
        "cytopipe expert-map {input.events:q} --gates {input.gates:q} --plots {input.plots:q} "
        "--fcs {params.fcs:q} --expert {input.expert:q} --settings {params.settings:q} "
        "--sample-id {wildcards.sample:q} --out {output.expert:q} 2> {log:q}"
