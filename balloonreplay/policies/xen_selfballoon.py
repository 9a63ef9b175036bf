"""Xen self-ballooning: each guest sizes its own balloon from its committed memory.

Followed: Linux ``drivers/xen/xen-selfballoon.c`` (Dan Magenheimer, 2011; removed from
the kernel with tmem in 5.x). Every ``selfballoon_interval`` (5 s) the guest computes

    goal = Committed_AS + totalreserve_pages + selfballoon_reserved (10% of its RAM)

and moves its current memory toward it: up by the whole gap (``selfballoon_uphysteresis``
= 1), down by 1/8 of the gap (``selfballoon_downhysteresis`` = 8), never below a floor
that is a piecewise-linear function of its memory (ending in a ~3% slope) unless
``selfballoon_min_usable_mb`` is set. No host involvement: the host only sees balloons.

Committed_AS (memory the guest's processes have been promised, touched or not) is not in
the snapshot: a trace records accesses, not allocations. The guest's resident pages
(frames holding a page) stand in for it. That goal is lower than the kernel's for a guest
that allocated memory it has not touched yet, and makes never-touched memory the first
to go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import PeriodicTimer, check_period, check_within
from balloonreplay.policies.host_swap import linux_watermarks_pages
from balloonreplay.units import PAGE_SIZE_BYTES

PAGES_PER_MIB = (1 << 20) // PAGE_SIZE_BYTES


def selfballoon_floor_pages(total_pages: int, reserve_pages: int, min_usable_mb: float = 0) -> int:
    """The floor xen-selfballoon.c puts under its target (``floor_pages``)."""
    if min_usable_mb:
        return reserve_pages + int(min_usable_mb * PAGES_PER_MIB)
    useful = total_pages - reserve_pages
    mib = PAGES_PER_MIB
    if useful < 16 * mib:
        return total_pages  # not worth ballooning
    if useful < 64 * mib:
        return reserve_pages + 16 * mib + ((useful - 16 * mib) >> 1)
    if useful < 512 * mib:
        return reserve_pages + 40 * mib + ((useful - 40 * mib) >> 3)
    return reserve_pages + 99 * mib + ((useful - 99 * mib) >> 5)


class XenSelfBalloonPolicy(HostPolicy):
    name = "xen-selfballoon"
    description = "Xen self-ballooning: goal = committed + reserves; grow at once, shrink by 1/8"

    @dataclass
    class Params:
        # xen-selfballoon.c defaults (sysfs tunables of the same names). The kernel takes
        # the interval in whole seconds and refuses 0 (store_selfballoon_interval: -EINVAL);
        # here it must be > 0, and a fraction of a second is allowed so that a test or a
        # study can shrink time with its trace (as `selfballoon_min_usable_mb` allows a
        # fraction of a MiB for small guests).
        selfballoon_interval_s: float = 5.0
        selfballoon_downhysteresis: int = 8
        selfballoon_uphysteresis: int = 1
        # 0: the piecewise-linear floor. The sysfs tunable is whole MiB; a fraction here
        # lets a scaled-down guest keep the floor its full-size original would have.
        selfballoon_min_usable_mb: float = 0.0
        # selfballoon_reserved_mb defaults to 10% of the guest's RAM at start-up.
        reserved_percent: float = 10.0
        # Apply the floor. A floor sized for real guests (tens of MiB) swallows the
        # kilobyte-sized memories of small test configurations; tests may turn it off.
        floor: bool = True

    def __init__(self, params=None):
        super().__init__(params)
        self._timer = PeriodicTimer(self.params.selfballoon_interval_s)
        self.current_pages: np.ndarray | None = None  # each guest's target memory (totalram)

    def check_params(self) -> None:
        p = self.params
        # xen-selfballoon.c refuses an interval of 0 (store_selfballoon_interval).
        check_period(p, "selfballoon_interval_s", "the worker interval")
        for key in ("selfballoon_downhysteresis", "selfballoon_uphysteresis"):
            if getattr(p, key) < 1:
                raise ConfigError(
                    f"policy.{key}",
                    f"hysteresis must be >= 1 (xen-selfballoon.c refuses 0), got {getattr(p, key)}",
                )
        # The sysfs tunable is an unsigned number of MiB.
        check_within(p, "selfballoon_min_usable_mb", 0.0, None)
        check_within(p, "reserved_percent", 0.0, 100.0)

    def _setup(self, snapshot: Snapshot) -> None:
        self.check_params()
        config = snapshot.config_pages.astype(np.int64)
        self.current_pages = config - snapshot.balloon_pages.astype(np.int64)
        # totalreserve_pages: the zone high watermarks (mm/page_alloc.c) of the guest.
        self.totalreserve = np.array([linux_watermarks_pages(int(c))[2] for c in config])
        self.reserved = (config * self.params.reserved_percent / 100.0).astype(np.int64)
        if self.params.floor:
            self.floor = np.array(
                [
                    selfballoon_floor_pages(int(c), int(r), self.params.selfballoon_min_usable_mb)
                    for c, r in zip(config, self.totalreserve, strict=True)
                ]
            )
        else:
            self.floor = np.ones_like(config)
        self.floor = np.minimum(self.floor, config)

    def start(self, snapshot: Snapshot) -> Decision:
        self._setup(snapshot)
        self._timer.due(snapshot.t_ns)
        return Decision(
            balloon_target_pages=np.zeros(snapshot.num_vms, dtype=np.int64),
            allow_host_swap=True,
        )

    def goal_pages(self, snapshot: Snapshot) -> np.ndarray:
        committed = snapshot.resident_pages.astype(np.int64)  # stands in for Committed_AS
        return committed + self.totalreserve + self.reserved

    def step(self, current: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """One run of selfballoon_process: the new target memory per guest."""
        p = self.params
        target = current.copy()
        down = current > goal
        up = current < goal
        target[down] = current[down] - (current[down] - goal[down]) // p.selfballoon_downhysteresis
        target[up] = current[up] + (goal[up] - current[up]) // p.selfballoon_uphysteresis
        return np.maximum(target, self.floor)

    def steps(self, current: np.ndarray, goal: np.ndarray, runs: int) -> np.ndarray:
        """`runs` runs of selfballoon_process toward a fixed goal, the same as calling
        :meth:`step` `runs` times, at a cost that does not grow with `runs`.

        After one run the target is at or above the floor, and the floor stays out of
        the way: a run moves the target monotonically toward the goal, so taking the
        floor once at the end gives what taking it every run gives. Each run takes
        gap // hysteresis off the gap to the goal; while that quotient stays the same the
        runs are taken all at once, so an interval far shorter than the epoch costs no
        more than a few hundred loop turns (per guest, however many runs are due).
        """
        if runs <= 0:
            return current
        current = self.step(current, goal)
        p = self.params
        out = current.copy()
        for vm, (now, aim) in enumerate(zip(current.tolist(), goal.tolist(), strict=True)):
            hysteresis = p.selfballoon_downhysteresis if now > aim else p.selfballoon_uphysteresis
            gap, left = abs(now - aim), runs - 1
            while left > 0:
                quotient = gap // hysteresis
                if quotient == 0:
                    break  # a fixed point: the kernel's integer step no longer moves it
                # Runs that take off this same quotient: while the gap stays >= q * h.
                same = min(left, (gap - quotient * hysteresis) // quotient + 1)
                gap -= same * quotient
                left -= same
            out[vm] = aim + gap if now > aim else aim - gap
        return np.maximum(out, self.floor)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self.current_pages is None:
            self._setup(snapshot)
        steps = self._timer.due(snapshot.t_ns)
        if not steps:
            return None
        config = snapshot.config_pages.astype(np.int64)
        # The guest reads its current memory (totalram_pages) each time.
        current = config - snapshot.balloon_pages.astype(np.int64)
        goal = self.goal_pages(snapshot)
        # An epoch longer than the interval holds several runs, all toward this goal.
        current = self.steps(current, goal, steps)
        current = np.minimum(current, config)
        self.current_pages = current
        return Decision(balloon_target_pages=np.clip(config - current, 0, config - 1))
