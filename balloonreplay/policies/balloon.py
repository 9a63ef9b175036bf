"""Balloon only: the host reclaims by inflating every VM's balloon in proportion to its size.

The cooperative counterpart of ``host-swap``: the host never swaps a guest page; when it
runs short it asks each guest for memory in proportion to the guest's configured size, and
if ballooning cannot keep up, a VM that needs a machine page blocks until one frees. No
real system documents this exact controller; it isolates the mechanism (ballooning) from
any allocation policy, so its free-memory band borrows ESX's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import split_proportionally


class BalloonPolicy(HostPolicy):
    name = "balloon"
    description = "balloon only, in proportion to VM size; never host-swaps, blocks when short"

    @dataclass
    class Params:
        # Inflate when host free memory falls below this share of host memory: ESX's
        # high free-memory state, 6% (Waldspurger, OSDI 2002, section 6.3).
        inflate_below_free_percent: float = 6.0
        # Deflate only above this, so balloons do not flap around one threshold (our
        # choice: the 2-point band ESX keeps between its soft and high states).
        deflate_above_free_percent: float = 8.0
        # Largest balloon as a share of a VM's memory; 100 = no limit beyond the engine's
        # (a VM keeps at least one frame).
        max_balloon_percent: float = 100.0

    def check_params(self) -> None:
        params = self.params
        if not (0 <= params.inflate_below_free_percent <= params.deflate_above_free_percent <= 100):
            raise ConfigError(
                "policy.inflate_below_free_percent",
                "need 0 <= inflate_below_free_percent <= deflate_above_free_percent <= 100, got "
                f"{params.inflate_below_free_percent} and {params.deflate_above_free_percent}",
            )
        if not 0 <= params.max_balloon_percent <= 100:
            raise ConfigError("policy.max_balloon_percent", "must be within 0..100")

    def start(self, snapshot: Snapshot) -> Decision:
        self.check_params()
        return Decision(
            balloon_target_pages=np.zeros(snapshot.num_vms, dtype=np.int64),
            allow_host_swap=False,
        )

    def balloon_caps(self, snapshot: Snapshot) -> np.ndarray:
        caps = np.floor(snapshot.config_pages * self.params.max_balloon_percent / 100.0)
        return np.minimum(caps.astype(np.int64), snapshot.config_pages.astype(np.int64) - 1)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        host = int(snapshot.host_pages)
        # Host-swapped guest pages are memory the guests hold and the host owes them
        # (the engine swaps only in emergencies, when ballooning stalled): count them as
        # used, so the balloons grow until the host could take them all back.
        free = snapshot.host_free_pages - int(snapshot.host_swapped_pages.sum())
        low = int(np.ceil(host * self.params.inflate_below_free_percent / 100.0))
        high = int(np.floor(host * self.params.deflate_above_free_percent / 100.0))
        if free < low:
            change = low - free  # pages to reclaim
        elif free > high:
            change = -(free - high)  # pages the guests may have back
        else:
            return None
        # Start from the balloons as they are, not as targeted: a target still being
        # reached would otherwise be counted twice and the balloons would overshoot.
        caps = self.balloon_caps(snapshot)
        total = int(snapshot.balloon_pages.sum()) + change
        total = max(0, min(total, int(caps.sum())))
        targets = split_proportionally(total, snapshot.config_pages, caps=caps)
        return Decision(balloon_target_pages=targets, allow_host_swap=False)
