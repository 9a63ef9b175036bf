# Python glue for the workflow: config validation, wildcard constraints, input functions.
# No rules here.
import json
import os
import re
import shlex
import shutil
import sys

import yaml
from snakemake.exceptions import WorkflowError

from snakemake.utils import validate

from balloonreplay import experiments as X
from balloonreplay.config_check import check_schema, check_values
from balloonreplay.errors import ConfigError

# First our own pass, whose error names the key path (experiments.x.policies[2].name);
# then Snakemake's, which also fills in the schema's defaults.
try:
    check_schema(
        config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema="../schemas/config.schema.yaml")

WORKLOADS = config["workloads"]
GENERATED = sorted(name for name, w in WORKLOADS.items() if "generate" in w)
INGESTED = sorted(name for name, w in WORKLOADS.items() if "ingest" in w)
CAPTURED = sorted(name for name, w in WORKLOADS.items() if "capture" in w)
EXPERIMENTS = config["experiments"]
FIGURE_ROLES = config.get("figures", {})
FIGURES = (
    "swap_traffic",
    "consolidation",
    "timeline",
    "sharing",
    "balloon_equivalence",
    "double_paging",
)

# The CLI of the environment running Snakemake (make run does not activate .venv).
BALLOONREPLAY = (
    shutil.which("balloonreplay", path=os.path.dirname(sys.executable))
    or shutil.which("balloonreplay")
    or "balloonreplay"
)


def repo_path(path):
    """Config paths are relative to the repository root (the Snakefile's directory), so
    they name the same files from any --directory. (The `configfile:` default is relative
    to the working directory: with --directory, give --configfile too.)"""
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


def one_of(names):
    """A wildcard regex matching exactly these names (and nothing if there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def _check_config():
    """What JSON Schema cannot say, checked at load: names refer to configured workloads,
    policies, formats and labels; sizes, parameters and options are valid
    (balloonreplay.config_check). The error names the offending key."""
    try:
        # The working directory is the study's (--directory): a capture already
        # recorded there does not need its program.
        check_values(config, workflow.basedir, os.getcwd())
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


_check_config()


POLICY_LABELS = sorted(
    {label for e in EXPERIMENTS.values() for label in X.policy_labels(e)}
)


wildcard_constraints:
    workload=one_of(WORKLOADS),
    experiment=one_of(EXPERIMENTS),
    policy=one_of(POLICY_LABELS),
    point="[^/]+",
    round="[0-9]+",


def all_traces():
    names = sorted({n for e in config["experiments"].values() for n in e["workloads"]})
    return expand("traces/{workload}.parquet", workload=names)


# --- experiments: runs, baselines and the search of the SLO boundary -------------------


def run_path(run):
    return f"results/runs/{run['experiment']}/{run['policy']}/{run['point']}.parquet"


def baseline_path(run):
    return f"results/baselines/{run['experiment']}/{run['baseline_point']}.parquet"


def _grid(experiment):
    return X.grid_runs(experiment, EXPERIMENTS[experiment])


def run_spec(wildcards):
    """The run a replay job performs: a grid point, or a point the search added."""
    for run in _grid(wildcards.experiment):
        if run["policy"] == wildcards.policy and run["point"] == wildcards.point:
            return run
    experiment = EXPERIMENTS[wildcards.experiment]
    parsed = X.parse_vm_point(experiment, wildcards.point)
    if parsed is None or not X.refines(experiment):
        raise WorkflowError(
            f"no run {wildcards.point!r} in experiment {wildcards.experiment!r}"
        )
    workload, n_vms = parsed
    return X.make_run(
        wildcards.experiment,
        EXPERIMENTS[wildcards.experiment],
        workload,
        wildcards.policy,
        n_vms=n_vms,
    )


def baseline_spec(wildcards):
    experiment = EXPERIMENTS[wildcards.experiment]
    parsed = X.parse_baseline_point(experiment, wildcards.point)
    if parsed is None:
        raise WorkflowError(
            f"no baseline {wildcards.point!r} in experiment {wildcards.experiment!r}"
        )
    return X.baseline_run(wildcards.experiment, experiment, *parsed)


def run_trace(wildcards):
    return f"traces/{run_spec(wildcards)['workload']}.parquet"


def baseline_trace(wildcards):
    return f"traces/{baseline_spec(wildcards)['workload']}.parquet"


def _max_rounds(experiment):
    return int(EXPERIMENTS[experiment].get("refine", {}).get("max_rounds", 6))


def searched_vms(experiment, workload, policy, rounds=None):
    """VM counts evaluated after `rounds` rounds of the search (all rounds: None).

    Round r's checkpoint reads the runs known before it and names the counts to add;
    asking for its output makes Snakemake run the earlier rounds first.
    """
    exp = EXPERIMENTS[experiment]
    counts = set(int(n) for n in exp["sweep"]["vms"])
    last = _max_rounds(experiment) if rounds is None else rounds
    for r in range(last):
        out = checkpoints.refine_sweep.get(
            experiment=experiment, policy=policy, workload=workload, round=r
        ).output[0]
        with open(out) as fh:
            new = json.load(fh)["next_points"]
        if not new:
            break
        counts |= set(new)
    return sorted(counts)


def round_inputs(wildcards):
    """Runs and baselines known before this round of the search."""
    exp = EXPERIMENTS[wildcards.experiment]
    counts = searched_vms(
        wildcards.experiment, wildcards.workload, wildcards.policy, int(wildcards.round)
    )
    runs = [
        X.make_run(
            wildcards.experiment, exp, wildcards.workload, wildcards.policy, n_vms=n
        )
        for n in counts
    ]
    return {
        "runs": [run_path(r) for r in runs],
        "baselines": [
            baseline_path(b) for b in X.baseline_runs(wildcards.experiment, exp, runs)
        ],
    }


def sweep_inputs(wildcards):
    """Every run (and baseline) of one searched sweep, walking its rounds."""
    exp = EXPERIMENTS[wildcards.experiment]
    runs = [
        X.make_run(
            wildcards.experiment, exp, wildcards.workload, wildcards.policy, n_vms=n
        )
        for n in searched_vms(
            wildcards.experiment, wildcards.workload, wildcards.policy
        )
    ]
    return {
        "runs": [run_path(r) for r in runs],
        "baselines": [
            baseline_path(b) for b in X.baseline_runs(wildcards.experiment, exp, runs)
        ],
    }


def sweep_lists():
    """One file per searched sweep listing its runs: each sweep walks its own rounds in its
    own job, so the sweeps of all policies are searched in parallel."""
    return [
        f"results/sweeps/{name}/{policy}/{workload}.runs.txt"
        for name, exp in EXPERIMENTS.items()
        if X.refines(exp)
        for workload in exp["workloads"]
        for policy in X.policy_labels(exp)
    ]


def unsearched_files():
    """Runs and baselines of experiments whose grid is not searched."""
    files = []
    for name, exp in EXPERIMENTS.items():
        if not X.refines(exp):
            runs = _grid(name)
            files += [run_path(r) for r in runs]
            files += [baseline_path(b) for b in X.baseline_runs(name, exp, runs)]
    return files


def max_points_per_round(wildcards):
    return X.max_points_per_round(EXPERIMENTS[wildcards.experiment])


def timeline_run():
    """The metrics file the timeline figure draws (a run of the study)."""
    role = FIGURE_ROLES.get("timeline")
    if not role:
        return []
    exp = EXPERIMENTS[role["experiment"]]
    workload = role.get("workload", exp["workloads"][0])
    n_vms = role.get("vms")
    if n_vms is None and X.sweep_kind(exp) == "vms":
        n_vms = max(exp["sweep"]["vms"])
    run = X.make_run(role["experiment"], exp, workload, role["policy"], n_vms=n_vms)
    return [run_path(run)]


def config_inputs(path):
    """The files a config's workloads read (generator specs, ingested sources, a capture's
    standard input and script): a rule running that config's study in a nested Snakemake
    (`paper`) must rerun when one of them changes, as the study's own jobs would."""
    with open(path) as fh:
        workloads = (yaml.safe_load(fh) or {}).get("workloads") or {}
    files = set()
    for workload in workloads.values():
        if "generate" in workload:
            files.add(repo_path(workload["generate"]["spec"]))
        if "ingest" in workload:
            files.add(repo_path(workload["ingest"]["path"]))
        if "capture" in workload:
            files.add(repo_path("workflow/scripts/capture-memtrace.sh"))
            if workload["capture"].get("stdin"):
                files.add(repo_path(workload["capture"]["stdin"]))
    return sorted(files)


def figure_files(suffixes=("png", "pdf")):
    return expand("results/figures/{figure}.{ext}", figure=FIGURES, ext=suffixes)


# --- input functions and parameters --------------------------------------------------


MEMTRACE = (
    shutil.which("memtrace", path=os.path.dirname(sys.executable))
    or shutil.which("memtrace")
    or "memtrace"
)


def capture_stdin(wildcards):
    """The capture's standard input file; the capture script reads `-` as none."""
    stdin = WORKLOADS[wildcards.workload]["capture"].get("stdin")
    return repo_path(stdin) if stdin else []


def capture_command(wildcards):
    settings = WORKLOADS[wildcards.workload]["capture"]
    return " ".join(
        shlex.quote(str(a)) for a in [settings["program"], *settings.get("args", [])]
    )


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
    for key, value in sorted(settings["options"].items()):  # any order: the same params
        if isinstance(value, bool):
            value = str(value).lower()
        flags += ["--opt", shlex.quote(f"{key}={value}")]
    if settings.get("vm_mem"):
        flags += ["--vm-mem", shlex.quote(",".join(settings["vm_mem"]))]
    lru = _lru_flag(settings)
    return " ".join(flags + ([lru] if lru else []))


# --- cluster resources from the trace's size (profiles/slurm; README "Running the study on
# a SLURM cluster" gives the formula). Each function raises FileNotFoundError (naming the
# input) while its trace does not exist yet: Snakemake then shows the resource as <TBD>
# and computes it when the job is ready to run.
from balloonreplay.traces.io import open_trace
from balloonreplay.units import parse_size_pages

# A tiny replay peaks at about 330 MB resident (Python, numba, pyarrow, pandas; the
# max_rss of logs/benchmarks/runs/**), compiling the kernels on a cold cache at about
# 480 MB: twice that is the floor.
REPLAY_FLOOR_MB = 1000
# run_point holds the whole (cloned) trace in memory: 27 bytes per row in Arrow, the
# cloning's index, time and VM arrays and the table's copy in the cloned order.
REPLAY_BYTES_PER_ACCESS = 128
# Engine state (balloonreplay/engine/state.py): per page P (4 x int32) + PC (6 x int64);
# per frame F (8 x int32) + FC (9 x int64) + FS, BS, TS (int64) + the share and candidate
# tables (up to 4 rows of 3 x int64 each per frame).
REPLAY_BYTES_PER_PAGE = 4 * 4 + 6 * 8
REPLAY_BYTES_PER_FRAME = 8 * 4 + 9 * 8 + 3 * 8 + 2 * 4 * 3 * 8
# A third of the slowest rate measured here (3 M accesses/s: 8 VMs under balloon, host
# swap and sharing pressure, README "Performance"), so a slower node still finishes.
REPLAY_ACCESSES_PER_S = 1_000_000
# Ingest: about 4 M accesses/s here (README "Canonical traces"); a CSV row is ~30 bytes.
INGEST_BYTES_PER_S = 10_000_000
FLOOR_RUNTIME_MIN = 10
# Above this many replayed accesses a second CPU pays: the replay decodes and prepares
# the next batch in a thread while the single-threaded kernel runs (that thread's CPU
# time is a third to a half of the kernel's, README "Performance").
REPLAY_SECOND_CPU_ACCESSES = 10_000_000


def replay_size(trace_path, run):
    """(accesses, pages, frames) a replay of `run` on this trace holds in memory: the
    trace's VMs are cloned to run['n_vms'] (VM i replays VM i mod K), frames are the
    configured memory of all VMs."""
    os.stat(trace_path)  # FileNotFoundError naming the input until the trace exists
    meta = open_trace(trace_path).metadata
    accesses = meta.accesses
    if accesses is None:
        accesses = open_trace(trace_path).num_rows
    k = meta.num_vms or 1
    n = run.get("n_vms") or k
    pages_per_vm = meta.pages_per_vm or [0] * k
    pages = sum(pages_per_vm[i % k] for i in range(n))
    page_bytes = meta.page_size_bytes or 4096
    if run.get("vm_mem_equals_host") and run.get("host_mem"):
        frames = parse_size_pages(run["host_mem"], page_bytes)
    elif run.get("vm_mem") is not None:
        sizes = run["vm_mem"]
        sizes = sizes.split(",") if isinstance(sizes, str) else sizes
        sizes = sizes if isinstance(sizes, list | tuple) else [sizes]
        frames = n * max(parse_size_pages(s, page_bytes) for s in sizes)
    else:
        frames = sum((meta.config_pages or [0] * k)[i % k] for i in range(n))
    return accesses * n // k, pages, frames


def replay_mem_mb(accesses, pages, frames):
    state_bytes = (
        accesses * REPLAY_BYTES_PER_ACCESS
        + pages * REPLAY_BYTES_PER_PAGE
        + frames * REPLAY_BYTES_PER_FRAME
    )
    return REPLAY_FLOOR_MB + -(-state_bytes // 1_000_000)


def replay_runtime_min(accesses):
    return max(FLOOR_RUNTIME_MIN, -(-accesses // (REPLAY_ACCESSES_PER_S * 60)))


def replay_cpus(accesses):
    return 2 if accesses >= REPLAY_SECOND_CPU_ACCESSES else 1


def replay_resource(name, spec):
    """The resource `name` of a replay job, as a function for `resources:`; `spec` is
    run_spec or baseline_spec."""

    def resource(wildcards, input):
        accesses, pages, frames = replay_size(input.trace, spec(wildcards))
        if name == "mem_mb":
            return replay_mem_mb(accesses, pages, frames)
        if name == "runtime":
            return replay_runtime_min(accesses)
        return replay_cpus(accesses)

    return resource


def ingest_runtime_min(wildcards, input):
    size_bytes = os.stat(input.source).st_size
    return max(FLOOR_RUNTIME_MIN, -(-size_bytes // (INGEST_BYTES_PER_S * 60)))


# Jobs that take a second and read a few small files run in the Snakemake process on the
# submit host: as SLURM jobs each would wait in the queue far longer than it runs, and
# the search's rounds are sequential, so their queue waits would add up.
localrules:
    refine_sweep,
    sweep_runs,
