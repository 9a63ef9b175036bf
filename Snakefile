# balloonreplay: the default study. `make run` runs it; `snakemake --cores N` does too.
# `snakemake --cores N --configfile my.yaml` runs the study of my.yaml instead: a config
# given on the command line replaces config/config.yaml, it is not merged into it.
# `snakemake --cores N paper` runs the paper study (config/paper.yaml) into paper/ (a
# nested run); `--configfile config/paper.yaml` alone runs it into results/, replacing the
# default study's summary and figures.
# Rules call the `balloonreplay` package or command; no model logic here.
from snakemake.utils import min_version

min_version("8.0")


# Snakemake deep-merges --configfile into the `configfile:` default: a user's study would
# keep every default experiment, workload and figure it does not name (and be refused
# when its figures named the default's workloads). So the default is read only when no
# config file is given on the command line (--config KEY=VALUE still amends it).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/traces.smk"
include: "workflow/rules/capture.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        all_traces(),
        "results/summary.parquet",
        "results/consolidation.parquet",
        figure_files(),
