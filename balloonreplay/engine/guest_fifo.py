"""Guest FIFO: insert at head, hits change nothing, victim = tail (list A)."""

from __future__ import annotations

from balloonreplay.engine.dlist import push_head, unlink
from balloonreplay.engine.flags import inline
from balloonreplay.engine.state import F_NEXT, F_PREV, V_AH, V_AN, V_AT


@inline
def fifo_insert(F, VS, v, f):
    push_head(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)


@inline
def fifo_victim(F, VS, v):
    return VS[v, V_AT]


@inline
def fifo_remove(F, VS, v, f):
    unlink(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)
