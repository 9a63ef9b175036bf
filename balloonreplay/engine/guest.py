"""The guest-policy interface: insert, hit, victim, remove, dispatched on G[G_GP].

Every policy keeps the VM's resident pages (linked through their page rows). ``victim``
may change the policy's state (clock hand, twolist aging) but leaves the victim in
place; ``remove`` takes it out once its eviction has succeeded.
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
def guest_insert(P, VS, G, v, pg):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_insert(P, VS, v, pg)
    elif gp == GP_CLOCK:
        clock_insert(P, VS, v, pg)
    elif gp == GP_FIFO:
        fifo_insert(P, VS, v, pg)
    else:
        twolist_insert(P, VS, v, pg)


@inline
def guest_hit(P, VS, G, v, pg):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_hit(P, VS, v, pg)
    elif gp == GP_CLOCK:
        clock_hit(P, VS, v, pg)
    elif gp == GP_FIFO:
        pass
    else:
        twolist_hit(P, VS, v, pg, G[G_ACTIVE_PCT])


@inline
def guest_victim(P, VS, G, v):
    gp = G[G_GP]
    if gp == GP_LRU:
        return lru_victim(P, VS, v)
    elif gp == GP_CLOCK:
        return clock_victim(P, VS, v)
    elif gp == GP_FIFO:
        return fifo_victim(P, VS, v)
    return twolist_victim(P, VS, v, G[G_ACTIVE_PCT])


@inline
def guest_remove(P, VS, G, v, pg):
    gp = G[G_GP]
    if gp == GP_LRU:
        lru_remove(P, VS, v, pg)
    elif gp == GP_CLOCK:
        clock_remove(P, VS, v, pg)
    elif gp == GP_FIFO:
        fifo_remove(P, VS, v, pg)
    else:
        twolist_remove(P, VS, v, pg)
