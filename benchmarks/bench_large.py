"""Traces larger than memory: peak resident memory and time per access at 50M and 500M.

For each trace length, generates a workload of several VMs with the project's own
generator (``balloonreplay generate``, which streams in chunks), then replays it with the
full model: the ``esx`` policy at 1.5x overcommit (balloon targets from shares, idle tax
and sampled working sets; random host swapping when free memory runs out) and intra-VM
page sharing. Each step runs as its own child process, and its peak RSS is the child's
``ru_maxrss`` from ``os.wait4`` (that child's alone, not the largest of all children).

The workload keeps its footprint fixed while the trace grows (a zipf phase over a fixed
set of pages, no drift), so a longer trace means more accesses over the same state:
time per access should stay flat and memory should not grow with the length.

Usage::

    .venv/bin/python benchmarks/bench_large.py                     # 50M and 500M
    .venv/bin/python benchmarks/bench_large.py --accesses 2M,20M   # a quick check

Traces and metrics go to a temporary directory under ``--workdir`` (default: the
system's temp dir; the 500M trace takes about 5.5 GB) and are deleted at the end, unless
``--trace-dir`` keeps the traces for the next run (``--generate-only`` just writes them).
The replay spills rows a lagging VM has not reached yet to $TMPDIR (balloonreplay/spill.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from balloonreplay.units import parse_size_pages

BALLOONREPLAY = Path(sys.executable).parent / "balloonreplay"
RSS_TARGET_BYTES = 2 << 30
LINEARITY_TARGET = 1.2

# Eight VMs of two kinds; each touches a fixed 768 MiB (1.5x its memory) with Zipf
# popularity, so the guest swaps, the balloon has idle memory to take, and the host is
# short of memory for the whole run. 2 us between accesses: at 50M accesses the run
# spans about 12 one-second policy epochs, at 500M about 125.
VM_MEMORY = "512MiB"
VMS = 8
OVERCOMMIT = 1.5


def workload_spec(accesses: int) -> dict:
    per_vm = accesses // VMS
    boot_pages = parse_size_pages("128MiB")
    zipf = per_vm - boot_pages
    if zipf <= 0:
        raise SystemExit(f"--accesses {accesses}: expected at least {VMS * boot_pages * 2}")

    def vm_type(image: str, footprint: str, alpha: float, write_fraction: float) -> dict:
        return {
            "memory": VM_MEMORY,
            "image": image,
            "mean_interaccess_ns": 10_000,
            "phases": [
                {"kind": "boot", "footprint": "128MiB"},
                {
                    "kind": "zipf",
                    "footprint": footprint,
                    "alpha": alpha,
                    "write_fraction": write_fraction,
                    "accesses": zipf,
                },
            ],
        }

    return {
        "name": f"large-{accesses}",
        "content": {"zero_fraction": 0.1, "image_fraction": 0.3},
        "vm_types": {
            "web": vm_type("ubuntu", "640MiB", 1.2, 0.3),
            "db": vm_type("centos", "512MiB", 1.0, 0.5),
        },
        "vms": [
            {"type": "web", "count": VMS // 2, "stagger_ns": 1_000_000},
            {"type": "db", "count": VMS - VMS // 2, "start_ns": 500_000},
        ],
    }


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to a busy machine
    peak_rss_bytes: int
    stdout: str


def run_measured(argv: list[str], log_dir: Path) -> Measured:
    """Run one child; its wall time and its own peak RSS (ru_maxrss is in KiB on Linux).
    Output goes to files, not pipes: the child is reaped by os.wait4, which is what
    yields its rusage, so nothing may wait on it first."""
    out_path, err_path = log_dir / "child.out", log_dir / "child.err"
    started = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        stderr = err_path.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({child.returncode}):\n{stderr}")
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, cpu, usage.ru_maxrss * 1024, out_path.read_text())


def generate(accesses: int, trace_dir: Path, seed: int) -> tuple[Path, Measured | None]:
    """The trace of `accesses` in trace_dir, generated unless a file of this spec and seed
    is already there (then no generation is measured)."""
    from balloonreplay.traces.io import open_trace

    spec = workload_spec(accesses)
    trace = trace_dir / f"large-{accesses}-seed{seed}.parquet"
    if trace.exists():
        meta = open_trace(trace).metadata
        if meta.parameters.get("spec") == spec and meta.seed == seed:
            return trace, None
    spec_path = trace_dir / f"large-{accesses}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    argv = [str(BALLOONREPLAY), "generate", str(spec_path), "--seed", str(seed)]
    return trace, run_measured([*argv, "-o", str(trace), "--quiet"], trace_dir)


def measure(accesses: int, trace_dir: Path, workdir: Path, seed: int) -> dict:
    trace, gen = generate(accesses, trace_dir, seed)
    host_pages = int(VMS * parse_size_pages(VM_MEMORY) / OVERCOMMIT)
    rep = run_measured(
        [str(BALLOONREPLAY), "replay", str(trace), "--policy", "esx", "--sharing"]
        + ["--host-mem", f"{host_pages}p", "--seed", str(seed), "--json", "--quiet"]
        + ["-o", str(workdir / f"metrics-{accesses}.parquet")],
        workdir,
    )
    summary = json.loads(rep.stdout)
    if summary["accesses"] != accesses:
        raise RuntimeError(f"replayed {summary['accesses']} accesses, expected {accesses}")
    return {
        "accesses": accesses,
        "trace_bytes": trace.stat().st_size,
        "generate_s": gen.seconds if gen else None,
        "generate_peak_rss_bytes": gen.peak_rss_bytes if gen else None,
        "replay_s": summary["replay_seconds"],
        "replay_wall_s": rep.seconds,
        "ns_per_access": summary["replay_seconds"] / accesses * 1e9,
        # The whole child, warm-up and reading included.
        "replay_cpu_s": rep.cpu_seconds,
        "cpu_ns_per_access": rep.cpu_seconds / accesses * 1e9,
        "replay_peak_rss_bytes": rep.peak_rss_bytes,
        "epochs": summary["epochs"],
        "slowdown_min": min(summary["slowdown"]),
        "slowdown_max": max(summary["slowdown"]),
        "host_swap_out": summary["host_swap_out"],
        "balloon_inflated": summary["balloon_inflated"],
        "cow_breaks": summary["cow_breaks"],
        "scanned_pages": summary["scanned_pages"],
        "guest_faults": summary["guest_faults"],
        "invariants_ok": summary.get("invariants_ok"),
    }


def parse_count(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", default="50M,500M", help="trace lengths, e.g. 50M,500M")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory")
    parser.add_argument(
        "--trace-dir",
        type=Path,
        default=None,
        help="keep the traces here and reuse them on the next run (default: deleted)",
    )
    parser.add_argument("--generate-only", action="store_true", help="only write the traces")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    lengths = [parse_count(x) for x in args.accesses.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="bench-large-", dir=args.workdir))
    trace_dir = args.trace_dir or workdir
    trace_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        if not args.generate_only:
            # Compile (or load) the kernels once in a child of its own, so the measured
            # replays load them from numba's cache as every replay but the first does.
            warm = [sys.executable, "-c", "from balloonreplay.replay import warm_up; warm_up()"]
            run_measured(warm, workdir)
        for n in lengths:
            if args.generate_only:
                trace, gen = generate(n, trace_dir, args.seed)
                done = {"trace": str(trace), "generate_s": gen and gen.seconds}
                done["generate_peak_rss_bytes"] = gen and gen.peak_rss_bytes
                print(json.dumps(done), file=sys.stderr, flush=True)
                continue
            row = measure(n, trace_dir, workdir, args.seed)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not rows:
        return

    print(f"\n{VMS} VMs x {VM_MEMORY}, esx at {OVERCOMMIT}x overcommit, sharing on")
    print(
        f"{'accesses':>12s} {'trace GB':>8s} {'gen s':>7s} {'gen RSS MiB':>11s} "
        f"{'replay s':>8s} {'ns/access':>9s} {'CPU ns/acc':>10s} {'replay RSS MiB':>14s} "
        f"{'epochs':>6s} "
        f"{'slowdown':>11s} {'host swap-outs':>14s} {'balloon infl.':>13s} {'COW breaks':>11s}"
    )
    for r in rows:
        reused = r["generate_s"] is None  # trace from --trace-dir: generation not timed
        gen_s = "-" if reused else f"{r['generate_s']:.1f}"
        gen_rss = "-" if reused else f"{r['generate_peak_rss_bytes'] / 2**20:.0f}"
        print(
            f"{r['accesses']:12,d} {r['trace_bytes'] / 1e9:8.2f} {gen_s:>7s} {gen_rss:>11s} "
            f"{r['replay_s']:8.1f} {r['ns_per_access']:9.1f} {r['cpu_ns_per_access']:10.1f} "
            f"{r['replay_peak_rss_bytes'] / 2**20:14.0f} {r['epochs']:6d} "
            f"{r['slowdown_min']:5.2f}-{r['slowdown_max']:<5.2f} {r['host_swap_out']:14,d} "
            f"{r['balloon_inflated']:13,d} {r['cow_breaks']:11,d}"
        )
    peak = max(r["replay_peak_rss_bytes"] for r in rows)
    print(f"replay peak RSS {peak / 2**20:.0f} MiB (target < {RSS_TARGET_BYTES / 2**20:.0f} MiB)")
    if len(rows) > 1:
        for key, what in (("ns_per_access", "wall"), ("cpu_ns_per_access", "CPU")):
            ratio = rows[-1][key] / rows[0][key]
            print(
                f"{what} time per access at {rows[-1]['accesses']:,} / at "
                f"{rows[0]['accesses']:,}: {ratio:.2f} (target <= {LINEARITY_TARGET})"
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
