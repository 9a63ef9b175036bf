"""Two versions of the engine against each other, end to end, in interleaved rounds.

On a shared machine one run per version says little: the same binary's wall time moves
by 20-40% from one minute to the next. This script generates bench_replay.py's traces
once, then runs bench_replay's four replays (one VM at a quarter and at the whole of its
footprint; eight VMs under 1.5x overcommit with balloons, host swapping and sharing,
guests fitting and at half their footprint) in a fresh process per version and round,
alternating the versions (each goes first in every other round), and prints each run's
best and median wall seconds. With ``--fresh`` each replay runs in a process of its own
instead (as the CLI and the workflow run every replay), and the table adds the median of
its system time: a replay's first touch of memory is paid in the operating system, and
on some machines dearly. With ``--kernel REPS`` it times the kernel alone instead
(bench_kernel.py's harness, from each checkout's own copy of it), best of REPS runs per
process.

Each checkout is imported from its own directory (PYTHONPATH) with its own numba cache
(``CHECKOUT/.venv/ab-numba-cache``), compiled outside the timing. Usage::

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/ab_replay.py /tmp/before . [--rounds 5] [--accesses N] \
        [--kernel 3 | --fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_replay import SteadyBalloon, benchmark_replays, write_traces

VMS = 8
SYSTEM = "system seconds"  # a --fresh child's key for its system time


def child(trace_dir: Path, pages: int, kernel_reps: int, only: int | None) -> None:
    """One round in this process: the four replays with the checkout on sys.path (with
    ``kernel_reps``, the kernel alone instead, best of that many runs, timed by the
    checkout's own bench_kernel.py, which knows that version's engine state); with
    ``only``, that one of the four and its system time."""
    import balloonreplay
    from balloonreplay.replay import warm_up

    warm_up()
    kernel_seconds = None
    if kernel_reps:
        sys.path.insert(0, str(Path(balloonreplay.__file__).parents[1] / "benchmarks"))
        from bench_kernel import kernel_seconds
    runs = benchmark_replays(pages, VMS)
    if only is not None:
        name = list(runs)[only]
        trace, options = runs[name]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        result = balloonreplay.replay(trace_dir / trace, **options)
        system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
        print(json.dumps({name: result.summary["replay_seconds"], SYSTEM: {name: system}}))
        return
    seconds = {}
    for name, (trace, options) in runs.items():
        if kernel_seconds is None:
            result = balloonreplay.replay(trace_dir / trace, **options)
            seconds[name] = result.summary["replay_seconds"]
            continue
        fraction = SteadyBalloon.Params().fraction if "policy" in options else 0.0
        options = {k: v for k, v in options.items() if k != "policy"}
        seconds[name] = kernel_seconds(trace_dir / trace, kernel_reps, fraction, **options)[0]
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs=2, type=Path, help="before and after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kernel",
        type=int,
        default=0,
        metavar="REPS",
        help="time the kernel alone (bench_kernel.py), best of REPS runs per round",
    )
    parser.add_argument("--fresh", action="store_true", help="each replay in a process of its own")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.pages, args.kernel, args.only)
        return
    if args.fresh and args.kernel:
        parser.error("--fresh times whole replays; --kernel times the kernel alone")
    checkouts = [c.resolve() for c in args.checkouts]
    for c in checkouts:
        if not (c / "balloonreplay" / "replay.py").is_file():
            parser.error(f"{c}: expected a balloonreplay checkout (balloonreplay/replay.py)")
    times: dict[Path, dict[str, list[float]]] = {c: {} for c in checkouts}
    system: dict[Path, dict[str, list[float]]] = {c: {} for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="ab-replay-") as tmp:
        started = time.perf_counter()
        write_traces(Path(tmp), args.accesses, args.pages, VMS, args.seed)
        print(f"generated traces in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for r in range(args.rounds):
            # Each version goes first in every other round: the machine's phase drifts
            # within a round too.
            for only in range(len(benchmark_replays(args.pages, VMS))) if args.fresh else [None]:
                for c in checkouts if r % 2 == 0 else checkouts[::-1]:
                    env = os.environ | {
                        "PYTHONPATH": str(c),
                        "NUMBA_CACHE_DIR": str(c / ".venv" / "ab-numba-cache"),
                    }
                    command = [sys.executable, __file__, *map(str, checkouts), "--child", tmp]
                    command += ["--pages", str(args.pages), "--kernel", str(args.kernel)]
                    command += [] if only is None else ["--only", str(only)]
                    out = subprocess.run(command, env=env, capture_output=True, text=True)
                    if out.returncode != 0:
                        raise SystemExit(f"round {r + 1}, {c}: the replays failed:\n{out.stderr}")
                    reported = json.loads(out.stdout.strip().splitlines()[-1])
                    for name, s in reported.pop(SYSTEM, {}).items():
                        system[c].setdefault(name, []).append(s)
                    for name, s in reported.items():
                        times[c].setdefault(name, []).append(s)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    what = f"kernel alone, best of {args.kernel} per round," if args.kernel else "wall,"
    what += " one process per replay," if args.fresh else ""
    print(f"{args.accesses:,} accesses, {what} seconds over {args.rounds} interleaved rounds")
    # Each checkout's columns: its name over "best / median" (and "/ median sys").
    head = "best / median" + (" / median sys" if args.fresh else "")
    width = max(len(head), 18) + 2
    print(f"{'run':24s}" + "".join(f"{c.name[-18:]:>{width}s}" for c in checkouts))
    print(f"{'':24s}" + f"{head:>{width}s}" * len(checkouts))
    for name in times[checkouts[0]]:
        cells = ""
        for c in checkouts:
            cell = f"{min(times[c][name]):.2f} / {statistics.median(times[c][name]):.2f}"
            if args.fresh:
                cell += f" / {statistics.median(system[c][name]):.2f}"
            cells += f"{cell:>{width}s}"
        print(f"{name:24s}{cells}")


if __name__ == "__main__":
    main()
