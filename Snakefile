# balloonreplay: the default study. `make run` runs it; `snakemake --cores N` does too.
# `snakemake --cores N paper` runs the paper study (config/paper.yaml) into paper/ (a
# nested run). `--configfile config/paper.yaml` alone is not the same: it runs the paper
# study into results/, replacing the default study's summary and figures.
# Rules call the `balloonreplay` package or command; no model logic here.
from snakemake.utils import min_version

min_version("8.0")


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
