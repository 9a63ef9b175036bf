"""The per-access fast path: runs of plain guest hits with their bookkeeping in registers.

Most accesses of a replay hit a resident page whose frame is backed by the host; such a
hit changes only the guest policy's list, the frame's access bit, the page's dirty bit
and a few counts. ``hit_run`` replays such accesses back to back and stops at the first
one that needs anything else (a fault, a host swap-in, a copy-on-write break, a free, a
write whose content is tracked, a change of the page's file flag, the quantum's end or
the buffer's end), which ``kernel.run`` then replays through ``access.access``.

What it does to the state is exactly what ``access`` does for the same access (the
property tests compare the engine with reference.py); it is faster because the counts,
the VM's touched-frame count and the LRU list's ends live in local variables, which the
compiler keeps in registers, instead of in VS/G/CNT rows it must reload after every
store to a frame row (it cannot prove the arrays distinct), and because the guest
policy is dispatched once per run, not once per access.
"""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.guest_clock import clock_hit
from balloonreplay.engine.guest_twolist import twolist_hit
from balloonreplay.engine.prefetch import prefetch_row
from balloonreplay.engine.state import (
    ABIT_ACCESSED,
    ABIT_SAMPLED,
    C_ACCESSES,
    F_ABIT,
    F_HOST,
    F_NEXT,
    F_PAGE,
    F_PREV,
    FREE_OP,
    G_ACTIVE_PCT,
    G_DONE_Q,
    G_GP,
    GP_CLOCK,
    GP_FIFO,
    GP_LRU,
    NIL,
    P_DIRTY,
    P_FILE,
    P_FRAME,
    SHARED,
    SWAPPED,
    V_AH,
    V_AT,
    V_DONE_ACC,
    V_FBASE,
    V_FREE_N,
    V_LAST_T,
    V_NTOUCH,
    V_STALL,
)

# How far ahead (in accesses) the replay prefetches a page row, its frame row and the
# frame's list neighbours: each stage reads the row the previous one brought in.
PF_PAGE, PF_FRAME, PF_LINKS = 16, 8, 4


@inline
def prefetch_ahead(F, FC, P, PC, VS, BP, BW, v, pos, stop, track, tail_victim, tail):
    """Start loading the rows the accesses a few positions ahead will need, and the rows
    the next eviction will touch (for policies whose victim is the list tail)."""
    if pos + PF_PAGE < stop:
        prefetch_row(P, BP[pos + PF_PAGE])
    if pos + PF_FRAME < stop:
        fa = P[BP[pos + PF_FRAME], P_FRAME]
        if fa != NIL:
            prefetch_row(F, fa)
    if pos + PF_LINKS < stop:
        pa = BP[pos + PF_LINKS]
        fa = P[pa, P_FRAME]
        if fa != NIL:
            na = F[fa, F_PREV]
            if na != NIL:
                prefetch_row(F, na)
            na = F[fa, F_NEXT]
            if na != NIL:
                prefetch_row(F, na)
            if track and BW[pos + PF_LINKS]:
                prefetch_row(FC, fa)
        if track:
            prefetch_row(PC, pa)
    if tail_victim and tail != NIL and VS[v, V_FREE_N] == 0:
        # the next fault's victim: the page in the tail frame, and the frame before it
        # (the next tail)
        pa = F[tail, F_PAGE]
        if pa != NIL:
            prefetch_row(P, pa)
        na = F[tail, F_PREV]
        if na != NIL:
            prefetch_row(F, na)


@inline
def hit_run(F, FC, P, PC, VS, G, CNT, TS, BT, BP, BW, BF, v, pos, stop, end, track):
    """Replay VM v's accesses from ``pos`` while each is a plain hit issued before
    ``end``; return the position of the first one that is not (or ``stop``)."""
    gp = G[G_GP]
    lru = gp == GP_LRU
    tail_victim = lru or gp == GP_FIFO
    active_percent = G[G_ACTIVE_PCT]
    stall_ns = VS[v, V_STALL]
    touched_base = VS[v, V_FBASE]
    ntouch = VS[v, V_NTOUCH]
    head = VS[v, V_AH]
    tail = VS[v, V_AT]
    start = pos
    while pos < stop:
        if BT[pos] + stall_ns >= end:
            break
        write = BW[pos]
        if write == FREE_OP:
            break
        pg = BP[pos]
        f = P[pg, P_FRAME]
        if f == NIL:
            break
        file_backed = BF[pos]
        if P[pg, P_FILE] != file_backed:
            break
        h = F[f, F_HOST]
        if h == SWAPPED or (h == SHARED and write):
            break
        if write and track:  # content is tracked: access() records it
            break
        prefetch_ahead(F, FC, P, PC, VS, BP, BW, v, pos, stop, track, tail_victim, tail)
        if lru:
            if f != head:  # move to head; f is not the head, so it has a predecessor
                p = F[f, F_PREV]
                n = F[f, F_NEXT]
                F[p, F_NEXT] = n
                if n != NIL:
                    F[n, F_PREV] = p
                else:
                    tail = p
                F[f, F_PREV] = NIL
                F[f, F_NEXT] = head
                F[head, F_PREV] = f
                head = f
        elif gp == GP_CLOCK:
            clock_hit(F, VS, v, f)
        elif gp != GP_FIFO:
            twolist_hit(F, VS, v, f, active_percent)
        if write and file_backed:
            P[pg, P_DIRTY] = 1
        abit = F[f, F_ABIT]
        if abit & ABIT_ACCESSED == 0:
            # ABIT_SAMPLED (2) shifted is ABIT_SAMPLE_TOUCHED (4)
            F[f, F_ABIT] = abit | ABIT_ACCESSED | ((abit & ABIT_SAMPLED) << 1)
            TS[touched_base + ntouch] = f
            ntouch += 1
        pos += 1
    done = pos - start
    if done > 0:
        VS[v, V_NTOUCH] = ntouch
        if lru:
            VS[v, V_AH] = head
            VS[v, V_AT] = tail
        VS[v, V_LAST_T] = BT[pos - 1]
        VS[v, V_DONE_ACC] += done
        G[G_DONE_Q] += done
        CNT[v, C_ACCESSES] += done
    return pos
