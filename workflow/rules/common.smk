# Python glue for the workflow: config validation, wildcard constraints, input functions.
# No rules here.
import os
import re
import shlex
import shutil
import sys

from snakemake.exceptions import WorkflowError

from snakemake.utils import validate

from balloonreplay.errors import BalloonreplayError
from balloonreplay.traces.generators import load_spec

validate(config, schema="../schemas/config.schema.yaml")

WORKLOADS = config["workloads"]
GENERATED = sorted(name for name, w in WORKLOADS.items() if "generate" in w)
INGESTED = sorted(name for name, w in WORKLOADS.items() if "ingest" in w)

# The CLI of the environment running Snakemake (make run does not activate .venv).
BALLOONREPLAY = (
    shutil.which("balloonreplay", path=os.path.dirname(sys.executable))
    or shutil.which("balloonreplay")
    or "balloonreplay"
)


def repo_path(path):
    """Config paths are relative to the repository root (the Snakefile's directory), so
    the workflow runs the same from any --directory."""
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


def one_of(names):
    """A wildcard regex matching exactly these names (and nothing if there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def _check_config():
    """What JSON Schema cannot say: names refer to configured workloads, spec files parse."""
    for exp_name, experiment in config["experiments"].items():
        for i, name in enumerate(experiment["workloads"]):
            if name not in WORKLOADS:
                raise WorkflowError(
                    f"config: experiments.{exp_name}.workloads[{i}]: unknown workload "
                    f"{name!r} (configured: {', '.join(WORKLOADS)})"
                )
    for name in GENERATED:
        spec_path = repo_path(WORKLOADS[name]["generate"]["spec"])
        try:
            load_spec(spec_path)
        except BalloonreplayError as exc:
            raise WorkflowError(
                f"config: workloads.{name}.generate.spec: {exc}"
            ) from None
    for name in INGESTED:
        if not os.path.exists(repo_path(WORKLOADS[name]["ingest"]["path"])):
            raise WorkflowError(
                f"config: workloads.{name}.ingest.path: file not found: "
                f"{WORKLOADS[name]['ingest']['path']}"
            )


_check_config()


wildcard_constraints:
    workload=one_of(WORKLOADS),


def all_traces():
    names = sorted({n for e in config["experiments"].values() for n in e["workloads"]})
    return expand("traces/{workload}.parquet", workload=names)


# --- input functions and parameters --------------------------------------------------


def generator_spec(wildcards):
    return repo_path(WORKLOADS[wildcards.workload]["generate"]["spec"])


def generator_seed(wildcards):
    return WORKLOADS[wildcards.workload]["generate"]["seed"]


def ingest_source(wildcards):
    return repo_path(WORKLOADS[wildcards.workload]["ingest"]["path"])


def _lru_flag(settings):
    lru = settings.get("lru_filter_pages")
    return f"--lru-filter {lru}" if lru else ""


def generator_flags(wildcards):
    return _lru_flag(WORKLOADS[wildcards.workload]["generate"])


def ingest_flags(wildcards):
    """Command-line flags for `balloonreplay ingest`, shell-quoted."""
    settings = WORKLOADS[wildcards.workload]["ingest"]
    flags = ["--format", shlex.quote(settings["format"])]
    for key, value in settings["options"].items():
        if isinstance(value, bool):
            value = str(value).lower()
        flags += ["--opt", shlex.quote(f"{key}={value}")]
    if settings.get("vm_mem"):
        flags += ["--vm-mem", shlex.quote(",".join(settings["vm_mem"]))]
    lru = _lru_flag(settings)
    return " ".join(flags + ([lru] if lru else []))
