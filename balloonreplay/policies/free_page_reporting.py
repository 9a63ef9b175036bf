"""Linux virtio-balloon free page reporting, with deflate-on-OOM.

Followed: Linux ``mm/page_reporting.c`` and ``drivers/virtio/virtio_balloon.c``. The
host sets no balloon targets. The guest reports free memory to the host in blocks of
``page_reporting_order`` (pageblock order: 2 MiB, 512 pages of 4 KiB), at most
``PAGE_REPORTING_CAPACITY`` = 32 blocks per request, starting ``PAGE_REPORTING_DELAY``
= 2 s after free memory appears; the host discards (unbacks) the reported pages, and a
later guest access faults a zero page back in. ``VIRTIO_BALLOON_F_DEFLATE_ON_OOM``: when
the guest would run out of memory it deflates its balloon by
``VIRTIO_BALLOON_OOM_NR_PAGES`` = 256 pages per OOM notification.

In the model a frame the guest frees (a ``free`` row of the trace) stays backed, with its
stale content, until it is reused or reported. The policy computes, per VM and epoch, how
many free frames have stayed free for the reporting delay, in whole blocks
(:attr:`reported_pages`), and the engine unbacks that many of the guest's longest-free
frames (``Decision.unback_free_pages``); reusing one later faults a zero page back in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import per_vm, seconds_to_ns


class FreePageReportingPolicy(HostPolicy):
    name = "free-page-reporting"
    description = "virtio-balloon free page reporting: guests report free 2 MiB blocks after 2 s"

    @dataclass
    class Params:
        # mm/page_reporting.h: PAGE_REPORTING_DELAY = 2 * HZ.
        report_delay_s: float = 2.0
        # page_reporting_order = pageblock_order: 9 on x86-64 with 4 KiB pages (2 MiB).
        report_order: int = 9
        # PAGE_REPORTING_CAPACITY = 32 blocks per report request.
        report_capacity_blocks: int = 32
        # Reports per delay period: page_reporting_process reschedules itself while free
        # blocks remain, one request of `report_capacity_blocks` at a time. 0 = no cap.
        max_requests_per_delay: int = 0
        # VIRTIO_BALLOON_F_DEFLATE_ON_OOM, with VIRTIO_BALLOON_OOM_NR_PAGES = 256.
        deflate_on_oom: bool = True
        oom_deflate_pages: int = 256
        # A balloon the administrator set (e.g. ``virsh setmem``), per VM, in pages; None = 0.
        balloon_pages: list[int] | None = None

    def __init__(self, params=None):
        super().__init__(params)
        self._free_history: list[tuple[int, np.ndarray]] = []
        self.reported_pages: list[np.ndarray] = []  # per epoch, per VM
        self._balloon: np.ndarray | None = None

    def start(self, snapshot: Snapshot) -> Decision:
        config = snapshot.config_pages.astype(np.int64)
        self._balloon = np.clip(
            per_vm(self.params.balloon_pages, snapshot.num_vms, 0, "balloon_pages"), 0, config - 1
        )
        self._free_history = [(int(snapshot.t_ns), snapshot.free_pages.astype(np.int64))]
        return Decision(balloon_target_pages=self._balloon.copy(), allow_host_swap=True)

    def reportable_pages(self, snapshot: Snapshot) -> np.ndarray:
        """Free frames that have stayed free for the reporting delay, in whole blocks.

        Free memory at every boundary within the last delay bounds from above what stayed
        free throughout; the minimum over them is what the guest can report now.
        """
        p = self.params
        now = int(snapshot.t_ns)
        delay_ns = seconds_to_ns(p.report_delay_s)
        self._free_history.append((now, snapshot.free_pages.astype(np.int64)))
        # Keep the samples inside the window plus the last one before it.
        while len(self._free_history) > 1 and self._free_history[1][0] <= now - delay_ns:
            self._free_history.pop(0)
        if now - self._free_history[0][0] < delay_ns:
            return np.zeros(snapshot.num_vms, dtype=np.int64)
        stayed_free = np.min(np.stack([free for _, free in self._free_history]), axis=0)
        block = 1 << p.report_order
        blocks = stayed_free // block
        if p.max_requests_per_delay > 0:
            epoch_fraction = snapshot.epoch_ns / max(1, delay_ns)
            cap = int(p.max_requests_per_delay * p.report_capacity_blocks * epoch_fraction)
            blocks = np.minimum(blocks, max(cap, p.report_capacity_blocks))
        return blocks * block

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self._balloon is None:
            self.start(snapshot)
        reported = self.reportable_pages(snapshot)
        self.reported_pages.append(reported)
        decision = Decision()
        changed = False
        if (
            np.minimum(reported, snapshot.free_pages) > 0
        ).any() and snapshot.free_backed_pages.any():
            decision.unback_free_pages = reported
            changed = True
        if self.params.deflate_on_oom and self._balloon.any():
            # The OOM notifier fires when reclaim fails; with swap the guest rarely
            # fails outright, so a ballooned guest swapping out with no free frame left
            # stands in for it: one notification per 256 pages it had to swap out.
            under_oom = (snapshot.guest_swap_out > 0) & (snapshot.free_pages == 0)
            notifications = np.ceil(snapshot.guest_swap_out / self.params.oom_deflate_pages)
            deflate = np.where(under_oom, notifications * self.params.oom_deflate_pages, 0)
            if deflate.any():
                self._balloon = np.maximum(self._balloon - deflate.astype(np.int64), 0)
                decision.balloon_target_pages = self._balloon.copy()
                changed = True
        return decision if changed else None
