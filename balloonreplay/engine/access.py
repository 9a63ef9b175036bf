"""One guest access: hit, or fault with eviction and fill (reference.py, "Access")."""

from __future__ import annotations

from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.guest import guest_hit, guest_insert, guest_remove, guest_victim
from balloonreplay.engine.host import cow_break, get_page, host_swap_in, stall
from balloonreplay.engine.pages import (
    access_mirrored,
    leave_frame,
    mirror_frame,
    page_dirty,
    page_file,
    page_where,
    set_page_dirty,
    set_page_file,
    set_page_where,
    with_access_mirror,
)
from balloonreplay.engine.state import (
    C_ACCESSES,
    C_DISK_READS,
    C_DISK_WRITES,
    C_FALSE,
    C_FREES,
    C_GUEST_FAULTS,
    C_GUEST_SWAP_IN,
    C_GUEST_SWAP_OUT,
    C_SILENT,
    C_STALE,
    C_ZERO_FILLS,
    ERR_CONTENT,
    F_HOST,
    F_PAGE,
    FC_CONTENT,
    FC_GUEST,
    FC_KNOWN,
    FREE,
    FREE_OP,
    G_ACCESS_TAG,
    G_ERROR,
    G_TRACK,
    IN_SWAP,
    L_DISK_READ,
    L_DISK_WRITE,
    L_GUEST_SWAP_IN,
    L_GUEST_SWAP_OUT,
    L_ZERO_FILL,
    NEW,
    NIL,
    ON_DISK,
    P_FLAGS,
    P_FRAME,
    PAGE,
    PC_CONTENT,
    PC_KNOWN,
    PC_SCONTENT,
    PC_SKNOWN,
    PC_SWAP_INS,
    PC_SWAP_OUTS,
    RESIDENT,
    SHARED,
    SWAPPED,
    UNBACKED,
    V_FBASE,
    V_FREE_N,
    V_NTOUCH,
    V_RESIDENT,
)

SRC_ZERO, SRC_SWAP, SRC_DISK = 0, 1, 2


@inline
def push_free(VS, FS, v, f):
    FS[VS[v, V_FBASE] + VS[v, V_FREE_N]] = f
    VS[v, V_FREE_N] += 1


@inline
def pop_free(VS, FS, v):
    VS[v, V_FREE_N] -= 1
    return FS[VS[v, V_FBASE] + VS[v, V_FREE_N]]


@inline
def count_eviction(PC, L, CNT, v, pg, file_backed, dirty, track):
    """The guest's side of evicting page pg: its counts and, with content tracking, the
    page's saved copy. Returns (where the page goes, the stall in ns)."""
    ns = 0
    if file_backed:
        where = ON_DISK
        if dirty:
            CNT[v, C_DISK_WRITES] += 1
            ns = L[L_DISK_WRITE]
    else:
        where = IN_SWAP
        CNT[v, C_GUEST_SWAP_OUT] += 1
        ns = L[L_GUEST_SWAP_OUT]
        if track:
            PC[pg, PC_SWAP_OUTS] += 1
    if track:
        PC[pg, PC_SKNOWN] = PC[pg, PC_KNOWN]
        PC[pg, PC_SCONTENT] = PC[pg, PC_CONTENT]
    return where, ns


@inline
def fill_source(P, pg, where):
    """Where a fault fills page pg from: zeroes (a new anonymous page), swap or disk."""
    if where == NEW:
        return SRC_DISK if page_file(P, pg) == 1 else SRC_ZERO
    if where == IN_SWAP:
        return SRC_SWAP
    return SRC_DISK


@inline
def count_fill(PC, L, CNT, v, pg, source, track):
    """The guest's counts for a fault filling page pg from ``source``; returns the stall
    in ns."""
    CNT[v, C_GUEST_FAULTS] += 1
    if source == SRC_SWAP:
        CNT[v, C_GUEST_SWAP_IN] += 1
        if track:
            PC[pg, PC_SWAP_INS] += 1
        return L[L_GUEST_SWAP_IN]
    if source == SRC_DISK:
        CNT[v, C_DISK_READS] += 1
        return L[L_DISK_READ]
    CNT[v, C_ZERO_FILLS] += 1
    return L[L_ZERO_FILL]


@inline
def record_fill(FC, PC, G, f, pg, where, known, content):
    """Content tracking at a fill: a new page takes the trace's content, one coming back
    must bring its last write (else ERR_CONTENT), and frame f takes the page's."""
    if where == NEW:
        PC[pg, PC_KNOWN] = known
        PC[pg, PC_CONTENT] = content
    elif PC[pg, PC_SKNOWN] != PC[pg, PC_KNOWN] or PC[pg, PC_SCONTENT] != PC[pg, PC_CONTENT]:
        G[G_ERROR] = ERR_CONTENT
    FC[f, FC_GUEST] = PAGE
    FC[f, FC_KNOWN] = PC[pg, PC_KNOWN]
    FC[f, FC_CONTENT] = PC[pg, PC_CONTENT]


@inline
def evict(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg):
    """Evict page pg (the guest's victim) from its frame. False: blocked, nothing done."""
    f = P[pg, P_FRAME]
    file_backed = page_file(P, pg) == 1
    dirty = page_dirty(P, pg)
    write_out = (not file_backed) or dirty
    if write_out and F[f, F_HOST] == SWAPPED:
        if not host_swap_in(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
            return False
        CNT[v, C_SILENT] += 1
    guest_remove(P, VS, G, v, pg)
    track = G[G_TRACK] == 1
    where, ns = count_eviction(PC, L, CNT, v, pg, file_backed, dirty, track)
    stall(VS, CNT, v, ns)
    set_page_where(P, pg, where)
    if track:
        FC[f, FC_GUEST] = FREE
    set_page_dirty(P, pg, False)
    leave_frame(F, P, G, f, pg)
    P[pg, P_FRAME] = NIL
    F[f, F_PAGE] = NIL
    VS[v, V_RESIDENT] -= 1
    push_free(VS, FS, v, f)
    return True


@inline
def fault(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg, known, content):
    """Bring page pg into a frame; return the frame, or NIL if blocked."""
    if VS[v, V_FREE_N] == 0:
        if not evict(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, guest_victim(P, VS, G, v)):
            return NIL
    f = pop_free(VS, FS, v)
    where = page_where(P, pg)
    source = fill_source(P, pg, where)
    h = F[f, F_HOST]
    if h == UNBACKED:
        if not get_page(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
            push_free(VS, FS, v, f)
            return NIL
    elif h == SWAPPED:
        if not host_swap_in(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
            push_free(VS, FS, v, f)
            return NIL
        if source == SRC_ZERO:
            CNT[v, C_FALSE] += 1
        else:
            CNT[v, C_STALE] += 1
    elif h == SHARED:
        if not cow_break(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
            push_free(VS, FS, v, f)
            return NIL
    track = G[G_TRACK] == 1
    stall(VS, CNT, v, count_fill(PC, L, CNT, v, pg, source, track))
    if track:
        record_fill(FC, PC, G, f, pg, where, known, content)
    set_page_where(P, pg, RESIDENT)
    set_page_dirty(P, pg, False)
    P[pg, P_FRAME] = f
    F[f, F_PAGE] = pg
    mirror_frame(F, P, G, f)
    VS[v, V_RESIDENT] += 1
    guest_insert(P, VS, G, v, pg)
    return f


@jit
def free_page(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg):
    """The guest frees page pg: its frame goes to the free list as it is (host state,
    stale content); an anonymous page is new again, a file page stays on disk (written
    back first if dirty). False: blocked, nothing done."""
    f = P[pg, P_FRAME]
    # Writing a dirty file page back reads its frame, so a host-swapped frame comes in
    # first, as an eviction's write-back does (a silent swap write).
    if f != NIL and page_file(P, pg) == 1 and page_dirty(P, pg) and F[f, F_HOST] == SWAPPED:
        if not host_swap_in(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
            return False
        CNT[v, C_SILENT] += 1
    CNT[v, C_FREES] += 1
    if f != NIL:
        guest_remove(P, VS, G, v, pg)
        leave_frame(F, P, G, f, pg)
        F[f, F_PAGE] = NIL
        if G[G_TRACK] == 1:
            FC[f, FC_GUEST] = FREE
        VS[v, V_RESIDENT] -= 1
        push_free(VS, FS, v, f)
    if page_file(P, pg) == 1:
        if f != NIL:
            if page_dirty(P, pg):
                CNT[v, C_DISK_WRITES] += 1
                stall(VS, CNT, v, L[L_DISK_WRITE])
            set_page_where(P, pg, ON_DISK)
            if G[G_TRACK] == 1:
                PC[pg, PC_SKNOWN] = PC[pg, PC_KNOWN]
                PC[pg, PC_SCONTENT] = PC[pg, PC_CONTENT]
    else:
        set_page_where(P, pg, NEW)
        if G[G_TRACK] == 1:
            PC[pg, PC_KNOWN] = 0
            PC[pg, PC_CONTENT] = 0
            PC[pg, PC_SKNOWN] = 0
            PC[pg, PC_SCONTENT] = 0
    P[pg, P_FRAME] = NIL
    set_page_dirty(P, pg, False)
    return True


@inline
def access(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg, write, known, content, file_backed):
    """One access of VM v to global page pg. False: blocked (retry next quantum)."""
    if write == FREE_OP:
        return free_page(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg)
    if page_file(P, pg) != file_backed:  # a store would dirty the line on every access
        set_page_file(P, pg, file_backed)
    f = P[pg, P_FRAME]
    if f != NIL:
        h = F[f, F_HOST]
        if h == SWAPPED:
            if not host_swap_in(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
                return False
        elif h == SHARED and write:
            if not cow_break(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
                return False
        guest_hit(P, VS, G, v, pg)
    else:
        f = fault(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, pg, known, content)
        if f == NIL:
            return False
    if write:
        if G[G_TRACK] == 1:
            PC[pg, PC_KNOWN] = known
            PC[pg, PC_CONTENT] = content
            FC[f, FC_KNOWN] = known
            FC[f, FC_CONTENT] = content
        if file_backed:
            set_page_dirty(P, pg, True)
    flags = P[pg, P_FLAGS]
    tag = G[G_ACCESS_TAG]
    if not access_mirrored(flags, tag):  # the frame's first access in the epoch
        VS[v, V_NTOUCH] += 1
        P[pg, P_FLAGS] = with_access_mirror(flags, tag)
    CNT[v, C_ACCESSES] += 1
    return True
