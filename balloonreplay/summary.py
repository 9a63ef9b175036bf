"""The study's summary: one row per run, and the consolidation ratio per experiment and policy.

Pure pandas over the metrics Parquet files (balloonreplay/metrics.py) and the metadata in
their footers; no engine state. Each metrics file written by the workflow carries, beside
the engine's record (``config``, ``policy``, ``trace``, ``summary``), a ``run`` record
naming the experiment, workload, policy label, sweep point and number of VMs
(balloonreplay/experiments.py writes it).

Slowdowns and the SLO. The engine's slowdown of a VM is its stalled run time over its
unstalled one, both from its own first access, so it also counts stalls that no host policy causes (zero-filling first
touches, the guest swapping inside its own configured memory). The SLO therefore compares
a VM with *itself on a dedicated host*: relative slowdown = slowdown under the policy ÷
slowdown of the same VMs replayed with host memory = their configured memory (policy
``none``, a "baseline" run). Without a baseline the absolute slowdown is used, and always
in an experiment configured with ``slo: {baseline: none}`` (``absolute`` of
:func:`summarize_runs`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from balloonreplay.errors import BalloonreplayError
from balloonreplay.metrics import TOTAL_COLUMNS, read_metrics_metadata
from balloonreplay.units import PAGE_SIZE_BYTES

DEFAULT_SLO_SLOWDOWN = 1.10

# Policy names as users know them (figures and tables).
POLICY_DISPLAY_NAMES = {
    "none": "no policy",
    "static": "static (no overcommit)",
    "host-swap": "host swapping only",
    "balloon": "ballooning only",
    "esx": "VMware ESX",
    "mom": "oVirt MOM",
    "xen-selfballoon": "Xen self-ballooning",
    "hyperv": "Hyper-V Dynamic Memory",
    "mrc": "MRC balancing (MEB)",
    "free-page-reporting": "Linux free page reporting",
}

# Counters whose bytes are swap traffic: (metric, summary column).
SWAP_BYTE_COLUMNS = (
    ("guest_swap_in", "guest_swap_read_bytes"),
    ("guest_swap_out", "guest_swap_write_bytes"),
    ("host_swap_in", "host_swap_read_bytes"),
    ("host_swap_out", "host_swap_write_bytes"),
)
# Gauges summed over VMs per epoch; the summary keeps the last epoch's and the peak value.
GAUGE_COLUMNS = (
    "balloon_pages",
    "host_swapped_pages",
    "shared_pages",
    "zero_shared_pages",
    "resident_pages",
    "backed_pages",
)
RUN_ID_COLUMNS = ("experiment", "workload", "policy", "point")
BASELINE_POLICY = "none"  # what a baseline run replays (experiments.baseline_run)
STATUS_OK = "ok"
STATUS_REFUSED = "refused"  # the policy refused the configuration (static overcommitted)


def display_name(policy_label: str, policy_name: str | None = None) -> str:
    """``esx`` -> ``VMware ESX``; a labelled variant keeps its label in parentheses, and a
    policy given as text with parameters (``esx:tax=0.5,sample_pages=50``, its own label
    and name) its parameters: ``VMware ESX (tax=0.5, sample_pages=50)``."""
    name = policy_name or policy_label
    base, _, params = name.partition(":")
    known = POLICY_DISPLAY_NAMES.get(base.strip(), base.strip())
    # A label that is another policy's name still draws the policy it runs.
    if policy_label != name:
        return f"{known} ({policy_label})"
    params = ", ".join(p.strip() for p in params.split(",") if p.strip())
    return f"{known} ({params})" if params else known


# --------------------------------------------------------------------------- one run
def run_page_size_bytes(metadata: Mapping[str, Any]) -> int:
    """The page size of a run's trace, from a metrics file's metadata (the trace's footer,
    recorded under ``trace.metadata``; also by a refused run): every page count of the run
    is in these pages. 4 KiB where a file records none."""
    trace_meta = metadata.get("trace", {}).get("metadata", {})
    return int(trace_meta.get("page_size_bytes") or PAGE_SIZE_BYTES)


def read_run(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The metrics table and the footer metadata of one run."""
    return pq.read_table(path).to_pandas(), read_metrics_metadata(path)


def _per_epoch_sums(metrics: pd.DataFrame, column: str) -> pd.Series:
    return metrics.groupby("epoch")[column].sum()


def pages_saved_by_sharing(metrics: pd.DataFrame) -> tuple[int, bool]:
    """Machine pages that page sharing saves at the end of the run, and whether exact.

    Exact when the metrics carry the host's distinct shared contents
    (``shared_contents``): saved = shared frames − distinct contents. Otherwise a lower
    bound from per-VM gauges: all zero frames of a VM collapse into at most one page
    (salting keeps one per VM), and every other shared content backs at least two frames.
    """
    if metrics.empty:
        return 0, True
    last = metrics[metrics.epoch == metrics.epoch.max()]
    shared = int(last.shared_pages.sum())
    if "shared_contents" in last.columns:
        # A host-wide gauge, repeated on every VM's row.
        return max(shared - int(last.shared_contents.iloc[0]), 0), True
    zero = last.zero_shared_pages.to_numpy(np.int64)
    other = last.shared_pages.to_numpy(np.int64) - zero
    saved = int(np.maximum(zero - 1, 0).sum() + (other // 2).sum())
    return saved, False


def run_row(
    metrics: pd.DataFrame,
    metadata: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    slo_slowdown: float | None = None,
) -> dict[str, Any]:
    """The summary row of one run. ``baseline``: the summary row of its baseline run;
    ``slo_slowdown``: the SLO it is judged by (default the one its run records, else
    1.10)."""
    run = dict(metadata.get("run", {}))
    engine = metadata.get("summary", {})
    config = metadata.get("config", {})
    policy = metadata.get("policy", {})
    page_bytes = run_page_size_bytes(metadata)
    status = run.get("status", STATUS_OK)
    config_pages = list(config.get("config_pages") or run.get("config_pages") or [])
    host_pages = int(config.get("host_pages") or run.get("host_pages") or 0)
    label = run.get("policy", policy.get("name", "?"))
    policy_name = run.get("policy_name", policy.get("name", label))
    row: dict[str, Any] = {
        "experiment": run.get("experiment", ""),
        "workload": run.get("workload", ""),
        "policy": label,
        "policy_name": policy_name,
        "policy_display": display_name(label, policy_name),
        "point": run.get("point", ""),
        "sweep": run.get("sweep", ""),
        "n_vms": int(run.get("n_vms") or len(config_pages)),
        "status": status,
        "message": run.get("message", ""),
        "page_size_bytes": page_bytes,
        "host_pages": host_pages,
        "host_mem_bytes": host_pages * page_bytes,
        "configured_mem_bytes": sum(config_pages) * page_bytes,
        # Σ configured guest memory ÷ host memory (DESIGN.md, "Outputs").
        "overcommit_ratio": sum(config_pages) / host_pages if host_pages else math.nan,
        "epochs": int(metrics.epoch.max()) + 1 if len(metrics) else 0,
        # Wall-clock time of the replay: the one column that differs between equal runs.
        "replay_seconds": float(engine.get("replay_seconds", math.nan)),
        # True: the conservation laws held at the end of the replay (a failed check is an
        # error, never a file); None: no replay ran (refused) or it was not checked.
        "invariants_ok": invariants_ok(metadata),
        "slo_slowdown": float(
            slo_slowdown
            if slo_slowdown is not None
            else run.get("slo_slowdown", DEFAULT_SLO_SLOWDOWN)
        ),
    }
    for column in TOTAL_COLUMNS:
        row[column] = int(metrics[column].sum()) if column in metrics else 0
    for counter, out in SWAP_BYTE_COLUMNS:
        row[out] = row[counter] * page_bytes
    row["guest_swap_bytes"] = row["guest_swap_read_bytes"] + row["guest_swap_write_bytes"]
    row["host_swap_bytes"] = row["host_swap_read_bytes"] + row["host_swap_write_bytes"]
    row["blocked_s"] = row["blocked_ns"] / 1e9
    row["stall_s"] = row["stall_ns"] / 1e9
    for gauge in GAUGE_COLUMNS:
        sums = _per_epoch_sums(metrics, gauge) if len(metrics) else pd.Series([0])
        row[f"{gauge}_end"] = int(sums.iloc[-1])
        row[f"{gauge}_peak"] = int(sums.max())
    saved, exact = pages_saved_by_sharing(metrics)
    row["pages_saved_by_sharing"] = saved
    row["bytes_saved_by_sharing"] = saved * page_bytes
    row["sharing_saved_exact"] = exact

    slowdowns = [float(s) for s in engine.get("slowdown", [])]
    row["slowdowns"] = slowdowns
    if status != STATUS_OK or not slowdowns:
        row.update(mean_slowdown=math.nan, max_slowdown=math.nan)
    else:
        row.update(mean_slowdown=float(np.mean(slowdowns)), max_slowdown=max(slowdowns))
    base = list(baseline["slowdowns"]) if baseline is not None else []
    if slowdowns and len(base) == len(slowdowns) and status == STATUS_OK:
        relative = [s / b for s, b in zip(slowdowns, base, strict=True)]
        row["relative_slowdowns"] = relative
        row["max_relative_slowdown"] = max(relative)
        row["mean_relative_slowdown"] = float(np.mean(relative))
    else:
        row["relative_slowdowns"] = slowdowns if status == STATUS_OK else []
        row["max_relative_slowdown"] = row["max_slowdown"]
        row["mean_relative_slowdown"] = row["mean_slowdown"]
    row["within_slo"] = bool(
        status == STATUS_OK
        and not math.isnan(row["max_relative_slowdown"])
        and row["max_relative_slowdown"] <= row["slo_slowdown"] + 1e-12
    )
    return row


def invariants_ok(metadata: Mapping[str, Any]) -> bool | None:
    """What the metrics file records about the end-of-run invariant check."""
    ok = metadata.get("invariants_ok", metadata.get("summary", {}).get("invariants_ok"))
    return None if ok is None else bool(ok)


def _read_checked_run(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    metrics, meta = read_run(path)
    if invariants_ok(meta) is False:
        raise BalloonreplayError(
            f"{os.fspath(path)}: metadata key 'invariants_ok': expected true, got false "
            "(the replay broke a conservation law; its metrics are not a result)"
        )
    return metrics, meta


def replays_baseline(run: Mapping[str, Any]) -> bool:
    """Whether a run replays exactly what its baseline would: policy none without
    parameters or page sharing (left out, none's default, or off) on a host of the VMs'
    own memory (no host_mem). It then serves as the baseline of its VM set, which the
    workflow does not replay a second time (in an experiment that has baselines:
    summarize_runs' ``absolute`` lists those that have none)."""
    return (
        run.get("sweep") != "baseline"
        and run.get("policy_name") == BASELINE_POLICY
        and not run.get("policy_params")
        and not run.get("sharing")
        and not run.get("vm_mem_equals_host")
        and "host_mem" in run  # recorded, as every run of experiments.make_run does
        and run["host_mem"] is None
    )


def _baseline_key(run: Mapping[str, Any]) -> tuple:
    return (
        run.get("experiment"),
        run.get("workload"),
        run.get("baseline_point") or run.get("point"),
    )


def summarize_runs(
    run_paths: Iterable[str | os.PathLike],
    baseline_paths: Iterable[str | os.PathLike] = (),
    slo: Mapping[str, float] | None = None,
    absolute: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per run, with relative slowdowns against the matching baseline run (same
    experiment, workload and VM set), then the consolidation ratio per experiment,
    workload and policy (NaN where the experiment does not sweep VMs per host).

    ``slo``: the SLO slowdown per experiment name (the workflow's ``slo.slowdown``); an
    experiment not in it is judged by the SLO its runs record, else 1.10.
    ``absolute``: the experiments judged by the absolute slowdown (the workflow's
    ``slo: {baseline: none}``): none of their runs is compared with a baseline, not even
    with a run of policy none that would serve as one (:func:`replays_baseline`)."""
    slo = slo or {}
    absolute = set(absolute)
    baselines: dict[tuple, dict[str, Any]] = {}
    for path in baseline_paths:
        metrics, meta = _read_checked_run(path)
        baselines[_baseline_key(meta.get("run", {}))] = run_row(metrics, meta)
    run_paths = list(run_paths)
    for path in run_paths:
        run = read_metrics_metadata(path).get("run", {})
        if run.get("experiment") in absolute:
            continue
        if replays_baseline(run) and _baseline_key(run) not in baselines:
            metrics, meta = _read_checked_run(path)
            baselines[_baseline_key(run)] = run_row(metrics, meta)
    rows = []
    for path in run_paths:
        metrics, meta = _read_checked_run(path)
        run = meta.get("run", {})
        baseline = None if run.get("experiment") in absolute else baselines.get(_baseline_key(run))
        rows.append(run_row(metrics, meta, baseline, slo.get(run.get("experiment"))))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["experiment", "workload", "policy", "n_vms", "host_pages"])
    ratios = consolidation(frame)
    key = ["experiment", "workload", "policy"]
    if ratios.empty:
        frame["consolidation_ratio"] = np.nan
        frame["consolidation_overcommit_ratio"] = np.nan
    else:
        frame = frame.merge(
            ratios[key + ["consolidation_ratio", "overcommit_ratio"]].rename(
                columns={"overcommit_ratio": "consolidation_overcommit_ratio"}
            ),
            on=key,
            how="left",
        )
    return frame.reset_index(drop=True)


def summarize_study(
    paths: Iterable[str | os.PathLike],
    slo: Mapping[str, float] | None = None,
    records: list[Mapping[str, Any]] | None = None,
    absolute: Iterable[str] = (),
) -> pd.DataFrame:
    """:func:`summarize_runs` of a study's metrics files, runs and baselines together (a
    baseline is known by its run record, ``sweep: baseline``): it serves the runs of its
    VM set and is not a row. ``records``: the files' run records, if the caller has read
    them (one per path, in order); ``slo`` and ``absolute`` as in summarize_runs."""
    paths = list(paths)
    if records is None:
        records = [read_metrics_metadata(p).get("run", {}) for p in paths]
    is_baseline = [run.get("sweep") == "baseline" for run in records]
    return summarize_runs(
        [p for p, b in zip(paths, is_baseline, strict=True) if not b],
        [p for p, b in zip(paths, is_baseline, strict=True) if b],
        slo,
        absolute,
    )


def consolidation_report(summary: pd.DataFrame, ratios: pd.DataFrame, output) -> list[str]:
    """The lines the CLI and the workflow log after writing a summary: its size, then
    each policy's consolidation ratio."""
    lines = [f"{output}: {len(summary)} runs"]
    for row in ratios.itertuples():
        bound = "" if row.boundary_known else " (lower bound)"
        lines.append(
            f"{row.experiment}/{row.workload}/{row.policy}: consolidation ratio "
            f"{row.consolidation_ratio}{bound} VMs per host (SLO {row.slo_slowdown:.2f}), "
            f"overcommit {row.overcommit_ratio:.2f}"
        )
    return lines


# --------------------------------------------------------------------------- consolidation
def consolidation_point(within: Mapping[int, bool]) -> tuple[int, bool]:
    """The most VMs per host within the SLO, and whether that is known to one VM.

    ``within`` maps evaluated VM counts to whether every VM met the SLO. The answer is the
    largest n such that every evaluated count up to n is within (more VMs never make a
    host faster, so the first failure ends the search even if a larger count passes by
    noise). It is exact when n+1 was evaluated and failed (or n = 0 and 1 failed); when
    every evaluated count passed, it is only a lower bound.
    """
    best = 0
    for n in sorted(within):
        if not within[n]:
            return best, best + 1 == n
        best = n
    return best, False


def next_points(within: Mapping[int, bool], max_points: int = 4) -> list[int]:
    """VM counts to evaluate next to pin the SLO boundary to one VM.

    Between the last passing count and the first failing one, take every count if there
    are at most ``max_points`` of them, else ``max_points`` counts spread evenly (so
    each round shrinks the gap about ``max_points + 1``-fold). Empty when the boundary
    is known, or when no evaluated count failed (nothing bounds the search above).
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    best, _ = consolidation_point(within)
    failing = [n for n in sorted(within) if n > best and not within[n]]
    if not failing:
        return []
    gap = list(range(best + 1, failing[0]))
    if len(gap) <= max_points:
        return gap
    picks = np.linspace(best, failing[0], max_points + 2)[1:-1]
    return sorted({int(round(x)) for x in picks} - set(within))


def consolidation(summary: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, workload and policy of a VM-count sweep on a fixed host: the
    ``consolidation_ratio`` (most VMs per host with every VM within the SLO) and the
    ``overcommit_ratio`` it reaches."""
    columns = [
        "experiment",
        "workload",
        "policy",
        "policy_name",
        "policy_display",
        "consolidation_ratio",
        "overcommit_ratio",
        "boundary_known",
        "upper_bound",
        "slo_slowdown",
        "host_mem_bytes",
        "points_evaluated",
    ]
    if summary.empty or "sweep" not in summary:
        return pd.DataFrame(columns=columns)
    sweeps = summary[summary.sweep == "vms"]
    out = []
    for (experiment, workload, policy), group in sweeps.groupby(
        ["experiment", "workload", "policy"], sort=True
    ):
        if group.host_mem_bytes.nunique() != 1:
            continue  # the host grows with the VMs (no overcommit): nothing to pack
        within = dict(zip(group.n_vms.astype(int), group.within_slo.astype(bool), strict=True))
        ratio, known = consolidation_point(within)
        failing = [n for n in sorted(within) if n > ratio and not within[n]]
        at = group[group.n_vms == ratio]
        out.append(
            {
                "experiment": experiment,
                "workload": workload,
                "policy": policy,
                "policy_name": group.policy_name.iloc[0],
                "policy_display": group.policy_display.iloc[0],
                "consolidation_ratio": ratio,
                "overcommit_ratio": float(at.overcommit_ratio.iloc[0]) if len(at) else 0.0,
                "boundary_known": known,
                # The most VMs the SLO may still allow (NaN: nothing failed above).
                "upper_bound": failing[0] - 1 if failing else math.nan,
                "slo_slowdown": float(group.slo_slowdown.iloc[0]),
                "host_mem_bytes": int(group.host_mem_bytes.iloc[0]),
                "points_evaluated": len(within),
            }
        )
    return pd.DataFrame(out, columns=columns)


def within_by_vms(rows: Sequence[Mapping[str, Any]]) -> dict[int, bool]:
    """{n_vms: within SLO} from summary rows of one experiment, workload and policy."""
    return {int(r["n_vms"]): bool(r["within_slo"]) for r in rows}


# --------------------------------------------------------------------------- files
def write_summary(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """The summary table as Parquet (atomic; list columns kept as lists)."""
    import pyarrow as pa

    from balloonreplay.traces.io import atomic_path

    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


__all__ = [
    "DEFAULT_SLO_SLOWDOWN",
    "POLICY_DISPLAY_NAMES",
    "consolidation",
    "consolidation_point",
    "display_name",
    "invariants_ok",
    "next_points",
    "pages_saved_by_sharing",
    "read_run",
    "run_page_size_bytes",
    "run_row",
    "summarize_runs",
    "summarize_study",
    "write_summary",
]
