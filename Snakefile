# cytopipe: FCS files -> compensation -> transform -> QC -> gating -> statistics ->
# longitudinal B-cell aplasia/reconstitution -> HTML reports.
# Rules are thin: each calls the `cytopipe` command; see workflow/rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


envvars:
    "PATH",


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/cohort.smk"


rule all:
    input:
        f"{RESULTS}/report/index.html",
        f"{RESULTS}/tables/cohort_export.csv",
        f"{RESULTS}/report/figures/swimmer.html",
