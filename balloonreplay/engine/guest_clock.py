"""Guest CLOCK as libCacheSim's ``Clock`` with a 1-bit counter and init_freq 0: a FIFO
queue (list A) where a hit sets the bit and the victim search clears the tail's bit and
moves it to the head until it finds a tail with a clear bit."""

from __future__ import annotations

from balloonreplay.engine.dlist import move_to_head, push_head, unlink
from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.state import P_FLAGS, P_NEXT, P_PREV, PF_REF, V_AH, V_AN, V_AT


@inline
def clock_insert(P, VS, v, pg):
    P[pg, P_FLAGS] &= ~PF_REF
    push_head(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)


@inline
def clock_hit(P, VS, v, pg):
    P[pg, P_FLAGS] |= PF_REF


@jit
def clock_victim(P, VS, v):
    tail = VS[v, V_AT]
    while P[tail, P_FLAGS] & PF_REF:
        P[tail, P_FLAGS] &= ~PF_REF
        move_to_head(P, VS, v, tail, P_PREV, P_NEXT, V_AH, V_AT, V_AN)
        tail = VS[v, V_AT]
    return tail


@inline
def clock_remove(P, VS, v, pg):
    unlink(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)
