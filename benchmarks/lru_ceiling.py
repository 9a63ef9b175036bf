"""How fast can an LRU replay be that keeps what the model needs of every hit?

bench_replay.py's bare LRU (two link arrays and a resident byte per page, nothing else)
runs 2-3x faster than the kernel on the same accesses. This script asks how much of
that gap any kernel must pay for what the model keeps, apart from its own code: it
times, on bench_replay's single-VM trace and in interleaved rounds,

  bare       the bare LRU (bench_replay.bare_lru_misses);
  rows       an LRU over the engine's 16-byte page rows (prev, next, frame, flags; the
             frame read to tell a hit, as hits.hit_run does), nothing else;
  rows+bit   the same, keeping the frame's access bit as an epoch tag in the flags, set
             by each page's first access in an epoch, as engine/pages.py keeps it;
  rows+byte  rows+bit with both decisions of a hit (resident? first access in the
             epoch?) taken on a one-byte status per page (0 = not resident, else the
             epoch's tag at its last access), an array small enough for the core's L2
             cache, kept beside the rows;
  split+byte the same model in a layout split three ways: links in 8-byte rows, the
             frame in an array of its own, and the status byte;
  pair+byte  the same with the frame and flags in 8-byte rows of their own (the engine's
             rows split in two), the access tag in the status byte only;
  pair+byte+bit  the same, the tag also kept in the flags;
  plain      the whole model where no host takes part (one VM, guest lru, a host that
             never fills, no policy, no sharing), written for that case alone in the
             split layout: the status byte (the access tag and the file flag), links in
             8-byte rows, a byte per page for where it is when not resident and its dirty
             bit, the access tags of free frames, each access's issue time (trace time
             plus the stall so far) against host time's epoch ends, and each fault's
             latency and counts. The case bench_replay's single-VM target is set for:
             what a kernel of its own for it could gain. Its counts must equal the
             engine's replay of the same trace (faults, swap-ins and -outs, zero fills,
             touched frames, epochs and stall), as they do on random small traces
             (tests/test_benchmark_models.py);
  kernel     kernel.run alone (bench_kernel.py), the whole model.

The epoch is as long, in accesses, as the engine's own replay of the same trace makes it
on average (the closed loop stretches host time by each fault's stall, and an epoch is
1 s of host time), measured here with one replay first. Every variant's misses must equal
the bare LRU's, and the first accesses in an epoch must agree. Usage::

    NUMBA_CACHE_DIR=.venv/numba-cache .venv/bin/python benchmarks/lru_ceiling.py \
        [--accesses N] [--rounds R]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numba
import numpy as np
import pyarrow.parquet as pq
from bench_kernel import kernel_seconds
from bench_replay import bare_lru_misses, write_traces

import balloonreplay
from balloonreplay.engine.config import DEFAULT_EPOCH_NS
from balloonreplay.latencies import Latencies
from balloonreplay.replay import warm_up

NIL = -1


@numba.njit(cache=True)
def rows_lru(pages, capacity, num_pages, epoch_accesses, access_bit):
    """Misses and frames touched (first access in an epoch) of an LRU over 16-byte rows."""
    P = np.full((num_pages, 4), NIL, np.int32)  # prev, next, frame, flags
    P[:, 3] = 0
    head = tail = NIL
    used = misses = touched = 0
    tag = 1
    next_epoch = epoch_accesses
    for i in range(pages.shape[0]):
        if i == next_epoch:
            tag += 1
            next_epoch += epoch_accesses
        p = pages[i]
        if P[p, 2] != NIL:
            if p != head:
                a = P[p, 0]
                b = P[p, 1]
                P[a, 1] = b
                if b != NIL:
                    P[b, 0] = a
                else:
                    tail = a
                P[p, 0] = NIL
                P[p, 1] = head
                P[head, 0] = p
                head = p
            if access_bit:
                flags = P[p, 3]
                if flags >> 8 != tag:
                    touched += 1
                    P[p, 3] = (flags & 255) | (tag << 8)
            continue
        misses += 1
        touched += 1
        frame = used
        if used == capacity:
            victim = tail
            tail = P[victim, 0]
            P[tail, 1] = NIL
            frame = P[victim, 2]
            P[victim, 2] = NIL
        else:
            used += 1
        P[p, 2] = frame
        P[p, 3] = tag << 8
        P[p, 0] = NIL
        P[p, 1] = head
        if head != NIL:
            P[head, 0] = p
        else:
            tail = p
        head = p
    return misses, touched


@numba.njit(cache=True)
def next_status_tag(status, tag):
    """The epoch's tag in a status byte: 2 .. 255. When they run out, every resident page
    keeps 1 (resident, not accessed in this epoch) and the tags start again."""
    tag += 1
    if tag == 256:
        for q in range(status.shape[0]):
            if status[q] != 0:
                status[q] = 1
        tag = 2
    return tag


@numba.njit(cache=True)
def status_lru(pages, capacity, links, frames, flags, tag_in_flags, epoch_accesses):
    """rows_lru with the access bit, both decisions of a hit taken on a status byte per
    page (0: not resident; else the epoch's tag at the page's last access), over the
    layout the caller gives: the list links (prev, next), the frames and the flags (which
    get the tag too when ``tag_in_flags``, as the engine's must)."""
    status = np.zeros(links.shape[0], np.uint8)
    head = tail = NIL
    used = misses = touched = 0
    tag = 2
    next_epoch = epoch_accesses
    for i in range(pages.shape[0]):
        if i == next_epoch:
            next_epoch += epoch_accesses
            tag = next_status_tag(status, tag)
        p = pages[i]
        s = status[p]
        if s != 0:
            if p != head:
                a = links[p, 0]
                b = links[p, 1]
                links[a, 1] = b
                if b != NIL:
                    links[b, 0] = a
                else:
                    tail = a
                links[p, 0] = NIL
                links[p, 1] = head
                links[head, 0] = p
                head = p
            if s != tag:
                touched += 1
                status[p] = tag
                if tag_in_flags:
                    flags[p] = (flags[p] & 255) | (tag << 8)
            continue
        misses += 1
        touched += 1
        frame = used
        if used == capacity:
            victim = tail
            tail = links[victim, 0]
            links[tail, 1] = NIL
            frame = frames[victim]
            frames[victim] = NIL
            status[victim] = 0
        else:
            used += 1
        frames[p] = frame
        if tag_in_flags:
            flags[p] = tag << 8
        status[p] = tag
        links[p, 0] = NIL
        links[p, 1] = head
        if head != NIL:
            links[head, 0] = p
        else:
            tail = p
        head = p
    return misses, touched


@numba.njit(cache=True)
def rows_status_lru(pages, capacity, num_pages, epoch_accesses):
    """status_lru beside the engine's 16-byte rows (prev, next, frame, flags)."""
    P = np.full((num_pages, 4), NIL, np.int32)
    P[:, 3] = 0
    return status_lru(pages, capacity, P[:, 0:2], P[:, 2], P[:, 3], True, epoch_accesses)


@numba.njit(cache=True)
def split_status_lru(pages, capacity, num_pages, epoch_accesses):
    """status_lru in a layout split three ways: links in 8-byte rows, the frames in an
    array of their own, the access tag in the status byte only."""
    links = np.full((num_pages, 2), NIL, np.int32)
    frames = np.full(num_pages, NIL, np.int32)
    return status_lru(pages, capacity, links, frames, frames, False, epoch_accesses)


@numba.njit(cache=True)
def pair_status_lru(pages, capacity, num_pages, epoch_accesses, tag_in_flags):
    """status_lru with the links in 8-byte rows and the frame and flags in 8-byte rows of
    their own (what the engine's page rows would split into)."""
    links = np.full((num_pages, 2), NIL, np.int32)
    rows = np.full((num_pages, 2), NIL, np.int32)  # frame, flags
    rows[:, 1] = 0
    return status_lru(pages, capacity, links, rows[:, 0], rows[:, 1], tag_in_flags, epoch_accesses)


NEW, IN_SWAP, ON_DISK = 0, 1, 2  # where a page's content is (as engine/state.py's)
COLD_DIRTY = 4
TAG_LIMIT = 128  # the status byte: access tag << 1 | file flag
FREE = 2  # a row of the free column, as the kernel's write ring marks it


@numba.njit(cache=True)
def plain_model_lru(t_ns, pages, write, file_backed, capacity, num_pages, epoch_ns, latencies):
    """The model's replay of one lru VM that no host takes part in (see the docstring);
    ``latencies``: guest swap-in, guest swap-out, disk read, disk write, zero fill (ns).
    Returns the accesses replayed (fewer than given at the first free or change of a
    page's file flag, which this case does not cover) and the counts."""
    swap_in_ns, swap_out_ns, disk_read_ns, disk_write_ns, zero_fill_ns = latencies
    links = np.full((num_pages, 2), NIL, np.int32)
    status = np.zeros(num_pages, np.uint8)  # 0: not resident; else tag << 1 | file flag
    cold = np.zeros(num_pages, np.uint8)  # where its content was put | COLD_DIRTY
    unbacked = capacity  # frames never used; a used frame only leaves its page for pg
    head = tail = NIL
    stall = faults = swap_in = swap_out = zero_fills = disk_reads = 0
    touched = epochs = 0
    tag = 2
    epoch_end = epoch_ns
    pos = 0
    while pos < pages.shape[0]:
        issue = t_ns[pos] + stall
        if issue >= epoch_end:
            epochs += 1
            epoch_end += epoch_ns
            tag += 1
            if tag == TAG_LIMIT:  # every resident page keeps tag 1: not accessed
                for q in range(num_pages):
                    if status[q] != 0:
                        status[q] = (status[q] & 1) | 2
                tag = 2
            continue
        w = write[pos]
        if w == FREE:
            break
        p = pages[pos]
        fb = file_backed[pos]
        s = status[p]
        if s != 0:
            if (s & 1) != fb:
                break
            if p != head:
                a = links[p, 0]
                b = links[p, 1]
                links[a, 1] = b
                if b != NIL:
                    links[b, 0] = a
                else:
                    tail = a
                links[p, 0] = NIL
                links[p, 1] = head
                links[head, 0] = p
                head = p
            if w and fb:
                cold[p] |= COLD_DIRTY
            if (s >> 1) != tag:
                touched += 1
                status[p] = (tag << 1) | fb
            pos += 1
            continue
        faults += 1
        entry = 0  # the frame's access tag: none for a frame never used
        if unbacked > 0:
            unbacked -= 1
        else:
            victim = tail
            tail = links[victim, 0]
            if tail != NIL:
                links[tail, 1] = NIL
            else:  # a one-frame guest: the list is empty until pg enters
                head = NIL
            links[victim, 0] = NIL
            vs = status[victim]
            entry = vs >> 1
            status[victim] = 0
            if vs & 1:  # file-backed: written back if dirty, then dropped
                if cold[victim] & COLD_DIRTY:
                    stall += disk_write_ns
                cold[victim] = ON_DISK
            else:  # anonymous: always to guest swap
                stall += swap_out_ns
                swap_out += 1
                cold[victim] = IN_SWAP
        where = cold[p]
        if fb:
            stall += disk_read_ns
            disk_reads += 1
        elif where == IN_SWAP:
            stall += swap_in_ns
            swap_in += 1
        else:
            stall += zero_fill_ns
            zero_fills += 1
        cold[p] = COLD_DIRTY if w and fb else NEW
        if entry != tag:
            touched += 1
        status[p] = (tag << 1) | fb
        links[p, 0] = NIL
        links[p, 1] = head
        if head != NIL:
            links[head, 0] = p
        else:
            tail = p
        head = p
        pos += 1
    counts = (faults, swap_in, swap_out, zero_fills, disk_reads, touched, epochs + 1, stall)
    return pos, counts


PLAIN_COUNTS = (
    "guest_faults",
    "guest_swap_in",
    "guest_swap_out",
    "zero_fills",
    "disk_reads",
    "touched_pages",
    "epochs",
    "stall_ns",
)


def engine_counts(metrics) -> tuple[int, ...]:
    """The engine's totals of what plain_model_lru counts."""
    totals = {name: int(metrics[name].sum()) for name in PLAIN_COUNTS if name != "epochs"}
    totals["epochs"] = int(metrics["epoch"].max()) + 1
    return tuple(totals[name] for name in PLAIN_COUNTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warm_up()
    with tempfile.TemporaryDirectory(prefix="lru-ceiling-") as tmp:
        path = write_traces(Path(tmp), args.accesses, args.pages, 8, args.seed)["single"]
        table = pq.read_table(path, columns=["t_ns", "page", "write", "file_backed", "free"])
        pages = table.column("page").to_numpy().astype(np.int64)
        t_ns = table.column("t_ns").to_numpy().astype(np.int64)  # starts at 0: host time 0
        write = table.column("write").to_numpy(zero_copy_only=False).astype(np.uint8)
        write[table.column("free").to_numpy(zero_copy_only=False)] = FREE
        file_backed = table.column("file_backed").to_numpy(zero_copy_only=False).astype(np.uint8)
        defaults = Latencies()
        latencies = np.array(
            [
                defaults.guest_swap_in_ns,
                defaults.guest_swap_out_ns,
                defaults.disk_read_ns,
                defaults.disk_write_ns,
                defaults.zero_fill_ns,
            ],
            np.int64,
        )
        epoch_ns = DEFAULT_EPOCH_NS
        num_pages = int(pages.max()) + 1
        print(
            f"{args.accesses:,} accesses over {num_pages:,} pages; best and median of "
            f"{args.rounds} interleaved rounds, seconds"
        )
        for label, capacity in (("1/4 footprint", args.pages // 4), ("whole", args.pages)):
            vm_mem = f"{capacity}p"
            metrics = balloonreplay.replay(path, vms=vm_mem).metrics
            epochs = int(metrics["epoch"].max()) + 1
            epoch_accesses = max(1, args.accesses // epochs)
            variants = {
                "bare": partial(bare_lru_misses, pages, capacity, num_pages),
                "rows": partial(rows_lru, pages, capacity, num_pages, epoch_accesses, False),
                "rows+bit": partial(rows_lru, pages, capacity, num_pages, epoch_accesses, True),
                "rows+byte": partial(rows_status_lru, pages, capacity, num_pages, epoch_accesses),
                "split+byte": partial(split_status_lru, pages, capacity, num_pages, epoch_accesses),
                "pair+byte": partial(
                    pair_status_lru, pages, capacity, num_pages, epoch_accesses, False
                ),
                "pair+byte+bit": partial(
                    pair_status_lru, pages, capacity, num_pages, epoch_accesses, True
                ),
            }
            plain = partial(
                plain_model_lru,
                t_ns,
                pages,
                write,
                file_backed,
                capacity,
                num_pages,
                epoch_ns,
                latencies,
            )
            replayed, counts = plain()
            if replayed != len(pages) or counts != engine_counts(metrics):
                raise SystemExit(
                    f"the plain model disagrees with the engine: {replayed:,} accesses, "
                    f"{dict(zip(PLAIN_COUNTS, counts, strict=True))} against "
                    f"{dict(zip(PLAIN_COUNTS, engine_counts(metrics), strict=True))}"
                )
            results = {name: run() for name, run in variants.items()}  # compiled here
            variants["plain"] = plain
            # the bare LRU returns its misses, the others (misses, first accesses in an epoch)
            misses = {name: np.atleast_1d(result)[0] for name, result in results.items()}
            touched = {name: result[1] for name, result in results.items() if name != "bare"}
            touched.pop("rows")  # keeps no access bit
            if len(set(misses.values())) != 1 or len(set(touched.values())) != 1:
                raise SystemExit(f"the variants disagree: misses {misses}, touched {touched}")
            times: dict[str, list[float]] = {name: [] for name in [*variants, "kernel"]}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    started = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - started)
                times["kernel"].append(kernel_seconds(path, 1, vms=vm_mem)[0])
            print(
                f"{label}: {misses['bare']:,} misses, an epoch every {epoch_accesses:,} "
                f"accesses, {results['rows+bit'][1]:,} first accesses in an epoch"
            )
            bare_best = min(times["bare"])
            for name, seconds in times.items():
                seconds.sort()
                print(
                    f"  {name:13s} {seconds[0]:6.3f} {seconds[len(seconds) // 2]:6.3f}"
                    f"   {seconds[0] / bare_best:4.2f}x the bare LRU's best"
                )


if __name__ == "__main__":
    main()
