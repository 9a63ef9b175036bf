"""Relations the model must satisfy between two replays, checked without the reference.

The engine equals reference.py counter for counter (test_engine_equivalence.py), but a
defect both share passes that test: host time 0 was once the first row's time instead of
the earliest, in both. These properties hold for any correct implementation of the model
in DESIGN.md, so they catch what the twin cannot:

- **independence**: VMs that share nothing (no page sharing, no host policy, a host that
  holds every frame they have) replay exactly as each does alone;
- **time shift**: adding a constant to every access time changes nothing (host time 0 is
  the trace's earliest access);
- **time scale**: multiplying every time in the trace and the configuration (accesses,
  latencies, quantum, epoch; balloon rates divided) by k multiplies every time in the
  results by k and changes no count, under balloons, host swapping and blocking;
- **names**: renaming each VM's pages by a permutation changes nothing, and no built-in
  policy sees the trace's clock or its page numbers;
- **what is off is off**: sharing with an idle scanner is sharing off, salting a lone VM
  changes nothing, and without a host policy the epoch only cuts the metrics into rows;
- **memory is memory**: a VM ballooned from the start is the smaller VM (Waldspurger's
  balloon equivalence), and a VM's overhead is host memory it cannot use.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from engine_helpers import (
    BUILTIN_POLICY_SPECS,
    QUANTUM_NS,
    RandomPolicy,
    assert_frames_equal,
    property_profile,
    trace_table,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import balloonreplay
from balloonreplay import metrics
from balloonreplay.engine.config import GUEST_POLICIES
from balloonreplay.latencies import Latencies
from balloonreplay.policies import Decision, HostPolicy
from balloonreplay.traces.io import write_trace
from balloonreplay.traces.schema import TraceMetadata

PROFILE = property_profile("engine-metamorphic", "BALLOONREPLAY_METAMORPHIC_EXAMPLES", 100)
# Columns in ns, which scale with time; host-wide gauges, repeated on every VM's row.
TIME_COLUMNS = ["t_ns", "blocked_ns", "stall_ns"]
HOST_COLUMNS = ["host_used_pages", "shared_contents"]


@st.composite
def traces(draw, *, min_vms=1):
    """A small multi-VM trace (rows in time order within each VM only) and the replay
    options every property shares."""
    nvm = draw(st.integers(min_vms, 3))
    config_pages = draw(st.lists(st.integers(1, 6), min_size=nvm, max_size=nvm))
    pages = draw(st.lists(st.integers(1, 10), min_size=nvm, max_size=nvm))
    overhead = draw(st.lists(st.integers(0, 2), min_size=nvm, max_size=nvm))
    n = draw(st.integers(nvm, 150))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Every VM has a row, the first at a time of its own.
    vm = np.concatenate([np.arange(nvm), rng.integers(0, nvm, n - nvm)])
    t = np.zeros(n, dtype=np.int64)
    clock = np.zeros(nvm, dtype=np.int64)
    clock += rng.integers(0, 20 * QUANTUM_NS, nvm)
    for i in range(n):
        if i >= nvm:
            clock[vm[i]] += rng.integers(0, 3 * QUANTUM_NS)
            if rng.random() < 0.05:  # idle stretches of several epochs
                clock[vm[i]] += rng.integers(10, 30) * QUANTUM_NS
        t[i] = clock[vm[i]]
    # Rows shuffled between VMs, each VM's kept in its order: the trace's first row need
    # not be its earliest.
    order = rng.permutation(n)
    for v in range(nvm):
        slots = np.flatnonzero(vm[order] == v)
        order[slots] = np.sort(order[slots])
    vm, t = vm[order], t[order]
    page = np.array([rng.integers(0, pages[v]) for v in vm], dtype=np.int64)
    write = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    file_backed = rng.random(n) < draw(st.sampled_from([0.0, 0.3]))
    free = rng.random(n) < draw(st.sampled_from([0.0, 0.1]))
    palette = draw(st.sampled_from([[None, 0, 1, 2], [None, 0, 0, 0, 0, 1]]))
    content = [palette[k] for k in rng.integers(0, len(palette), n)]
    latencies = {
        name: int(rng.integers(0, 3 * QUANTUM_NS)) for name in Latencies.__dataclass_fields__
    }
    latencies["balloon_page_ns"] = int(rng.integers(0, 150))
    options = dict(
        vms=[f"{c}p" for c in config_pages],
        overhead_pages=overhead,
        guest_policy=draw(st.sampled_from(GUEST_POLICIES)),
        twolist_active_percent=draw(st.sampled_from([0, 30, 100])),
        host_selection=draw(st.sampled_from(["random", "lru-sampled"])),
        sharing=False,
        quantum_ns=QUANTUM_NS,
        epoch_ns=QUANTUM_NS * draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**63 - 1)),
        debug_checks=draw(st.booleans()),
    )
    columns = dict(
        vm=vm, t=t, page=page, write=write, content=content, file_backed=file_backed, free=free
    )
    return columns, options, latencies


def _table(columns, t=None, vm=None):
    return trace_table(
        columns["vm"] if vm is None else vm,
        columns["t"] if t is None else t,
        columns["page"],
        columns["write"],
        columns["content"],
        columns["file_backed"],
        columns["free"],
    )


def config_pages(options) -> list[int]:
    """Each VM's configured frames, from the ``"Np"`` sizes traces() gives."""
    return [int(size[:-1]) for size in options["vms"]]


def host_size(options, tight_host=True) -> str:
    """A host of half the VMs' frames (at least one page) when ``tight_host``, else of all
    of them, beside their overhead."""
    frames = sum(config_pages(options))
    return f"{sum(options['overhead_pages']) + (max(1, frames // 2) if tight_host else frames)}p"


def replay_scaled(trace, scale, **replay_options):
    """Replay traces()'s ``trace`` with every time in it and in its configuration (access
    times, latencies, quantum, epoch) multiplied by ``scale``; ``replay_options`` are the
    rest, rates and periods already divided or stretched by the caller."""
    columns, options, latencies = trace
    return balloonreplay.replay(
        _table(columns, t=columns["t"] * scale),
        latencies={name: ns * scale for name, ns in latencies.items()},
        **{
            **options,
            "quantum_ns": options["quantum_ns"] * scale,
            "epoch_ns": options["epoch_ns"] * scale,
            **replay_options,
        },
    )


def assert_metrics_scaled(base, stretched, k):
    """The stretched run's metrics are the base run's, every time column k times as long."""
    expected = base.metrics.copy()
    expected[TIME_COLUMNS] = expected[TIME_COLUMNS] * k
    assert_frames_equal(stretched.metrics, expected)


def shifts(t: np.ndarray):
    """Shifts of every time by a constant: small ones, and ones that carry the trace's
    times across 2**63 (some before it, some at or after it: an unsigned compare is
    needed) or to the end of t_ns's range."""
    earliest, latest = int(t.min()), int(t.max())
    straddling = (
        st.integers(2**63 - latest + 1, 2**63 - earliest)
        if latest > earliest
        else st.just(2**63 - earliest)
    )
    return st.one_of(st.integers(1, 2**50), straddling, st.integers(2**63, 2**64 - 1 - latest))


def renamed_pages(columns, rng) -> np.ndarray:
    """Each VM's pages renamed by a permutation of its page numbers that moves every one
    (a random permutation of a few numbers is often the identity, which tests nothing)."""
    renamed = columns["page"].copy()
    for v in np.unique(columns["vm"]):
        mine = columns["vm"] == v
        n = int(columns["page"][mine].max()) + 1
        if n > 1:  # a cycle through a random order of the n numbers: no fixed point
            order = rng.permutation(n)
            moved = np.empty(n, dtype=np.int64)
            moved[order] = np.roll(order, 1)
            renamed[mine] = moved[columns["page"][mine]]
    return renamed


def as_input(table, columns, directory, name, rows_per_group=None):
    """The table itself, or (``rows_per_group``) a canonical Parquet file of it in
    ``directory`` in row groups of that many rows, so host time 0 comes from the footer's
    statistics (replay._read_footer)."""
    if rows_per_group is None:
        return table
    nvm = int(columns["vm"].max()) + 1
    pages = [int(columns["page"][columns["vm"] == v].max(initial=0)) + 1 for v in range(nvm)]
    meta = TraceMetadata(source="test", config_pages=[1] * nvm, dense=True, pages_per_vm=pages)
    path = os.path.join(directory, name)
    write_trace(table.to_batches(max_chunksize=rows_per_group), path, meta)
    return path


@settings(PROFILE)
@given(traces(min_vms=2), st.integers(1, 64))
def test_vms_that_share_nothing_replay_as_each_does_alone(trace, batch_rows):
    """A host exactly as large as every frame and overhead of its VMs can back them all,
    so with no policy and no sharing nothing couples the VMs: not the host (it never
    swaps or blocks), not the order their rows arrive in, not when each starts. Each VM's
    rows, its slowdown and its stalls are then those of its replay alone on a host of its
    own, with host time 0 where it was: alone, a VM that starts later than the trace's
    earliest access is joined by a one-access VM at that time (itself a VM that shares
    nothing), whose row comes first."""
    columns, options, latencies = trace
    config = config_pages(options)
    overhead = options["overhead_pages"]
    together = balloonreplay.replay(
        _table(columns),
        host=host_size(options, tight_host=False),
        latencies=latencies,
        batch_rows=batch_rows,
        **options,
    )
    rows = together.metrics
    assert rows["host_swap_out"].sum() == 0
    assert rows["blocked_ns"].sum() == 0
    earliest = columns["t"].min()
    for v in range(len(config)):
        mine = columns["vm"] == v
        alone = {key: np.asarray(value)[mine] for key, value in columns.items()}
        alone["vm"] = np.zeros(mine.sum(), dtype=np.int64)
        vms, overheads = [options["vms"][v]], [overhead[v]]
        if alone["t"].min() > earliest:
            marker = dict(vm=1, t=earliest, page=0, write=False, content=None)
            for key in alone:
                alone[key] = np.concatenate([[marker.get(key, False)], alone[key]])
            vms, overheads = [*vms, "1p"], [*overheads, 0]
        run = balloonreplay.replay(
            _table(alone),
            host=f"{config[v] + overhead[v] + (len(vms) - 1)}p",
            latencies=latencies,
            **{**options, "vms": vms, "overhead_pages": overheads},
        )
        assert run.summary["slowdown"][0] == together.summary["slowdown"][v]
        assert run.summary["stall_total_ns"][0] == together.summary["stall_total_ns"][v]
        expected = run.metrics[run.metrics["vm"] == 0].drop(columns=["vm", *HOST_COLUMNS])
        expected = expected.reset_index(drop=True)
        got = rows[rows["vm"] == v].drop(columns=["vm", *HOST_COLUMNS])
        got = got.reset_index(drop=True)
        epochs = len(expected)
        assert len(got) >= epochs
        # The run together may end later: the VM's last epoch may close at a later time,
        # and the epochs after it see the VM idle, with its gauges where they were.
        last = epochs - 1
        assert_frames_equal(got.iloc[:last].reset_index(drop=True), expected.iloc[:last])
        assert_frames_equal(
            got.iloc[last:epochs].drop(columns="t_ns").reset_index(drop=True),
            expected.iloc[last:].drop(columns="t_ns").reset_index(drop=True),
        )
        after = got.iloc[epochs:]
        counters = [c for c in metrics.TOTAL_COLUMNS if c in after.columns]
        assert (after[counters] == 0).all().all()
        for c in metrics.GAUGE_COLUMNS:
            if c in after.columns and c != "touched_pages":
                assert (after[c] == expected[c].iloc[-1]).all(), c


@settings(PROFILE)
@given(
    traces(),
    st.data(),
    st.booleans(),
    st.integers(0, 1000),
    st.booleans(),
    st.sampled_from(["round-robin", "random"]),
    st.sampled_from([None, 1, 7, 1_000]),
)
def test_shifting_every_time_changes_nothing(
    trace, data, tight_host, policy_seed, sharing, scan_order, rows_per_group
):
    """Host time 0 is the trace's earliest access, wherever the trace's clock starts (up
    to the end of t_ns's range, across 2**63), from a table or from a file's statistics:
    under random balloon targets, host swapping allowed and forbidden, page sharing."""
    columns, options, latencies = trace
    shift_ns = data.draw(shifts(columns["t"]), label="shift_ns")
    options = {**options, "sharing": sharing, "scan_order": scan_order}
    with tempfile.TemporaryDirectory() as directory:
        runs = [
            balloonreplay.replay(
                as_input(
                    _table(columns, t=columns["t"].astype(np.uint64) + np.uint64(shift)),
                    columns,
                    directory,
                    f"shift{shift}.parquet",
                    rows_per_group,
                ),
                host=host_size(options, tight_host),
                latencies=latencies,
                policy=RandomPolicy(RandomPolicy.Params(seed=policy_seed)),
                balloon_rate_pages_per_s=1_000_000,
                **options,
            )
            for shift in (0, shift_ns)
        ]
    assert_frames_equal(runs[1].metrics, runs[0].metrics)
    for key in ("slowdown", "stall_total_ns", "end_ns"):
        assert runs[1].summary[key] == runs[0].summary[key], key


@settings(PROFILE)
@given(traces(), st.sampled_from([2, 3, 7]), st.integers(0, 1000), st.integers(0, 5))
def test_scaling_every_time_scales_the_results_times_and_no_count(
    trace, k, policy_seed, balloon_rate_mpages
):
    """Times in the trace and the configuration are one unit: stretch them all by k
    (balloon rates, in pages per second, shrink by k) and every decision the model takes
    is the same, so every count is, and every time in the results is k times as long.
    Random balloon targets, host swapping allowed and forbidden (blocking), a host half
    the VMs' size."""
    columns, options, latencies = trace
    # A rate the stretched run can take divided by k exactly, in whole pages per second.
    rate = balloon_rate_mpages * 1_000_000 * k

    def run(scale):
        return replay_scaled(
            trace,
            scale,
            host=host_size(options),
            policy=RandomPolicy(RandomPolicy.Params(seed=policy_seed, forbid_swap=0.5)),
            balloon_rate_pages_per_s=rate // scale,
        )

    base, stretched = run(1), run(k)
    assert_metrics_scaled(base, stretched, k)
    # A VM whose accesses all fall at one instant has a span of 1 ns by definition
    # (summarize_slowdowns), which does not stretch: its slowdown is 1 + stall / 1 ns.
    slowdowns = zip(base.summary["slowdown"], stretched.summary["slowdown"], strict=True)
    for v, (a, b) in enumerate(slowdowns):
        times = columns["t"][columns["vm"] == v]
        if times.max() > times.min():
            assert a == b, v
    assert stretched.summary["stall_total_ns"] == [s * k for s in base.summary["stall_total_ns"]]
    assert stretched.summary["end_ns"] == base.summary["end_ns"] * k


def test_the_properties_see_coupled_vms():
    """The independence property is not vacuous: on a host one page short, the same two
    VMs do couple (one's faults cost the other host swaps or blocked time)."""
    n = 400
    rng = np.random.default_rng(1)
    vm = np.tile([0, 1], n // 2)
    t = np.repeat(np.arange(n // 2) * 500, 2)
    page = rng.integers(0, 8, n)
    table = trace_table(vm, t, page, rng.random(n) < 0.5)
    options = dict(vms="6p", overhead_pages=[0, 0], quantum_ns=QUANTUM_NS, epoch_ns=5_000)
    fits = balloonreplay.replay(table, host="12p", **options).metrics
    short = balloonreplay.replay(table, host="11p", **options).metrics
    assert fits["host_swap_out"].sum() == 0
    assert short["host_swap_out"].sum() + short["blocked_ns"].sum() > 0
    assert not pd.DataFrame.equals(fits, short)


@settings(PROFILE)
@given(traces(), st.booleans(), st.integers(0, 1000))
def test_a_scanner_that_never_runs_shares_nothing(trace, tight_host, policy_seed):
    """Sharing on with a scan rate of 0 is sharing off: the page-sharing machinery (the
    content bookkeeping, the COW checks of every write) changes nothing until a page is
    scanned."""
    columns, options, latencies = trace
    off, idle = (
        balloonreplay.replay(
            _table(columns),
            host=host_size(options, tight_host),
            latencies=latencies,
            policy="none",
            **{**options, "sharing": sharing, "scan_rate_pages_per_s": 0},
        )
        for sharing in (False, True)
    )
    assert_frames_equal(idle.metrics, off.metrics)
    assert idle.summary["slowdown"] == off.summary["slowdown"]


@settings(PROFILE)
@given(traces(), st.booleans(), st.sampled_from(["round-robin", "random"]))
def test_within_one_vm_sharing_is_all_the_sharing_a_lone_vm_has(trace, tight_host, order):
    """ESX's salting (sharing only within a VM) changes nothing for a host of one VM."""
    columns, options, latencies = trace
    keep = columns["vm"] == 0
    lone = {key: np.asarray(value)[keep] for key, value in columns.items()}
    options = {
        **options,
        "vms": options["vms"][:1],
        "overhead_pages": options["overhead_pages"][:1],
    }
    salted, unsalted = (
        balloonreplay.replay(
            _table(lone),
            host=host_size(options, tight_host),
            latencies=latencies,
            policy="none",
            **{
                **options,
                "sharing": True,
                "scan_rate_pages_per_s": 3_000_000,
                "scan_order": order,
                "intra_vm_sharing_only": intra,
            },
        )
        for intra in (True, False)
    )
    assert salted.metrics["scanned_pages"].sum() > 0 or len(lone["t"]) < 2
    assert_frames_equal(salted.metrics, unsalted.metrics)


@settings(PROFILE)
@given(traces(), st.booleans(), st.integers(0, 1000), st.booleans(), st.integers(0, 2**32 - 1))
def test_renaming_pages_changes_nothing(trace, tight_host, policy_seed, sharing, rename_seed):
    """Page numbers are names: the guest policies, the host's choices and page sharing
    depend on frames, recency and contents, never on which number a page has. Each VM's
    pages renamed by a permutation of its own replay identically."""
    columns, options, latencies = trace
    renamed = renamed_pages(columns, np.random.default_rng(rename_seed))
    assume(not np.array_equal(renamed, columns["page"]))  # every VM touched one page only
    runs = [
        balloonreplay.replay(
            _table({**columns, "page": page}),
            host=host_size(options, tight_host),
            latencies=latencies,
            policy=RandomPolicy(RandomPolicy.Params(seed=policy_seed)),
            balloon_rate_pages_per_s=1_000_000,
            **{**options, "sharing": sharing},
        )
        for page in (columns["page"], renamed)
    ]
    assert_frames_equal(runs[1].metrics, runs[0].metrics)
    assert runs[1].summary["slowdown"] == runs[0].summary["slowdown"]


@settings(PROFILE)
@given(traces(), st.booleans(), st.booleans(), st.sampled_from([1, 7, 1_000]))
def test_without_a_host_policy_the_epoch_is_only_a_reporting_interval(
    trace, tight_host, sharing, epoch_quanta
):
    """With no host policy and the host's random choice of what to swap, nothing acts at
    an epoch boundary but the metrics row (and the clearing of access bits, which only the
    touched-page gauge and lru-sampled read): every total and every slowdown is the same
    at any epoch length."""
    columns, options, latencies = trace
    runs = [
        balloonreplay.replay(
            _table(columns),
            host=host_size(options, tight_host),
            latencies=latencies,
            policy="none",
            **{
                **options,
                "host_selection": "random",
                "sharing": sharing,
                "scan_rate_pages_per_s": 500_000,
                "epoch_ns": quanta * QUANTUM_NS,
            },
        )
        for quanta in (epoch_quanta, 3)
    ]
    for key in ("slowdown", "stall_total_ns", "end_ns", *metrics.TOTAL_COLUMNS):
        assert runs[0].summary[key] == runs[1].summary[key], key


class BalloonFromTheStart(HostPolicy):
    """One balloon target, set before the first access and kept."""

    name = "test-balloon-from-the-start"

    @dataclass
    class Params:
        target_pages: int = 0

    def start(self, snapshot):
        return Decision(balloon_target_pages=[self.params.target_pages])

    def decide(self, snapshot):
        return None


@settings(PROFILE)
@given(traces(), st.data())
def test_a_vm_ballooned_from_the_start_is_a_smaller_vm(trace, data):
    """Waldspurger's balloon equivalence (OSDI 2002, Fig. 2) on random traces: every guest
    policy, writes, file-backed pages, frees, latencies. Inflated before the first access
    (free balloon operations, so no stall tells them apart), a balloon of B pages in a VM
    of M leaves a VM of M - B frames: every metric but the balloon's own is the smaller
    VM's."""
    columns, options, latencies = trace
    keep = columns["vm"] == 0
    lone = {key: np.asarray(value)[keep] for key, value in columns.items()}
    config = data.draw(st.integers(2, 8), label="config_pages")
    balloon = data.draw(st.integers(1, config - 1), label="balloon_pages")
    overhead = options["overhead_pages"][0]
    common = {
        **options,
        "overhead_pages": [overhead],
        "balloon_rate_pages_per_s": 10**9,
    }
    ballooned = balloonreplay.replay(
        _table(lone),
        vms=f"{config}p",
        host=f"{config + overhead}p",
        latencies={**latencies, "balloon_page_ns": 0},
        policy=BalloonFromTheStart(BalloonFromTheStart.Params(balloon)),
        **{k: v for k, v in common.items() if k != "vms"},
    )
    smaller = balloonreplay.replay(
        _table(lone),
        vms=f"{config - balloon}p",
        host=f"{config - balloon + overhead}p",
        latencies={**latencies, "balloon_page_ns": 0},
        policy="none",
        **{k: v for k, v in common.items() if k != "vms"},
    )
    assert (ballooned.metrics["balloon_pages"] == balloon).all()
    balloon_columns = ["balloon_pages", "balloon_target_pages", "balloon_inflated"]
    assert_frames_equal(
        ballooned.metrics.drop(columns=balloon_columns),
        smaller.metrics.drop(columns=balloon_columns),
    )
    assert ballooned.summary["slowdown"] == smaller.summary["slowdown"]


@settings(PROFILE)
@given(traces(), st.booleans(), st.integers(0, 1000), st.booleans())
def test_a_vms_overhead_is_host_memory_it_cannot_use(trace, tight_host, policy_seed, sharing):
    """Machine pages used are backed frames + distinct shared contents + the VMs'
    overhead: a host of H pages with overheads o is a host of H - sum(o) without them,
    under random balloon targets, host swapping and sharing. Only the machine pages in use
    (host_used_pages) count the overhead."""
    columns, options, latencies = trace
    overhead = options["overhead_pages"]
    assume(sum(overhead) > 0)  # else the two runs are one
    runs = [
        balloonreplay.replay(
            _table(columns),
            host=host_size(each, tight_host),  # the same usable pages beside each overhead
            latencies=latencies,
            policy=RandomPolicy(RandomPolicy.Params(seed=policy_seed)),
            balloon_rate_pages_per_s=1_000_000,
            **{**each, "sharing": sharing},
        )
        for each in (options, {**options, "overhead_pages": [0] * len(overhead)})
    ]
    with_overhead, without = (run.metrics.copy() for run in runs)
    assert (with_overhead["host_used_pages"] == without["host_used_pages"] + sum(overhead)).all()
    assert_frames_equal(
        with_overhead.drop(columns="host_used_pages"), without.drop(columns="host_used_pages")
    )
    assert runs[0].summary["slowdown"] == runs[1].summary["slowdown"]


@settings(PROFILE)
@given(
    traces(),
    st.sampled_from(sorted(BUILTIN_POLICY_SPECS)),
    st.booleans(),
    st.data(),
    st.integers(0, 2**32 - 1),
    st.sampled_from([None, 5]),
)
def test_no_builtin_policy_sees_the_trace_clock_or_the_page_numbers(
    trace, policy_name, tight_host, data, rename_seed, rows_per_group
):
    """Every built-in policy decides on host time and on what pages do, never on the
    trace's own clock or its page numbers: shifting every time (across 2**63 too) and
    renaming every VM's pages changes none of its runs (sharing as the policy wants it;
    from a table or a file, which the MRC policy reads beside the replay)."""
    columns, options, latencies = trace
    shift_ns = data.draw(shifts(columns["t"]), label="shift_ns")
    moved = {
        **columns,
        "t": columns["t"].astype(np.uint64) + np.uint64(shift_ns),
        "page": renamed_pages(columns, np.random.default_rng(rename_seed)),
    }
    options = {key: value for key, value in options.items() if key != "sharing"}
    with tempfile.TemporaryDirectory() as directory:
        runs = [
            balloonreplay.replay(
                as_input(_table(table_columns), table_columns, directory, name, rows_per_group),
                host=host_size(options, tight_host),
                latencies=latencies,
                policy=BUILTIN_POLICY_SPECS[policy_name],
                **options,
            )
            for name, table_columns in (("a.parquet", columns), ("b.parquet", moved))
        ]
    assert_frames_equal(runs[1].metrics, runs[0].metrics)
    assert runs[1].summary["slowdown"] == runs[0].summary["slowdown"]


# The built-in policies with every period (p µs, at k = 1) stretched by k (MOM without
# KSM, whose scan rate is pages per sleep: sharing is off here).
STRETCHED_POLICY_SPECS = {
    "none": lambda p, k: "none",
    "host-swap": lambda p, k: "host-swap",
    "balloon": lambda p, k: "balloon",
    "esx": lambda p, k: f"esx:sample_period_s={p * k}e-6,realloc_period_s={p * k}e-6",
    "mom": lambda p, k: (
        f"mom:policy_interval_s={2 * p * k}e-6,monitor_interval_s={p * k}e-6,ksm=false"
    ),
    "xen-selfballoon": lambda p, k: (
        f"xen-selfballoon:selfballoon_interval_s={p * k}e-6,floor=false"
    ),
    "hyperv": lambda p, k: f"hyperv:period_s={p * k}e-6,minimum_pages=1",
    "mrc": lambda p, k: f"mrc:period_s={p * k}e-6",
    "free-page-reporting": lambda p, k: (
        f"free-page-reporting:report_delay_s={p * k}e-6,report_order=0,"
        "report_capacity_blocks=1,low_watermark_pages=0"
    ),
}


def test_every_builtin_policy_is_stretched():
    assert sorted(STRETCHED_POLICY_SPECS) == sorted(BUILTIN_POLICY_SPECS)


@settings(PROFILE)
@given(
    traces(),
    st.sampled_from(sorted(STRETCHED_POLICY_SPECS)),
    st.sampled_from([2, 3]),
    st.booleans(),
    # Periods longer than an epoch (1-6 µs) too: a period within one is a round at every
    # epoch, whatever its length.
    st.sampled_from([1, 7, 13]),
)
def test_no_builtin_policy_keeps_a_time_of_its_own(trace, policy_name, k, tight_host, period_us):
    """The time-scale property under every built-in policy, its periods stretched with
    everything else: no policy holds a time constant that is not a parameter, nor a rate
    in absolute time (each decides on counts per epoch and on its periods)."""
    columns, options, latencies = trace

    def run(scale):
        return replay_scaled(
            trace,
            scale,
            host=host_size(options, tight_host),
            policy=STRETCHED_POLICY_SPECS[policy_name](period_us, scale),
            balloon_rate_pages_per_s=6_000_000 // scale,
            sharing=False,
        )

    base, stretched = run(1), run(k)
    assert_metrics_scaled(base, stretched, k)
