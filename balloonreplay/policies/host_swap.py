"""Uncooperative overcommit: no balloon; the host swaps guest pages behind the guests' back.

KVM without a balloon policy: guest memory is ordinary anonymous memory of the QEMU
process, so the host kernel reclaims it like any other. Besides swapping on demand when
it is full, the host's kswapd wakes when free memory falls below the *low* watermark and
swaps until free memory is back at the *high* watermark (Linux mm/page_alloc.c,
``__setup_per_zone_wmarks``; ``Documentation/admin-guide/sysctl/vm.rst``). Which pages go
is the engine's host selection (random by default, as ESX does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import check_within, split_proportionally
from balloonreplay.units import PAGE_SIZE_BYTES


def linux_watermarks_pages(
    total_pages: int, watermark_scale_factor: int = 10, page_size_bytes: int = PAGE_SIZE_BYTES
) -> tuple[int, int, int]:
    """(min, low, high) free-page watermarks Linux derives for `total_pages` of memory.

    min_free_kbytes = sqrt(16 * memory in KiB), clamped to 128 KiB .. 256 MiB
    (mm/page_alloc.c, calculate_min_free_kbytes); low and high each add
    max(min/4, memory * watermark_scale_factor / 10000) (default factor 10, i.e. 0.1%).
    One zone is assumed.
    """
    kib_per_page = page_size_bytes // 1024
    min_free_kib = int(math.isqrt(16 * total_pages * kib_per_page))
    min_free_kib = max(128, min(min_free_kib, 262_144))
    min_pages = min_free_kib // kib_per_page
    step = max(min_pages // 4, total_pages * watermark_scale_factor // 10_000)
    return min_pages, min_pages + step, min_pages + 2 * step


class HostSwapPolicy(HostPolicy):
    name = "host-swap"
    description = "no balloon; the host swaps at random when full and kswapd keeps its watermarks"

    @dataclass
    class Params:
        # Model the host's kswapd (background reclaim between the low and high watermarks);
        # off leaves only on-demand swapping when the host is completely full.
        kswapd: bool = True
        # vm.watermark_scale_factor, in 1/10000 of memory: Linux default 10 (0.1%).
        watermark_scale_factor: int = 10

    def check_params(self) -> None:
        # The sysctl's range: proc_dointvec_minmax, 1..3000 (1..1000 in older kernels).
        check_within(self.params, "watermark_scale_factor", 1, 3000)

    def start(self, snapshot: Snapshot) -> Decision:
        self.check_params()
        return Decision(
            balloon_target_pages=np.zeros(snapshot.num_vms, dtype=np.int64),
            allow_host_swap=True,
        )

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if not self.params.kswapd:
            return None
        _, low, high = linux_watermarks_pages(
            int(snapshot.host_pages), self.params.watermark_scale_factor
        )
        free = snapshot.host_free_pages
        if free >= low:
            return None
        # kswapd reclaims until the high watermark; LRU reclaim of anonymous memory hits each
        # VM about in proportion to how much of it is resident (backed).
        backed = snapshot.backed_pages.astype(np.int64)
        swap_out = split_proportionally(high - free, backed, caps=backed)
        return Decision(host_swap_target_pages=snapshot.host_swapped_pages + swap_out)
