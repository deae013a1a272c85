# cytopipe: FCS files -> compensation -> transform -> QC -> gating -> statistics ->
# longitudinal B-cell aplasia/reconstitution -> HTML reports.
# Rules are thin: each calls the `cytopipe` command; see workflow/rules/.
from snakemake.utils import min_version, validate

from cytopipe.config import schema_path, thaw, validated

min_version("9.0")


configfile: "config/config.yaml"


envvars:
    "PATH",


report: "workflow/report/workflow.rst"


# The one config schema, shipped with cytopipe (keys documented in config/README.md); the
# `cytopipe` commands read their settings through the same schema. The defaults are filled by
# cytopipe's loader (Snakemake's own filling fails on an empty section such as `qc:`).
validate(config, str(schema_path("config")), set_default=False)
config.update(thaw(validated(config, "config", source="workflow config")))


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/expert.smk"


if config["gating_model"]["path"]:

    include: "workflow/rules/model.smk"


include: "workflow/rules/cohort.smk"


rule all:
    input:
        rules.report.output.index,
        expand(str(layout.flowjo_workspace_path(RESULTS, "{batch}")), batch=BATCHES),
        rules.longitudinal.output.export,
        rules.report_figures.output.swimmer,
