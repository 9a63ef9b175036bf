"""Experiments from config, expanded into runs; one run replayed into a metrics file.

An experiment (config/config.yaml, ``experiments:``) replays each of its workloads under
each of its host policies at each point of its sweep: a number of VMs per host on a fixed
host (``sweep: {vms: [...]}``), or a host memory size (``sweep: {host_mem: [...]}``).
A run is a plain JSON-able dict (see :func:`expand_runs`), so the workflow can pass it to a
job and record it in the metrics file's metadata (key ``run``), where the summary
(balloonreplay/summary.py) finds it again.

Scaling a workload into N VMs: VM i replays the trace's VM ``i mod K`` (K VMs in the
trace); the copies beyond the first K start later, by ``clone.stagger_ns`` per copy plus a
jitter drawn from the run's seed and the VM index, so N copies of one captured program do
not run in lockstep. Copies keep their content hashes: they are the same program booted
from the same image, which is what page sharing exploits.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from balloonreplay.errors import ConfigError
from balloonreplay.summary import (
    BASELINE_POLICY,
    DEFAULT_SLO_SLOWDOWN,
    STATUS_OK,
    STATUS_REFUSED,
    replays_baseline,
)
from balloonreplay.traces.io import open_trace
from balloonreplay.traces.schema import TraceMetadata
from balloonreplay.units import PAGE_SIZE_BYTES, is_page_count, parse_size_pages

DEFAULT_MAX_POINTS_PER_ROUND = 4


# --------------------------------------------------------------------------- naming
def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order, recursively. A run is a replay
    job's params, which Snakemake compares as text: the order the config writes keys in
    (or a tool rewriting it) must not make a finished run stale."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def vm_point(workload: str, n_vms: int) -> str:
    return f"{workload}-n{n_vms}"


def names_vm_counts(experiment: Mapping[str, Any]) -> bool:
    """Whether the experiment's runs have a VM count of their own (``sweep.vms`` or
    ``vms``): their baselines are then named by :func:`vm_point`, else by the workload."""
    return sweep_kind(experiment) == "vms" or experiment.get("vms") is not None


def parse_vm_point(experiment: Mapping[str, Any], point: str) -> tuple[str, int] | None:
    """(workload, VMs) of a point named by :func:`vm_point` for one of the experiment's
    workloads, else None. At most one workload matches, even when one's name is another's
    followed by -nN ('w' and 'w-n1': 'w-n1-n2' is only w-n1's), since a count is digits."""
    for workload in experiment["workloads"]:
        match = re.fullmatch(re.escape(workload) + r"-n([0-9]+)", point)
        if match:
            return workload, int(match.group(1))
    return None


def parse_baseline_point(
    experiment: Mapping[str, Any], point: str
) -> tuple[str, int | None] | None:
    """(workload, VMs or None) of a baseline point of the experiment (as
    :func:`baseline_run` names it), else None. Which naming applies is the experiment's,
    not the point's: a workload named 'w-n1' beside 'w' in an experiment without VM
    counts is that workload, not w with one VM."""
    if names_vm_counts(experiment):
        return parse_vm_point(experiment, point)
    return (point, None) if point in experiment["workloads"] else None


def host_point(workload: str, n_vms: int | None, host_mem: str) -> str:
    """A host-memory point, named by the size as configured: a page count in pages, a
    byte size in MiB. Not in pages of any size, since the trace's page size decides how
    many pages a byte size is, and a point is named before its trace exists."""
    if is_page_count(host_mem):
        size = f"{parse_size_pages(host_mem)}p"
    else:
        # Exact (whole bytes, / 2^20 in binary): no two sizes share a name.
        size = f"{parse_size_pages(host_mem, page_size_bytes=1) / 2**20:.17g}MiB"
    return f"{workload}-host{size}" if n_vms is None else f"{workload}-n{n_vms}-host{size}"


def policy_entries(experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Normalise ``policies:`` (names or mappings) into {label, name, params, ...}."""
    entries = []
    for item in experiment.get("policies", [BASELINE_POLICY]):
        if isinstance(item, str):
            item = {"name": item}
        entry = {
            "label": item.get("label", item["name"]),
            "name": item["name"],
            "params": canonical(item.get("params", {})),
            "vm_mem_equals_host": bool(item.get("vm_mem_equals_host", False)),
        }
        entries.append(entry)
    return entries


def policy_labels(experiment: Mapping[str, Any]) -> list[str]:
    return [e["label"] for e in policy_entries(experiment)]


def sweep_kind(experiment: Mapping[str, Any]) -> str:
    sweep = experiment.get("sweep") or {}
    if "vms" in sweep:
        return "vms"
    if "host_mem" in sweep:
        return "host_mem"
    return "single"


def refines(experiment: Mapping[str, Any]) -> bool:
    """Whether the sweep is searched for the SLO boundary (VM counts on a fixed host)."""
    refine = experiment.get("refine", {})
    return (
        sweep_kind(experiment) == "vms"
        and experiment.get("host_mem") is not None
        and refine.get("enabled", True)
    )


def overcommit_experiment(
    figures: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]]
) -> str | None:
    """The experiment the overcommit figures draw (swap traffic, consolidation, and double
    paging at ``figures.double_paging_vms`` when no ``figures.double_paging`` is given):
    ``figures.overcommit``, else the first by name of the VM-count sweeps on a fixed host
    (``host_mem`` given); None if there is none. The one rule, for the config check
    (config_check) and the figures (figure_roles)."""
    named = figures.get("overcommit")
    if named:
        return named
    fixed = (
        name
        for name, experiment in sorted(experiments.items())
        if sweep_kind(experiment) == "vms" and experiment.get("host_mem") is not None
    )
    return next(fixed, None)


def figure_roles(
    figures: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The config's ``figures:`` as plots.study_figures takes them: with ``overcommit``
    resolved by overcommit_experiment (absent when there is none)."""
    roles = dict(figures)
    roles.pop("overcommit", None)
    overcommit = overcommit_experiment(figures, experiments)
    if overcommit is not None:
        roles["overcommit"] = overcommit
    return roles


def max_points_per_round(experiment: Mapping[str, Any]) -> int:
    return int(
        experiment.get("refine", {}).get("max_points_per_round", DEFAULT_MAX_POINTS_PER_ROUND)
    )


# --------------------------------------------------------------------------- runs
def slo_slowdown(experiment: Mapping[str, Any]) -> float:
    """The experiment's SLO: the most slowdown every VM may suffer."""
    return float(experiment.get("slo", {}).get("slowdown", DEFAULT_SLO_SLOWDOWN))


def _common(name: str, experiment: Mapping[str, Any], workload: str) -> dict[str, Any]:
    # No SLO here: a run is what a replay job does (its Snakemake params), and the SLO is
    # a threshold the summary applies afterwards (summary.summarize_runs(slo=...)), so
    # trying another SLO reruns no replay.
    return {
        "experiment": name,
        "workload": workload,
        "vm_mem": experiment.get("vm_mem"),
        "clone": canonical(experiment.get("clone", {})),
        "guest_policy": experiment.get("guest_policy", "lru"),
        "latencies": canonical(experiment.get("latencies", "ssd")),
        "epoch_ns": experiment.get("epoch_ns"),
        "seed": int(experiment.get("seed", 0)),
        # None (not given): the policy's default (HostPolicy.wants_sharing), as in replay().
        "sharing": experiment.get("sharing"),
        "options": canonical(experiment.get("engine", {})),
    }


def baseline_run(
    name: str, experiment: Mapping[str, Any], workload: str, n_vms: int | None
) -> dict[str, Any]:
    """The same VMs on a dedicated host (memory = their configured memory, no policy, no
    page sharing: a host that backs all their memory has no reason to scan, whether the
    experiment's `sharing` is left to each policy or written out)."""
    run = _common(name, experiment, workload)
    point = vm_point(workload, n_vms) if n_vms is not None else workload
    run.update(
        sharing=False,
        policy=BASELINE_POLICY,
        policy_name=BASELINE_POLICY,
        policy_params={},
        vm_mem_equals_host=False,
        point=point,
        baseline_point=point,
        sweep="baseline",
        n_vms=n_vms,
        host_mem=None,
    )
    return run


def make_run(
    name: str,
    experiment: Mapping[str, Any],
    workload: str,
    policy_label: str,
    *,
    n_vms: int | None = None,
    host_mem: str | None = None,
) -> dict[str, Any]:
    """One run: a workload, a policy and a point of the experiment's sweep."""
    entries = {e["label"]: e for e in policy_entries(experiment)}
    if policy_label not in entries:
        raise ConfigError(f"experiments.{name}.policies", f"no policy labelled {policy_label!r}")
    entry = entries[policy_label]
    kind = sweep_kind(experiment)
    if n_vms is None:
        n_vms = experiment.get("vms")
    if host_mem is None:
        host_mem = experiment.get("host_mem")
    if kind == "host_mem":
        point = host_point(workload, n_vms, host_mem)
    elif n_vms is not None:
        point = vm_point(workload, n_vms)
    else:
        point = workload
    run = _common(name, experiment, workload)
    run.update(
        policy=policy_label,
        policy_name=entry["name"],
        policy_params=entry["params"],
        vm_mem_equals_host=entry["vm_mem_equals_host"],
        point=point,
        baseline_point=vm_point(workload, n_vms) if n_vms is not None else workload,
        sweep=kind,
        n_vms=n_vms,
        host_mem=host_mem,
    )
    return run


def grid_runs(name: str, experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every run of the configured grid (before any refinement)."""
    runs = []
    sweep = experiment.get("sweep") or {}
    for workload in experiment["workloads"]:
        for label in policy_labels(experiment):
            if "vms" in sweep:
                for n in sweep["vms"]:
                    runs.append(make_run(name, experiment, workload, label, n_vms=int(n)))
            elif "host_mem" in sweep:
                for size in sweep["host_mem"]:
                    runs.append(make_run(name, experiment, workload, label, host_mem=size))
            else:
                runs.append(make_run(name, experiment, workload, label))
    return runs


def role_runs(experiments: Mapping[str, Any], role: Mapping[str, Any] | None) -> list[dict]:
    """The grid runs of the experiment a figure role names (config ``figures:``), if any."""
    name = (role or {}).get("experiment")
    if name not in experiments:
        return []
    return grid_runs(name, experiments[name])


def needs_baseline(experiment: Mapping[str, Any]) -> bool:
    return experiment.get("slo", {}).get("baseline", "dedicated") == "dedicated"


def baseline_runs(name: str, experiment: Mapping[str, Any], runs: list[dict]) -> list[dict]:
    """One baseline per distinct VM set of these runs, but none for a VM set one of whose
    runs is the same replay (policy none without host_mem, summary.replays_baseline):
    that run serves as the baseline, rather than replaying it twice."""
    if not needs_baseline(experiment):
        return []
    served = {(run["workload"], run["n_vms"]) for run in runs if replays_baseline(run)}
    seen: dict[tuple, dict] = {}
    for run in runs:
        key = (run["workload"], run["n_vms"])
        if key not in seen and key not in served:
            seen[key] = baseline_run(name, experiment, run["workload"], run["n_vms"])
    return list(seen.values())


# --------------------------------------------------------------------------- VM sets
def scale_vms(
    table: pa.Table,
    metadata: TraceMetadata,
    n_vms: int | None,
    stagger_ns: int = 0,
    jitter_ns: int = 0,
    seed: int = 0,
    time_scale: float = 1.0,
    repeat: int = 1,
) -> tuple[pa.Table, TraceMetadata]:
    """N VMs from a K-VM trace: VM i replays VM ``i mod K``; copy c = i div K starts
    ``c * stagger_ns`` plus a seeded jitter later (copy 0 is not shifted). The result is
    ordered by time across VMs (stable), as the engine streams it.

    ``time_scale`` stretches every trace time by that factor first: a captured program
    runs for milliseconds of trace time (memtrace counts one access per ns), while host
    policies act every few seconds (ESX reallocates every 15 s, MOM every 10 s); stretched,
    the same accesses span enough policy periods for the policies to act.

    ``repeat`` runs the trace that many times back to back in the same VMs (pass r starts
    r trace spans later), so a measurement can skip the first pass: a warm-up in which
    the guest first touches its memory and a balloon inflates (Waldspurger's Fig. 2
    inflates the balloon before the benchmark runs).
    """
    k = metadata.num_vms or (int(table.column("vm").to_numpy().max()) + 1 if len(table) else 1)
    if time_scale != 1.0:
        t = table.column("t_ns").to_numpy().astype(np.float64) * time_scale
        table = table.set_column(
            table.schema.get_field_index("t_ns"), "t_ns", pa.array(t.astype(np.uint64))
        )
    if repeat < 1:
        raise ConfigError("clone.repeat", f"need at least 1 pass, got {repeat}")
    if repeat > 1 and len(table):
        table = _repeat_passes(table, repeat)
        metadata = metadata.overlay(accesses=table.num_rows)
    if n_vms is None or n_vms == k:
        return table, metadata
    if n_vms < 1:
        raise ConfigError("vms", f"need at least 1 VM, got {n_vms}")
    vm = table.column("vm").to_numpy().astype(np.int64)
    t = table.column("t_ns").to_numpy().astype(np.uint64)
    rng = np.random.default_rng([seed, 0x5CA1E])
    jitters = rng.integers(0, jitter_ns, size=n_vms) if jitter_ns > 0 else np.zeros(n_vms, np.int64)
    by_source = [np.flatnonzero(vm == s) for s in range(k)]
    pieces_idx, pieces_vm, pieces_t = [], [], []
    for i in range(n_vms):
        source, copy_no = i % k, i // k
        rows = by_source[source]
        shift = 0 if copy_no == 0 else copy_no * stagger_ns + int(jitters[i])
        pieces_idx.append(rows)
        pieces_vm.append(np.full(len(rows), i, dtype=np.uint16))
        pieces_t.append(t[rows] + np.uint64(shift))
    idx = np.concatenate(pieces_idx)
    new_t = np.concatenate(pieces_t)
    new_vm = np.concatenate(pieces_vm)
    order = np.argsort(new_t, kind="stable")
    scaled = table.take(pa.array(idx[order]))
    scaled = scaled.set_column(
        scaled.schema.get_field_index("vm"), "vm", pa.array(new_vm[order], pa.uint16())
    )
    scaled = scaled.set_column(
        scaled.schema.get_field_index("t_ns"), "t_ns", pa.array(new_t[order], pa.uint64())
    )

    def per_vm(values):
        return None if values is None else [values[i % k] for i in range(n_vms)]

    meta = metadata.overlay(
        config_pages=per_vm(metadata.config_pages),
        pages_per_vm=per_vm(metadata.pages_per_vm),
        vm_names=per_vm(metadata.vm_names),
        vm_images=per_vm(metadata.vm_images),
        accesses=scaled.num_rows,
    )
    return scaled, meta


def _repeat_passes(table: pa.Table, repeat: int) -> pa.Table:
    """The trace ``repeat`` times in a row, time-ordered across VMs; pass r is shifted by
    r times the trace's span (first to last access, plus one ns)."""
    t = table.column("t_ns").to_numpy().astype(np.uint64)
    span = np.uint64(int(t.max()) - int(t.min()) + 1)
    passes = np.repeat(np.arange(repeat, dtype=np.uint64), len(t))
    new_t = np.tile(t, repeat) + passes * span
    order = np.argsort(new_t, kind="stable")
    idx = np.tile(np.arange(len(t)), repeat)[order]
    repeated = table.take(pa.array(idx))
    return repeated.set_column(
        repeated.schema.get_field_index("t_ns"), "t_ns", pa.array(new_t[order], pa.uint64())
    )


# --------------------------------------------------------------------------- one run
def _replay_options(run: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(run.get("options") or {})
    options["sharing"] = run.get("sharing")
    options["seed"] = run.get("seed", 0)
    if run.get("epoch_ns"):
        options["epoch_ns"] = int(run["epoch_ns"])
    return options


def run_point(run: Mapping[str, Any], trace_path: str | os.PathLike, output: str | os.PathLike):
    """Replay one run and write its metrics (with the run in the metadata). A policy that
    refuses the configuration (``static`` on an overcommitted host) is a result, not a
    failure: the file then has no rows and status ``refused``."""
    from balloonreplay.metrics import metrics_frame, write_metrics
    from balloonreplay.replay import build_config, replay

    trace = open_trace(trace_path)
    table, meta = scale_vms(
        trace.read_table(),
        trace.metadata,
        run.get("n_vms"),
        stagger_ns=int(run.get("clone", {}).get("stagger_ns", 0)),
        jitter_ns=int(run.get("clone", {}).get("jitter_ns", 0)),
        seed=int(run.get("seed", 0)),
        time_scale=float(run.get("clone", {}).get("time_scale", 1.0)),
        repeat=int(run.get("clone", {}).get("repeat", 1)),
    )
    vms = run.get("vm_mem")
    if run.get("vm_mem_equals_host"):
        # The comparator of balloon equivalence: VMs configured with the host's memory
        # (split evenly) instead of ballooned down to it.
        n = meta.num_vms or 1
        host_pages = parse_size_pages(run["host_mem"], meta.page_size_bytes or PAGE_SIZE_BYTES)
        vms = f"{host_pages // n}p"
    host = None if run.get("vm_mem_equals_host") else run.get("host_mem")
    # Resolve sizes first: a bad size raises here, so a ConfigError about host memory
    # from inside the replay can only be the policy refusing the configuration.
    config = build_config(types.SimpleNamespace(metadata=meta), vms, host)
    record = dict(
        run,
        status=STATUS_OK,
        message="",
        config_pages=config.config_pages,
        host_pages=config.host_pages,
    )
    try:
        result = replay(
            table,
            vms=vms,
            host=host,
            policy=run["policy_name"],
            policy_params=run.get("policy_params") or None,
            guest_policy=run.get("guest_policy", "lru"),
            latencies=run.get("latencies"),
            metadata=meta,
            **_replay_options(run),
        )
    except ConfigError as exc:
        if exc.key != "host_mem":
            raise
        print(f"refused: {exc}", file=sys.stderr)
        record.update(status=STATUS_REFUSED, message=str(exc))
        empty = metrics_frame([])
        write_metrics(empty, output, {"run": record, "trace": {"metadata": _meta_dict(meta)}})
        return None
    write_metrics(result.metrics, output, {**result.metadata(), "run": record})
    summary = result.summary
    print(
        f"{run['experiment']}/{run['policy']}/{run['point']}: {summary.get('accesses')} accesses, "
        f"max slowdown {summary.get('max_slowdown', float('nan')):.3f}, "
        f"{summary.get('replay_seconds', 0):.1f} s",
        file=sys.stderr,
    )
    return result


def _meta_dict(meta: TraceMetadata) -> dict[str, Any]:
    return {
        "source": meta.source,
        "page_size_bytes": meta.page_size_bytes,
        "config_pages": meta.config_pages,
    }
