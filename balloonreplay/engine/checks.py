"""Invariants: frames add up, host accounting holds and stays within host_pages, resident
pages and their frames agree on content, saved copies equal the last write, no page or
frame was swapped in more often than out. ``check_invariants`` returns an ERR_* code, 0
when all hold; the kernel runs it at the end of every quantum when the debug flag is set.
Every replay runs ``check_end_of_run`` once on its final state (passes over every frame
and page, the frames' side and the pages' side in two threads), so no result is ever
written from a state that lost or invented a page."""

from __future__ import annotations

import threading

import numpy as np

from balloonreplay.engine.flags import entry, inline
from balloonreplay.engine.pages import mirror_ok, page_where
from balloonreplay.engine.prefetch import prefetch_row
from balloonreplay.engine.state import (
    BACKED,
    BALLOON,
    ERR_CONTENT,
    ERR_FRAMES,
    ERR_HOST,
    ERR_LINK,
    ERR_SWAP,
    ERROR_MESSAGES,
    F_HOST,
    F_PAGE,
    FC_CONTENT,
    FC_GUEST,
    FC_HINS,
    FC_HOUTS,
    FC_KNOWN,
    FREE,
    G_DISTINCT,
    G_GP,
    G_HOST_PAGES,
    G_HOST_USED,
    G_NVM,
    G_OVERHEAD_TOTAL,
    G_TRACK,
    GP_TWOLIST,
    NIL,
    P_FLAGS,
    P_FRAME,
    P_NEXT,
    P_PREV,
    PAGE,
    PC_CONTENT,
    PC_KNOWN,
    PC_SCONTENT,
    PC_SKNOWN,
    PC_SWAP_INS,
    PC_SWAP_OUTS,
    PF_ACTIVE,
    RESIDENT,
    SHARED,
    SWAPPED,
    UNBACKED,
    V_AH,
    V_AN,
    V_AT,
    V_BACKED,
    V_BAL_N,
    V_BH,
    V_BN,
    V_BT,
    V_C,
    V_FBASE,
    V_FREE_N,
    V_NPAGES,
    V_PBASE,
    V_RESIDENT,
    V_SHARED,
    V_SWAPPED,
)
from balloonreplay.errors import BalloonreplayError

# How many pages ahead the checks' passes prefetch the row their page or frame links to:
# the passes go through the rows in order, and the linked row is anywhere.
CHECK_AHEAD = 16


@inline
def prefetch_linked(A, a, field, end, B):
    """Start loading the row of B that row ``a`` of A names in ``field`` (if a < end and
    it names one in range)."""
    if a < end:
        b = A[a, field]
        if b >= 0 and b < B.shape[0]:
            prefetch_row(B, b)


@inline
def pages_ok(P, VS, G, v):
    """VM v's pages: a page is resident exactly when it has a frame, which is one of v's;
    as many pages have one as VS counts resident (check_frames and frame_contents_ok
    check that count from the frames, and that each frame's page names it back, so
    every resident page's frame holds it); and the guest-policy lists (A, and B for
    twolist's active pages) hold the resident pages, as many as VS counts: a page
    without a predecessor is its list's head, every other page's predecessor is a
    resident page of v in the same list whose successor it is, and in each list exactly
    one page lacks a successor, its tail.

    The links are read one way only, from each page to its predecessor (one row read
    beside the page's own, not two): the predecessor map is then one-to-one (a page has
    one successor), so every page but the head (at most one: they all equal it) is some
    page's predecessor and names that page as its successor. With no head, every page
    would have a successor; with one, one page is left, the only one that can lack a
    successor: the tail, which must. One pass over the pages in order, not a walk along
    the links, so it costs little on large guests; a separate ring of pages that link
    to each other would go unnoticed."""
    base = VS[v, V_FBASE]
    c = VS[v, V_C]
    pbase = VS[v, V_PBASE]
    end = pbase + VS[v, V_NPAGES]
    twolist = G[G_GP] == GP_TWOLIST
    if (VS[v, V_AH] == NIL) != (VS[v, V_AN] == 0) or (VS[v, V_AT] == NIL) != (VS[v, V_AN] == 0):
        return False
    if (VS[v, V_BH] == NIL) != (VS[v, V_BN] == 0) or (VS[v, V_BT] == NIL) != (VS[v, V_BN] == 0):
        return False
    resident = 0
    listed_a = 0
    listed_b = 0
    tails = 0
    for pg in range(pbase, end):
        prefetch_linked(P, pg + CHECK_AHEAD, P_PREV, end, P)
        f = P[pg, P_FRAME]
        if (f == NIL) != (page_where(P, pg) != RESIDENT):
            return False
        if f == NIL:
            continue
        if f < base or f >= base + c:
            return False
        resident += 1
        active = twolist and (P[pg, P_FLAGS] & PF_ACTIVE) != 0
        if active:
            listed_b += 1
        else:
            listed_a += 1
        prev = P[pg, P_PREV]
        if prev == NIL:
            if pg != (VS[v, V_BH] if active else VS[v, V_AH]):
                return False
        elif prev < pbase or prev >= end or P[prev, P_NEXT] != pg or P[prev, P_FRAME] == NIL:
            return False
        elif twolist and ((P[prev, P_FLAGS] & PF_ACTIVE) != 0) != active:
            return False  # linked across the two lists
        if P[pg, P_NEXT] == NIL:
            if pg != (VS[v, V_BT] if active else VS[v, V_AT]):
                return False
            tails += 1
    lists = (1 if listed_a > 0 else 0) + (1 if listed_b > 0 else 0)  # one tail each
    return (
        resident == VS[v, V_RESIDENT]
        and listed_a == VS[v, V_AN]
        and listed_b == VS[v, V_BN]
        and tails == lists
    )


@inline
def frame_contents_ok(F, FC, P, PC, VS, G, v0, v1, links):
    """check_invariants' laws seen from the frames of VMs v0 .. v1 - 1: each VM's frames,
    counted by their guest state (FC_GUEST), match its free, balloon and resident gauges;
    balloon frames are unbacked; a frame holding a page has its content. With ``links``
    (all VMs), also what check_frames checks its own way: such a frame's page links back
    to it, no frame was host-swapped in more often than out, and host used = backed +
    distinct shared contents + overhead <= host_pages. Returns an ERR_* code, 0 when all
    hold."""
    backed = 0
    for v in range(v0, v1):
        base = VS[v, V_FBASE]
        free = 0
        balloon = 0
        resident = 0
        for f in range(base, base + VS[v, V_C]):
            prefetch_linked(F, f + CHECK_AHEAD, F_PAGE, base + VS[v, V_C], PC)
            g = FC[f, FC_GUEST]
            if g == FREE:
                free += 1
            elif g == BALLOON:
                balloon += 1
                if F[f, F_HOST] != UNBACKED:
                    return ERR_FRAMES
            elif g == PAGE:
                resident += 1
                pg = F[f, F_PAGE]
                if pg < 0 or pg >= P.shape[0]:
                    return ERR_LINK
                if links and (P[pg, P_FRAME] != f or not mirror_ok(F, P, G, f, pg)):
                    return ERR_LINK
                if PC[pg, PC_KNOWN] != FC[f, FC_KNOWN] or PC[pg, PC_CONTENT] != FC[f, FC_CONTENT]:
                    return ERR_CONTENT
            if links:
                if FC[f, FC_HINS] > FC[f, FC_HOUTS]:
                    return ERR_SWAP
                if F[f, F_HOST] == BACKED:
                    backed += 1
        if free != VS[v, V_FREE_N] or balloon != VS[v, V_BAL_N] or resident != VS[v, V_RESIDENT]:
            return ERR_FRAMES
        if free + balloon + resident != VS[v, V_C]:
            return ERR_FRAMES
    if links:
        overhead = G[G_HOST_USED] - backed - G[G_DISTINCT]
        if overhead != G[G_OVERHEAD_TOTAL] or G[G_HOST_USED] > G[G_HOST_PAGES]:
            return ERR_HOST
    return 0


@inline
def page_contents_ok(P, PC, VS, G, lists):
    """check_invariants' laws seen from the pages: no page was swapped in more often than
    out; a page out of memory has no frame and its saved copy is its last write; with
    ``lists``, also pages_ok (frame links and guest lists, seen from the pages)."""
    for v in range(G[G_NVM]):
        pbase = VS[v, V_PBASE]
        for pg in range(pbase, pbase + VS[v, V_NPAGES]):
            if PC[pg, PC_SWAP_INS] > PC[pg, PC_SWAP_OUTS]:
                return ERR_SWAP
            if page_where(P, pg) != RESIDENT:
                if P[pg, P_FRAME] != NIL:
                    return ERR_LINK
                if (
                    PC[pg, PC_SKNOWN] != PC[pg, PC_KNOWN]
                    or PC[pg, PC_SCONTENT] != PC[pg, PC_CONTENT]
                ):
                    return ERR_CONTENT
        if lists and not pages_ok(P, VS, G, v):
            return ERR_LINK
    return 0


@entry
def check_invariants(F, FC, P, PC, VS, G):
    """Every law that needs the tracked contents and per-page swap counts (G_TRACK), with
    the frame and list laws they rest on: what the kernel checks at every quantum under
    debug_checks."""
    code = frame_contents_ok(F, FC, P, PC, VS, G, 0, G[G_NVM], True)
    if code != 0:
        return code
    return page_contents_ok(P, PC, VS, G, True)


@entry
def check_frame_contents(F, FC, P, PC, VS, G, v0, v1):
    """frame_contents_ok for VMs v0 .. v1 - 1 without the laws check_frames checks, for
    check_end_of_run (which runs check_frames too)."""
    return frame_contents_ok(F, FC, P, PC, VS, G, v0, v1, False)


@entry
def check_page_contents(P, PC, VS, G):
    """page_contents_ok without the guest lists, which check_pages has checked."""
    return page_contents_ok(P, PC, VS, G, False)


@entry
def check_frames(F, FC, P, VS, G, FS, BS, seen):
    """The laws seen from the frames, which hold whether or not the engine tracks
    contents and per-page swap counts (G_TRACK, off without sharing or debug checks, when
    FC_GUEST, PC_* and the saved copies are not kept): every frame of a VM is in exactly
    one of its free stack, its balloon stack or a page, and those three add up to
    config_pages; a frame's page links back to it; balloon frames are unbacked; the
    per-VM host gauges count the frames' host states; host used = backed + distinct
    shared contents + overhead <= host_pages; no frame was host-swapped in more often
    than out. ``seen``: one zeroed int8 per frame (the kernels do not allocate)."""
    backed_total = 0
    for v in range(G[G_NVM]):
        base = VS[v, V_FBASE]
        c = VS[v, V_C]
        nfree = VS[v, V_FREE_N]
        nbal = VS[v, V_BAL_N]
        if nfree < 0 or nbal < 0 or VS[v, V_RESIDENT] < 0:
            return ERR_FRAMES
        if nfree + nbal + VS[v, V_RESIDENT] != c:
            return ERR_FRAMES
        for i in range(base, base + nfree):
            if i + CHECK_AHEAD < base + nfree:
                ahead = FS[i + CHECK_AHEAD]
                if ahead >= 0 and ahead < F.shape[0]:
                    prefetch_row(F, ahead)
            f = FS[i]
            if f < base or f >= base + c or seen[f] != 0 or F[f, F_PAGE] != NIL:
                return ERR_FRAMES
            seen[f] = 1
        for i in range(base, base + nbal):
            f = BS[i]
            if f < base or f >= base + c or seen[f] != 0 or F[f, F_PAGE] != NIL:
                return ERR_FRAMES
            if F[f, F_HOST] != UNBACKED:
                return ERR_FRAMES
            seen[f] = 1
        resident = 0
        backed = 0
        shared = 0
        swapped = 0
        for f in range(base, base + c):
            prefetch_linked(F, f + CHECK_AHEAD, F_PAGE, base + c, P)
            pg = F[f, F_PAGE]
            if pg != NIL:
                if seen[f] != 0:
                    return ERR_FRAMES
                seen[f] = 1
                resident += 1
                if pg < 0 or pg >= P.shape[0]:
                    return ERR_LINK
                if P[pg, P_FRAME] != f or page_where(P, pg) != RESIDENT:
                    return ERR_LINK
                if not mirror_ok(F, P, G, f, pg):
                    return ERR_LINK
            if seen[f] != 1:
                return ERR_FRAMES  # a frame in no list: lost
            h = F[f, F_HOST]
            if h == BACKED:
                backed += 1
            elif h == SHARED:
                shared += 1
            elif h == SWAPPED:
                swapped += 1
            if FC[f, FC_HINS] > FC[f, FC_HOUTS]:
                return ERR_SWAP
        if resident != VS[v, V_RESIDENT]:
            return ERR_FRAMES
        if backed != VS[v, V_BACKED] or shared != VS[v, V_SHARED] or swapped != VS[v, V_SWAPPED]:
            return ERR_HOST
        backed_total += backed
    if G[G_HOST_USED] != backed_total + G[G_DISTINCT] + G[G_OVERHEAD_TOTAL]:
        return ERR_HOST
    if G[G_HOST_USED] > G[G_HOST_PAGES]:
        return ERR_HOST
    return 0


@entry
def check_pages(P, VS, G):
    """The laws seen from the pages (pages_ok), read-only, so they run beside
    check_frames."""
    for v in range(G[G_NVM]):
        if not pages_ok(P, VS, G, v):
            return ERR_LINK
    return 0


class InvariantError(BalloonreplayError):
    """The engine's final state breaks a conservation law: a bug in the model, never a
    result. ``code`` is the ERR_* code of the first law found broken."""

    def __init__(self, code: int, where: str = "at the end of the run"):
        self.code = code
        message = ERROR_MESSAGES.get(code, f"unknown error code {code}")
        super().__init__(f"replay invariant violated {where}: {message}")


def check_end_of_run(state, metrics: dict | None = None) -> None:
    """Check the conservation laws on a final EngineState; raise InvariantError if one
    fails. The structural laws always; with content tracking on (sharing or debug checks),
    also contents, saved copies and the per-page swap balance (check_invariants). Without
    tracking there are no per-page swap counts, so the swap balance is checked per VM over
    the whole run from ``metrics`` (the metrics columns as arrays, one row per VM per
    epoch): swap-ins never exceed swap-outs, in the guest and on the host."""
    # The pages' side runs in a second thread (the kernels release the GIL): at the end of
    # a replay the reading thread's core is idle, and these passes over every frame and
    # page took 0.05-0.1 s of a 0.5-0.8 s one-VM replay of 20 M accesses.
    F, FC, P, PC, VS, G = state.F, state.FC, state.P, state.PC, state.VS, state.G
    tracked = G[G_TRACK] == 1  # then check_invariants' laws too, split the same way
    pages_side: dict = {"code": 0, "error": None}
    # The frames' contents of the first half of the VMs are checked beside the frames'
    # laws, the others' beside the pages': on the fitting 8-VM run the frames' side took
    # 136 ms (check_frames 62, check_frame_contents 74) and the pages' side 63.
    nvm = int(G[G_NVM])
    half = (nvm + 1) // 2

    def check_pages_side() -> None:
        try:
            code = int(check_pages(P, VS, G))
            if code == 0 and tracked:
                code = int(check_page_contents(P, PC, VS, G))
            if code == 0 and tracked:
                code = int(check_frame_contents(F, FC, P, PC, VS, G, half, nvm))
            pages_side["code"] = code
        except BaseException as exc:  # raised in the caller's thread: never a silent pass
            pages_side["error"] = exc

    worker = threading.Thread(target=check_pages_side, name="balloonreplay-check", daemon=True)
    worker.start()
    try:
        seen = np.zeros(F.shape[0], dtype=np.int8)
        code = int(check_frames(F, FC, P, VS, G, state.FS, state.BS, seen))
        if code == 0 and tracked:
            code = int(check_frame_contents(F, FC, P, PC, VS, G, 0, half))
    finally:
        worker.join()
    if pages_side["error"] is not None:
        raise pages_side["error"]
    # The frames' side's code first: with laws broken on both sides, that one is named.
    code = code or pages_side["code"]
    if code == 0 and metrics is not None:
        vm = np.asarray(metrics["vm"], dtype=np.int64)
        for swap_in, swap_out in (
            ("guest_swap_in", "guest_swap_out"),
            ("host_swap_in", "host_swap_out"),
        ):
            ins = np.bincount(vm, weights=metrics[swap_in], minlength=nvm)
            outs = np.bincount(vm, weights=metrics[swap_out], minlength=nvm)
            if (ins > outs).any():
                code = ERR_SWAP
    if code != 0:
        raise InvariantError(code)
