"""Waldspurger (OSDI 2002, Fig. 2): a VM configured with M pages and ballooned down to
M - B behaves like a VM configured with M - B pages once the balloon has settled, and the
host never swaps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import balloonreplay
from balloonreplay.engine.config import GUEST_POLICIES
from balloonreplay.latencies import Latencies
from balloonreplay.policies import Decision, HostPolicy
from balloonreplay.traces.schema import make_batch

M, B = 800, 400
QUANTUM_NS = 100_000
EPOCH_NS = 500_000
# Zero latencies keep both VMs on the trace's own timeline, so epochs line up row by row.
NO_LATENCY = Latencies(**dict.fromkeys(Latencies.__dataclass_fields__, 0))


class BalloonAt(HostPolicy):
    """Sets one VM's balloon target at a given epoch (-1: before the first access)."""

    name = "test-balloon-at"

    @dataclass
    class Params:
        target_pages: int = 0
        epoch: int = -1

    def start(self, snapshot):
        return self.decide(snapshot)

    def decide(self, snapshot):
        if snapshot.epoch == self.params.epoch:
            return Decision(balloon_target_pages=[self.params.target_pages])
        return None


def zipf_trace(n=50_000, distinct=2_000, seed=3):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, distinct + 1) ** 0.9
    pages = rng.choice(distinct, size=n, p=weights / weights.sum())
    writes = rng.random(n) < 0.3
    return make_batch(0, np.arange(n) * 100, pages, writes)


def run(batch, config_pages, guest_policy, policy=None):
    return balloonreplay.replay(
        batch,
        vms=f"{config_pages}p",
        host=f"{M}p",
        guest_policy=guest_policy,
        policy=policy or "none",
        latencies=NO_LATENCY,
        balloon_rate_pages_per_s=10**9,  # settles within one quantum
        quantum_ns=QUANTUM_NS,
        epoch_ns=EPOCH_NS,
        debug_checks=True,
    )


@pytest.mark.parametrize("guest_policy", GUEST_POLICIES)
def test_ballooned_from_the_start_equals_smaller_vm(guest_policy):
    batch = zipf_trace()
    ballooned = run(batch, M, guest_policy, BalloonAt(BalloonAt.Params(target_pages=B)))
    smaller = run(batch, M - B, guest_policy)
    assert (ballooned.metrics["balloon_pages"] == B).all()
    np.testing.assert_array_equal(
        ballooned.metrics["guest_faults"], smaller.metrics["guest_faults"]
    )
    assert ballooned.summary["host_swap_out"] == 0 == smaller.summary["host_swap_out"]
    assert (ballooned.metrics["backed_pages"] <= M - B).all()


def test_ballooned_mid_run_equals_smaller_vm_once_settled():
    # With LRU the guest evicts its least recently used pages while inflating, leaving the
    # M - B most recent ones: exactly what the smaller VM holds at that moment.
    batch = zipf_trace()
    settle_epoch = 3
    policy = BalloonAt(BalloonAt.Params(target_pages=B, epoch=settle_epoch))
    ballooned = run(batch, M, "lru", policy)
    smaller = run(batch, M - B, "lru")
    after = ballooned.metrics["epoch"] > settle_epoch
    assert after.sum() > 3
    assert (ballooned.metrics.loc[after, "balloon_pages"] == B).all()
    before = ~after
    assert (
        ballooned.metrics.loc[before, "guest_faults"].sum()
        < smaller.metrics.loc[before, "guest_faults"].sum()
    )
    np.testing.assert_array_equal(
        ballooned.metrics.loc[after, "guest_faults"], smaller.metrics.loc[after, "guest_faults"]
    )
    assert ballooned.summary["host_swap_out"] == 0
    assert ballooned.summary["guest_swap_out"] > 0  # inflation forced guest reclaim
