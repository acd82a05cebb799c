# shotgun: source data -> descriptors -> trained shards (MLflow) -> model library -> transfer.
# The grid of (dataset, property, descriptor, shard) comes from the config; every rule is a thin
# call of the `shotgun` command line. Keep this top level cheap: cluster jobs re-parse it.

from snakemake.utils import min_version, validate

from shotgun.training.grid import CONFIG_SCHEMA

min_version("9.0")


# The default config unless --configfile gives another (Snakemake would deep-merge the two).
if "sources" not in config:

    configfile: "config/config.yaml"


validate(config, CONFIG_SCHEMA)  # the schema `shotgun grid` checks too


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/library.smk"
include: "workflow/rules/transfer.smk"


rule all:
    default_target: True
    input:
        f"{LIBRARY}.manifest.json",
        f"{RESULTS}/library_report/report.html",
        expand(f"{RESULTS}/transfer/{{target}}/report.html", target=TARGETS),
        MAP_OUT if MAP else [],
