# balloonreplay: the default study. `make run` runs it; `snakemake --cores N` does too.
# Rules call the `balloonreplay` command (the installed package); no model logic here.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/traces.smk"


rule all:
    default_target: True
    input:
        all_traces(),
