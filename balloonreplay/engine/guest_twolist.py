"""Guest two-list (Linux-style): inactive list A, active list B.

New pages enter the inactive head referenced (the fault was their first reference), so
their first hit promotes them to the active head; a page aged out of the active list
enters the inactive head unreferenced, and a hit there marks it, a second promotes it;
an active hit moves it to the active head. ``balance`` ages the active tail into the
inactive head while the active list holds more than active_percent of the resident
pages; it runs after each promotion and before each victim choice. Victim = inactive
tail."""

from __future__ import annotations

from balloonreplay.engine.dlist import move_to_head, push_head, unlink
from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.state import (
    P_FLAGS,
    P_NEXT,
    P_PREV,
    PF_ACTIVE,
    PF_REF,
    V_AH,
    V_AN,
    V_AT,
    V_BH,
    V_BN,
    V_BT,
)


@inline
def twolist_insert(P, VS, v, pg):
    P[pg, P_FLAGS] = (P[pg, P_FLAGS] & ~PF_ACTIVE) | PF_REF
    push_head(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)


@jit
def _demote(P, VS, v):
    tail = VS[v, V_BT]
    unlink(P, VS, v, tail, P_PREV, P_NEXT, V_BH, V_BT, V_BN)
    P[tail, P_FLAGS] &= ~(PF_REF | PF_ACTIVE)
    push_head(P, VS, v, tail, P_PREV, P_NEXT, V_AH, V_AT, V_AN)


@jit
def twolist_balance(P, VS, v, active_percent):
    while VS[v, V_BN] > (VS[v, V_BN] + VS[v, V_AN]) * active_percent // 100:
        _demote(P, VS, v)


@jit
def twolist_hit(P, VS, v, pg, active_percent):
    flags = P[pg, P_FLAGS]
    if flags & PF_ACTIVE:
        move_to_head(P, VS, v, pg, P_PREV, P_NEXT, V_BH, V_BT, V_BN)
    elif flags & PF_REF == 0:
        P[pg, P_FLAGS] = flags | PF_REF
    else:
        unlink(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)
        P[pg, P_FLAGS] = (flags & ~PF_REF) | PF_ACTIVE
        push_head(P, VS, v, pg, P_PREV, P_NEXT, V_BH, V_BT, V_BN)
        twolist_balance(P, VS, v, active_percent)


@jit
def twolist_victim(P, VS, v, active_percent):
    twolist_balance(P, VS, v, active_percent)
    if VS[v, V_AN] == 0:
        _demote(P, VS, v)
    return VS[v, V_AT]


@inline
def twolist_remove(P, VS, v, pg):
    if P[pg, P_FLAGS] & PF_ACTIVE:
        unlink(P, VS, v, pg, P_PREV, P_NEXT, V_BH, V_BT, V_BN)
    else:
        unlink(P, VS, v, pg, P_PREV, P_NEXT, V_AH, V_AT, V_AN)
