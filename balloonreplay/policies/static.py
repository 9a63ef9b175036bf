"""No overcommit: every VM gets all its configured memory, backed by host memory.

The baseline every overcommit policy is compared against. A configuration whose guest
memory (plus the per-VM host overhead) exceeds host memory is refused with a ConfigError
before the first access, rather than silently swapping: "static" promises no reclaim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.units import PAGE_SIZE_BYTES, format_bytes


def check_no_overcommit(
    config_pages: Sequence[int], overhead_pages: Sequence[int], host_pages: int
) -> None:
    """Raise ConfigError if the VMs' memory plus overhead does not fit in host memory."""
    guest_total = int(np.sum(config_pages))
    overhead_total = int(np.sum(overhead_pages))
    needed = guest_total + overhead_total
    if needed > host_pages:

        def size(pages: int) -> str:
            return f"{pages} pages = {format_bytes(pages * PAGE_SIZE_BYTES)}"

        raise ConfigError(
            "host_mem",
            f"policy 'static' does not overcommit: the VMs' configured memory ({size(guest_total)})"
            f" plus their overhead ({size(overhead_total)}) exceeds host memory"
            f" ({size(int(host_pages))}) by {size(needed - int(host_pages))}; give the host more"
            " memory, the VMs less, or choose an overcommitting policy (balloon, esx, mom, ...)",
        )


class StaticPolicy(HostPolicy):
    name = "static"
    description = "no overcommit: all configured memory backed; refuses overcommitted hosts"

    @dataclass
    class Params:
        pass

    def start(self, snapshot: Snapshot) -> Decision:
        check_no_overcommit(snapshot.config_pages, snapshot.overhead_pages, snapshot.host_pages)
        # Nothing can run the host out of memory, so host swapping would only mask a bug.
        return Decision(
            balloon_target_pages=np.zeros(snapshot.num_vms, dtype=np.int64),
            allow_host_swap=False,
        )
