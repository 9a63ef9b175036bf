"""Guest LRU: insert at head, a hit moves to head, victim = tail (list A)."""

from __future__ import annotations

from balloonreplay.engine.dlist import move_to_head, push_head, unlink
from balloonreplay.engine.flags import inline
from balloonreplay.engine.state import P_NEXT, P_PREV, V_AH, V_AN, V_AT


@inline
def lru_insert(P, VS, v, pg):
    push_head(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)


@inline
def lru_hit(P, VS, v, pg):
    move_to_head(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)


@inline
def lru_victim(P, VS, v):
    return VS[v, V_AT]


@inline
def lru_remove(P, VS, v, pg):
    unlink(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)
