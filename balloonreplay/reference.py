"""The reference model: a plain, slow, readable Python twin of the numba engine.

This module's docstring is the model's specification. The engine (balloonreplay/engine/)
must produce the same metrics, counter for counter, epoch for epoch; the property tests
hold it to that. Everything below is a decision, and every tie is broken as written.

State
-----
VM v has ``config_pages[v]`` frames (0..C-1) and a dense page-id space 0..P-1. A frame's
*guest state* is free, page (holds one page) or balloon; its *host state* is unbacked,
backed (private machine page), shared (one copy-on-write machine page per distinct share
key) or swapped (host-swapped). Frames that are backed or shared are *in memory*.
Host used pages = backed frames + distinct share keys + sum of per-VM overhead, never
above ``host_pages``. Initially every frame is free and unbacked and every page is new.

Pages. A page is new (never touched), resident (in a frame), in guest swap (anonymous) or
on disk (file-backed). Its kind is the ``file_backed`` flag of its latest access. Its
content is a known 64-bit value or unknown (null in the trace): unknown equals nothing,
so it is never shared. The first touch sets the content from the access's ``content``;
a write sets it from the access (null: a new unknown content); a later read never
changes it (the trace's value on reads is ignored). The copy a page leaves in swap or on
disk is remembered and checked on its way back (no-loss invariant).

Guest free list and balloon: LIFO stacks per VM. Initially the free stack pops frame 0
first. A fault pops the top; an evicted frame is pushed; inflation pops a free frame and
pushes it on the balloon stack; deflation pops the balloon stack and pushes the free one.

Guest policies (the frames of resident pages, per VM; "head" = most recently inserted):
- ``lru``: insert at head, a hit moves to head, victim = tail.
- ``fifo``: insert at head, hits change nothing, victim = tail.
- ``clock``: libCacheSim ``Clock`` with one bit: insert at head with bit 0; a hit sets the
  bit; to find a victim, while the tail's bit is 1 clear it and move it to the head; the
  victim is then the tail.
- ``twolist``: inactive and active lists. Insert at inactive head with ref 1 (the fault
  is the page's first reference, so its second promotes it). A hit in inactive with ref
  0 sets ref; with ref 1 moves the frame to active head (ref 0). A hit in active moves it
  to active head. ``balance``: while active > (active + inactive) *
  active_percent // 100, move the active tail to the inactive head (ref 0); it runs after
  every promotion and before choosing a victim. Victim = inactive tail; if inactive is
  empty, the active tail is moved there first.
Finding a victim may change the policy state (clock hand, twolist aging); the victim
leaves the policy only once its eviction succeeds.

Eviction of a victim frame f holding page p: an anonymous page is always written to
guest swap (guest_swap_out; a clean copy is never kept, so per page swap-ins never exceed
swap-outs); a file-backed page is written back to disk only if dirty (disk_writes), else
dropped. A write-out from a host-swapped frame is a *silent swap write*: the host first
swaps the frame in (host_swap_in, needs a machine page). p then lives in swap or on disk
with its current content, and f is pushed on the free stack (its host state and stale
content stay; nothing tells the host).

Access of VM v to page p (write w, content c, file flag):
1. Hit (p in frame f). If f is swapped: host swap-in (needs a machine page). The guest
   policy records the hit.
2. Fault. If the free stack is empty, evict the guest policy's victim. Pop frame f. The
   source is: first touch -> zero-fill (anonymous) or disk read (file-backed); in swap ->
   guest swap-in; on disk -> disk read. The frame is prepared: unbacked -> needs a machine
   page; swapped -> host swap-in (needs a machine page) counted as a *stale swap read*
   (swap or disk source) or a *false swap read* (zero-fill); shared -> COW break;
   backed -> nothing. Then guest_faults (every miss, first touches included), the source
   counter, and the page is placed (frame content := page content; file pages start
   clean) and inserted into the guest policy.
   A write hit to a shared frame breaks COW first (before the policy records the hit, so
   a blocked access has not touched the policy). After a fault the frame is backed.
3. A write updates the page (and frame) content and makes a file page dirty. The
   frame's access bit is set (and, if the frame is in the VM's working-set sample, its
   sample-touched flag); ``accesses`` counts.

Free of page p by VM v (a trace row with ``free``; not an access): ``guest_frees``
counts. If p is in frame f, f leaves the guest policy and is pushed on the
free stack keeping its host state and (stale) content, so the next fault reuses it
first: backed, it needs no machine page; host-swapped, reusing it is a false or stale
swap read. An anonymous p becomes new (its swap copy is discarded; its next access is a
first touch). A file-backed p (its kind as of its latest access) leaves the page cache
instead: if resident and dirty it is written back first (disk_writes, disk_write_ns;
from a host-swapped frame that is a silent swap write, as in an eviction, and like one
it may block, before anything else of the free is done, and is retried as an access is),
and it stays on disk (its next access is a disk read). p is clean afterwards. A free of a
page never touched changes nothing else.

Free page reporting. A decision's ``unback_free_pages[v] = n`` unbacks the n frames at
the bottom of v's free stack (the ones free longest), VM by VM in index order: a backed
or shared frame releases its machine page or reference, a host-swapped one its swap
slot; its content becomes unknown. ``reported_free_pages`` counts the frames that were
not unbacked already. ``free_backed_pages`` (gauge) counts free frames backed or shared.

Working-set sampling (ESX). A decision's ``sample_pages[v] = k`` ends v's current
sample and draws a new one, VM by VM in index order: k draws of the VM's PRNG, frame
next() % C each (with replacement; a frame drawn twice counts twice). A sampled frame
becomes *sample-touched* at its first access after the draw. The snapshot reports
``sampled_pages`` (k) and ``sampled_touched_pages`` (draws whose frame is touched);
k = 0 ends the sample.

COW break of frame f (share key k with refcount r): if r == 1 the machine page becomes
private in place (no new page); otherwise f drops its reference and needs a machine page.
Either way it counts a cow_break and stalls cow_break_ns.

A frame that needs a machine page while the host is full makes the host reclaim, if it
may: on-demand host swapping is allowed unless the policy's ``allow_host_swap`` is False
for the VM that needs the page (a bool for every VM, or one per VM),
and always allowed in an *emergency* quantum (below). Host reclaim repeats until a page
is free: pick a VM u with probability proportional to its in-memory frames (host PRNG:
r = next() % total; the first VM whose running sum exceeds r), then a frame of u:
``random`` = up to 16 draws of u's PRNG (next() % C) until the frame is in memory, else
the first in-memory frame after the last draw (wrapping); ``lru-sampled`` = the tail of
u's host list. The frame becomes swapped (host_swap_out for u; a shared frame drops its
reference, freeing the machine page only with the last one). The VM that needed the page
stalls host_swap_out_ns per page swapped. The frame needing the page is never in memory
at that moment, so it is never its own victim. If host swapping is not allowed the access
*blocks*: nothing of the failing step is done (earlier steps of the access stay done, e.g.
an eviction), the VM's clock jumps to the end of the quantum (blocked_ns), and the access
is retried from its start in the next quantum.

Host list (``lru-sampled``): per VM, the in-memory frames; a frame enters at the head
when it becomes in memory and leaves when it stops being in memory. At every epoch end
(and at the end of the run) the frames of each VM whose access bit is set are moved to
the head in frame-index order, ``touched_pages`` counts them, and all bits are cleared.

Balloon. At the start of every quantum, for each VM in index order, credit +=
balloon_rate * quantum_ns; n = credit // 1e9 pages may move (credit keeps the rest; it
resets to 0 when the balloon is at its target after the moves). Inflation of one page:
if no frame is free, evict the guest victim (a blocked silent write stops the balloon for
this quantum); pop a free frame, release its host state (backed: page freed; shared:
reference dropped; swapped: swap slot discarded), make it a balloon frame (unbacked,
content unknown). Deflation: pop a balloon frame and push it on the free stack, unbacked.
Each page moved stalls the VM balloon_page_ns. Targets are clamped to 0..C-1.

Page sharing (if enabled). After the balloon step, for each VM in index order, the same
credit rule with the VM's scan rate gives n frames to visit: round robin (a cursor from
frame 0) or random (the VM's PRNG, next() % C). Only a backed frame with known content
is considered; its share key is (content, v) when sharing is intra-VM only, else
(content, any VM). If the key has a shared page, the frame joins it (its private page
is freed). Else if a candidate frame g was registered under the key and g != f is still
backed with the same key, both join a new shared page (two private pages become one) and
the candidate is removed. Otherwise f is registered as the candidate for the key (its own
previous registration, if still its own, is removed). Shared frames keep their host-list
position. ``zero_shared_pages`` counts shared frames whose content is 0 (they are also in
``shared_pages``).

Time (closed loop). Host time 0 is the trace's earliest ``t_ns`` (rows are in time order
within each VM, not across VMs); VM times are relative to it. VM v issues its next access
at t plus its stalls and blocked time so far. Host time advances in quanta of
``quantum_ns``: in quantum [s, e), after the balloon and scanner steps, each VM in index
order runs, in trace order, its accesses issued before e (their stalls delay its later
accesses within the same quantum). A
quantum where no access completed, some VM blocked and the balloon steps at its start made
no progress (host used pages did not fall and the balloons' total size did not grow)
makes the next quantum an *emergency* one: the host may swap on demand regardless of the
policy (ESX's low state), so no configuration deadlocks (balloons can only grow so far;
trading pages between balloons is no progress); while balloons still make progress,
blocked VMs wait for them. Epoch boundaries are every ``epoch_ns`` (a multiple of
the quantum): at each, the sampling pass runs, one metrics row per VM is written (counters
of the epoch, gauges at its end, t_ns = the boundary), then the policy decides; its
decision applies from the next quantum: balloon targets, allow_host_swap, scan rates, and
host swap targets, which the host meets at once, VM by VM in index order, by swapping out
the VM's frames by its selection while its swapped frames are fewer than the target (no
VM stalls for it; counted in the next epoch). The policy is also asked once before the
first access (epoch -1). The run ends at the end of the quantum in which the last access
completes; the last (partial) epoch's row has t_ns = that quantum's end.

Slowdown of VM v = (T + S_v) / T with T = max(t of its last access - t of its first, 1):
the VM's own unstalled run time, so a VM that starts late is not credited with the time
before its start. S_v is its stalled run time less T: the stall and blocked time the VM
suffered from the moment it first issued an access (a blocked first attempt included) to
the completion of its last, plus how late its balloon work before its first access made
its start. That work is done in the idle guest: each balloon step (at its quantum's start
s, stalling the VM w) keeps it busy until b := max(b, s) + w (b from 0), and its start is
late by max(0, b - t of its first access); only that lateness enters the stalls its
accesses issue after (the VM's clock), so it issues its first access at max(t, b) - the
``stall_ns`` counter still counts all of w. Balloon work after its last access delays
nothing of its run. (Idle VMs are what ESX's tax and Xen's self-ballooning reclaim.)
``stall_ns`` counts every latency stall and ``blocked_ns`` all blocked time, in or out of
the run.
Latencies: guest swap-in/out, disk read, disk write (write-back of a dirty file page),
host swap-in (also for silent writes, stale and false reads), host swap-out (per page
the host swaps synchronously for the VM), COW break, zero-fill, balloon page. Balloon work
stalls its VM: at a full CPU or more (rate x balloon_page_ns >= 1 s per s) a VM whose
targets keep moving every few quanta may make no progress until they stop moving.

The engine may jump over quanta in which nothing can happen (no VM issues an access,
every balloon is at its target, no scanner runs); that changes no result.

PRNG: splitmix64, one stream per VM (stream i = VM i) and one for the host (stream V),
each seeded with mix64(seed ^ ((i + 1) * golden)) where mix64 is splitmix64's finaliser.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from balloonreplay.engine.config import ReplayConfig
from balloonreplay.policies import Decision, HostPolicy, Snapshot

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
NS_PER_S = 1_000_000_000
RANDOM_DRAWS = 16

FREE, PAGE, BALLOON = 0, 1, 2  # guest state of a frame
UNBACKED, BACKED, SHARED, SWAPPED = 0, 1, 2, 3  # host state of a frame
NEW, RESIDENT, IN_SWAP, ON_DISK = 0, 1, 2, 3  # where a page is

COUNTERS = (
    "accesses",
    "guest_faults",
    "guest_swap_in",
    "guest_swap_out",
    "disk_reads",
    "disk_writes",
    "zero_fills",
    "host_swap_in",
    "host_swap_out",
    "cow_breaks",
    "silent_swap_writes",
    "stale_swap_reads",
    "false_swap_reads",
    "blocked_ns",
    "stall_ns",
    "scanned_pages",
    "balloon_inflated",
    "balloon_deflated",
    "guest_frees",
    "reported_free_pages",
)
GAUGES = (
    "balloon_pages",
    "balloon_target_pages",
    "free_pages",
    "resident_pages",
    "backed_pages",
    "shared_pages",
    "zero_shared_pages",
    "host_swapped_pages",
    "touched_pages",
    "free_backed_pages",
)


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed: int, stream: int):
        self.state = mix64((seed ^ ((stream + 1) * GOLDEN)) & MASK64)

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & MASK64
        return mix64(self.state)


class Blocked(Exception):
    """The VM needs a machine page, the host is full and may not swap."""


@dataclass
class Access:
    t_ns: int  # relative to the trace's earliest time
    page: int
    write: bool
    content: int | None
    file_backed: bool
    free: bool = False


class Frame:
    def __init__(self, vm: int, index: int):
        self.vm = vm
        self.index = index
        self.guest = FREE
        self.page: int | None = None
        self.host = UNBACKED
        self.content: int | None = None  # None = unknown
        self.accessed = False
        self.host_swap_outs = 0
        self.host_swap_ins = 0
        self.candidate_key = None  # key this frame registered as sharing candidate
        self.sampled = False  # in its VM's working-set sample
        self.sample_touched = False  # accessed since the sample was drawn


class Page:
    def __init__(self):
        self.where = NEW
        self.frame: Frame | None = None
        self.file_backed = False
        self.dirty = False
        self.content: int | None = None
        self.saved_content: int | None = None  # the copy in swap or on disk
        self.swap_ins = 0
        self.swap_outs = 0


class GuestPolicy:
    """One of lru, clock, fifo, twolist over the frames of resident pages."""

    def __init__(self, name: str, active_percent: int):
        self.name = name
        self.active_percent = active_percent
        # OrderedDict order: first = tail, last = head.
        self.inactive: OrderedDict[Frame, None] = OrderedDict()
        self.active: OrderedDict[Frame, None] = OrderedDict()
        self.bit: dict[Frame, int] = {}

    def insert(self, f: Frame) -> None:
        self.inactive[f] = None
        # A fault is a twolist page's first reference (as Linux marks a page it reads in
        # accessed); libCacheSim's Clock inserts with the bit clear.
        self.bit[f] = 1 if self.name == "twolist" else 0

    def hit(self, f: Frame) -> None:
        if self.name == "lru":
            self.inactive.move_to_end(f)
        elif self.name == "clock":
            self.bit[f] = 1
        elif self.name == "twolist":
            if f in self.active:
                self.active.move_to_end(f)
            elif self.bit[f] == 0:
                self.bit[f] = 1
            else:
                del self.inactive[f]
                self.active[f] = None
                self.bit[f] = 0
                self.balance()

    def balance(self) -> None:
        while (
            len(self.active) > (len(self.active) + len(self.inactive)) * self.active_percent // 100
        ):
            self.demote()

    def demote(self) -> None:
        tail = next(iter(self.active))
        del self.active[tail]
        self.inactive[tail] = None
        self.bit[tail] = 0

    def victim(self) -> Frame:
        if self.name == "clock":
            while True:
                tail = next(iter(self.inactive))
                if self.bit[tail] == 0:
                    return tail
                self.bit[tail] = 0
                self.inactive.move_to_end(tail)
        if self.name == "twolist":
            self.balance()
            if not self.inactive:
                self.demote()
        return next(iter(self.inactive))

    def remove(self, f: Frame) -> None:
        if f in self.inactive:
            del self.inactive[f]
        else:
            del self.active[f]
        del self.bit[f]


class VM:
    def __init__(self, index: int, config_pages: int, overhead_pages: int, rng: SplitMix64):
        self.index = index
        self.config_pages = config_pages
        self.overhead_pages = overhead_pages
        self.frames = [Frame(index, i) for i in range(config_pages)]
        self.free_stack = list(reversed(self.frames))  # pop() gives frame 0 first
        self.balloon_stack: list[Frame] = []
        self.pages: dict[int, Page] = {}
        self.policy: GuestPolicy | None = None
        self.host_list: OrderedDict[Frame, None] = OrderedDict()  # first = tail
        self.rng = rng
        self.accesses: list[Access] = []
        self.next_access = 0
        self.stall_total_ns = 0  # stalls and blocked time so far
        # stall_total_ns when the VM first issued an access and when its latest access
        # completed: S_v, the stall its slowdown counts, is what lies between.
        self.stall_at_first_issue_ns: int | None = None
        self.stall_at_last_done_ns = 0
        # Before its first access: the host time its idle guest finished its balloon work.
        self.pre_start_busy_ns = 0
        self.balloon_target = 0
        self.balloon_credit = 0
        self.scan_rate = 0
        self.scan_credit = 0
        self.scan_cursor = 0
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.touched_pages = 0
        self.sample: list[Frame] = []  # working-set sample draws (frames may repeat)
        self.allow_host_swap = True

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def stall(self, ns: int) -> None:
        self.stall_total_ns += ns
        self.counters["stall_ns"] += ns

    def in_memory(self) -> int:
        return sum(1 for f in self.frames if f.host in (BACKED, SHARED))

    def finished(self) -> bool:
        return self.next_access >= len(self.accesses)

    def issue_time(self) -> int:
        return self.accesses[self.next_access].t_ns + self.stall_total_ns


class ReferenceModel:
    def __init__(self, config: ReplayConfig, policy: HostPolicy):
        self.cfg = config
        self.lat = config.latencies
        self.policy = policy
        n = config.num_vms
        self.vms = [
            VM(v, config.config_pages[v], config.overhead_pages[v], SplitMix64(config.seed, v))
            for v in range(n)
        ]
        for vm in self.vms:
            vm.policy = GuestPolicy(config.guest_policy, config.twolist_active_percent)
            vm.scan_rate = config.scan_rate_pages_per_s
        self.host_rng = SplitMix64(config.seed, n)
        self.host_pages = config.host_pages
        self.host_used = sum(config.overhead_pages)
        self.shared: dict[tuple, int] = {}  # share key -> reference count
        self.candidates: dict[tuple, Frame] = {}  # share key -> frame registered
        self.emergency = False
        self.rows: list[dict] = []

    # ----------------------------------------------------------------- host memory
    def share_key(self, f: Frame) -> tuple:
        return (f.content, f.vm if self.cfg.intra_vm_sharing_only else -1)

    def can_get_page(self, vm: VM) -> bool:
        return self.host_used < self.host_pages or vm.allow_host_swap or self.emergency

    def get_page(self, vm: VM, f: Frame) -> None:
        """Frame f (not in memory) becomes backed; the host reclaims first if full."""
        if self.host_used >= self.host_pages:
            if not (vm.allow_host_swap or self.emergency):
                raise Blocked
            while self.host_used >= self.host_pages:
                victim_vm = self.pick_host_vm()
                self.host_swap_out(self.pick_host_frame(victim_vm))
                vm.stall(self.lat.host_swap_out_ns)
        f.host = BACKED
        self.host_used += 1
        self.vms[f.vm].host_list[f] = None

    def pick_host_vm(self) -> VM:
        counts = [vm.in_memory() for vm in self.vms]
        r = self.host_rng.next() % sum(counts)
        running = 0
        for vm, count in zip(self.vms, counts, strict=True):
            running += count
            if running > r:
                return vm
        raise AssertionError("unreachable")

    def pick_host_frame(self, vm: VM) -> Frame:
        if self.cfg.host_selection == "lru-sampled":
            return next(iter(vm.host_list))
        index = 0
        for _ in range(RANDOM_DRAWS):
            index = vm.rng.next() % vm.config_pages
            if vm.frames[index].host in (BACKED, SHARED):
                return vm.frames[index]
        for step in range(1, vm.config_pages + 1):
            f = vm.frames[(index + step) % vm.config_pages]
            if f.host in (BACKED, SHARED):
                return f
        raise AssertionError("no in-memory frame in the chosen VM")

    def release(self, f: Frame) -> None:
        """f stops being in memory: free its private page or drop its shared reference."""
        if f.host == BACKED:
            self.host_used -= 1
        elif f.host == SHARED:
            key = self.share_key(f)
            self.shared[key] -= 1
            if self.shared[key] == 0:
                del self.shared[key]
                self.host_used -= 1
        if f.host in (BACKED, SHARED):
            del self.vms[f.vm].host_list[f]

    def host_swap_out(self, f: Frame) -> None:
        self.release(f)
        f.host = SWAPPED
        f.host_swap_outs += 1
        self.vms[f.vm].count("host_swap_out")

    def host_swap_in(self, vm: VM, f: Frame) -> None:
        self.get_page(vm, f)
        f.host_swap_ins += 1
        vm.count("host_swap_in")
        vm.stall(self.lat.host_swap_in_ns)

    def cow_break(self, vm: VM, f: Frame) -> None:
        key = self.share_key(f)
        if self.shared[key] == 1:
            del self.shared[key]
            f.host = BACKED  # the machine page becomes private in place
        else:
            if not self.can_get_page(vm):
                raise Blocked
            self.shared[key] -= 1
            del vm.host_list[f]
            f.host = UNBACKED
            self.get_page(vm, f)
        vm.count("cow_breaks")
        vm.stall(self.lat.cow_break_ns)

    # ----------------------------------------------------------------- guest
    def evict(self, vm: VM, f: Frame) -> None:
        page = vm.pages[f.page]
        write_out = not page.file_backed or page.dirty
        if write_out and f.host == SWAPPED:
            self.host_swap_in(vm, f)  # may block; nothing else is done yet
            vm.count("silent_swap_writes")
        vm.policy.remove(f)
        if page.file_backed:
            if page.dirty:
                vm.count("disk_writes")
                vm.stall(self.lat.disk_write_ns)
            page.where = ON_DISK
        else:
            vm.count("guest_swap_out")
            vm.stall(self.lat.guest_swap_out_ns)
            page.swap_outs += 1
            page.where = IN_SWAP
        page.saved_content = page.content
        page.dirty = False
        page.frame = None
        f.guest = FREE
        f.page = None
        vm.free_stack.append(f)

    def fault(self, vm: VM, page_id: int, page: Page, a: Access) -> Frame:
        if not vm.free_stack:
            self.evict(vm, vm.policy.victim())
        f = vm.free_stack.pop()
        try:
            source = {NEW: "disk" if a.file_backed else "zero", IN_SWAP: "swap", ON_DISK: "disk"}[
                page.where
            ]
            if f.host == UNBACKED:
                self.get_page(vm, f)
            elif f.host == SWAPPED:
                self.host_swap_in(vm, f)
                vm.count("false_swap_reads" if source == "zero" else "stale_swap_reads")
            elif f.host == SHARED:
                self.cow_break(vm, f)
        except Blocked:
            vm.free_stack.append(f)
            raise
        vm.count("guest_faults")
        if source == "swap":
            vm.count("guest_swap_in")
            vm.stall(self.lat.guest_swap_in_ns)
            page.swap_ins += 1
        elif source == "disk":
            vm.count("disk_reads")
            vm.stall(self.lat.disk_read_ns)
        else:
            vm.count("zero_fills")
            vm.stall(self.lat.zero_fill_ns)
        if page.where == NEW:
            page.content = a.content
        else:
            assert page.saved_content == page.content, "a page came back with other content"
        page.where = RESIDENT
        page.frame = f
        page.dirty = False
        f.guest = PAGE
        f.page = page_id
        f.content = page.content
        vm.policy.insert(f)
        return f

    def free(self, vm: VM, a: Access) -> None:
        page = vm.pages.get(a.page)
        f = page.frame if page is not None else None
        if f is not None and page.file_backed and page.dirty and f.host == SWAPPED:
            self.host_swap_in(vm, f)  # may block; nothing else is done yet
            vm.count("silent_swap_writes")
        vm.count("guest_frees")
        if page is None:
            return
        if f is not None:
            vm.policy.remove(f)
            f.guest = FREE
            f.page = None
            vm.free_stack.append(f)
        if page.file_backed:
            if f is not None:
                if page.dirty:
                    vm.count("disk_writes")
                    vm.stall(self.lat.disk_write_ns)
                page.where = ON_DISK
                page.saved_content = page.content
        else:
            page.where = NEW
            page.content = None
            page.saved_content = None
        page.frame = None
        page.dirty = False

    def access(self, vm: VM, a: Access) -> None:
        if a.free:
            self.free(vm, a)
            return
        page = vm.pages.get(a.page)
        if page is None:
            page = vm.pages[a.page] = Page()
        page.file_backed = a.file_backed
        f = page.frame
        if f is not None:
            if f.host == SWAPPED:
                self.host_swap_in(vm, f)
            elif f.host == SHARED and a.write:
                self.cow_break(vm, f)
            vm.policy.hit(f)
        else:
            f = self.fault(vm, a.page, page, a)  # leaves f backed
        if a.write:
            page.content = a.content
            f.content = a.content
            if page.file_backed:
                page.dirty = True
        f.accessed = True
        if f.sampled:
            f.sample_touched = True
        vm.count("accesses")

    # ----------------------------------------------------------------- balloon
    def inflate_one(self, vm: VM) -> bool:
        if not vm.free_stack:
            try:
                self.evict(vm, vm.policy.victim())
            except Blocked:
                return False
        f = vm.free_stack.pop()
        if f.host == SWAPPED:
            f.host = UNBACKED  # the host discards the swapped copy
        elif f.host in (BACKED, SHARED):
            self.release(f)
        f.host = UNBACKED
        f.content = None
        f.guest = BALLOON
        vm.balloon_stack.append(f)
        vm.count("balloon_inflated")
        vm.stall(self.lat.balloon_page_ns)
        return True

    def deflate_one(self, vm: VM) -> None:
        f = vm.balloon_stack.pop()
        f.guest = FREE
        vm.free_stack.append(f)
        vm.count("balloon_deflated")
        vm.stall(self.lat.balloon_page_ns)

    def balloon_step(self, vm: VM) -> None:
        vm.balloon_credit += self.cfg.balloon_rate_pages_per_s * self.cfg.quantum_ns
        n = vm.balloon_credit // NS_PER_S
        vm.balloon_credit -= n * NS_PER_S
        for _ in range(n):
            size = len(vm.balloon_stack)
            if size < vm.balloon_target:
                if not self.inflate_one(vm):
                    break
            elif size > vm.balloon_target:
                self.deflate_one(vm)
            else:
                break
        if len(vm.balloon_stack) == vm.balloon_target:
            vm.balloon_credit = 0

    # ----------------------------------------------------------------- sharing
    def scan_step(self, vm: VM) -> None:
        vm.scan_credit += vm.scan_rate * self.cfg.quantum_ns
        n = vm.scan_credit // NS_PER_S
        vm.scan_credit -= n * NS_PER_S
        for _ in range(n):
            if self.cfg.scan_order == "random":
                index = vm.rng.next() % vm.config_pages
            else:
                index = vm.scan_cursor
                vm.scan_cursor = (vm.scan_cursor + 1) % vm.config_pages
            vm.count("scanned_pages")
            self.scan_frame(vm.frames[index])

    def scan_frame(self, f: Frame) -> None:
        if f.host != BACKED or f.content is None:
            return
        key = self.share_key(f)
        if key in self.shared:
            self.shared[key] += 1
            f.host = SHARED
            self.host_used -= 1
            return
        g = self.candidates.get(key)
        if g is not None and g is not f and g.host == BACKED and self.share_key(g) == key:
            self.shared[key] = 2
            f.host = SHARED
            g.host = SHARED
            self.host_used -= 1
            del self.candidates[key]
            g.candidate_key = None
            return
        old = f.candidate_key
        if old is not None and self.candidates.get(old) is f:
            del self.candidates[old]
        self.candidates[key] = f
        f.candidate_key = key

    # ----------------------------------------------------------------- epochs
    def sampling_pass(self) -> None:
        for vm in self.vms:
            vm.touched_pages = 0
            for f in vm.frames:
                if f.accessed:
                    vm.touched_pages += 1
                    if f.host in (BACKED, SHARED):
                        vm.host_list.move_to_end(f)
                    f.accessed = False

    def gauges(self, vm: VM) -> dict[str, int]:
        shared = [f for f in vm.frames if f.host == SHARED]
        return {
            "balloon_pages": len(vm.balloon_stack),
            "balloon_target_pages": vm.balloon_target,
            "free_pages": len(vm.free_stack),
            "resident_pages": sum(1 for f in vm.frames if f.guest == PAGE),
            "backed_pages": sum(1 for f in vm.frames if f.host == BACKED),
            "shared_pages": len(shared),
            "zero_shared_pages": sum(1 for f in shared if f.content == 0),
            "host_swapped_pages": sum(1 for f in vm.frames if f.host == SWAPPED),
            "touched_pages": vm.touched_pages,
            "free_backed_pages": sum(1 for f in vm.free_stack if f.host in (BACKED, SHARED)),
        }

    def snapshot(self, epoch: int, t_ns: int) -> Snapshot:
        rows = [self.gauges(vm) for vm in self.vms]
        gauges = {name: [row[name] for row in rows] for name in GAUGES}
        counters = {name: [vm.counters[name] for vm in self.vms] for name in COUNTERS}
        return Snapshot.from_measures(
            gauges,
            counters,
            epoch=epoch,
            t_ns=t_ns,
            epoch_ns=self.cfg.epoch_ns,
            host_pages=self.host_pages,
            host_used_pages=self.host_used,
            overhead_pages=np.array(self.cfg.overhead_pages, dtype=np.int64),
            config_pages=np.array(self.cfg.config_pages, dtype=np.int64),
            sampled_pages=np.array([len(vm.sample) for vm in self.vms], dtype=np.int64),
            sampled_touched_pages=np.array(
                [sum(1 for f in vm.sample if f.sample_touched) for vm in self.vms], dtype=np.int64
            ),
            # Before the first access no VM counts as finished (the engine has read no
            # trace yet), even one without accesses.
            finished=np.array([vm.finished() and epoch >= 0 for vm in self.vms], dtype=bool),
        )

    def apply(self, decision: Decision | None) -> None:
        if decision is None:
            return
        decision = decision.checked(len(self.vms))
        if decision.balloon_target_pages is not None:
            for vm, target in zip(self.vms, decision.balloon_target_pages, strict=True):
                vm.balloon_target = min(max(int(target), 0), vm.config_pages - 1)
        if decision.allow_host_swap is not None:
            allow = np.broadcast_to(np.asarray(decision.allow_host_swap, dtype=bool), len(self.vms))
            for vm, allowed in zip(self.vms, allow, strict=True):
                vm.allow_host_swap = bool(allowed)
        if decision.scan_rate_pages_per_s is not None:
            for vm, rate in zip(self.vms, decision.scan_rate_pages_per_s, strict=True):
                vm.scan_rate = max(int(rate), 0)
        if decision.host_swap_target_pages is not None:
            for vm, target in zip(self.vms, decision.host_swap_target_pages, strict=True):
                target = min(max(int(target), 0), vm.config_pages)
                while (
                    sum(1 for f in vm.frames if f.host == SWAPPED) < target and vm.in_memory() > 0
                ):
                    self.host_swap_out(self.pick_host_frame(vm))
        if decision.unback_free_pages is not None:
            for vm, n in zip(self.vms, decision.unback_free_pages, strict=True):
                for f in vm.free_stack[: max(int(n), 0)]:
                    if f.host == UNBACKED:
                        continue
                    if f.host in (BACKED, SHARED):
                        self.release(f)
                    f.host = UNBACKED
                    f.content = None
                    vm.count("reported_free_pages")
        if decision.sample_pages is not None:
            for vm, k in zip(self.vms, decision.sample_pages, strict=True):
                for f in vm.sample:
                    f.sampled = False
                    f.sample_touched = False
                vm.sample = [
                    vm.frames[vm.rng.next() % vm.config_pages] for _ in range(max(int(k), 0))
                ]
                for f in vm.sample:
                    f.sampled = True

    def emit_rows(self, epoch: int, t_ns: int) -> None:
        for vm in self.vms:
            row = {"vm": vm.index, "epoch": epoch, "t_ns": t_ns}
            row.update(vm.counters)
            row.update(self.gauges(vm))
            row["host_used_pages"] = self.host_used
            row["shared_contents"] = len(self.shared)
            self.rows.append(row)

    def reset_counters(self) -> None:
        for vm in self.vms:
            vm.counters = dict.fromkeys(COUNTERS, 0)

    # ----------------------------------------------------------------- main loop
    def run_vm_quantum(self, vm: VM, end_ns: int) -> tuple[int, bool]:
        completed = 0
        while not vm.finished():
            issue = vm.issue_time()
            if issue >= end_ns:
                break
            if vm.stall_at_first_issue_ns is None:
                vm.stall_at_first_issue_ns = vm.stall_total_ns
            try:
                self.access(vm, vm.accesses[vm.next_access])
            except Blocked:
                vm.stall_total_ns += end_ns - issue
                vm.count("blocked_ns", end_ns - issue)
                return completed, True
            vm.stall_at_last_done_ns = vm.stall_total_ns
            vm.next_access += 1
            completed += 1
        return completed, False

    def run(self) -> None:
        cfg = self.cfg
        self.apply(self.policy.start(self.snapshot(-1, 0)))
        now = 0
        epoch = 0
        epoch_end = cfg.epoch_ns
        while not all(vm.finished() for vm in self.vms):
            end = now + cfg.quantum_ns
            used_before = self.host_used
            ballooned_before = sum(len(vm.balloon_stack) for vm in self.vms)
            for vm in self.vms:
                stall_before = vm.stall_total_ns
                self.balloon_step(vm)
                worked = vm.stall_total_ns - stall_before
                if vm.stall_at_first_issue_ns is None and worked > 0 and vm.accesses:
                    t_first = vm.accesses[0].t_ns
                    late_before = max(0, vm.pre_start_busy_ns - t_first)
                    vm.pre_start_busy_ns = max(vm.pre_start_busy_ns, now) + worked
                    late = max(0, vm.pre_start_busy_ns - t_first)
                    vm.stall_total_ns = stall_before + late - late_before
            ballooned = sum(len(vm.balloon_stack) for vm in self.vms) - ballooned_before
            progress = self.host_used < used_before or ballooned > 0
            if cfg.sharing:
                for vm in self.vms:
                    self.scan_step(vm)
            completed = 0
            blocked = False
            for vm in self.vms:
                done, was_blocked = self.run_vm_quantum(vm, end)
                completed += done
                blocked = blocked or was_blocked
            self.emergency = completed == 0 and blocked and not progress
            now = end
            if self.debug:
                self.check_invariants()
            if all(vm.finished() for vm in self.vms):
                break
            if now >= epoch_end:
                self.sampling_pass()
                self.emit_rows(epoch, now)
                snapshot = self.snapshot(epoch, now)
                self.reset_counters()
                self.apply(self.policy.decide(snapshot))
                epoch += 1
                epoch_end += cfg.epoch_ns
        self.sampling_pass()
        self.emit_rows(epoch, now)
        self.end_ns = now

    debug = True

    # ----------------------------------------------------------------- invariants
    def check_invariants(self) -> None:
        backed = 0
        for vm in self.vms:
            guest = [f.guest for f in vm.frames]
            assert len(vm.free_stack) == guest.count(FREE)
            assert len(vm.balloon_stack) == guest.count(BALLOON)
            assert len(vm.free_stack) + len(vm.balloon_stack) + guest.count(PAGE) == vm.config_pages
            for f in vm.frames:
                if f.guest == BALLOON:
                    assert f.host == UNBACKED
                if f.guest == PAGE:
                    page = vm.pages[f.page]
                    assert page.frame is f and page.content == f.content
                assert f.host_swap_ins <= f.host_swap_outs
                backed += f.host == BACKED
            for page in vm.pages.values():
                assert page.swap_ins <= page.swap_outs
                if page.where != RESIDENT:
                    assert page.frame is None and page.saved_content == page.content
            assert set(vm.host_list) == {f for f in vm.frames if f.host in (BACKED, SHARED)}
        shared = [f for vm in self.vms for f in vm.frames if f.host == SHARED]
        assert all(self.share_key(f) in self.shared for f in shared)
        assert sum(self.shared.values()) == len(shared)  # every reference is a shared frame
        assert self.host_used == backed + len(self.shared) + sum(self.cfg.overhead_pages)
        assert self.host_used <= self.host_pages

    def summary(self) -> dict:
        return summarize_slowdowns(
            [vm.accesses[0].t_ns if vm.accesses else None for vm in self.vms],
            [vm.accesses[-1].t_ns if vm.accesses else None for vm in self.vms],
            [
                vm.stall_at_last_done_ns
                - (vm.stall_at_first_issue_ns or 0)
                + (max(0, vm.pre_start_busy_ns - vm.accesses[0].t_ns) if vm.accesses else 0)
                for vm in self.vms
            ],
            [vm.stall_total_ns for vm in self.vms],
        )


def summarize_slowdowns(
    first_t_ns: list[int | None],
    last_t_ns: list[int | None],
    stall_in_run_ns: list[int],
    stall_total_ns: list[int],
) -> dict:
    """Per-VM slowdown = (T + S) / T, T = max(t of its last access - t of its first, 1),
    S its stalls from its first access's issue to its last's completion: measured on the
    VM's own timeline, so a VM that starts later is not diluted, and balloon work done in
    a VM before it starts or after it ends does not count."""
    slowdowns = []
    for first, last, stall in zip(first_t_ns, last_t_ns, stall_in_run_ns, strict=True):
        if last is None:
            slowdowns.append(1.0)
            continue
        base = max(int(last) - int(first), 1)
        slowdowns.append((base + int(stall)) / base)
    return {
        "slowdown": slowdowns,
        "max_slowdown": max(slowdowns),
        "stall_total_ns": [int(s) for s in stall_total_ns],
    }


def accesses_from_table(table: pa.Table | pa.RecordBatch, num_vms: int) -> list[list[Access]]:
    """Split a canonical table into per-VM access lists, times relative to the earliest
    (rows are in time order only within each VM)."""
    data = table.to_pydict()
    per_vm: list[list[Access]] = [[] for _ in range(num_vms)]
    if not data["vm"]:
        return per_vm
    t0 = min(data["t_ns"])
    file_col = data.get("file_backed") or [False] * len(data["vm"])
    content_col = data.get("content") or [None] * len(data["vm"])
    free_col = data.get("free") or [False] * len(data["vm"])
    for vm, t, page, write, content, file_backed, free in zip(
        data["vm"],
        data["t_ns"],
        data["page"],
        data["write"],
        content_col,
        file_col,
        free_col,
        strict=True,
    ):
        per_vm[vm].append(
            Access(int(t) - int(t0), int(page), bool(write), content, bool(file_backed), bool(free))
        )
    return per_vm


def simulate(
    table: pa.Table | pa.RecordBatch,
    config: ReplayConfig,
    policy: HostPolicy,
    check: bool = True,
) -> tuple[list[dict], dict]:
    """Replay a (small) canonical table; return the metrics rows and the summary."""
    model = ReferenceModel(config, policy)
    model.debug = check
    for vm, accesses in zip(model.vms, accesses_from_table(table, config.num_vms), strict=True):
        vm.accesses = accesses
    model.run()
    summary = model.summary()
    summary["end_ns"] = model.end_ns
    return model.rows, summary
