"""Microsoft Hyper-V Dynamic Memory.

Followed: Microsoft's Hyper-V Dynamic Memory configuration guide and overview
(Windows Server 2008 R2 SP1 onward; ``Set-VMMemory``). Each VM has startup, minimum and
maximum memory, a memory buffer (default 20%, 5..2000%) and a memory weight (priority,
default 5000, 0..10000). About once a second the memory balancer sets each VM's target to

    target = demand * (1 + buffer),   clamped to [minimum, maximum],

where demand is the memory the guest has committed. When the host cannot give every VM
its target, memory goes by weight: the VMs are filled at a common level of memory per unit
of weight, never below their minimum. Memory is added by hot-add and removed by the
balloon (the Dynamic Memory VSC); here both are the balloon.

Committed memory is not in the snapshot: demand is the guest's resident pages plus the
pages it had to swap out in the last epoch (commitment it could not keep resident).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import (
    PeriodicTimer,
    check_non_negative,
    check_period,
    check_within,
    given_values,
    guest_budget_pages,
    per_vm,
    round_preserving_sum,
    solve_level,
)
from balloonreplay.units import PAGE_SIZE_BYTES

PAGES_PER_MIB = (1 << 20) // PAGE_SIZE_BYTES


class HyperVPolicy(HostPolicy):
    name = "hyperv"
    description = "Hyper-V Dynamic Memory: target = demand * (1 + buffer); weight decides shortage"

    @dataclass
    class Params:
        # Memory buffer, % of demand: default 20, allowed 5..2000 (Set-VMMemory -Buffer).
        buffer_percent: int = 20
        # Memory weight per VM: default 5000, allowed 0..10000, as WMI's
        # Msvm_MemorySettingData.Weight (Set-VMMemory -Priority is the same scaled 0..100).
        weight: list[int] | None = None
        # Per-VM memory sizes in pages. None: Hyper-V Manager's defaults for a new VM,
        # startup 1024 MB and minimum 512 MB, never above the configured memory; maximum
        # = the configured memory (the model's guest has that many frames).
        startup_pages: list[int] | None = None
        minimum_pages: list[int] | None = None
        maximum_pages: list[int] | None = None
        # The balancer runs about every second.
        period_s: float = 1.0
        # Host memory kept free for the root partition, % of host memory. Hyper-V sizes
        # its host reserve itself (MemoryReserve registry value); 0 lets the VMs use all.
        host_reserve_percent: float = 0.0

    def __init__(self, params=None):
        super().__init__(params)
        self._timer = PeriodicTimer(self.params.period_s)
        self.target_pages: np.ndarray | None = None

    def check_params(self) -> None:
        p = self.params
        if not 5 <= p.buffer_percent <= 2000:
            raise ConfigError(
                "policy.buffer_percent", f"Hyper-V allows 5..2000%, got {p.buffer_percent}"
            )
        if p.weight is not None:
            weight = given_values(p.weight, "weight")
            if np.any((weight < 0) | (weight > 10000)):
                raise ConfigError("policy.weight", "Hyper-V memory weights are within 0..10000")
        check_non_negative(p, ("startup_pages", "minimum_pages", "maximum_pages"))
        check_period(p, "period_s", "the balancer period")
        check_within(p, "host_reserve_percent", 0.0, 100.0)

    def _setup(self, snapshot: Snapshot) -> None:
        self.check_params()
        p = self.params
        n = snapshot.num_vms
        config = snapshot.config_pages.astype(np.int64)
        self.weight = per_vm(p.weight, n, 5000, "weight", np.float64)
        self.maximum = np.minimum(per_vm(p.maximum_pages, n, config, "maximum_pages"), config)
        self.minimum = np.minimum(
            per_vm(p.minimum_pages, n, 512 * PAGES_PER_MIB, "minimum_pages"), self.maximum
        )
        self.startup = np.clip(
            per_vm(p.startup_pages, n, 1024 * PAGES_PER_MIB, "startup_pages"),
            self.minimum,
            self.maximum,
        )
        self.minimum = np.maximum(self.minimum, 1)

    def start(self, snapshot: Snapshot) -> Decision:
        self._setup(snapshot)
        self._timer.due(snapshot.t_ns)
        config = snapshot.config_pages.astype(np.int64)
        self.target_pages = self.startup.copy()
        return Decision(
            balloon_target_pages=np.clip(config - self.startup, 0, config - 1),
            allow_host_swap=True,  # Hyper-V pages guest memory out only when it must
        )

    def demand_pages(self, snapshot: Snapshot) -> np.ndarray:
        return (snapshot.resident_pages + snapshot.guest_swap_out).astype(np.int64)

    def targets(self, snapshot: Snapshot) -> np.ndarray:
        """What each VM asks for: demand plus the buffer, within its minimum and maximum."""
        wanted = np.ceil(self.demand_pages(snapshot) * (1.0 + self.params.buffer_percent / 100.0))
        return np.clip(wanted.astype(np.int64), self.minimum, self.maximum)

    def balance(self, wanted: np.ndarray, budget_pages: int) -> np.ndarray:
        """Give every VM what it asks for if the host has it; otherwise share by weight."""
        if wanted.sum() <= budget_pages:
            return wanted
        lo = np.minimum(self.minimum, wanted).astype(np.float64)
        hi = wanted.astype(np.float64)
        weight = np.maximum(self.weight, 1e-9)  # weight 0 still keeps its minimum

        def at(level):
            return np.clip(weight * level, lo, hi)

        total = max(budget_pages, int(lo.sum()))
        alloc = at(solve_level(at, total))
        return round_preserving_sum(alloc, min(total, int(hi.sum())), caps=wanted)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self.target_pages is None:
            self._setup(snapshot)
        if not self._timer.due(snapshot.t_ns):
            return None
        reserve = int(np.ceil(snapshot.host_pages * self.params.host_reserve_percent / 100.0))
        budget = guest_budget_pages(snapshot, reserve)
        self.target_pages = self.balance(self.targets(snapshot), budget)
        config = snapshot.config_pages.astype(np.int64)
        return Decision(balloon_target_pages=np.clip(config - self.target_pages, 0, config - 1))
