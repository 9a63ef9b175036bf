"""Guest two-list (Linux-style): inactive list A, active list B.

New pages enter the inactive head unreferenced; a hit on an unreferenced inactive page
marks it, a hit on a referenced one promotes it to the active head; an active hit moves
it to the active head. ``balance`` ages the active tail into the inactive head while the
active list holds more than active_percent of the resident pages; it runs after each
promotion and before each victim choice. Victim = inactive tail."""

from __future__ import annotations

from balloonreplay.engine.dlist import move_to_head, push_head, unlink
from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.state import (
    F_BIT,
    F_LIST,
    F_NEXT,
    F_PREV,
    V_AH,
    V_AN,
    V_AT,
    V_BH,
    V_BN,
    V_BT,
)


@inline
def twolist_insert(F, VS, v, f):
    F[f, F_BIT] = 0
    F[f, F_LIST] = 0
    push_head(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)


@jit
def _demote(F, VS, v):
    tail = VS[v, V_BT]
    unlink(F, VS, v, tail, F_PREV, F_NEXT, V_BH, V_BT, V_BN)
    F[tail, F_LIST] = 0
    F[tail, F_BIT] = 0
    push_head(F, VS, v, tail, F_PREV, F_NEXT, V_AH, V_AT, V_AN)


@jit
def twolist_balance(F, VS, v, active_percent):
    while VS[v, V_BN] > (VS[v, V_BN] + VS[v, V_AN]) * active_percent // 100:
        _demote(F, VS, v)


@jit
def twolist_hit(F, VS, v, f, active_percent):
    if F[f, F_LIST] == 1:
        move_to_head(F, VS, v, f, F_PREV, F_NEXT, V_BH, V_BT, V_BN)
    elif F[f, F_BIT] == 0:
        F[f, F_BIT] = 1
    else:
        unlink(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)
        F[f, F_LIST] = 1
        F[f, F_BIT] = 0
        push_head(F, VS, v, f, F_PREV, F_NEXT, V_BH, V_BT, V_BN)
        twolist_balance(F, VS, v, active_percent)


@jit
def twolist_victim(F, VS, v, active_percent):
    twolist_balance(F, VS, v, active_percent)
    if VS[v, V_AN] == 0:
        _demote(F, VS, v)
    return VS[v, V_AT]


@inline
def twolist_remove(F, VS, v, f):
    if F[f, F_LIST] == 1:
        unlink(F, VS, v, f, F_PREV, F_NEXT, V_BH, V_BT, V_BN)
    else:
        unlink(F, VS, v, f, F_PREV, F_NEXT, V_AH, V_AT, V_AN)
