# A lab's learned gating (config gating_model.path, from `cytopipe learn-gates`) applied to every
# sample beside the template: a second opinion, listed to review where the two disagree.


rule model_map:
    """The learned model's labels of one sample, its agreement with the template's gates and
    what to review (learned.json); a failed sample gets a "not available" record."""
    input:
        events=rules.preprocess.output.events,
        gates=rules.gate.output.masks,
        model=config["gating_model"]["path"],
    output:
        learned=str(layout.sample_learned_path(SAMPLE_DIR)),
    params:
        settings=settings("transform", "gating_model"),
        model=content_hash(config["gating_model"]["path"]),
    log:
        str(layout.log_path(RESULTS, "model_map", SAMPLE)),
    conda:
        "../envs/cytopipe.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, input: int(800 + 4 * input_mb([input.events, input.gates])),
        runtime=lambda wc, input: int(5 + input_mb([input.events]) / 100),
    shell:
        "cytopipe model-map {input.events:q} --gates {input.gates:q} --model {input.model:q} "
        "--settings {params.settings:q} --sample-id {wildcards.sample:q} "
        "--out {output.learned:q} 2> {log:q}"
