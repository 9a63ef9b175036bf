"""Where a replay's CPU time goes, and the least wall time two cores could give it.

A replay runs the kernel on the main thread and reads the trace in another (Parquet
decoding, grouping rows by VM). On a 2-core machine no arrangement of that work finishes
in less than half its CPU time, and the kernel's own share is sequential work (one list
walked access by access) that no second core can take. This script times, for each of
bench_replay.py's four replays, each in a fresh process: the wall time, the process's CPU
time, the main thread's (``time.thread_time``) and that of ``kernel.run`` within it, and
prints CPU / 2 beside the wall time the targets ask for.

Usage: ``NUMBA_CACHE_DIR=.venv/numba-cache .venv/bin/python benchmarks/cpu_split.py
[--accesses N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_replay import benchmark_replays, write_traces

VMS = 8


def child(trace_dir: Path, pages: int, name: str) -> None:
    """One replay in this process; prints its times as JSON."""
    import balloonreplay
    from balloonreplay.engine import kernel
    from balloonreplay.replay import warm_up

    warm_up()
    kernel_cpu = 0.0
    run = kernel.run

    def timed_run(*arrays):
        nonlocal kernel_cpu
        started = time.thread_time()
        try:
            return run(*arrays)
        finally:
            kernel_cpu += time.thread_time() - started

    kernel.run = timed_run  # replay() looks it up at each call
    trace, options = benchmark_replays(pages, VMS)[name]
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    balloonreplay.replay(trace_dir / trace, **options)
    wall, cpu, main = (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        time.thread_time() - main,
    )
    print(json.dumps({"wall": wall, "cpu": cpu, "main": main, "kernel": kernel_cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.pages, args.name)
        return
    with tempfile.TemporaryDirectory(prefix="cpu-split-") as tmp:
        write_traces(Path(tmp), args.accesses, args.pages, VMS, args.seed)
        print(f"{args.accesses:,} accesses; seconds, one fresh process per replay")
        print(
            f"{'run':24s} {'wall':>6s} {'CPU':>6s} {'main':>6s} {'kernel':>6s} {'other':>6s} {'CPU/2':>6s}"
        )
        for _ in range(args.rounds):
            for name in benchmark_replays(args.pages, VMS):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", tmp, "--name", name]
                    + ["--pages", str(args.pages)],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    raise SystemExit(f"{name}: the replay failed:\n{out.stderr}")
                t = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"{name:24s} {t['wall']:6.2f} {t['cpu']:6.2f} {t['main']:6.2f} "
                    f"{t['kernel']:6.2f} {t['cpu'] - t['main']:6.2f} {t['cpu'] / 2:6.2f}"
                )
    print(
        "targets: 1 VM at 10x libCacheSim's rate (bench_replay.py measures it); "
        "8 VMs at 20 M accesses/s, 1.00 s per 20 M accesses"
    )


if __name__ == "__main__":
    main()
