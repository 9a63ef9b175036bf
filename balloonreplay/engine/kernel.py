"""The quantum loop: one call runs until it needs more trace, reaches an epoch boundary,
or finishes (reference.py, "Time"). The call is resumable: the phase, the quantum and the
VM being run live in G, so where the trace is cut into batches never changes the result.
"""

from __future__ import annotations

from balloonreplay.engine.access import access
from balloonreplay.engine.balloon import balloon_step
from balloonreplay.engine.checks import check_invariants
from balloonreplay.engine.dlist import move_to_head
from balloonreplay.engine.flags import entry, inline
from balloonreplay.engine.hits import hit_run, prefetch_page, prefetch_victim
from balloonreplay.engine.host import (
    host_swap_out,
    in_memory,
    pick_host_frame,
    release,
    set_host,
)
from balloonreplay.engine.pages import frame_accessed, next_access_tag
from balloonreplay.engine.rng import next_below
from balloonreplay.engine.sharing import NS_PER_S, scan_step
from balloonreplay.engine.state import (
    BACKED,
    C_BLOCKED,
    C_REPORTED,
    F_ACCESS,
    F_HOST,
    FA_SAMPLE_TOUCHED,
    FC_HNEXT,
    FC_HPREV,
    FC_KNOWN,
    G_BALLOON_PROGRESS_Q,
    G_BLOCKED_Q,
    G_CUR,
    G_DEBUG,
    G_DONE_Q,
    G_EMERGENCY,
    G_EPOCH_END,
    G_ERROR,
    G_GP,
    G_HOST_USED,
    G_HSEL,
    G_NOW,
    G_NVM,
    G_OVERHEAD_TOTAL,
    G_PHASE,
    G_QUANTUM,
    G_SHARING,
    G_SKIP,
    G_TRACK,
    GP_FIFO,
    GP_LRU,
    HSEL_LRU,
    PH_END,
    PH_RUN,
    PH_START,
    SHARED,
    ST_DONE,
    ST_EPOCH_END,
    ST_ERROR,
    ST_NEED_DATA,
    UNBACKED,
    V_AT,
    V_BACKED,
    V_BAL_CREDIT,
    V_BAL_N,
    V_C,
    V_DONE_ACC,
    V_END,
    V_FBASE,
    V_FREE_N,
    V_HH,
    V_HN,
    V_HT,
    V_INPUT_DONE,
    V_LAST_T,
    V_NTOUCH,
    V_POS,
    V_PRE_BUSY,
    V_SCAN_CREDIT,
    V_SCAN_RATE,
    V_SHARED,
    V_STALL,
    V_STALL_FIRST,
    V_STALL_LAST,
    V_SWAPPED,
    V_TARGET,
    V_TOUCHED,
)


@inline
def _starved(VS, nvm):
    """A VM whose next access is not buffered yet (more trace must be read)."""
    for v in range(nvm):
        if VS[v, V_POS] >= VS[v, V_END] and VS[v, V_INPUT_DONE] == 0:
            return True
    return False


@inline
def _all_finished(VS, nvm):
    for v in range(nvm):
        if VS[v, V_POS] < VS[v, V_END] or VS[v, V_INPUT_DONE] == 0:
            return False
    return True


@inline
def _try_skip_idle(VS, G, BT, nvm):
    """Jump over quanta in which nothing can happen: no VM issues an access, every balloon
    is at its target and no scanner runs. Exactly what running them would do. Returns True
    if the jump landed on the epoch boundary."""
    if G[G_SKIP] == 0:
        return False
    q = G[G_QUANTUM]
    now = G[G_NOW]
    first = -1
    for v in range(nvm):
        if VS[v, V_BAL_N] != VS[v, V_TARGET]:
            return False
        if G[G_SHARING] == 1 and VS[v, V_SCAN_RATE] > 0:
            return False
        pos = VS[v, V_POS]
        if pos < VS[v, V_END]:
            issue = BT[pos] + VS[v, V_STALL]
            if first == -1 or issue < first:
                first = issue
    if first < now + q:
        return False
    start = first - (first % q)
    G[G_EMERGENCY] = 0  # an idle quantum clears it
    for v in range(nvm):
        VS[v, V_BAL_CREDIT] = 0  # what balloon_step does in a quantum at its target
    if start >= G[G_EPOCH_END]:
        G[G_NOW] = G[G_EPOCH_END]
        return True
    G[G_NOW] = start
    return False


@entry
def run(F, FC, P, PC, VS, G, L, CNT, RNG, FS, BS, SH, CA, BT, BP, BW, BK, BC, BF):
    """Advance the model. Returns ST_NEED_DATA, ST_EPOCH_END, ST_DONE or ST_ERROR."""
    nvm = G[G_NVM]
    q = G[G_QUANTUM]
    track = G[G_TRACK] == 1
    tail_victim = G[G_GP] == GP_LRU or G[G_GP] == GP_FIFO
    while True:
        if G[G_PHASE] == PH_START:
            if _starved(VS, nvm):
                return ST_NEED_DATA
            if _all_finished(VS, nvm):
                return ST_DONE
            if _try_skip_idle(VS, G, BT, nvm):
                return ST_EPOCH_END
            used_before = G[G_HOST_USED]
            ballooned = 0
            for v in range(nvm):
                if VS[v, V_BAL_N] == VS[v, V_TARGET]:
                    VS[v, V_BAL_CREDIT] = 0  # what balloon_step does at its target, without a call
                else:
                    before = VS[v, V_BAL_N]
                    stall_before = VS[v, V_STALL]
                    balloon_step(F, FC, P, PC, VS, G, L, CNT, RNG, FS, BS, SH, v)
                    ballooned += VS[v, V_BAL_N] - before
                    worked = VS[v, V_STALL] - stall_before
                    pos = VS[v, V_POS]
                    if VS[v, V_STALL_FIRST] < 0 and worked > 0 and pos < VS[v, V_END]:
                        # Not started: the idle guest does the work, and the VM's clock
                        # takes only what runs past its first access's time.
                        late_before = max(0, VS[v, V_PRE_BUSY] - BT[pos])
                        VS[v, V_PRE_BUSY] = max(VS[v, V_PRE_BUSY], G[G_NOW]) + worked
                        late = max(0, VS[v, V_PRE_BUSY] - BT[pos])
                        VS[v, V_STALL] = stall_before + late - late_before
            progress = G[G_HOST_USED] < used_before or ballooned > 0
            G[G_BALLOON_PROGRESS_Q] = 1 if progress else 0
            if G[G_SHARING] == 1:
                for v in range(nvm):
                    credit = VS[v, V_SCAN_CREDIT] + VS[v, V_SCAN_RATE] * q
                    if credit < NS_PER_S:  # not a whole page yet: what scan_step would do
                        VS[v, V_SCAN_CREDIT] = credit
                    else:
                        scan_step(F, FC, P, VS, G, CNT, RNG, SH, CA, v)
            G[G_PHASE] = PH_RUN
            G[G_CUR] = 0
            G[G_DONE_Q] = 0
            G[G_BLOCKED_Q] = 0
        if G[G_PHASE] == PH_RUN:
            end = G[G_NOW] + q
            while G[G_CUR] < nvm:
                v = G[G_CUR]
                pos = VS[v, V_POS]
                stop = VS[v, V_END]
                while True:
                    pos = hit_run(
                        F,
                        FC,
                        P,
                        PC,
                        VS,
                        G,
                        L,
                        CNT,
                        FS,
                        BT,
                        BP,
                        BW,
                        BK,
                        BC,
                        BF,
                        v,
                        pos,
                        stop,
                        end,
                        track,
                    )
                    end = G[G_NOW] + q  # hit_run may have moved a lone VM on
                    if pos >= stop:
                        if VS[v, V_INPUT_DONE] == 0:
                            VS[v, V_POS] = pos
                            return ST_NEED_DATA
                        break
                    issue = BT[pos] + VS[v, V_STALL]
                    if issue >= end:
                        break
                    prefetch_page(P, BP, pos, stop)
                    prefetch_victim(F, FC, P, PC, VS, v, tail_victim, VS[v, V_AT], track)
                    if VS[v, V_STALL_FIRST] < 0:
                        VS[v, V_STALL_FIRST] = VS[v, V_STALL]
                    if not access(
                        F,
                        FC,
                        P,
                        PC,
                        VS,
                        G,
                        L,
                        CNT,
                        RNG,
                        FS,
                        SH,
                        v,
                        BP[pos],
                        BW[pos],
                        BK[pos],
                        BC[pos],
                        BF[pos],
                    ):
                        VS[v, V_STALL] += end - issue
                        CNT[v, C_BLOCKED] += end - issue
                        G[G_BLOCKED_Q] = 1
                        break
                    VS[v, V_LAST_T] = BT[pos]
                    VS[v, V_STALL_LAST] = VS[v, V_STALL]
                    VS[v, V_DONE_ACC] += 1
                    G[G_DONE_Q] += 1
                    pos += 1
                VS[v, V_POS] = pos
                G[G_CUR] = v + 1
            G[G_PHASE] = PH_END
        # PH_END: the quantum is over once every VM's next access is known.
        if _starved(VS, nvm):
            return ST_NEED_DATA
        # No access completed, one blocked, and the balloons neither gave the host memory
        # nor grew in all (which ends): only host swapping can free memory now.
        stuck = G[G_DONE_Q] == 0 and G[G_BLOCKED_Q] == 1 and G[G_BALLOON_PROGRESS_Q] == 0
        G[G_EMERGENCY] = 1 if stuck else 0
        G[G_NOW] += q
        G[G_PHASE] = PH_START
        if G[G_DEBUG] == 1:
            err = check_invariants(F, FC, P, PC, VS, G)
            if err != 0:
                G[G_ERROR] = err
        if G[G_ERROR] != 0:
            return ST_ERROR
        if _all_finished(VS, nvm):
            return ST_DONE
        if G[G_NOW] >= G[G_EPOCH_END]:
            return ST_EPOCH_END


@entry
def sampling_pass(F, FC, P, VS, G, sampled):
    """At an epoch end: mark the frames of the working-set samples (``sampled``: every
    VM's, draws may repeat) that were accessed in the epoch, count each VM's touched
    frames, and for lru-sampled move the accessed frames in memory to their host list's
    head in frame order. Then a new access tag clears every access bit at once
    (engine/pages.py). ``sampled`` must be the sample in force during the epoch: a sample
    is drawn only after this pass (replay._apply) or before the first access, so a
    touched bit means an access since the draw, as in the reference."""
    for i in range(sampled.shape[0]):
        f = sampled[i]
        if frame_accessed(F, P, G, f):
            F[f, F_ACCESS] |= FA_SAMPLE_TOUCHED
    for v in range(G[G_NVM]):
        if G[G_HSEL] == HSEL_LRU:
            base = VS[v, V_FBASE]
            for f in range(base, base + VS[v, V_C]):
                if frame_accessed(F, P, G, f) and in_memory(F[f, F_HOST]):
                    move_to_head(FC, VS, v, f, FC_HPREV, FC_HNEXT, V_HH, V_HT, V_HN)
        VS[v, V_TOUCHED] = VS[v, V_NTOUCH]
        VS[v, V_NTOUCH] = 0
    next_access_tag(F, P, G)


@entry
def apply_swap_targets(F, FC, P, VS, G, CNT, RNG, SH, targets):
    """Host swap targets: swap out each VM's frames until it has `target` swapped frames."""
    for v in range(G[G_NVM]):
        while VS[v, V_SWAPPED] < targets[v] and VS[v, V_BACKED] + VS[v, V_SHARED] > 0:
            host_swap_out(F, FC, P, VS, G, CNT, SH, pick_host_frame(F, VS, G, RNG, v))


@entry
def unback_free(F, FC, P, VS, G, CNT, SH, FS, counts):
    """Free page reporting: unback the `counts[v]` frames at the bottom of VM v's free
    stack (free the longest); a swapped one loses its swap slot."""
    for v in range(G[G_NVM]):
        base = VS[v, V_FBASE]
        for i in range(base, base + min(counts[v], VS[v, V_FREE_N])):
            f = FS[i]
            h = F[f, F_HOST]
            if h == UNBACKED:
                continue
            if h == BACKED or h == SHARED:
                release(F, FC, VS, G, SH, f)
            set_host(F, FC, P, VS, f, UNBACKED)
            FC[f, FC_KNOWN] = 0
            CNT[v, C_REPORTED] += 1


@entry
def draw_sample(F, VS, RNG, v, old, new):
    """End VM v's working-set sample `old` and draw `new` (its length) from v's PRNG."""
    for i in range(old.shape[0]):
        F[old[i], F_ACCESS] &= ~FA_SAMPLE_TOUCHED
    base = VS[v, V_FBASE]
    for i in range(new.shape[0]):
        new[i] = base + next_below(RNG, v, VS[v, V_C])


# The metrics columns epoch_rows computes (the others are CNT's counters and VS's gauges),
# and backed_pages, a gauge it sums: ``fixed[ROW_*]`` is each one's position in a row.
ROW_COLUMNS = (
    "vm",
    "epoch",
    "t_ns",
    "free_backed_pages",
    "host_used_pages",
    "shared_contents",
    "backed_pages",
)
ROW_VM, ROW_EPOCH, ROW_T, ROW_FREE_BACKED, ROW_HOST_USED, ROW_SHARED_CONTENTS, ROW_BACKED = range(
    len(ROW_COLUMNS)
)


@entry
def epoch_rows(F, VS, G, CNT, FS, counter_cols, gauge_cols, gauge_fields, fixed, epoch, t_ns, out):
    """One epoch's metrics rows, one per VM (replay._EpochRows): counter j of CNT goes to
    column ``counter_cols[j]``, gauge VS[v, gauge_fields[j]] to ``gauge_cols[j]``, and the
    columns ``fixed`` names (ROW_*) are computed. One call: a run whose faults stall its
    VMs has an epoch per second of stalled time (1,092 in the benchmark's quarter-footprint
    replay), and gathering a row with numpy's indexing took about 50 us."""
    backed_total = 0
    for v in range(VS.shape[0]):
        out[v, fixed[ROW_VM]] = v
        out[v, fixed[ROW_EPOCH]] = epoch
        out[v, fixed[ROW_T]] = t_ns
        for j in range(counter_cols.shape[0]):
            out[v, counter_cols[j]] = CNT[v, j]
        for j in range(gauge_cols.shape[0]):
            out[v, gauge_cols[j]] = VS[v, gauge_fields[j]]
        base = VS[v, V_FBASE]
        n = 0
        # None of the VM's frames in memory, none of its free ones either: so the start's
        # snapshot, with every frame free and unbacked, reads no frame row.
        if VS[v, V_BACKED] + VS[v, V_SHARED] > 0:
            for i in range(base, base + VS[v, V_FREE_N]):
                h = F[FS[i], F_HOST]
                if h == BACKED or h == SHARED:
                    n += 1
        out[v, fixed[ROW_FREE_BACKED]] = n
        out[v, fixed[ROW_HOST_USED]] = G[G_HOST_USED]
        backed_total += out[v, fixed[ROW_BACKED]]
    # Machine pages = backed + distinct shared contents + overhead (the invariant).
    for v in range(VS.shape[0]):
        out[v, fixed[ROW_SHARED_CONTENTS]] = G[G_HOST_USED] - backed_total - G[G_OVERHEAD_TOTAL]
