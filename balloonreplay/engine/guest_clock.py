"""Guest CLOCK as libCacheSim's ``Clock`` with a 1-bit counter and init_freq 0: a FIFO
queue (list A) where a hit sets the bit and the victim search clears the tail's bit and
moves it to the head until it finds a tail with a clear bit."""

from __future__ import annotations

from balloonreplay.engine.dlist import move_to_head, push_head, unlink
from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.state import F_BIT, F_NEXT, F_PREV, V_AH, V_AN, V_AT


@inline
def clock_insert(F, VS, v, f):
    F[f, F_BIT] = 0
    push_head(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)


@inline
def clock_hit(F, VS, v, f):
    F[f, F_BIT] = 1


@jit
def clock_victim(F, VS, v):
    tail = VS[v, V_AT]
    while F[tail, F_BIT] == 1:
        F[tail, F_BIT] = 0
        move_to_head(F, VS, v, tail, F_PREV, F_NEXT, V_AH, V_AT, V_AN)
        tail = VS[v, V_AT]
    return tail


@inline
def clock_remove(F, VS, v, f):
    unlink(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)
