"""Where kernel.run spends its time, instruction by instruction, with ``perf``.

These machines expose no hardware counters to guests, and perf cannot name the code numba
compiles at run time. So this script samples with the ``cpu-clock`` software event, has
the process it profiles write out the machine code of ``kernel.run`` (numba's entry point
address, a fixed window after it) and disassembles that with ``objdump``; each sample's
address is then placed in that listing. A sample lands just after the instruction that
was waiting (skid), so read each hot address with the few instructions before it, which
the table prints. A load of a row that missed the cache, or a ``prefetcht0`` issued while
every line-fill buffer is busy, shows up this way; that is how the list-neighbour prefetch
stage and the frame-row read on every page's first access in an epoch were found.

The replay is bench_kernel.py's: the benchmark's one-VM trace (or with ``--multi``, its
8-VM run in either regime) loaded once, ``kernel.run`` timed to the end from a fresh
state. Needs ``perf`` and ``objdump`` (Debian's
``linux-perf`` and ``binutils``). Usage::

    NUMBA_CACHE_DIR=.venv/numba-cache .venv/bin/python benchmarks/profile_kernel.py \\
        [--vms 500000p | --multi fits|stress] [--accesses N] [--reps 4] [--top 25]

The code window is 256 KiB from the entry point; samples outside it (decoding, Python,
other kernels) are counted apart.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WINDOW_BYTES = 256 * 1024


def child(trace: Path, vms: str, reps: int, out: Path, regime: str | None, pages: int) -> None:
    """In the profiled process: compile, write kernel.run's code out, time the kernel."""
    from bench_kernel import kernel_seconds
    from bench_replay import SteadyBalloon, multi_vm_runs

    from balloonreplay.engine import kernel
    from balloonreplay.replay import warm_up

    warm_up()
    if regime is None:
        options = {"vms": vms}
    else:  # bench_replay's 8-VM run: 1.5x overcommit, balloons, host swapping, sharing
        options = multi_vm_runs(pages, 8)[regime] | {
            "balloon_fraction": SteadyBalloon.Params().fraction
        }
    kernel_seconds(trace, 1, **options)  # so the overload for these arrays exists
    ((_, compiled),) = list(kernel.run.overloads.items())[:1]
    # numba internals (CompileResult.library, .fndesc): a development tool may lean on them
    address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    (out / "run.bin").write_bytes(ctypes.string_at(address, WINDOW_BYTES))
    (out / "run.addr").write_text(hex(address))
    times = kernel_seconds(trace, reps, **options)
    print(
        f"kernel alone, best and median of {reps}: {times[0]:.3f} s {times[len(times) // 2]:.3f} s"
    )


def listing(out: Path, address: int) -> dict[int, str]:
    """Offset from the entry point -> instruction text."""
    asm = subprocess.run(
        ["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", f"--adjust-vma={address:#x}"]
        + [str(out / "run.bin")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    code = {}
    for line in asm.splitlines():
        where, _, rest = line.partition(":")
        try:
            offset = int(where.strip(), 16) - address
        except ValueError:
            continue
        if "\t" in rest:
            code[offset] = rest.split("\t")[-1].strip()
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", default="500000p", help="the VM's memory (default: 1/4 footprint)")
    parser.add_argument(
        "--multi",
        choices=["fits", "stress"],
        help="profile bench_replay's 8-VM run in this regime instead of the one-VM run",
    )
    parser.add_argument("--accesses", type=int, default=20_000_000)
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child[0], args.vms, args.reps, args.child[1], args.multi, args.pages)
        return
    for tool in ("perf", "objdump"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found (Debian: apt-get install linux-perf binutils)")
    from bench_replay import write_traces

    with tempfile.TemporaryDirectory(prefix="profile-kernel-") as tmp:
        out = Path(tmp)
        trace = write_traces(out, args.accesses, args.pages, 8, args.seed)[
            "single" if args.multi is None else "multi"
        ]
        data = out / "perf.data"
        subprocess.run(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o", str(data), "--"]
            + [sys.executable, __file__, "--vms", args.vms, "--reps", str(args.reps)]
            + ["--pages", str(args.pages)]
            + ([] if args.multi is None else ["--multi", args.multi])
            + ["--child", str(trace), str(out)],
            check=True,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        )
        address = int((out / "run.addr").read_text(), 16)
        ips = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "ip"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        code = listing(out, address)
    hits = collections.Counter()
    for ip in ips:
        offset = int(ip, 16) - address
        if 0 <= offset < WINDOW_BYTES:
            hits[offset] += 1
    inside = sum(hits.values())
    print(f"{len(ips)} samples, {inside} in kernel.run's code window")
    if not inside:
        return
    offsets = sorted(code)
    index = {o: i for i, o in enumerate(offsets)}
    print(f"{'share':>6s} {'offset':>8s}  the three instructions before it | the sampled one")
    for offset, n in hits.most_common(args.top):
        i = index.get(offset)
        text = " | ".join(code[o] for o in offsets[max(0, i - 3) : i + 1]) if i is not None else "?"
        print(f"{100 * n / inside:5.1f}% {offset:#8x}  {text}")


if __name__ == "__main__":
    main()
