"""The page-sharing scanner: visits frames at a rate and merges identical backed frames
into one copy-on-write machine page (reference.py, "Page sharing").

Inlined into the quantum loop (as are the share tables' lookups): at a typical rate the
scanner visits a page every other quantum per VM, so a run under pressure calls it
millions of times, and a call between separately compiled kernels passes every array as
a dozen scalars. Inlining cut the 8-VM benchmark runs' kernel time by 12-20%."""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.hashtable import ht_delete, ht_find, ht_insert
from balloonreplay.engine.host import set_host, share_domain
from balloonreplay.engine.prefetch import prefetch_cell, prefetch_row
from balloonreplay.engine.rng import next_below
from balloonreplay.engine.state import (
    BACKED,
    C_SCANNED,
    F_HOST,
    F_VM,
    FC_CAND,
    FC_CAND_CONTENT,
    FC_CONTENT,
    FC_KNOWN,
    G_CA_MASK,
    G_DISTINCT,
    G_HOST_USED,
    G_QUANTUM,
    G_SCAN_ORDER,
    G_SH_MASK,
    SCAN_RANDOM,
    SHARED,
    V_C,
    V_FBASE,
    V_SCAN_CREDIT,
    V_SCAN_CURSOR,
    V_SCAN_RATE,
)

NS_PER_S = 1_000_000_000


@inline
def scan_frame(F, FC, P, VS, G, SH, CA, f):
    if F[f, F_HOST] != BACKED or FC[f, FC_KNOWN] == 0:
        return
    content = FC[f, FC_CONTENT]
    domain = share_domain(G, F[f, F_VM])
    sh_mask = G[G_SH_MASK]
    ca_mask = G[G_CA_MASK]
    i = ht_find(SH, sh_mask, content, domain)
    if i >= 0:
        SH[i, 2] += 1
        set_host(F, FC, P, VS, f, SHARED)
        G[G_HOST_USED] -= 1
        return
    c = ht_find(CA, ca_mask, content, domain)
    if c >= 0:
        g = CA[c, 2] - 1
        if (
            g != f
            and F[g, F_HOST] == BACKED
            and FC[g, FC_KNOWN] == 1
            and FC[g, FC_CONTENT] == content
            and share_domain(G, F[g, F_VM]) == domain
        ):
            ht_insert(SH, sh_mask, content, domain, 2)
            G[G_DISTINCT] += 1
            set_host(F, FC, P, VS, f, SHARED)
            set_host(F, FC, P, VS, g, SHARED)
            G[G_HOST_USED] -= 1
            ht_delete(CA, ca_mask, c)
            FC[g, FC_CAND] = 0
            return
    if FC[f, FC_CAND] == 1:
        o = ht_find(CA, ca_mask, FC[f, FC_CAND_CONTENT], domain)
        if o >= 0 and CA[o, 2] == f + 1:
            ht_delete(CA, ca_mask, o)
    c = ht_find(CA, ca_mask, content, domain)
    if c >= 0:
        CA[c, 2] = f + 1
    else:
        ht_insert(CA, ca_mask, content, domain, f + 1)
    FC[f, FC_CAND] = 1
    FC[f, FC_CAND_CONTENT] = content


@inline
def scan_step(F, FC, P, VS, G, CNT, RNG, SH, CA, v):
    VS[v, V_SCAN_CREDIT] += VS[v, V_SCAN_RATE] * G[G_QUANTUM]
    n = VS[v, V_SCAN_CREDIT] // NS_PER_S
    VS[v, V_SCAN_CREDIT] -= n * NS_PER_S
    c = VS[v, V_C]
    base = VS[v, V_FBASE]
    for _ in range(n):
        if G[G_SCAN_ORDER] == SCAN_RANDOM:
            index = next_below(RNG, v, c)
        else:
            index = VS[v, V_SCAN_CURSOR]
            VS[v, V_SCAN_CURSOR] = (index + 1) % c
        CNT[v, C_SCANNED] += 1
        scan_frame(F, FC, P, VS, G, SH, CA, base + index)
    if n > 0 and G[G_SCAN_ORDER] != SCAN_RANDOM:
        # The next frame in round-robin order is scanned a quantum or two from now, after
        # thousands of other rows' traffic: its frame row and the cold fields scan_frame
        # reads (FC_KNOWN .. FC_CAND_CONTENT, which may span two lines) missed the cache.
        f = base + VS[v, V_SCAN_CURSOR]
        prefetch_row(F, f)
        prefetch_cell(FC, f, FC_KNOWN)
        prefetch_cell(FC, f, FC_CAND_CONTENT)
