"""The host side: machine-page accounting, host swapping, copy-on-write breaks.

Host used pages (G_HOST_USED) = backed frames + distinct share keys + overhead. A frame
that needs a machine page goes through ``get_page``, which reclaims by host swapping when
the host is full and swapping is allowed, and reports failure (the VM blocks) otherwise.

``get_page``, ``host_swap_in`` and ``cow_break`` are inlined into the access path: under
pressure they run for millions of accesses, and a call between separately compiled
kernels passes every array as a dozen scalars (inlining them took a fifth off the 8-VM
"stress" benchmark's kernel time). The rest stay calls: inlining every host function
multiplied the kernel's compile time by six.
"""

from __future__ import annotations

from balloonreplay.engine.dlist import push_head, unlink
from balloonreplay.engine.flags import inline, jit
from balloonreplay.engine.hashtable import ht_delete, ht_find
from balloonreplay.engine.pages import HOST_MIRROR, host_mirror_bits
from balloonreplay.engine.rng import next_below
from balloonreplay.engine.state import (
    BACKED,
    C_COW,
    C_HOST_SWAP_IN,
    C_HOST_SWAP_OUT,
    C_STALL,
    F_HOST,
    F_PAGE,
    F_VM,
    FC_CONTENT,
    FC_HINS,
    FC_HNEXT,
    FC_HOUTS,
    FC_HPREV,
    FC_KNOWN,
    G_DISTINCT,
    G_EMERGENCY,
    G_HOST_PAGES,
    G_HOST_USED,
    G_HSEL,
    G_INTRA,
    G_NVM,
    G_SH_MASK,
    HSEL_LRU,
    L_COW,
    L_HOST_SWAP_IN,
    L_HOST_SWAP_OUT,
    NIL,
    P_FLAGS,
    SHARED,
    SWAPPED,
    UNBACKED,
    V_ALLOW,
    V_BACKED,
    V_C,
    V_FBASE,
    V_HH,
    V_HN,
    V_HT,
    V_SHARED,
    V_STALL,
    V_SWAPPED,
    V_ZSHARED,
)

RANDOM_DRAWS = 16


@inline
def stall(VS, CNT, v, ns):
    VS[v, V_STALL] += ns
    CNT[v, C_STALL] += ns


@inline
def in_memory(h):
    return h == BACKED or h == SHARED


@inline
def share_domain(G, v):
    return v if G[G_INTRA] == 1 else -1


@inline
def holds_zero_page(FC, f):
    return FC[f, FC_KNOWN] == 1 and FC[f, FC_CONTENT] == 0


@jit
def set_host(F, FC, P, VS, f, new):
    """Change a frame's host state, keeping the per-VM gauges and the mirror in the page
    the frame holds."""
    v = F[f, F_VM]
    old = F[f, F_HOST]
    if old == BACKED:
        VS[v, V_BACKED] -= 1
    elif old == SHARED:
        VS[v, V_SHARED] -= 1
        if holds_zero_page(FC, f):  # a cold row: read for shared frames only
            VS[v, V_ZSHARED] -= 1
    elif old == SWAPPED:
        VS[v, V_SWAPPED] -= 1
    if new == BACKED:
        VS[v, V_BACKED] += 1
    elif new == SHARED:
        VS[v, V_SHARED] += 1
        if holds_zero_page(FC, f):
            VS[v, V_ZSHARED] += 1
    elif new == SWAPPED:
        VS[v, V_SWAPPED] += 1
    F[f, F_HOST] = new
    pg = F[f, F_PAGE]
    if pg != NIL:
        P[pg, P_FLAGS] = (P[pg, P_FLAGS] & ~HOST_MIRROR) | host_mirror_bits(new)


# The host list orders each VM's in-memory frames for lru-sampled selection; nothing else
# reads it, so with random selection it is not kept (two cold rows fewer per fault).


@inline
def host_list_add(F, FC, VS, G, f):
    if G[G_HSEL] == HSEL_LRU:
        push_head(FC, VS, F[f, F_VM], f, FC_HPREV, FC_HNEXT, V_HH, V_HT, V_HN)


@inline
def host_list_remove(F, FC, VS, G, f):
    if G[G_HSEL] == HSEL_LRU:
        unlink(FC, VS, F[f, F_VM], f, FC_HPREV, FC_HNEXT, V_HH, V_HT, V_HN)


@jit
def pick_host_vm(VS, G, RNG):
    """A VM with probability proportional to its in-memory frames (host PRNG)."""
    nvm = G[G_NVM]
    total = 0
    for u in range(nvm):
        total += VS[u, V_BACKED] + VS[u, V_SHARED]
    r = next_below(RNG, nvm, total)
    running = 0
    for u in range(nvm):
        running += VS[u, V_BACKED] + VS[u, V_SHARED]
        if running > r:
            return u
    return nvm - 1  # unreachable


@jit
def pick_host_frame(F, VS, G, RNG, u):
    if G[G_HSEL] == HSEL_LRU:
        return VS[u, V_HT]
    c = VS[u, V_C]
    base = VS[u, V_FBASE]
    index = 0
    for _ in range(RANDOM_DRAWS):
        index = next_below(RNG, u, c)
        if in_memory(F[base + index, F_HOST]):
            return base + index
    for step in range(1, c + 1):
        f = base + (index + step) % c
        if in_memory(F[f, F_HOST]):
            return f
    return -1  # unreachable: u was chosen with in-memory frames


@jit
def release(F, FC, VS, G, SH, f):
    """f stops being in memory: free its private page or drop its shared reference."""
    h = F[f, F_HOST]
    if h == BACKED:
        G[G_HOST_USED] -= 1
    elif h == SHARED:
        mask = G[G_SH_MASK]
        i = ht_find(SH, mask, FC[f, FC_CONTENT], share_domain(G, F[f, F_VM]))
        SH[i, 2] -= 1
        if SH[i, 2] == 0:
            ht_delete(SH, mask, i)
            G[G_DISTINCT] -= 1
            G[G_HOST_USED] -= 1
    if h == BACKED or h == SHARED:
        host_list_remove(F, FC, VS, G, f)


@jit
def host_swap_out(F, FC, P, VS, G, CNT, SH, g):
    release(F, FC, VS, G, SH, g)
    set_host(F, FC, P, VS, g, SWAPPED)
    FC[g, FC_HOUTS] += 1
    CNT[F[g, F_VM], C_HOST_SWAP_OUT] += 1


@inline
def can_get_page(VS, G, v):
    return G[G_HOST_USED] < G[G_HOST_PAGES] or VS[v, V_ALLOW] == 1 or G[G_EMERGENCY] == 1


@inline
def get_page(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
    """Frame f (not in memory) becomes backed. False: the host is full and may not swap."""
    if G[G_HOST_USED] >= G[G_HOST_PAGES]:
        if VS[v, V_ALLOW] == 0 and G[G_EMERGENCY] == 0:
            return False
        while G[G_HOST_USED] >= G[G_HOST_PAGES]:
            u = pick_host_vm(VS, G, RNG)
            host_swap_out(F, FC, P, VS, G, CNT, SH, pick_host_frame(F, VS, G, RNG, u))
            stall(VS, CNT, v, L[L_HOST_SWAP_OUT])
    set_host(F, FC, P, VS, f, BACKED)
    G[G_HOST_USED] += 1
    host_list_add(F, FC, VS, G, f)
    return True


@inline
def host_swap_in(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
    if not get_page(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
        return False
    FC[f, FC_HINS] += 1
    CNT[v, C_HOST_SWAP_IN] += 1
    stall(VS, CNT, v, L[L_HOST_SWAP_IN])
    return True


@inline
def cow_break(F, FC, P, VS, G, L, CNT, RNG, SH, v, f):
    mask = G[G_SH_MASK]
    i = ht_find(SH, mask, FC[f, FC_CONTENT], share_domain(G, v))
    if SH[i, 2] == 1:
        ht_delete(SH, mask, i)
        G[G_DISTINCT] -= 1
        set_host(F, FC, P, VS, f, BACKED)  # the machine page becomes private in place
    else:
        if not can_get_page(VS, G, v):
            return False
        SH[i, 2] -= 1
        host_list_remove(F, FC, VS, G, f)
        set_host(F, FC, P, VS, f, UNBACKED)
        get_page(F, FC, P, VS, G, L, CNT, RNG, SH, v, f)
    CNT[v, C_COW] += 1
    stall(VS, CNT, v, L[L_COW])
    return True
