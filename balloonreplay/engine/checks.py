"""Invariants, checked at the end of every quantum when the debug flag is set (and by the
tests): frames add up, host accounting holds and stays within host_pages, resident pages
and their frames agree on content, saved copies equal the last write, no page or frame
was swapped in more often than out. Returns an ERR_* code, 0 when all hold."""

from __future__ import annotations

from balloonreplay.engine.flags import entry
from balloonreplay.engine.state import (
    BACKED,
    BALLOON,
    ERR_CONTENT,
    ERR_FRAMES,
    ERR_HOST,
    ERR_LINK,
    ERR_SWAP,
    F_HOST,
    F_PAGE,
    FC_CONTENT,
    FC_GUEST,
    FC_HINS,
    FC_HOUTS,
    FC_KNOWN,
    FREE,
    G_DISTINCT,
    G_HOST_PAGES,
    G_HOST_USED,
    G_NVM,
    G_OVERHEAD_TOTAL,
    NIL,
    P_FRAME,
    P_WHERE,
    PAGE,
    PC_CONTENT,
    PC_KNOWN,
    PC_SCONTENT,
    PC_SKNOWN,
    PC_SWAP_INS,
    PC_SWAP_OUTS,
    RESIDENT,
    UNBACKED,
    V_BAL_N,
    V_C,
    V_FBASE,
    V_FREE_N,
    V_NPAGES,
    V_PBASE,
    V_RESIDENT,
)


@entry
def check_invariants(F, FC, P, PC, VS, G):
    backed = 0
    for v in range(G[G_NVM]):
        base = VS[v, V_FBASE]
        free = 0
        balloon = 0
        resident = 0
        for f in range(base, base + VS[v, V_C]):
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
                if P[pg, P_FRAME] != f:
                    return ERR_LINK
                if PC[pg, PC_KNOWN] != FC[f, FC_KNOWN] or PC[pg, PC_CONTENT] != FC[f, FC_CONTENT]:
                    return ERR_CONTENT
            if FC[f, FC_HINS] > FC[f, FC_HOUTS]:
                return ERR_SWAP
            if F[f, F_HOST] == BACKED:
                backed += 1
        if free != VS[v, V_FREE_N] or balloon != VS[v, V_BAL_N] or resident != VS[v, V_RESIDENT]:
            return ERR_FRAMES
        if free + balloon + resident != VS[v, V_C]:
            return ERR_FRAMES
        pbase = VS[v, V_PBASE]
        for pg in range(pbase, pbase + VS[v, V_NPAGES]):
            if PC[pg, PC_SWAP_INS] > PC[pg, PC_SWAP_OUTS]:
                return ERR_SWAP
            if P[pg, P_WHERE] != RESIDENT:
                if P[pg, P_FRAME] != NIL:
                    return ERR_LINK
                if (
                    PC[pg, PC_SKNOWN] != PC[pg, PC_KNOWN]
                    or PC[pg, PC_SCONTENT] != PC[pg, PC_CONTENT]
                ):
                    return ERR_CONTENT
    overhead = G[G_HOST_USED] - backed - G[G_DISTINCT]
    if overhead != G[G_OVERHEAD_TOTAL] or G[G_HOST_USED] > G[G_HOST_PAGES]:
        return ERR_HOST
    return 0
