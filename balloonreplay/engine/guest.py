"""The guest-policy interface: insert, hit, victim, remove, dispatched on G[G_GP].

Every policy keeps the frames of the VM's resident pages. ``victim`` may change the
policy's state (clock hand, twolist aging) but leaves the victim in place; ``remove``
takes it out once its eviction has succeeded.
"""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.guest_clock import clock_hit, clock_insert, clock_remove, clock_victim
from balloonreplay.engine.guest_fifo import fifo_insert, fifo_remove, fifo_victim
from balloonreplay.engine.guest_lru import lru_hit, lru_insert, lru_remove, lru_victim
from balloonreplay.engine.guest_twolist import (
    twolist_hit,
    twolist_insert,
    twolist_remove,
    twolist_victim,
)
from balloonreplay.engine.state import G_ACTIVE_PCT, G_GP, GP_CLOCK, GP_FIFO, GP_LRU


@inline
def guest_insert(F, VS, G, v, f):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_insert(F, VS, v, f)
    elif gp == GP_CLOCK:
        clock_insert(F, VS, v, f)
    elif gp == GP_FIFO:
        fifo_insert(F, VS, v, f)
    else:
        twolist_insert(F, VS, v, f)


@inline
def guest_hit(F, VS, G, v, f):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_hit(F, VS, v, f)
    elif gp == GP_CLOCK:
        clock_hit(F, VS, v, f)
    elif gp == GP_FIFO:
        pass
    else:
        twolist_hit(F, VS, v, f, G[G_ACTIVE_PCT])


@inline
def guest_victim(F, VS, G, v):
    gp = G[G_GP]
    if gp == GP_LRU:
        return lru_victim(F, VS, v)
    elif gp == GP_CLOCK:
        return clock_victim(F, VS, v)
    elif gp == GP_FIFO:
        return fifo_victim(F, VS, v)
    return twolist_victim(F, VS, v, G[G_ACTIVE_PCT])


@inline
def guest_remove(F, VS, G, v, f):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_remove(F, VS, v, f)
    elif gp == GP_CLOCK:
        clock_remove(F, VS, v, f)
    elif gp == GP_FIFO:
        fifo_remove(F, VS, v, f)
    else:
        twolist_remove(F, VS, v, f)
