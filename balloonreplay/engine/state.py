"""Array layout of the engine state, and its allocation.

All state lives in a handful of arrays so a kernel call touches no Python object:
``F``/``FC`` (frames: hot int32 fields / cold int64 fields), ``P``/``PC`` (pages, the
same split), ``VS`` (VMs x VM_FIELDS), ``G`` (globals), ``L`` (latencies), ``CNT`` (VMs x
counters of the current epoch), ``RNG`` (splitmix64 states: one per VM, then the
host's), ``FS``/``BS`` (per-VM free and balloon stacks at the VM's frame offset),
and ``SH``/``CA`` (open-addressing tables of share keys: shared pages and sharing
candidates). Frame and page ids are global: VM v's frames are ``VS[v, V_FBASE] + 0..C-1``
and its pages ``VS[v, V_PBASE] + 0..P-1``.

The field numbers are module constants, which numba freezes into the machine code.
"""

from __future__ import annotations

import mmap
from typing import NamedTuple

import numpy as np

from balloonreplay.engine.config import GUEST_POLICIES, HOST_SELECTIONS, SCAN_ORDERS, ReplayConfig
from balloonreplay.engine.rng import seed_streams
from balloonreplay.errors import ConfigError

NIL = -1

# guest state of a frame / host state of a frame / where a page is (as in reference.py)
FREE, PAGE, BALLOON = 0, 1, 2
UNBACKED, BACKED, SHARED, SWAPPED = 0, 1, 2, 3
NEW, RESIDENT, IN_SWAP, ON_DISK = 0, 1, 2, 3

# Hot fields live in narrow int32 rows, P (16 bytes per page) and F (16 bytes per frame);
# the rest lives in int64 rows FC and PC touched on faults, writes and host events only.
# A plain hit reads and writes one page row and its list neighbours' page rows (plus the
# cold rows for a write whose content is tracked): the guest policy's lists link pages,
# the page row mirrors its frame's host state (swapped or shared), and the page row's
# access tag is its frame's access bit (engine/pages.py), so a trace's working set of
# rows is one 16-byte row per page.

# frame fields, hot (F, int32)
F_HOST = 0
F_ACCESS = 1  # the frame's access record while it holds no page, and its sample bit
F_PAGE = 2
F_VM = 3
FRAME_FIELDS = 4

# F_ACCESS: a sampled frame's touched bit (FA_SAMPLE_TOUCHED), set at the end of every
# epoch in which the frame was accessed and cleared when the sample is drawn anew; above
# FA_TAG_SHIFT the epoch's tag if a page accessed in that epoch has left the frame
# (engine/pages.py; read while the frame holds no page and when a page enters it).
FA_SAMPLE_TOUCHED = 1
FA_TAG_SHIFT = 1

# frame fields, cold (FC, int64)
FC_GUEST = 0
FC_HPREV = 1  # host list links (lru-sampled)
FC_HNEXT = 2
# The content of a frame that holds no page (free with stale data, or shared). A frame
# holding a page has that page's content (PC), which is the one kept up to date.
FC_KNOWN = 3
FC_CONTENT = 4
FC_CAND = 5  # registered as a sharing candidate
FC_CAND_CONTENT = 6
FC_HOUTS = 7  # host swap-outs of this frame (invariant)
FC_HINS = 8
FRAME_COLD_FIELDS = 9

# page fields, hot (P, int32)
P_PREV = 0  # guest-policy list links (global page ids)
P_NEXT = 1
P_FRAME = 2
P_FLAGS = 3  # PF_* bits; where the page is (NEW..ON_DISK) under PF_WHERE_MASK
PAGE_FIELDS = 4

# P_FLAGS bits
PF_FILE = 1  # file-backed (the trace's file flag); must stay bit 0: compared with 0/1
PF_DIRTY = 2  # a file-backed page written since it was read
PF_REF = 4  # clock reference bit / twolist referenced flag
PF_ACTIVE = 8  # twolist: on the active list
# Mirrors of the page's frame, kept while the page is resident (engine/pages.py): the
# two host bits are the frame's host state, and a tag equal to G_ACCESS_TAG is the
# frame's access bit (any other tag: clear), so the epoch's end clears every access bit
# by changing G_ACCESS_TAG alone.
PF_HOST_SWAPPED = 16
PF_HOST_SHARED = 32
PF_WHERE_SHIFT = 6  # NEW, RESIDENT, IN_SWAP or ON_DISK
PF_WHERE_MASK = 3 << PF_WHERE_SHIFT
PF_TAG_SHIFT = 8  # the rest of the int32: tags 1 .. PF_TAG_LIMIT - 1, 0 = none
PF_TAG_LIMIT = 1 << 23
PF_LOW_MASK = (1 << PF_TAG_SHIFT) - 1

# page fields, cold (PC, int64)
PC_KNOWN = 0
PC_CONTENT = 1
PC_SKNOWN = 2  # the copy in swap or on disk
PC_SCONTENT = 3
PC_SWAP_INS = 4
PC_SWAP_OUTS = 5
PAGE_COLD_FIELDS = 6

# VM fields
V_FBASE = 0
V_C = 1  # config_pages
V_PBASE = 2
V_NPAGES = 3
V_FREE_N = 4
V_BAL_N = 5
V_AH = 6  # list A (lru/fifo/clock queue; twolist inactive): head, tail, count
V_AT = 7
V_AN = 8
V_BH = 9  # list B (twolist active)
V_BT = 10
V_BN = 11
V_HH = 12  # host list
V_HT = 13
V_HN = 14
V_BACKED = 15
V_SHARED = 16
V_ZSHARED = 17
V_SWAPPED = 18
V_RESIDENT = 19
V_TARGET = 20
V_SCAN_RATE = 21
V_BAL_CREDIT = 22
V_SCAN_CREDIT = 23
V_SCAN_CURSOR = 24
V_STALL = 25  # stall and blocked ns so far
V_POS = 26  # next unconsumed row of the VM's buffer segment
V_END = 27
V_INPUT_DONE = 28
V_LAST_T = 29  # relative t of the last completed access
V_DONE_ACC = 30  # accesses completed so far
V_TOUCHED = 31  # frames touched in the last full epoch (gauge)
V_NTOUCH = 32  # frames touched so far in this epoch (whose access bit was set)
V_ALLOW = 33  # 1: the VM may make the full host swap on demand (policy's allow_host_swap)
# V_STALL when the VM first issued an access (-1: not yet) and when its latest access
# completed: its slowdown counts the stall between the two.
V_STALL_FIRST = 34
V_STALL_LAST = 35
# Before its first access, when the VM's idle guest has done its balloon work (host time):
# what goes past its first access's t delayed its start.
V_PRE_BUSY = 36
VM_FIELDS = 37

# globals
G_HOST_PAGES = 0
G_HOST_USED = 1
G_UNUSED = 2  # was a host-wide allow_host_swap, now per VM (V_ALLOW)
G_EMERGENCY = 3
G_NOW = 4  # start of the current quantum
G_EPOCH_END = 5
G_PHASE = 6
G_CUR = 7  # VM running in the current quantum
G_DONE_Q = 8  # accesses completed in the current quantum
G_BLOCKED_Q = 9
G_GP = 10  # guest policy
G_ACTIVE_PCT = 11
G_HSEL = 12
G_SHARING = 13
G_SCAN_ORDER = 14
G_INTRA = 15
G_BAL_RATE = 16
G_QUANTUM = 17
G_DEBUG = 18
G_NVM = 19
G_SH_MASK = 20
G_CA_MASK = 21
G_DISTINCT = 22
G_ERROR = 23
G_SKIP = 24
G_OVERHEAD_TOTAL = 25
# Content, saved copies, per-page/frame swap counts and guest frame states are read only
# by the sharing scanner and the invariant checks; without either, the fault path skips
# them (two to four fewer cache lines per fault; the metrics are the same).
G_TRACK = 26
G_BALLOON_PROGRESS_Q = 27  # 1: the balloon steps of this quantum freed memory or grew
G_ACCESS_TAG = 28  # this epoch's access tag: pages' and frames' access bits (pages.py)
GLOBAL_FIELDS = 29

PH_START, PH_RUN, PH_END = 0, 1, 2
ST_NEED_DATA, ST_EPOCH_END, ST_DONE, ST_ERROR = 1, 2, 3, 4

GP_LRU, GP_CLOCK, GP_FIFO, GP_TWOLIST = 0, 1, 2, 3
HSEL_RANDOM, HSEL_LRU = 0, 1
SCAN_RR, SCAN_RANDOM = 0, 1

# latencies
L_GUEST_SWAP_IN = 0
L_GUEST_SWAP_OUT = 1
L_DISK_READ = 2
L_DISK_WRITE = 3
L_HOST_SWAP_IN = 4
L_HOST_SWAP_OUT = 5
L_COW = 6
L_ZERO_FILL = 7
L_BALLOON = 8
LATENCY_FIELDS = 9

# counters, in reference.COUNTERS order
C_ACCESSES = 0
C_GUEST_FAULTS = 1
C_GUEST_SWAP_IN = 2
C_GUEST_SWAP_OUT = 3
C_DISK_READS = 4
C_DISK_WRITES = 5
C_ZERO_FILLS = 6
C_HOST_SWAP_IN = 7
C_HOST_SWAP_OUT = 8
C_COW = 9
C_SILENT = 10
C_STALE = 11
C_FALSE = 12
C_BLOCKED = 13
C_STALL = 14
C_SCANNED = 15
C_INFLATED = 16
C_DEFLATED = 17
C_FREES = 18
C_REPORTED = 19
COUNTER_FIELDS = 20

# A trace row's write flag as the kernel sees it: 0 read, 1 write, FREE_OP the guest
# frees the page (the `free` column).
FREE_OP = 2

# errors reported through G[G_ERROR]
ERR_CONTENT = 1  # a page came back with other content
ERR_FRAMES = 2  # frames of a VM do not add up
ERR_HOST = 3  # host accounting broken or above host_pages
ERR_SWAP = 4  # a page swapped in more often than out
ERR_LINK = 5  # page/frame links inconsistent
ERROR_MESSAGES = {
    ERR_CONTENT: "a page came back from swap or disk with other content than its last write",
    ERR_FRAMES: "a VM's free, balloon and resident frames do not add up to config_pages",
    ERR_HOST: "host accounting broken: used != backed + shared + overhead, or above host_pages",
    ERR_SWAP: "a page or frame was swapped in more often than it was swapped out",
    ERR_LINK: "page and frame links are inconsistent",
}


class EngineState(NamedTuple):
    F: np.ndarray
    FC: np.ndarray
    P: np.ndarray
    PC: np.ndarray
    VS: np.ndarray
    G: np.ndarray
    L: np.ndarray
    CNT: np.ndarray
    RNG: np.ndarray
    FS: np.ndarray
    BS: np.ndarray
    SH: np.ndarray
    CA: np.ndarray


def sparse_zeros(shape, dtype) -> np.ndarray:
    """Zeros in memory backed by small pages, for a large array of which a run may write
    only a few scattered entries. numpy asks Linux for transparent huge pages for every
    array of 4 MiB or more, so each entry written faults in, and zeroes, a whole 2 MiB
    page: in the benchmark's 8-VM run, the share tables (96 MiB each, fewer than a
    thousand entries) were 188 of its 696 MiB of resident state, and a fresh process's
    first touch of memory cost about 2 ms of system time per MiB on the machine these
    benchmarks ran on. Where the platform has no such advice, or the array is small,
    plain zeros."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not hasattr(mmap, "MADV_NOHUGEPAGE") or nbytes < 1 << 22:
        return np.zeros(shape, dtype=dtype)
    # Private: a read of a page never written maps the shared zero page (a shared mapping,
    # mmap's default, would give it a page of its own), and a fork would not share it.
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    try:
        buffer.madvise(mmap.MADV_NOHUGEPAGE)
    except OSError:  # a kernel built without transparent huge pages: small pages anyway
        pass
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _table_capacity(n_frames: int) -> int:
    cap = 16
    while cap < 2 * n_frames + 16:
        cap *= 2
    return cap


def first_ids(sizes) -> np.ndarray:
    """Each VM's first global id, given every VM's count of frames or pages: VMs take
    consecutive ranges in order (V_FBASE, V_PBASE; the replay's reading thread numbers
    a trace's page ids by the same rule before the state exists)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def allocate(config: ReplayConfig, pages_per_vm: list[int], skip_idle: bool = True) -> EngineState:
    """Fresh state: every frame free and unbacked, every page new."""
    nvm = config.num_vms
    config_pages = np.asarray(config.config_pages, dtype=np.int64)
    npages = np.asarray(pages_per_vm, dtype=np.int64)
    fbase = first_ids(config_pages)
    pbase = first_ids(npages)
    n_frames = int(config_pages.sum())
    n_pages = int(npages.sum())

    if max(n_frames, n_pages) >= 2**31 - 1:
        raise ConfigError("vm_mem", "the engine indexes frames and pages with int32")
    # No temporary arrays here: in a fresh process every megabyte written costs its first
    # touch, and np.repeat and np.arange wrote 48 MB of them for 2 M frames (this
    # function in a fresh process: 68-193 ms with them, 56-67 ms without).
    F = np.zeros((max(n_frames, 1), FRAME_FIELDS), dtype=np.int32)
    for v in range(1, nvm):
        F[fbase[v] : fbase[v] + config_pages[v], F_VM] = v
    F[:, F_PAGE] = NIL
    FC = np.zeros((max(n_frames, 1), FRAME_COLD_FIELDS), dtype=np.int64)
    if config.host_selection == "lru-sampled":
        # Only lru-sampled keeps the host list (host.py); otherwise the cold rows stay
        # untouched zero pages until a fault writes them, which saves writing every row
        # of a large guest's frames before the first access.
        FC[:, FC_HPREV] = NIL
        FC[:, FC_HNEXT] = NIL
    P = np.zeros((max(n_pages, 1), PAGE_FIELDS), dtype=np.int32)
    P[:, P_PREV] = NIL
    P[:, P_NEXT] = NIL
    P[:, P_FRAME] = NIL
    PC = np.zeros((max(n_pages, 1), PAGE_COLD_FIELDS), dtype=np.int64)

    VS = np.zeros((nvm, VM_FIELDS), dtype=np.int64)
    VS[:, V_FBASE] = fbase
    VS[:, V_C] = config_pages
    VS[:, V_PBASE] = pbase
    VS[:, V_NPAGES] = npages
    VS[:, V_FREE_N] = config_pages
    for col in (V_AH, V_AT, V_BH, V_BT, V_HH, V_HT):
        VS[:, col] = NIL
    VS[:, V_SCAN_RATE] = config.scan_rate_pages_per_s
    VS[:, V_LAST_T] = -1
    VS[:, V_STALL_FIRST] = -1
    VS[:, V_ALLOW] = 1

    # Each VM's free stack holds its frames from the last to the first, so that the top
    # pops frame 0 first: FS counts down over all frames, then each VM's part is shifted
    # onto its own frames (from n - 1 - base .. n - base - c to base + c - 1 .. base).
    FS = np.arange(max(n_frames, 1) - 1, -1, -1, dtype=np.int64)
    for v in range(nvm):
        base, c = int(fbase[v]), int(config_pages[v])
        if n_frames - 2 * base - c != 0:
            FS[base : base + c] -= n_frames - 2 * base - c
    # Each VM's balloon stack fills from its first slot and holds its balloon's frames,
    # a fraction of its memory: with huge pages, up to 2 MiB per VM more than that.
    BS = sparse_zeros(max(n_frames, 1), np.int64)

    cap = _table_capacity(n_frames)
    G = np.zeros(GLOBAL_FIELDS, dtype=np.int64)
    G[G_HOST_PAGES] = config.host_pages
    G[G_HOST_USED] = sum(config.overhead_pages)
    G[G_EPOCH_END] = config.epoch_ns
    G[G_PHASE] = PH_START
    G[G_GP] = GUEST_POLICIES.index(config.guest_policy)
    G[G_ACTIVE_PCT] = config.twolist_active_percent
    G[G_HSEL] = HOST_SELECTIONS.index(config.host_selection)
    G[G_SHARING] = int(config.sharing)
    G[G_SCAN_ORDER] = SCAN_ORDERS.index(config.scan_order)
    G[G_INTRA] = int(config.intra_vm_sharing_only)
    G[G_BAL_RATE] = config.balloon_rate_pages_per_s
    G[G_QUANTUM] = config.quantum_ns
    G[G_DEBUG] = int(config.debug_checks)
    G[G_NVM] = nvm
    G[G_SH_MASK] = cap - 1
    G[G_CA_MASK] = cap - 1
    G[G_SKIP] = int(skip_idle)
    G[G_OVERHEAD_TOTAL] = sum(config.overhead_pages)
    G[G_TRACK] = int(config.sharing or config.debug_checks)
    G[G_ACCESS_TAG] = 1

    lat = config.latencies
    L = np.array(
        [
            lat.guest_swap_in_ns,
            lat.guest_swap_out_ns,
            lat.disk_read_ns,
            lat.disk_write_ns,
            lat.host_swap_in_ns,
            lat.host_swap_out_ns,
            lat.cow_break_ns,
            lat.zero_fill_ns,
            lat.balloon_page_ns,
        ],
        dtype=np.int64,
    )
    return EngineState(
        F=F,
        FC=FC,
        P=P,
        PC=PC,
        VS=VS,
        G=G,
        L=L,
        CNT=np.zeros((nvm, COUNTER_FIELDS), dtype=np.int64),
        RNG=seed_streams(config.seed, nvm + 1),
        FS=FS,
        BS=BS,
        SH=sparse_zeros((cap, 3), np.int64),
        CA=sparse_zeros((cap, 3), np.int64),
    )
