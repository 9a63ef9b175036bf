"""oVirt MOM (Memory Overcommitment Manager): its auto-balloon and KSM rules.

Followed: the policies vdsm installs for MOM, ``static/etc/vdsm/mom.d/02-balloon.policy``
and ``03-ksm.policy`` in oVirt/vdsm (the same rules as ``doc/balloon.rules`` in oVirt/mom,
whose later revision takes the *max* of the guaranteed minimum and the computed floor),
with the intervals of ``doc/mom-balloon+ksm.conf``. MOM's "balloon" values are guest
memory sizes (libvirt's current memory); here they become balloon sizes =
configured - guest memory.

Every policy round (10 s), with host free = free / available (moving averages):

- below 20% free, each guest shrinks toward floor = used + g * current, where
  g = 20% * (free / 20%), or g = free - 5% at or below 5% ("critical": negative, so the
  guest must swap); by at most 5% of its current memory per round, never below its
  guaranteed minimum;
- otherwise each ballooned guest grows by 5% per round (at least to used + g * current),
  up to its configured memory;
- a change of at most 0.25% of the guest's memory is skipped.

KSM runs when free < 20% or when the shareable memory (the VMs' sizes) would not leave
20% free; while it runs, ``pages_to_scan`` moves +300 under pressure and -50 otherwise
within 64..1250, and it sleeps max(10, 10 * 16 GiB / host memory) ms between scans. The
host-wide rate pages_to_scan / sleep is split over the VMs by size (ksmd walks every
registered area in turn).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import (
    PeriodicTimer,
    check_non_negative,
    check_period,
    check_within,
    per_vm,
    split_proportionally,
)
from balloonreplay.units import PAGE_SIZE_BYTES

KIB_PER_PAGE = PAGE_SIZE_BYTES // 1024


class MomPolicy(HostPolicy):
    name = "mom"
    description = "oVirt MOM: balloon toward used + free share scaled by host pressure; KSM tuning"

    @property
    def wants_sharing(self) -> bool:  # KSM runs under MOM's rules unless they are off
        return bool(self.params.ksm)

    @dataclass
    class Params:
        # 02-balloon.policy constants.
        pressure_threshold: float = 0.20
        pressure_critical: float = 0.05
        min_guest_free_percent: float = 0.20
        max_balloon_change_percent: float = 0.05
        min_balloon_change_percent: float = 0.0025
        # Guaranteed minimum guest memory per VM in pages (vdsm's balloon_min, from the
        # engine's "physical memory guaranteed"); None = 0, i.e. no guarantee.
        guaranteed_pages: list[int] | None = None
        # mom-balloon+ksm.conf: policy-engine-interval 10 s; statistics every 5 s
        # (host-monitor-interval, guest-monitor-interval), 10 samples averaged
        # (sample-history-length).
        policy_interval_s: float = 10.0
        monitor_interval_s: float = 5.0
        sample_history_length: int = 10
        # 03-ksm.policy constants.
        ksm: bool = True
        ksm_pages_boost: int = 300
        ksm_pages_decay: int = -50
        ksm_npages_min: int = 64
        ksm_npages_max: int = 1250
        ksm_sleep_ms_baseline: int = 10
        ksm_free_percent: float = 0.20
        # KSM's state before MOM first touches it: Linux defaults pages_to_scan = 100,
        # sleep_millisecs = 20 (Documentation/admin-guide/mm/ksm.rst); run = 0.
        ksm_initial_pages_to_scan: int = 100
        ksm_initial_sleep_ms: int = 20

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self._round_timer = PeriodicTimer(p.policy_interval_s)
        self._monitor_timer = PeriodicTimer(p.monitor_interval_s)
        self._host_free: deque[float] = deque(maxlen=max(1, p.sample_history_length))
        self._guest_cur: deque[np.ndarray] = deque(maxlen=max(1, p.sample_history_length))
        self._guest_unused: deque[np.ndarray] = deque(maxlen=max(1, p.sample_history_length))
        self.ksm_run = False
        self.ksm_pages_to_scan = p.ksm_initial_pages_to_scan
        self.ksm_sleep_ms = p.ksm_initial_sleep_ms
        self.rounds = 0
        self._balloon_targets: np.ndarray | None = None

    def check_params(self) -> None:
        p = self.params
        if not 0 < p.pressure_critical <= p.pressure_threshold < 1:
            raise ConfigError(
                "policy.pressure_threshold",
                "need 0 < pressure_critical <= pressure_threshold < 1, got "
                f"{p.pressure_critical} and {p.pressure_threshold}",
            )
        if not 0 < p.max_balloon_change_percent < 1:
            raise ConfigError("policy.max_balloon_change_percent", "must be within (0, 1)")
        if not p.ksm_npages_min <= p.ksm_npages_max:
            raise ConfigError("policy.ksm_npages_min", "must not exceed ksm_npages_max")
        # MOM's "percent" constants are fractions of memory (0.20 = 20%).
        check_within(p, "min_guest_free_percent", 0.0, 1.0, " (a fraction of memory)")
        check_within(p, "min_balloon_change_percent", 0.0, 1.0, " (a fraction of memory)")
        check_within(p, "ksm_free_percent", 0.0, 1.0, " (a fraction of memory)")
        check_period(p, "policy_interval_s", "the policy interval")
        check_period(p, "monitor_interval_s", "the monitor interval")
        check_within(p, "sample_history_length", 1, None)
        # A negative pages_to_scan would be a negative scan rate, which the engine refuses.
        check_within(p, "ksm_npages_min", 0, None)
        check_within(p, "ksm_initial_pages_to_scan", 0, None)
        check_within(p, "ksm_sleep_ms_baseline", 0, None)
        check_within(p, "ksm_initial_sleep_ms", 0, None)
        check_non_negative(p, ("guaranteed_pages",))

    def start(self, snapshot: Snapshot) -> Decision:
        self.check_params()
        self._balloon_targets = np.zeros(snapshot.num_vms, dtype=np.int64)
        self._monitor_timer.due(snapshot.t_ns)
        self._collect(snapshot)
        self._round_timer.due(snapshot.t_ns)
        return Decision(
            balloon_target_pages=self._balloon_targets.copy(),
            allow_host_swap=True,  # KVM: the host kernel swaps when it must
            scan_rate_pages_per_s=self.scan_rates(snapshot),
        )

    # -- statistics ----------------------------------------------------------------

    def _collect(self, snapshot: Snapshot) -> None:
        self._host_free.append(float(snapshot.host_free_pages))
        self._guest_cur.append((snapshot.config_pages - snapshot.balloon_pages).astype(float))
        self._guest_unused.append(snapshot.free_pages.astype(float))

    @staticmethod
    def _stat_avg(history) -> float | np.ndarray:
        return sum(history) / len(history)

    # -- rules -----------------------------------------------------------------------

    def guest_free_percent(self, host_free_percent: float) -> float:
        p = self.params
        if host_free_percent <= p.pressure_critical:
            # Critical: make the guest's free share negative so it has to swap.
            return host_free_percent - p.pressure_critical
        return p.min_guest_free_percent * (host_free_percent / p.pressure_threshold)

    def balloon_round(self, snapshot: Snapshot, host_free_percent: float) -> np.ndarray:
        """One evaluation of 02-balloon.policy: new guest memory sizes (pages, float)."""
        p = self.params
        config = snapshot.config_pages.astype(float)
        current = (snapshot.config_pages - snapshot.balloon_pages).astype(float)
        guaranteed = per_vm(p.guaranteed_pages, snapshot.num_vms, 0, "guaranteed_pages")
        used = self._stat_avg(self._guest_cur) - self._stat_avg(self._guest_unused)
        g = self.guest_free_percent(host_free_percent)
        floor = np.maximum(guaranteed, used + g * current)
        new = current.copy()
        if host_free_percent < p.pressure_threshold:
            size = np.maximum(current * (1.0 - p.max_balloon_change_percent), floor)
            change = (size <= current) & self._big_enough(size, current)
            new[change] = size[change]
        else:
            ballooned = current < config
            size = np.maximum(current * (1.0 + p.max_balloon_change_percent), floor)
            size = np.minimum(size, config)
            change = ballooned & self._big_enough(size, current)
            new[change] = size[change]
        # The guaranteed-minimum rule that follows in 02-balloon.policy.
        return np.maximum(new, np.minimum(guaranteed, config))

    def _big_enough(self, size: np.ndarray, current: np.ndarray) -> np.ndarray:
        return np.abs(size - current) > self.params.min_balloon_change_percent * current

    def ksm_round(self, snapshot: Snapshot, mem_free: float) -> None:
        """One evaluation of 03-ksm.policy on the host's KSM settings."""
        p = self.params
        available = float(snapshot.host_pages)
        threshold = available * p.ksm_free_percent
        # MOM's ksm_shareable sums the QEMU processes' virtual sizes: guest memory plus
        # overhead.
        shareable = float(snapshot.config_pages.sum() + snapshot.overhead_pages.sum())
        if threshold + shareable < available and mem_free > threshold:
            self.ksm_run = False
            return
        self.ksm_run = True
        available_kib = available * KIB_PER_PAGE
        self.ksm_sleep_ms = max(
            10, int(p.ksm_sleep_ms_baseline * 16 * 1024 * 1024 // available_kib)
        )
        delta = p.ksm_pages_boost if mem_free < threshold else p.ksm_pages_decay
        self.ksm_pages_to_scan = int(
            np.clip(self.ksm_pages_to_scan + delta, p.ksm_npages_min, p.ksm_npages_max)
        )

    def scan_rates(self, snapshot: Snapshot) -> np.ndarray:
        if not (self.params.ksm and self.ksm_run):
            return np.zeros(snapshot.num_vms, dtype=np.int64)
        host_rate = int(self.ksm_pages_to_scan * 1000 // max(1, self.ksm_sleep_ms))
        return split_proportionally(host_rate, snapshot.config_pages)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self._balloon_targets is None:
            self.check_params()
            self._balloon_targets = np.zeros(snapshot.num_vms, dtype=np.int64)
        # One sample per elapsed monitor interval: the state between epoch boundaries is
        # not seen, so the boundary's value stands for each, which keeps the averaging
        # window as long in time as MOM's (10 samples x 5 s).
        for _ in range(min(self._monitor_timer.due(snapshot.t_ns), self._host_free.maxlen)):
            self._collect(snapshot)
        if not self._round_timer.due(snapshot.t_ns):
            return None
        if not self._host_free:
            self._collect(snapshot)
        self.rounds += 1
        mem_free = float(self._stat_avg(self._host_free))
        host_free_percent = mem_free / float(snapshot.host_pages)
        guest_mem = self.balloon_round(snapshot, host_free_percent)
        config = snapshot.config_pages.astype(np.int64)
        targets = np.clip(config - np.round(guest_mem).astype(np.int64), 0, config - 1)
        self._balloon_targets = targets
        if self.params.ksm:
            self.ksm_round(snapshot, mem_free)
        return Decision(
            balloon_target_pages=targets.copy(), scan_rate_pages_per_s=self.scan_rates(snapshot)
        )
