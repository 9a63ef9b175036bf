"""The replay kernel alone against a bare LRU, on the benchmark's traces.

``bench_replay.py`` times whole replays (reading, decoding, Python per epoch). This
script loads a trace into the engine's buffers once, then times ``kernel.run`` from a
fresh state to the end, several times in one process, and reports the best and the
median: on a shared machine the same binary's runs differ by up to 2x, and only the
best of several is comparable between variants. Beside it, a bare numba LRU (two
one-dimensional link arrays over dense page ids, nothing else) on the same page
sequence: the speed an LRU simulator can reach on this machine. Then the kernel alone on
``bench_replay.py``'s two 8-VM runs (balloons, host swapping and page sharing under 1.5x
overcommit).

Usage: ``NUMBA_CACHE_DIR=.venv/numba-cache .venv/bin/python benchmarks/bench_kernel.py
[--accesses N] [--reps R] [--raw-ids]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from bench_replay import SteadyBalloon, bare_lru_misses, multi_vm_runs, write_traces

from balloonreplay.engine import kernel
from balloonreplay.engine import state as S
from balloonreplay.engine.state import allocate
from balloonreplay.policies import Decision
from balloonreplay.replay import (
    _apply,
    _as_trace,
    _Buffers,
    _pages_per_vm,
    _Samples,
    build_config,
    warm_up,
)


def kernel_seconds(path: Path, reps: int, balloon_fraction: float = 0.0, **options) -> list[float]:
    """Best-first run times of the kernel over the whole trace; ``balloon_fraction``: every
    VM's balloon target from the start, as a share of its memory (bench_replay's
    SteadyBalloon)."""
    trace = _as_trace(path, None)
    config = build_config(trace, **options)
    pages_per_vm = _pages_per_vm(trace, config.num_vms)
    loaded = allocate(config, pages_per_vm)
    rows = pq.ParquetFile(path).metadata.num_rows
    buffers = _Buffers(loaded.VS, pages_per_vm, path, rows)  # all rows in memory
    for batch in trace.iter_batches():
        buffers.add(buffers.prepare(batch))
    buffers.input_done()
    times = []
    for _ in range(reps):
        state = allocate(config, pages_per_vm)
        state.VS[:] = loaded.VS
        samples = _Samples(config.num_vms)
        if balloon_fraction:
            targets = np.asarray(config.config_pages) * balloon_fraction
            decision = Decision(balloon_target_pages=targets.astype(np.int64))
            _apply(state, config, decision, samples)
        started = time.perf_counter()
        while True:
            status = kernel.run(*state, *buffers.arrays())
            if status == S.ST_EPOCH_END:
                kernel.sampling_pass(state.F, state.FC, state.P, state.VS, state.G, samples.all)
                state.G[S.G_EPOCH_END] += config.epoch_ns
            elif status == S.ST_DONE:
                break
            else:
                raise RuntimeError(f"kernel stopped with status {status}")
        times.append(time.perf_counter() - started)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--raw-ids", action="store_true")
    args = parser.parse_args()
    warm_up()
    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as tmp:
        paths = write_traces(Path(tmp), args.accesses, args.pages, 8, args.seed, args.raw_ids)
        pages = (
            pq.read_table(paths["single"], columns=["page"]).column(0).to_numpy().astype(np.int64)
        )
        bare_lru_misses(pages[:1000], 10, args.pages)  # compile outside the timing
        print(f"{args.accesses:,} accesses, best and median of {args.reps} runs")
        for label, capacity in (
            ("1/4 footprint", args.pages // 4),
            ("whole footprint", args.pages),
        ):
            times = kernel_seconds(paths["single"], args.reps, vms=f"{capacity}p")
            print(
                f"kernel, 1 VM lru, {label:16s} {times[0]:6.3f} s  {times[len(times) // 2]:6.3f} s"
            )
            bare = []
            for _ in range(args.reps):
                started = time.perf_counter()
                bare_lru_misses(pages, capacity, args.pages)
                bare.append(time.perf_counter() - started)
            bare.sort()
            print(f"bare LRU,          {label:16s} {bare[0]:6.3f} s  {bare[len(bare) // 2]:6.3f} s")
        # bench_replay's 8-VM runs, the kernel alone: where the model's events and the
        # quantum loop cost.
        for regime, options in multi_vm_runs(args.pages, 8).items():
            times = kernel_seconds(
                paths["multi"],
                args.reps,
                balloon_fraction=SteadyBalloon.Params().fraction,
                **options,
            )
            print(
                f"kernel, 8 VMs,     {regime:16s} {times[0]:6.3f} s  {times[len(times) // 2]:6.3f} s"
            )


if __name__ == "__main__":
    main()
