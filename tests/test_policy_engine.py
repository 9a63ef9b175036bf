"""Host policies through the replay engine, on tiny traces: each rule shows in the metrics.

Time scales are shrunk (epochs of 100-200 us, policy periods to match) so that a few
thousand accesses cover many policy rounds; the rules themselves are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from engine_helpers import assert_frames_equal, check_metrics

import balloonreplay
from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, make_policy, register_policy
from balloonreplay.traces.ingest import write_canonical
from balloonreplay.traces.schema import TraceMetadata, make_batch

EPOCH_NS = 100_000
QUANTUM_NS = 10_000
FAST = {"epoch_ns": EPOCH_NS, "quantum_ns": QUANTUM_NS}
# Paging that costs 1 us instead of an SSD's 150 us: a VM under pressure still makes
# thousands of accesses per 100 us epoch, so per-epoch access bits see its working set
# (ESX samples over 30 s) and the runs stay short.
QUICK_PAGING = {
    name: 1000
    for name in (
        "guest_swap_in_ns",
        "guest_swap_out_ns",
        "host_swap_in_ns",
        "host_swap_out_ns",
        "disk_read_ns",
    )
}


def build_trace(streams, gap_ns: int = 1000, seed: int = 0) -> pa.Table:
    """One stream of page ids per VM, one access every `gap_ns` of trace time, merged in
    (t_ns, vm) order; 30% writes."""
    rng = np.random.default_rng(seed)
    vm = np.concatenate([np.full(len(s), v) for v, s in enumerate(streams)])
    t = np.concatenate([np.arange(len(s)) * gap_ns for s in streams])
    page = np.concatenate([np.asarray(s) for s in streams])
    order = np.lexsort((vm, t))
    write = rng.random(len(page)) < 0.3
    batch = make_batch(vm[order], t[order], page[order], write[order])
    return pa.Table.from_batches([batch])


def uniform(pages: int, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, pages, count)


def run(table, vms, host, policy, engine="numba", **options):
    return balloonreplay.replay(
        table, vms=vms, host=host, policy=policy, engine=engine, **{**FAST, **options}
    )


def per_epoch(metrics, column):
    """A (epochs x VMs) array of one metric."""
    return metrics.pivot(index="epoch", columns="vm", values=column).to_numpy()


# Short periods so the policies act many times in a few milliseconds of trace.
POLICY_SPECS = {
    "host-swap": "host-swap",
    "balloon": "balloon",
    "esx": "esx:sample_period_s=0.0002,realloc_period_s=0.0002",
    "mom": "mom:policy_interval_s=0.0002,monitor_interval_s=0.0001",
    "xen-selfballoon": "xen-selfballoon:selfballoon_interval_s=0.0001,floor=false",
    "hyperv": "hyperv:period_s=0.0001,minimum_pages=10",
    "mrc": "mrc:period_s=0.0001",
    # Blocks of 1 page: these guests of 120-200 frames never have the 64 MiB above the
    # low watermark that 2 MiB blocks need, and would report nothing.
    "free-page-reporting": "free-page-reporting:report_delay_s=0.0002,report_order=0",
}


@pytest.fixture(scope="module")
def small_trace():
    return build_trace([uniform(200, 1200, 1), uniform(120, 1200, 2)])


@pytest.mark.parametrize("name", sorted(POLICY_SPECS))
def test_every_policy_gives_equal_metrics_in_engine_and_reference(name, small_trace):
    """The engine and the plain-Python reference, each with a fresh policy instance,
    on an overcommitted host (320 guest pages on 240)."""
    spec = POLICY_SPECS[name]
    engine = run(small_trace, [200, 120], 240, spec, sharing=True)
    reference = run(small_trace, [200, 120], 240, spec, engine="reference", sharing=True)
    assert_frames_equal(engine.metrics, reference.metrics)
    check_metrics(engine.metrics, [200, 120])


def test_static_runs_an_unovercommitted_host_and_refuses_an_overcommitted_one(small_trace):
    result = run(small_trace, [200, 120], 320, "static")
    assert result.summary["host_swap_out"] == 0
    assert result.metrics["balloon_pages"].max() == 0
    with pytest.raises(ConfigError, match="does not overcommit"):
        run(small_trace, [200, 120], 319, "static")


def test_a_runtime_policy_gets_its_parameters_through_the_replay_api(small_trace):
    @dataclass
    class FixedParams:
        balloon_pages: int = 0

    class FixedBalloon(HostPolicy):
        name = "test-engine-fixed"
        Params = FixedParams

        def start(self, snapshot):
            return Decision(balloon_target_pages=[self.params.balloon_pages] * snapshot.num_vms)

    register_policy("test-engine-fixed", FixedBalloon)
    result = run(small_trace, [200, 120], 320, "test-engine-fixed:balloon_pages=30")
    assert result.policy == {"name": "test-engine-fixed", "params": {"balloon_pages": 30}}
    last = result.metrics[result.metrics["epoch"] == result.metrics["epoch"].max()]
    assert list(last["balloon_pages"]) == [30, 30]


@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_a_decide_given_to_a_policy_object_is_called_at_every_epoch(small_trace, engine):
    """The engine skips snapshots for a policy whose decide() is the base class's (it
    decides nothing); one given its own decide() on the instance still gets them."""
    policy = make_policy("none")
    seen = []

    def decide(snapshot):
        seen.append(snapshot.epoch)
        return Decision(balloon_target_pages=[25] * snapshot.num_vms)

    policy.decide = decide
    result = run(small_trace, [200, 120], 320, policy, engine=engine)
    epochs = int(result.metrics["epoch"].max())
    assert seen == list(range(epochs))  # every epoch end but the run's last row
    last = result.metrics[result.metrics["epoch"] == epochs]
    assert list(last["balloon_pages"]) == [25, 25]


def test_balloon_reclaims_without_host_swapping_and_blocks_when_it_cannot_keep_up():
    """Two VMs sweep 2600 pages, then use 1800, on a 4500-page host."""
    stream = np.concatenate([np.arange(2600), np.arange(5400) % 1800])
    table = build_trace([stream, stream], gap_ns=5000)
    options = {"latencies": QUICK_PAGING}
    fast = run(table, [3000, 3000], 4500, "balloon", balloon_rate_pages_per_s=10**9, **options)
    assert fast.summary["host_swap_out"] == 0
    balloons = per_epoch(fast.metrics, "balloon_pages")
    assert balloons.max() > 0
    # Both VMs are the same size: equal balloons.
    assert (np.abs(balloons[:, 0] - balloons[:, 1]) <= 1).all()
    slow = run(table, [3000, 3000], 4500, "balloon", balloon_rate_pages_per_s=1000, **options)
    assert slow.metrics["blocked_ns"].sum() > 0


def test_esx_swaps_only_when_ballooning_cannot_hold_free_memory_above_2_percent():
    """Two VMs of 3000 pages sweep 2600 pages, then keep using 1800, on a 4500-page host.

    With a fast balloon, ESX reclaims the cold pages by ballooning before free memory
    falls to 2% and never host-swaps, while the uncooperative host swaps; with a balloon
    too slow to keep up, free memory falls below 2% and ESX host-swaps too.
    """
    stream = np.concatenate([np.arange(2600), np.arange(5400) % 1800])
    table = build_trace([stream, stream], gap_ns=5000)
    spec = "esx:sample_period_s=0.0001,realloc_period_s=0.0001"
    options = {"latencies": QUICK_PAGING}
    none = run(table, [3000, 3000], 4500, "none", **options)
    assert none.summary["host_swap_out"] > 0
    fast = run(table, [3000, 3000], 4500, spec, balloon_rate_pages_per_s=10**9, **options)
    assert fast.summary["host_swap_out"] == 0
    assert fast.metrics["balloon_pages"].max() > 0
    free = 4500 - per_epoch(fast.metrics, "backed_pages").sum(axis=1)
    assert (free >= 0.02 * 4500).all() and (free < 0.04 * 4500).any()  # soft, never hard
    slow = run(table, [3000, 3000], 4500, spec, balloon_rate_pages_per_s=1000, **options)
    assert slow.summary["host_swap_out"] > 0
    free = 4500 - per_epoch(slow.metrics, "backed_pages").sum(axis=1)
    assert (free < 0.02 * 4500).any()


def test_a_vm_not_allowed_to_make_the_host_swap_allocates_until_the_host_is_full():
    """What ESX's low state does here (esx.py's docstring): the VMs above their targets
    get allow_host_swap=False, which the engine consults only once the host is full.

    VM 0 (not allowed) touches 300 pages, VM 1 (allowed) 100 pages and then hits them, on
    250 host pages. VM 0 takes machine pages while any are free, down to 0% (ESX would
    have stopped it at 1%), and first blocks in the epoch the host fills: holding 150."""

    class LowState(HostPolicy):
        name = "test-engine-low-state"

        def start(self, snapshot):
            return Decision(allow_host_swap=[False, True])

    register_policy("test-engine-low-state", LowState)
    table = build_trace([np.arange(300), np.arange(4000) % 100])
    m = run(table, [300, 100], 250, "test-engine-low-state").metrics
    vm0 = m[m["vm"] == 0].set_index("epoch")
    full = vm0.index[vm0["host_used_pages"] == 250][0]
    first_blocked = vm0.index[vm0["blocked_ns"] > 0][0]
    assert first_blocked in (full, full + 1)  # blocked within the quanta after it filled
    assert vm0.loc[full, "backed_pages"] == 150 == vm0.loc[first_blocked, "backed_pages"]
    assert m["host_swap_out"].sum() > 0  # the emergency quantum after VM 1 ends


def test_esx_idle_tax_gives_the_active_vm_more_memory_than_the_idle_one():
    """VM 0 keeps drawing from 220 pages; VM 1 touches 220 pages once and then only 10.
    Equal shares, 400 pages for 440 used. Raising the idle tax from 0 to 0.75 moves
    memory from the idle VM to the active one."""
    count = 30_000
    active = uniform(220, count, 7)
    idle = np.concatenate([np.arange(220), np.arange(count - 220) % 10])
    table = build_trace([active, idle], gap_ns=100)
    results = {}
    for tax in (0.0, 0.75):
        spec = f"esx:tax={tax},sample_period_s=0.0001,realloc_period_s=0.0001"
        result = run(
            table, [250, 250], 400, spec, latencies=QUICK_PAGING, balloon_rate_pages_per_s=10**9
        )
        balloons = per_epoch(result.metrics, "balloon_pages")
        faults = result.metrics.groupby("vm")["guest_faults"].sum().to_numpy()
        results[tax] = (balloons[len(balloons) // 2 :].mean(axis=0), faults)
    (balloon_untaxed, faults_untaxed), (balloon_taxed, faults_taxed) = results[0.0], results[0.75]
    assert balloon_taxed[1] > balloon_untaxed[1]  # more taken from the idle VM
    assert balloon_taxed[0] < balloon_untaxed[0]  # less from the active one
    assert faults_taxed[0] < faults_untaxed[0] / 2


def test_mom_shrinks_guest_memory_at_most_5_percent_per_round():
    table = build_trace([uniform(300, 3000, 3), uniform(300, 3000, 4)], gap_ns=500)
    policy = make_policy("mom:policy_interval_s=0.0001,monitor_interval_s=0.0001,ksm=false")
    result = run(table, [300, 300], 400, policy, balloon_rate_pages_per_s=10**9)
    guest = 300 - per_epoch(result.metrics, "balloon_pages")
    assert guest.min() < 300
    drop = guest[:-1] - guest[1:]
    assert (drop <= np.ceil(0.05 * guest[:-1]) + 1).all()


def test_xen_selfballoon_shrinks_unused_memory_by_an_eighth_of_the_gap_per_step():
    """One VM of 1000 pages using only 100: at each 100 us step the guest sets its memory
    1/8 of the gap closer to the goal (100 resident + 10% of 1000 + the high watermark of
    1000 pages, 93: min_free_kbytes = sqrt(16 * 4000) = 252 KiB = 63 pages, plus twice
    63 // 4), so the gap decays geometrically."""
    table = build_trace([np.arange(4000) % 100], gap_ns=1000)
    policy = make_policy("xen-selfballoon:selfballoon_interval_s=0.0001,floor=false")
    seen = []
    decide = policy.decide

    def recording_decide(snapshot):
        decision = decide(snapshot)
        seen.append((snapshot, decision))
        return decision

    policy.decide = recording_decide
    result = run(table, [1000], 2000, policy, balloon_rate_pages_per_s=10**9)
    for snapshot, decision in seen:
        # The kernel's step from the memory the guest has now (integer division).
        current = 1000 - int(snapshot.balloon_pages[0])
        goal = int(snapshot.resident_pages[0]) + 100 + 93
        expected = current - (current - goal) // 8 if current > goal else goal
        assert 1000 - int(decision.balloon_target_pages[0]) == expected
    guest = 1000 - per_epoch(result.metrics, "balloon_pages")[:, 0]
    gaps = guest - 293
    shrinking = gaps[5:][gaps[5:] > 50]  # once all 100 pages are resident
    assert len(shrinking) >= 10
    assert np.allclose(shrinking[1:] / shrinking[:-1], 7 / 8, atol=0.03)
    assert gaps[-1] < 16


def test_hyperv_keeps_a_20_percent_buffer_over_resident_memory():
    table = build_trace([np.arange(4000) % 150], gap_ns=1000)
    result = run(
        table, [1000], 2000, "hyperv:period_s=0.0001,minimum_pages=10",
        balloon_rate_pages_per_s=10**9,
    )  # fmt: skip
    guest = 1000 - per_epoch(result.metrics, "balloon_pages")[:, 0]
    # Demand: resident pages plus what the guest had to swap out in the epoch.
    demand = per_epoch(result.metrics, "resident_pages") + per_epoch(
        result.metrics, "guest_swap_out"
    )
    # Each epoch's memory comes from the previous epoch's demand, 20% on top.
    assert (guest[1:] == np.ceil(demand[:-1, 0] * 1.2)).all()
    assert guest[-1] == 180


def test_mrc_gives_more_memory_to_the_vm_with_the_steeper_curve(tmp_path):
    """VM 0 draws from 300 pages, VM 1 from 900; 400 pages for both. Each page saves VM 0
    three times the misses it saves VM 1, so mrc gives VM 0 (about) its 300 pages, and
    has fewer misses overall than ballooning both VMs alike."""
    table = build_trace([uniform(300, 20_000, 5), uniform(900, 20_000, 6)], gap_ns=100)
    path = tmp_path / "two.parquet"
    write_canonical(table.to_batches(), path, TraceMetadata(source="test", config_pages=[900, 900]))
    options = {"latencies": QUICK_PAGING, "balloon_rate_pages_per_s": 10**9}
    spec = f"mrc:period_s=0.0001,min_percent=5,trace_path={path}"
    mrc = run(path, [900, 900], 400, spec, **options)
    memory = 900 - per_epoch(mrc.metrics, "balloon_pages")
    late = memory[len(memory) // 2 :].mean(axis=0)
    assert late[0] > late[1]
    assert late[0] >= 280
    proportional = run(path, [900, 900], 400, "balloon", **options)
    assert mrc.summary["guest_faults"] < proportional.summary["guest_faults"]


def test_free_page_reporting_sets_no_targets(small_trace):
    """Without frees in the trace the model has no backed free frames to report, so the
    run equals the null policy's (see the policy's docstring)."""
    policy = make_policy("free-page-reporting:report_delay_s=0.0002")
    reporting = run(small_trace, [200, 120], 400, policy)
    none = run(small_trace, [200, 120], 400, "none")
    assert_frames_equal(reporting.metrics, none.metrics)
    # It ran its passes; these guests never had their low watermark + 32 blocks of 512
    # pages (64 MiB) free, so there was nothing to report.
    assert len(policy.reported_pages) == reporting.metrics["epoch"].max()
    assert all(r.sum() == 0 for r in policy.reported_pages)
    # A guest of 2000 frames using 100, in 16-page blocks: its gate is the low watermark
    # (111 pages) + 32 x 16 = 623 free pages. The first pass (200 us after the start) finds
    # 1900 free: 118 blocks, a budget of DIV_ROUND_UP(118, 512) + 1 = 2 requests of 32
    # blocks, 1024 pages; the next (400 us) the 54 blocks left (864 pages); then it idles.
    table = build_trace([np.arange(3000) % 100], gap_ns=1000)
    policy = make_policy("free-page-reporting:report_delay_s=0.0002,report_order=4")
    run(table, [2000], 4000, policy)
    reported = [int(r[0]) for r in policy.reported_pages]
    assert reported[:4] == [0, 1024, 1024, 1888] and set(reported[3:]) == {1888}


def test_free_page_reporting_unbacks_freed_frames():
    """A guest of 2000 frames writes pages 0..1199, frees them, idles on one page for a
    while, then touches pages 0..599 again. Freed frames stay backed under `none`; under
    free page reporting (16-page blocks, a 200 us delay) each free requests a pass one
    delay later, which unbacks the longest-free frames, and the reused frames come back
    as zero pages."""
    touched, reused = 1200, 600
    pages = np.concatenate(
        [np.arange(touched), np.arange(touched), np.full(1000, 1500), np.arange(reused)]
    )
    free = np.zeros(len(pages), dtype=bool)
    free[touched : 2 * touched] = True
    t = np.arange(len(pages)) * 1000
    table = pa.Table.from_batches([make_batch(0, t, pages, ~free, free=free)])
    spec = "free-page-reporting:report_delay_s=0.0002,report_order=4"
    reporting = run(table, [2000], 4000, spec)
    none = run(table, [2000], 4000, "none")
    reference = run(table, [2000], 4000, spec, engine="reference")
    assert_frames_equal(reporting.metrics, reference.metrics)
    for result in (reporting, none):
        assert result.metrics["guest_frees"].sum() == touched
        check_metrics(result.metrics, [2000])
    # Under `none` the freed frames stay backed until the run ends (page 1500 reuses the
    # last frame freed, LIFO, so it needs no machine page).
    assert none.metrics["reported_free_pages"].sum() == 0
    assert none.metrics["host_used_pages"].max() == touched
    assert none.metrics["host_used_pages"].iloc[-1] == touched
    # Reporting: the first passes (200 and 400 us) counted never-used frames as reported;
    # as the guest took them that count fell to the 800 never used. The guest frees 100
    # frames an epoch from epoch 24 on (2.4-2.5 ms); the boundary after a free requests a
    # pass two epochs on, which finds fewer than its budget (64 blocks) unreported,
    # reports all whole blocks and idles until the next free's request. Passes at 2.7,
    # 3.0, 3.3 and 3.6 ms: free 1100, 1400, 1700 and 2000 frames over 800, 1088, 1392 and
    # 1696 reported: 18, 19, 19 and 19 blocks, unbacked in the epochs after them.
    m = reporting.metrics.set_index("epoch")
    unbacked = m["reported_free_pages"]
    assert unbacked[unbacked > 0].to_dict() == {27: 288, 30: 304, 33: 304, 36: 304}
    assert unbacked.sum() == touched  # every freed frame, before the guest reuses any
    # Page 1500 and the 600 reused pages all need machine pages (none under `none`).
    assert int(m["host_used_pages"].iloc[-1]) == 1 + reused
    first_touches = touched + 1 + reused
    assert reporting.metrics["zero_fills"].sum() == none.metrics["zero_fills"].sum()
    assert none.metrics["zero_fills"].sum() == first_touches


def test_mrc_follows_the_replayed_trace_it_is_attached_to(tmp_path):
    """Without trace_path, mrc reads the streams of the trace being replayed (the replay
    attaches it): the same run as naming the file, unlike the power-law fallback."""
    from balloonreplay.policies.mrc import MrcPolicy

    table = build_trace([uniform(300, 20_000, 5), uniform(900, 20_000, 6)], gap_ns=100)
    path = tmp_path / "two.parquet"
    write_canonical(table.to_batches(), path, TraceMetadata(source="test", config_pages=[900, 900]))
    options = {"latencies": QUICK_PAGING, "balloon_rate_pages_per_s": 10**9}
    spec = "mrc:period_s=0.0001,min_percent=5"
    named = run(path, [900, 900], 400, f"{spec},trace_path={path}", **options)
    attached = run(path, [900, 900], 400, spec, **options)
    assert_frames_equal(named.metrics, attached.metrics)

    class Blind(MrcPolicy):
        def attach(self, trace):
            pass

    blind = run(path, [900, 900], 400, Blind(make_policy(spec).params), **options)
    assert not blind.metrics["balloon_pages"].equals(attached.metrics["balloon_pages"])


def test_balloon_never_host_swaps_while_balloons_can_reclaim():
    """Two VMs of 1000 pages, each touching 900, on 1200 host pages: the balloon policy
    blocks VMs until its balloons have reclaimed enough, and never swaps at the host
    (the emergency quantum, which lets the host swap whatever the policy, waits while a
    balloon is still inflating)."""
    table = build_trace([uniform(900, 40_000, 1), uniform(900, 40_000, 2)], gap_ns=200)
    result = run(table, [1000, 1000], 1200, "balloon", latencies=QUICK_PAGING)
    m = result.metrics
    assert m["balloon_inflated"].sum() > 0 and m["blocked_ns"].sum() > 0
    assert m["host_swap_out"].sum() == 0
    reference = run(table, [1000, 1000], 1200, "balloon", "reference", latencies=QUICK_PAGING)
    assert_frames_equal(m, reference.metrics)


@pytest.mark.parametrize(
    ("spec", "sharing", "expected"),
    [("esx", None, True), ("esx", False, False), ("mom", None, True),
     ("mom:ksm=false", None, False), ("none", None, False), ("none", True, True)],
)  # fmt: skip
def test_page_sharing_defaults_to_what_the_policy_shares(spec, sharing, expected):
    table = build_trace([uniform(50, 200, 1)])
    result = run(table, [100], 200, spec, sharing=sharing)
    assert result.config.sharing is expected
