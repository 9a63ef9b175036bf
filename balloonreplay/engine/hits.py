"""The per-access fast path: runs of plain guest hits (and plain faults) with their
bookkeeping in registers.

Most accesses of a replay hit a resident page whose frame is backed by the host; such a
hit changes only the guest policy's list, the page's dirty bit, the content recorded for
a write (when contents are tracked), the frame's access bit (once per epoch) and a few
counts. Apart from the cold content rows of a write whose content is tracked, everything
it reads and writes is in the page's row and its list neighbours' rows (the page row
mirrors its frame's host state and holds the frame's access bit: engine/pages.py), so a
hit never reads the frame row.
Most faults of an lru or fifo guest need nothing of the host either (the victim's frame
is backed, or a free frame is, or the host has free machine pages): ``plain_fault``
replays those. And a lone VM with nothing else happening at quantum boundaries runs on
into the next quantum (``next_quantum``). ``hit_run`` replays such accesses back to back
and stops at the first one that needs anything else (a fault the host takes part in, a
host swap-in, a copy-on-write break, a free, a change of the page's file flag, the
quantum's end or the buffer's end), which ``kernel.run`` then replays through
``access.access``.

What it does to the state is exactly what ``access`` and the quantum loop do for the same
accesses (the property tests compare the engine with reference.py, one of them with lone
VMs and no host policy, where these paths carry nearly every access); it is faster
because the counts, the VM's touched-frame count, its stall and the list's ends live in
local variables, which the compiler keeps in registers, instead of in VS/G/CNT rows it
must reload after every store to a state row (it cannot prove the arrays distinct),
because the guest policy is dispatched once per run, not once per access, and because
a fault or a quantum's end does not leave the loop.
"""

from __future__ import annotations

from balloonreplay.engine.access import count_eviction, count_fill, fill_source, record_fill
from balloonreplay.engine.flags import inline
from balloonreplay.engine.guest_twolist import twolist_hit
from balloonreplay.engine.host import host_list_add, set_host
from balloonreplay.engine.pages import (
    HOST_MIRROR,
    access_mirrored,
    entry_tag,
    page_where,
    with_access_mirror,
)
from balloonreplay.engine.prefetch import prefetch_cell, prefetch_row
from balloonreplay.engine.state import (
    BACKED,
    C_ACCESSES,
    C_STALL,
    F_HOST,
    F_PAGE,
    FC_CONTENT,
    FC_KNOWN,
    FREE_OP,
    G_ACCESS_TAG,
    G_ACTIVE_PCT,
    G_BALLOON_PROGRESS_Q,
    G_DEBUG,
    G_DONE_Q,
    G_EMERGENCY,
    G_EPOCH_END,
    G_GP,
    G_HOST_PAGES,
    G_HOST_USED,
    G_NOW,
    G_NVM,
    G_QUANTUM,
    G_SHARING,
    G_SKIP,
    GP_CLOCK,
    GP_FIFO,
    GP_LRU,
    NIL,
    P_FLAGS,
    P_FRAME,
    P_NEXT,
    P_PREV,
    PAGE_COLD_FIELDS,
    PC_CONTENT,
    PC_KNOWN,
    PF_DIRTY,
    PF_FILE,
    PF_HOST_SHARED,
    PF_HOST_SWAPPED,
    PF_LOW_MASK,
    PF_REF,
    PF_TAG_SHIFT,
    PF_WHERE_MASK,
    PF_WHERE_SHIFT,
    RESIDENT,
    UNBACKED,
    V_AH,
    V_AN,
    V_AT,
    V_BAL_N,
    V_DONE_ACC,
    V_FBASE,
    V_FREE_N,
    V_LAST_T,
    V_NTOUCH,
    V_RESIDENT,
    V_STALL,
    V_STALL_FIRST,
    V_STALL_LAST,
    V_TARGET,
)

# How far ahead (in accesses) the replay prefetches a page row. It does not prefetch
# more of the accesses ahead: a second stage that loaded the row of the page a few
# accesses ahead to prefetch its list neighbours (and its cold rows for a tracked write)
# made the kernel 9-15% slower on each of the benchmark's four runs (the kernel alone,
# as ``benchmarks/ab_replay.py --kernel`` times it), as those loads of rows still on
# their way stall the loop.
PF_PAGE = 16


@inline
def prefetch_page(P, BP, pos, stop):
    """Start loading the page row of the access a few positions ahead."""
    if pos + PF_PAGE < stop:
        prefetch_row(P, BP[pos + PF_PAGE])


@inline
def prefetch_victim(F, FC, P, PC, VS, v, tail_victim, tail, track):
    """Start loading the rows the next eviction will touch, for policies whose victim is
    the list tail: the tail's frame row (plain_fault writes it) and the page before it
    (the next tail); when contents are tracked, also the tail's cold page row (its saved
    copy and swap-out count) and its frame's cold row (the content the new page brings),
    both lines of each where a row spans two."""
    if tail_victim and tail != NIL and VS[v, V_FREE_N] == 0:
        fa = P[tail, P_FRAME]
        if fa != NIL:
            prefetch_row(F, fa)
            if track:
                prefetch_row(FC, fa)
                prefetch_cell(FC, fa, FC_CONTENT)
        na = P[tail, P_PREV]
        if na != NIL:
            prefetch_row(P, na)
        if track:
            prefetch_row(PC, tail)
            prefetch_cell(PC, tail, PAGE_COLD_FIELDS - 1)


@inline
def plain_fault(F, FC, P, PC, VS, G, L, CNT, FS, BK, BC, pos, v, pg, head, tail, stall_ns, track):
    """A fault of an lru or fifo guest that needs nothing of the host, replayed as
    ``access.fault`` would (with the content bookkeeping when ``track``, from the
    access's row ``pos`` of BK and BC): evict the list tail from its backed frame (or
    take a free frame that is backed, or unbacked while the host has free machine pages)
    and fill it. Returns (frame, list head, list tail, stall ns); frame NIL, with nothing
    changed, when the fault needs more (a host-swapped or shared frame, a full host)."""
    free_n = VS[v, V_FREE_N]
    if free_n == 0:
        victim = tail
        if victim == NIL:
            return NIL, head, tail, stall_ns
        victim_flags = P[victim, P_FLAGS]
        f = P[victim, P_FRAME]
        if victim_flags & HOST_MIRROR:  # its frame is host-swapped or shared
            return NIL, head, tail, stall_ns
        # The victim leaves the tail and its frame goes to pg (the slow path pushes it on
        # the free stack and pops it again), so the VM's resident, free and list counts
        # end where they were.
        tail = P[victim, P_PREV]
        if tail != NIL:
            P[tail, P_NEXT] = NIL
        else:
            head = NIL
        P[victim, P_PREV] = NIL
        where, ns = count_eviction(
            PC,
            L,
            CNT,
            v,
            victim,
            victim_flags & PF_FILE != 0,
            victim_flags & PF_DIRTY != 0,
            track,
        )
        stall_ns += ns
        CNT[v, C_STALL] += ns
        # The frame goes straight from the victim to pg, so the access bit the victim
        # would leave in the frame row (leave_frame) is the one pg takes (entry_tag): the
        # frame row is written (F_PAGE) but not read. Its F_ACCESS may keep an older tag,
        # which is read only once the frame holds no page, after pg has left it through
        # leave_frame (and pg's own access, below, gives it the epoch's tag).
        entry = G[G_ACCESS_TAG] if access_mirrored(victim_flags, G[G_ACCESS_TAG]) else 0
        P[victim, P_FLAGS] = (victim_flags & ~(PF_DIRTY | PF_WHERE_MASK)) | (
            where << PF_WHERE_SHIFT
        )
        P[victim, P_FRAME] = NIL
    else:
        f = FS[VS[v, V_FBASE] + free_n - 1]
        h = F[f, F_HOST]
        if h == UNBACKED:
            if G[G_HOST_USED] >= G[G_HOST_PAGES]:
                return NIL, head, tail, stall_ns
            set_host(F, FC, P, VS, f, BACKED)  # get_page with free machine pages
            G[G_HOST_USED] += 1
            host_list_add(F, FC, VS, G, f)
        elif h != BACKED:
            return NIL, head, tail, stall_ns
        entry = entry_tag(F, G, f)
        VS[v, V_FREE_N] = free_n - 1
        VS[v, V_RESIDENT] += 1
        VS[v, V_AN] += 1
    where = page_where(P, pg)
    ns = count_fill(PC, L, CNT, v, pg, fill_source(P, pg, where), track)
    stall_ns += ns
    CNT[v, C_STALL] += ns
    if track:  # (what evict would set in between, FC_GUEST = FREE, is overwritten here)
        # (BK and BC are read only here: a fault's row of them is rarely in cache)
        record_fill(FC, PC, G, f, pg, where, BK[pos], BC[pos])
    flags = P[pg, P_FLAGS]
    # resident, clean, in a backed frame, with the frame's access tag (mirror_frame; if
    # it has none, the caller sets the epoch's and counts the frame as touched)
    P[pg, P_FLAGS] = (
        (flags & PF_LOW_MASK & ~(PF_DIRTY | PF_WHERE_MASK | HOST_MIRROR))
        | (RESIDENT << PF_WHERE_SHIFT)
        | (entry << PF_TAG_SHIFT)
    )
    P[pg, P_FRAME] = f
    F[f, F_PAGE] = pg
    P[pg, P_PREV] = NIL
    P[pg, P_NEXT] = head
    if head != NIL:
        P[head, P_PREV] = pg
    else:
        tail = pg
    return f, pg, tail, stall_ns


@inline
def next_quantum(VS, G, v, issue, end):
    """The quantum ending at ``end`` is over for VM v, whose next access issues at
    ``issue``. A lone VM whose quanta hold nothing but its own accesses (no balloon
    moving, no scanner, no per-quantum checks) goes on into the quantum of that access
    here, with what the quantum's end and the next one's start would do (kernel.run,
    _try_skip_idle); returns that quantum's end, or -1 when the kernel must end the
    quantum itself (other VMs, any of those, or an epoch boundary).

    What the quantum's end and start would also do and need not be done here: clear
    G_BLOCKED_Q (a VM that blocked left hit_run for the quantum, so it is 0), zero the
    balloon credit (0 already: balloon_step zeroes it at the target) and stop on
    G_ERROR (only content tracking sets it, and sharing or checks are off)."""
    if (
        G[G_NVM] != 1
        or G[G_SKIP] == 0
        or G[G_DEBUG] == 1
        or G[G_SHARING] == 1
        or VS[v, V_BAL_N] != VS[v, V_TARGET]
    ):
        return -1
    q = G[G_QUANTUM]
    epoch_end = G[G_EPOCH_END]
    if end >= epoch_end:
        return -1
    now = end
    if issue >= now + q:  # idle quanta
        now = issue - issue % q
        if now >= epoch_end:
            return -1
    G[G_NOW] = now
    G[G_EMERGENCY] = 0
    G[G_BALLOON_PROGRESS_Q] = 0
    G[G_DONE_Q] = 0
    return now + q


@inline
def hit_run(F, FC, P, PC, VS, G, L, CNT, FS, BT, BP, BW, BK, BC, BF, v, pos, stop, end, track):
    """Replay VM v's accesses from ``pos`` while each is a plain hit or a plain fault
    issued before ``end`` (a lone VM: before the epoch's end); return the position of the
    first one that is not (or ``stop``). kernel.run reads the quantum from G_NOW after."""
    gp = G[G_GP]
    lru = gp == GP_LRU
    tail_victim = lru or gp == GP_FIFO
    active_percent = G[G_ACTIVE_PCT]
    stall_ns = VS[v, V_STALL]
    ntouch = VS[v, V_NTOUCH]
    head = VS[v, V_AH]
    tail = VS[v, V_AT]
    tag = G[G_ACCESS_TAG]
    start = pos
    quantum_start = pos
    prefetched_tail = NIL
    while pos < stop:
        issue = BT[pos] + stall_ns
        if issue >= end:
            end = next_quantum(VS, G, v, issue, end)
            if end < 0:
                break
            quantum_start = pos
            continue
        write = BW[pos]
        if write == FREE_OP:
            break
        pg = BP[pos]
        f = P[pg, P_FRAME]
        file_backed = BF[pos]
        if f == NIL:
            if not tail_victim or (P[pg, P_FLAGS] & PF_FILE) != file_backed:
                break
            if track:  # the fill reads and counts in the page's cold row
                prefetch_row(PC, pg)
                prefetch_cell(PC, pg, PAGE_COLD_FIELDS - 1)
            f, head, tail, stall_ns = plain_fault(
                F,
                FC,
                P,
                PC,
                VS,
                G,
                L,
                CNT,
                FS,
                BK,
                BC,
                pos,
                v,
                pg,
                head,
                tail,
                stall_ns,
                track,
            )
            if f == NIL:
                break
        flags = P[pg, P_FLAGS]
        if (flags & PF_FILE) != file_backed:
            break
        if flags & PF_HOST_SWAPPED:
            break
        if write and flags & PF_HOST_SHARED:  # a copy-on-write break: access() does it
            break
        prefetch_page(P, BP, pos, stop)
        if tail != prefetched_tail:  # once per list tail, not at every hit
            prefetch_victim(F, FC, P, PC, VS, v, tail_victim, tail, track)
            prefetched_tail = tail
        old_flags = flags
        if lru:
            if pg != head:  # move to head; pg is not the head, so it has a predecessor
                p = P[pg, P_PREV]
                n = P[pg, P_NEXT]
                P[p, P_NEXT] = n
                if n != NIL:
                    P[n, P_PREV] = p
                else:
                    tail = p
                P[pg, P_PREV] = NIL
                P[pg, P_NEXT] = head
                P[head, P_PREV] = pg
                head = pg
        elif gp == GP_CLOCK:
            flags |= PF_REF
        elif gp != GP_FIFO:
            twolist_hit(P, VS, v, pg, active_percent)
            flags = old_flags = P[pg, P_FLAGS]
        if write:
            if track:  # the content written, as access() records it
                PC[pg, PC_KNOWN] = BK[pos]
                PC[pg, PC_CONTENT] = BC[pos]
                FC[f, FC_KNOWN] = BK[pos]
                FC[f, FC_CONTENT] = BC[pos]
            if file_backed:
                flags |= PF_DIRTY
        if not access_mirrored(flags, tag):  # the frame's first access in the epoch
            ntouch += 1
            flags = with_access_mirror(flags, tag)
        if flags != old_flags:
            P[pg, P_FLAGS] = flags
        pos += 1
    done = pos - start
    if done > 0:
        VS[v, V_NTOUCH] = ntouch
        if VS[v, V_STALL_FIRST] < 0:  # its first access was the run's first, issued then
            VS[v, V_STALL_FIRST] = VS[v, V_STALL]
        VS[v, V_STALL] = stall_ns
        VS[v, V_STALL_LAST] = stall_ns
        if tail_victim:
            VS[v, V_AH] = head
            VS[v, V_AT] = tail
        VS[v, V_LAST_T] = BT[pos - 1]
        VS[v, V_DONE_ACC] += done
        G[G_DONE_Q] += pos - quantum_start
        CNT[v, C_ACCESSES] += done
    return pos
