"""Free events (the trace's `free` column): the guest returns a page's frame to its free
list. What happens to the frame's host state, to the page, and what reads the column."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from engine_helpers import assert_frames_equal, check_metrics
from test_generate import columns, one_vm_spec, table_of

import balloonreplay
from balloonreplay.errors import ConfigError, TraceError
from balloonreplay.policies import Decision, HostPolicy
from balloonreplay.traces.ingest import write_canonical
from balloonreplay.traces.io import write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch

GAP_NS = 1_000
OPTIONS = {"quantum_ns": 10_000, "epoch_ns": 100_000}


def both(table, **options):
    """The engine's and the reference's results, checked equal."""
    engine = balloonreplay.replay(table, **{**OPTIONS, **options})
    reference = balloonreplay.replay(table, engine="reference", **{**OPTIONS, **options})
    assert_frames_equal(engine.metrics, reference.metrics)
    assert engine.summary["slowdown"] == reference.summary["slowdown"]
    return engine


def trace(pages, frees, writes=None, vm=0):
    pages = np.asarray(pages)
    frees = np.asarray(frees, dtype=bool)
    writes = ~frees if writes is None else np.asarray(writes, dtype=bool)
    t = np.arange(len(pages)) * GAP_NS
    return pa.Table.from_batches([make_batch(vm, t, pages, writes & ~frees, free=frees)])


def test_a_freed_frame_is_reused_without_a_new_machine_page():
    # Page 0 written, freed; page 1 takes the freed frame (still backed): one machine page.
    result = both(trace([0, 0, 1], [False, True, False]), vms="4p", host="8p")
    m = result.metrics
    assert m["guest_frees"].sum() == 1 and m["accesses"].sum() == 2
    assert m["zero_fills"].sum() == 2 and m["guest_faults"].sum() == 2
    assert m["host_used_pages"].max() == 1
    check_metrics(m, [4])


def test_a_freed_page_comes_back_as_a_first_touch_not_from_swap():
    # One frame: page 0 written, page 1 evicts it to swap, page 0 is freed while in swap,
    # then touched again: a zero-fill, not a swap-in.
    result = both(trace([0, 1, 0, 0], [False, False, True, False]), vms="1p", host="4p")
    m = result.metrics.sum()
    assert m["guest_swap_out"] == 2 and m["guest_swap_in"] == 0
    assert m["zero_fills"] == 3


def test_reusing_a_host_swapped_free_frame_is_a_false_swap_read():
    """Page 0 is written, the host swaps its frame out, the guest frees the page and then
    zero-fills page 1 into that frame: the host reads back a page the guest overwrites
    (VSwapper's false swap read)."""

    class SwapFirstFrame(HostPolicy):
        name = "test-swap-all"

        def decide(self, snapshot):
            return Decision(
                host_swap_target_pages=snapshot.backed_pages + snapshot.host_swapped_pages
            )

    pages = [0, 0, 1]
    frees = [False, True, False]
    table = pa.Table.from_batches(
        [make_batch(0, np.array([0, 200_000, 300_000]), pages, [True, False, True], free=frees)]
    )
    result = both(table, vms="2p", host="4p", policy=SwapFirstFrame())
    m = result.metrics.sum()
    assert m["host_swap_out"] >= 1
    assert m["false_swap_reads"] == 1 and m["stale_swap_reads"] == 0


def test_free_page_rows_of_a_parquet_file_take_the_fast_path(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    page = rng.integers(0, 50, n)
    free = rng.random(n) < 0.1
    batch = make_batch(np.arange(n) % 2, np.arange(n) * 500, page, rng.random(n) < 0.3, free=free)
    meta = TraceMetadata(source="test", config_pages=[20, 20], dense=True, pages_per_vm=[50, 50])
    path = tmp_path / "free.parquet"
    write_trace([batch], path, meta)
    fast = balloonreplay.replay(path, host="30p", batch_rows=333, **OPTIONS)
    reference = balloonreplay.replay(path, host="30p", engine="reference", **OPTIONS)
    assert_frames_equal(fast.metrics, reference.metrics)
    assert fast.metrics["guest_frees"].sum() == int(free.sum())


def test_heap_release_free_emits_free_rows_top_down():
    phase = {"kind": "heap", "footprint": 200, "accesses": 4000, "release": "free"}
    cols = columns(table_of(one_vm_spec(phase)))
    freed = cols["page"][cols["free"]]
    assert np.array_equal(freed, np.arange(199, -1, -1))
    assert not cols["write"][cols["free"]].any()


def test_the_lru_filter_refuses_a_trace_with_frees(tmp_path):
    table = trace([0, 1, 0, 2], [False, False, True, False])
    with pytest.raises(TraceError, match=r"access #2.*no free events.*--lru-filter"):
        write_canonical(
            table.to_batches(), tmp_path / "f.parquet", TraceMetadata(), lru_filter_pages=2
        )
    assert not (tmp_path / "f.parquet").exists()


def test_balloons_moving_unbacked_frames_do_not_keep_a_blocked_vm_waiting():
    """VM 0 needs machine pages on a full host that may not swap; VMs 1 and 2 trade a
    balloon of unbacked frames back and forth every epoch. That returns no memory, so the
    emergency rule still lets the host swap and VM 0 finishes at once (it used to wait
    for as long as the trading went on)."""

    class Trade(HostPolicy):
        name = "test-trade"

        def start(self, s):
            return Decision(balloon_target_pages=[0, 9, 0], allow_host_swap=False)

        def decide(self, s):
            return Decision(balloon_target_pages=[0, 0, 9] if s.epoch % 2 == 0 else [0, 9, 0])

    table = pa.Table.from_batches(
        [make_batch(np.zeros(3), np.array([0, 1, 2]), np.array([0, 1, 2]), np.ones(3, bool))]
    )
    options = {
        "vms": ["4p", "10p", "10p"],
        "host": "2p",
        "quantum_ns": 1000,
        "epoch_ns": 1000,
        "balloon_rate_pages_per_s": 1_000_000,
        "latencies": {"balloon_page_ns": 0},
    }
    engine = balloonreplay.replay(table, policy=Trade(), **options)
    reference = balloonreplay.replay(table, policy=Trade(), engine="reference", **options)
    assert_frames_equal(engine.metrics, reference.metrics)
    blocked = engine.metrics.groupby("vm")["blocked_ns"].sum()[0]
    assert blocked <= 2 * options["quantum_ns"]
    assert engine.metrics["host_swap_out"].sum() >= 1


def test_a_freed_dirty_file_page_is_written_back_and_read_from_disk_again():
    table = pa.Table.from_batches(
        [
            make_batch(
                0,
                np.array([0, 10, 20]),
                np.array([0, 0, 0]),
                np.array([True, False, False]),
                file_backed=np.array([True, True, True]),
                free=np.array([False, True, False]),
            )
        ]
    )
    m = both(table, vms="4p", host="8p").metrics.sum()
    assert m["disk_writes"] == 1 and m["disk_reads"] == 2 and m["zero_fills"] == 0


class SwapOutAtEpoch0(HostPolicy):
    """Host-swaps one frame of VM 0 at the end of epoch 0; forbids on-demand host
    swapping throughout if ``forbid``."""

    name = "test-swap-out-at-epoch-0"

    @dataclass
    class Params:
        forbid: bool = False

    def start(self, snapshot):
        return Decision(allow_host_swap=not self.params.forbid)

    def decide(self, snapshot):
        return Decision(
            host_swap_target_pages=[1] if snapshot.epoch == 0 else None,
            allow_host_swap=not self.params.forbid,
        )


@pytest.mark.parametrize("forbid", [False, True])
def test_freeing_a_dirty_file_page_from_a_host_swapped_frame_is_a_silent_swap_write(forbid):
    """A dirty file page G sits in a frame the host swapped out; the guest frees G, so it
    writes G back to disk, and reading the frame for that write makes the host swap it in
    first, as an eviction's write-back does. (Found by a model audit: the free wrote the
    page back from a frame the host did not hold, with no host swap-in.) With host
    swapping forbidden and the host full (anonymous page H took the last machine page),
    the free blocks until the emergency quantum lets the host swap H's frame out."""
    t = np.array([0, 200_000, 300_000, 400_000])
    table = pa.Table.from_batches(
        [
            make_batch(
                0,
                t,
                np.array([0, 1, 0, 0]),  # G written, H written, G freed, G read again
                np.array([True, True, False, False]),
                file_backed=np.array([True, False, True, True]),
                free=np.array([False, False, True, False]),
            )
        ]
    )
    policy = SwapOutAtEpoch0(SwapOutAtEpoch0.Params(forbid=forbid))
    m = both(table, vms="2p", host="1p", policy=policy).metrics.sum()
    assert m["silent_swap_writes"] == 1 and m["disk_writes"] == 1
    # G's frame swapped in for the write-back; the host, full, first swapped out H's.
    assert m["host_swap_in"] == 1 and m["host_swap_out"] == 2
    assert m["disk_reads"] == 2  # G's first touch and its read after the free
    assert (m["blocked_ns"] > 0) == forbid


def test_a_policy_giving_the_wrong_number_of_values_is_named():
    class Short(HostPolicy):
        name = "test-short"

        def start(self, s):
            return Decision(unback_free_pages=[3])

    table = trace([0, 1], [False, False], vm=np.array([0, 1]))
    for engine in ("numba", "reference"):
        with pytest.raises(ConfigError, match=r"decision\.unback_free_pages.*2 VMs"):
            balloonreplay.replay(table, vms="4p", policy=Short(), engine=engine, **OPTIONS)


def test_balloon_credit_is_dropped_over_skipped_idle_quanta():
    """A fractional balloon rate (1.5 pages per 1 us quantum) leaves credit; the reference
    drops it in every quantum at the target, idle ones included, and so must the engine
    when it jumps over idle quanta (it inflated 2 pages at epoch 2 instead of 1)."""

    class Target(HostPolicy):
        name = "test-target"

        def start(self, s):
            return Decision(balloon_target_pages=[9])

        def decide(self, s):
            if s.epoch == 0:
                return Decision(balloon_target_pages=s.balloon_pages.copy())
            return Decision(balloon_target_pages=[9]) if s.epoch == 1 else None

    table = trace([0, 1], [False, False])
    table = table.set_column(1, "t_ns", pa.array([0, 10_000], pa.uint64()))
    options = {
        "vms": "10p",
        "host": "20p",
        "quantum_ns": 1000,
        "epoch_ns": 1000,
        "balloon_rate_pages_per_s": 1_500_000,
        "latencies": {"balloon_page_ns": 0},
    }
    engine = balloonreplay.replay(table, policy=Target(), **options)
    reference = balloonreplay.replay(table, policy=Target(), engine="reference", **options)
    assert_frames_equal(engine.metrics, reference.metrics)
