"""Linux virtio-balloon free page reporting, with deflate-on-OOM (as a stand-in, below).

Followed: Linux ``mm/page_reporting.c`` and ``drivers/virtio/virtio_balloon.c``. The
host sets no balloon targets. Each guest reports free memory to the host in blocks of
``page_reporting_order`` (pageblock order: 2 MiB, 512 pages of 4 KiB), and the host
discards (unbacks) the reported pages; a later guest access faults a zero page back in.

When a page of at least that order is freed, the guest requests a reporting pass, which
runs ``PAGE_REPORTING_DELAY`` = 2 s later (the driver's registration requests the first
one). A pass walks each free list and reports its unreported blocks in batches of
``PAGE_REPORTING_CAPACITY`` = 32, at most budget + 1 batches per list with budget =
DIV_ROUND_UP(nr_free, 32 * 16), nr_free counting the list's blocks reported or not: "a
sixteenth of the current list plus one additional call", which should report "all pages
on an idle system in about 30 seconds" (page_reporting_cycle). A list whose budget runs
out requests the next pass, again 2 s later. A zone is skipped unless its free memory is
above its low watermark plus ``PAGE_REPORTING_CAPACITY << page_reporting_order`` pages
(64 MiB; page_reporting_process_zone, zone_watermark_ok); the reporter then goes idle
until the next free requests a pass. A pass moves the unreported pages to the head of
their free list, ahead of the reported ones, so the allocator tends to reuse reported
pages last.

The model (deliberate simplifications):

- A guest is one zone with one free list of ``report_order`` blocks: every
  ``2**report_order`` of its free frames count as one block (the model has no physical
  addresses, so no buddy merging), and its budget is that list's. Linux keeps a list per
  order and migrate type, each with its own budget, so its passes can report somewhat
  more (a +1 batch per list) or less (higher-order blocks count fewer in nr_free).
- The low watermark is Linux's for the guest's configured memory, as ``host-swap``
  derives the host's (:func:`~balloonreplay.policies.host_swap.linux_watermarks_pages`:
  one zone, min_free_kbytes from the memory size, ``watermark_scale_factor``), unless
  ``low_watermark_pages`` gives it (min_free_kbytes never goes below 128 KiB, which a
  study of scaled-down guests may want to scale with them).
- The policy sees the guests only at epoch boundaries. A pass due between two boundaries
  runs at the next one, on the free memory seen there; several passes due in one epoch
  run there one after another. A guest whose free frames grew since the last boundary,
  or which freed pages in the epoch (``guest_frees``), requests a pass at that boundary
  if its reporter is idle (any free may complete a block).
- Which frames are reported is the engine's choice: the longest-free ones (the bottom of
  the guest's LIFO free stack, which the guest reuses last). The policy counts per VM how
  many of them are reported, the count dropping when the guest's free frames fall below
  it (reuse took reported frames), and at each pass asks the engine to unback that many
  (``Decision.unback_free_pages`` is an absolute count of longest-free frames, so a rate
  is a count that grows pass by pass). Frames the guest reuses and frees again within
  one epoch are taken as still reported.
- Never-touched frames are free and unbacked, like a freshly booted guest's memory:
  reporting them costs budget, as in Linux, and unbacks nothing.

``VIRTIO_BALLOON_F_DEFLATE_ON_OOM``: Linux registers ``virtio_balloon_oom_notify`` on the
OOM notifier chain, which ``out_of_memory()`` calls when reclaim has failed, before the
OOM killer chooses a victim; each call deflates the balloon by
``VIRTIO_BALLOON_OOM_NR_PAGES`` = 256 pages, and if that freed anything the allocation is
retried and nothing is killed. A guest that can still swap does not get there.

The model has no OOM path: its guests always have swap space and there is no OOM killer,
so the notifier would never fire. What the policy does instead: whenever a ballooned
guest swapped pages out in the epoch and has no free frame at its end, it deflates
ceil(swapped out / 256) x 256 pages (one notification per 256 pages it had to swap out).
That is "deflate when the guest swaps for want of memory", which fires earlier and more
often than Linux's (whose reclaim would have succeeded by swapping); it matters only with
an administrator's balloon (``balloon_pages``), since the policy sets no other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import (
    check_non_negative,
    check_period,
    check_within,
    per_vm,
    seconds_to_ns,
)
from balloonreplay.policies.host_swap import linux_watermarks_pages

# page_reporting_cycle's budget: enough batches per pass for a sixteenth of the list.
PASSES_PER_LIST = 16
IDLE = -1  # no pass requested (PAGE_REPORTING_IDLE)
MAX_PAGE_ORDER = 10  # x86-64's largest buddy order (4 MiB blocks)


class FreePageReportingPolicy(HostPolicy):
    name = "free-page-reporting"
    description = (
        "virtio-balloon free page reporting: guests report free 2 MiB blocks, a budget "
        "per 2 s pass, above the low watermark + 64 MiB"
    )

    @dataclass
    class Params:
        # mm/page_reporting.c: PAGE_REPORTING_DELAY = 2 * HZ, from a request to its pass
        # and between passes while blocks are left.
        report_delay_s: float = 2.0
        # page_reporting_order = pageblock_order: 9 on x86-64 with 4 KiB pages (2 MiB).
        # The gate (low watermark + 32 blocks) makes a guest below about 64 MiB report
        # nothing: a scaled-down guest needs smaller blocks (the gate shrinks with them).
        report_order: int = 9
        # PAGE_REPORTING_CAPACITY = 32 blocks per report request (batch).
        report_capacity_blocks: int = 32
        # At most this many report requests per pass (one per report_delay_s), below the
        # kernel's budget (DIV_ROUND_UP(nr_free, capacity * 16) + 1 per pass); 0 = the
        # kernel's budget alone.
        max_requests_per_delay: int = 0
        # The guest's vm.watermark_scale_factor, for its low watermark: default 10 (0.1%).
        watermark_scale_factor: int = 10
        # The guest's low watermark in pages; None = Linux's for its configured memory
        # (min_free_kbytes is at least 128 KiB, so a scaled-down study may want its own).
        low_watermark_pages: int | None = None
        # VIRTIO_BALLOON_F_DEFLATE_ON_OOM, with VIRTIO_BALLOON_OOM_NR_PAGES = 256: here a
        # ballooned guest swapping with no free frame deflates (the model has no OOM path;
        # see the module docstring).
        deflate_on_oom: bool = True
        oom_deflate_pages: int = 256
        # A balloon the administrator set (e.g. ``virsh setmem``), per VM, in pages; None = 0.
        balloon_pages: list[int] | None = None

    def __init__(self, params=None):
        super().__init__(params)
        # Per epoch, per VM: free frames reported and still free after the epoch's passes.
        self.reported_pages: list[np.ndarray] = []
        self._balloon: np.ndarray | None = None
        self._reported: np.ndarray | None = None  # per VM, longest-free frames reported
        self._next_pass_ns: np.ndarray | None = None  # per VM, IDLE or the time it is due
        self._last_free: np.ndarray | None = None
        self._min_free_pages: np.ndarray | None = None  # per VM, the zone's reporting gate

    def check_params(self) -> None:
        p = self.params
        # PAGE_REPORTING_DELAY is a constant in the kernel; here it sets the time scale.
        check_period(p, "report_delay_s", "the reporting delay")
        # The bounds the kernel puts on what one may set; the others keep the model's
        # arithmetic sound (a block of 2**order pages, a batch of at least one block).
        # page_reporting_order: param_set_uint_minmax(0, MAX_PAGE_ORDER = 10 on x86-64).
        check_within(p, "report_order", 0, MAX_PAGE_ORDER)
        check_within(p, "report_capacity_blocks", 1, 2**32)
        check_within(p, "max_requests_per_delay", 0, None)
        # vm.watermark_scale_factor: proc_dointvec_minmax, 1..3000 (1..1000 in older kernels).
        check_within(p, "watermark_scale_factor", 1, 3000)
        if p.low_watermark_pages is not None:
            check_within(p, "low_watermark_pages", 0, None)
        # One notification must deflate something; deflate_on_oom=false turns it off.
        check_within(p, "oom_deflate_pages", 1, None)
        check_non_negative(p, ("balloon_pages",))

    def start(self, snapshot: Snapshot) -> Decision:
        self.check_params()
        p = self.params
        config = snapshot.config_pages.astype(np.int64)
        self._balloon = np.clip(
            per_vm(p.balloon_pages, snapshot.num_vms, 0, "balloon_pages"), 0, config - 1
        )
        self._reported = np.zeros(snapshot.num_vms, dtype=np.int64)
        self._last_free = snapshot.free_pages.astype(np.int64)
        # page_reporting_register requests the first pass: it runs one delay later.
        self._next_pass_ns = np.full(snapshot.num_vms, int(snapshot.t_ns) + self._delay_ns())
        if p.low_watermark_pages is not None:
            low = np.full(snapshot.num_vms, p.low_watermark_pages, dtype=np.int64)
        else:
            low = np.array(
                [linux_watermarks_pages(int(c), p.watermark_scale_factor)[1] for c in config],
                dtype=np.int64,
            )
        self._min_free_pages = low + (p.report_capacity_blocks << p.report_order)
        return Decision(balloon_target_pages=self._balloon.copy(), allow_host_swap=True)

    def _delay_ns(self) -> int:
        return max(1, seconds_to_ns(self.params.report_delay_s))

    def report(self, snapshot: Snapshot) -> np.ndarray:
        """Run the reporting passes due by this boundary.

        Returns, per VM, how many of its longest-free frames are reported after its
        passes here, for ``Decision.unback_free_pages`` (0 for a VM with no pass now: the
        engine then unbacks nothing of it).
        """
        p = self.params
        now = int(snapshot.t_ns)
        delay_ns = self._delay_ns()
        block = 1 << p.report_order
        free = snapshot.free_pages.astype(np.int64)
        # Reported frames are reused last, so those left are the bottom min(count, free).
        self._reported = np.minimum(self._reported, free)
        freed = (free > self._last_free) | (snapshot.guest_frees > 0)
        self._next_pass_ns[freed & (self._next_pass_ns == IDLE)] = now + delay_ns
        self._last_free = free
        unback = np.zeros(snapshot.num_vms, dtype=np.int64)
        for vm in range(snapshot.num_vms):
            due = int(self._next_pass_ns[vm])
            if due == IDLE or now < due:
                continue
            passes = 1 + (now - due) // delay_ns
            last_pass = due + (passes - 1) * delay_ns
            vm_free = int(free[vm])
            if vm_free <= self._min_free_pages[vm]:
                # Not above the low watermark + one batch: the pass reports nothing and
                # the reporter goes idle (page_reporting_process_zone).
                self._next_pass_ns[vm] = IDLE
                continue
            list_blocks = vm_free // block
            unreported = (vm_free - int(self._reported[vm])) // block
            requests = -(-list_blocks // (p.report_capacity_blocks * PASSES_PER_LIST)) + 1
            if p.max_requests_per_delay > 0:
                requests = min(requests, p.max_requests_per_delay)
            budget_blocks = passes * requests * p.report_capacity_blocks
            self._reported[vm] += min(unreported, budget_blocks) * block
            unback[vm] = self._reported[vm]
            # A list whose budget ran out requests the next pass, one delay on.
            self._next_pass_ns[vm] = last_pass + delay_ns if unreported > budget_blocks else IDLE
        self.reported_pages.append(self._reported.copy())
        return unback

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self._balloon is None:
            self.start(snapshot)
        unback = self.report(snapshot)
        decision = Decision()
        changed = False
        if unback.any():
            decision.unback_free_pages = unback
            changed = True
        if self.params.deflate_on_oom and self._balloon.any():
            # Linux's notifier runs only on the OOM path, which the model's guests never
            # reach (unbounded swap, no OOM killer): a ballooned guest swapping out with
            # no free frame left stands in for it, one notification per 256 pages.
            under_oom = (snapshot.guest_swap_out > 0) & (snapshot.free_pages == 0)
            notifications = np.ceil(snapshot.guest_swap_out / self.params.oom_deflate_pages)
            deflate = np.where(under_oom, notifications * self.params.oom_deflate_pages, 0)
            if deflate.any():
                self._balloon = np.maximum(self._balloon - deflate.astype(np.int64), 0)
                decision.balloon_target_pages = self._balloon.copy()
                changed = True
        return decision if changed else None
