"""The balloon driver: moves each VM's balloon toward its target at a rate, one page at a
time (reference.py, "Balloon")."""

from __future__ import annotations

from balloonreplay.engine.access import evict, pop_free, push_free
from balloonreplay.engine.flags import jit
from balloonreplay.engine.guest import guest_victim
from balloonreplay.engine.host import release, set_host, stall
from balloonreplay.engine.state import (
    BACKED,
    BALLOON,
    C_DEFLATED,
    C_INFLATED,
    F_HOST,
    FC_GUEST,
    FC_KNOWN,
    FREE,
    G_BAL_RATE,
    G_QUANTUM,
    L_BALLOON,
    SHARED,
    UNBACKED,
    V_BAL_CREDIT,
    V_BAL_N,
    V_FBASE,
    V_FREE_N,
    V_TARGET,
)

NS_PER_S = 1_000_000_000


@jit
def inflate_one(F, FC, P, PC, VS, G, L, CNT, RNG, FS, BS, SH, v):
    if VS[v, V_FREE_N] == 0:
        if not evict(F, FC, P, PC, VS, G, L, CNT, RNG, FS, SH, v, guest_victim(P, VS, G, v)):
            return False
    f = pop_free(VS, FS, v)
    h = F[f, F_HOST]
    if h == BACKED or h == SHARED:
        release(F, FC, VS, G, SH, f)
    set_host(F, FC, P, VS, f, UNBACKED)  # a swapped copy is discarded
    FC[f, FC_KNOWN] = 0
    FC[f, FC_GUEST] = BALLOON
    BS[VS[v, V_FBASE] + VS[v, V_BAL_N]] = f
    VS[v, V_BAL_N] += 1
    CNT[v, C_INFLATED] += 1
    stall(VS, CNT, v, L[L_BALLOON])
    return True


@jit
def deflate_one(F, FC, VS, L, CNT, FS, BS, v):
    VS[v, V_BAL_N] -= 1
    f = BS[VS[v, V_FBASE] + VS[v, V_BAL_N]]
    FC[f, FC_GUEST] = FREE
    push_free(VS, FS, v, f)
    CNT[v, C_DEFLATED] += 1
    stall(VS, CNT, v, L[L_BALLOON])


@jit
def balloon_step(F, FC, P, PC, VS, G, L, CNT, RNG, FS, BS, SH, v):
    VS[v, V_BAL_CREDIT] += G[G_BAL_RATE] * G[G_QUANTUM]
    n = VS[v, V_BAL_CREDIT] // NS_PER_S
    VS[v, V_BAL_CREDIT] -= n * NS_PER_S
    for _ in range(n):
        size = VS[v, V_BAL_N]
        if size < VS[v, V_TARGET]:
            if not inflate_one(F, FC, P, PC, VS, G, L, CNT, RNG, FS, BS, SH, v):
                break
        elif size > VS[v, V_TARGET]:
            deflate_one(F, FC, VS, L, CNT, FS, BS, v)
        else:
            break
    if VS[v, V_BAL_N] == VS[v, V_TARGET]:
        VS[v, V_BAL_CREDIT] = 0
