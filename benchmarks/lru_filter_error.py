"""How far the exact-for-LRU trace filter is from exact for other policies.

Replays a trace and its `--lru-filter K` reduction through the engine at several guest
memory sizes (all >= K) for every guest policy, and once with host pressure (the host
swaps at random), and prints the relative error of the fault and swap counts.

    python benchmarks/lru_filter_error.py TRACE.parquet --k 32 --sizes 32,64,128,256

TRACE must be an ingested (dense) single- or multi-VM trace; the reduction is made here.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import balloonreplay
from balloonreplay.traces.ingest import ingest

GUEST_POLICIES = ("lru", "clock", "fifo", "twolist")
HOST_COUNTERS = ("guest_faults", "host_swap_out", "host_swap_in")


def relative_error(filtered: int, full: int) -> float:
    return (filtered - full) / full if full else float(filtered != 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--k", type=int, default=32, help="LRU filter size in pages")
    parser.add_argument("--sizes", default="32,64,128,256", help="guest memory sizes in pages")
    parser.add_argument(
        "--host-fraction", type=float, default=0.5, help="host memory / guest memory (pressure)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        reduced = Path(tmp) / "reduced.parquet"
        meta = ingest(args.trace, reduced, format_name="parquet", lru_filter_pages=args.k)
        full_rows = balloonreplay.traces.io.open_trace(args.trace).num_rows
        print(
            f"trace {args.trace}: {full_rows} accesses; K={args.k}: {meta.accesses} kept "
            f"({full_rows / meta.accesses:.0f}x smaller)\n"
        )
        print(
            f"{'guest policy':12s} {'pages':>6s} {'faults full':>12s} {'filtered':>10s} {'error':>8s}"
        )
        for guest_policy in GUEST_POLICIES:
            for pages in sizes:
                full = balloonreplay.replay(args.trace, vms=f"{pages}p", guest_policy=guest_policy)
                filt = balloonreplay.replay(reduced, vms=f"{pages}p", guest_policy=guest_policy)
                a, b = full.summary["guest_faults"], filt.summary["guest_faults"]
                print(f"{guest_policy:12s} {pages:6d} {a:12d} {b:10d} {relative_error(b, a):8.2%}")
        print(f"\nhost pressure: host = {args.host_fraction:.0%} of guest memory, random host swap")
        print(f"{'pages':>6s} {'counter':>14s} {'full':>10s} {'filtered':>10s} {'error':>8s}")
        for pages in sizes:
            host = f"{max(1, int(pages * args.host_fraction))}p"
            full = balloonreplay.replay(args.trace, vms=f"{pages}p", host=host)
            filt = balloonreplay.replay(reduced, vms=f"{pages}p", host=host)
            for counter in HOST_COUNTERS:
                a, b = full.summary[counter], filt.summary[counter]
                print(f"{pages:6d} {counter:>14s} {a:10d} {b:10d} {relative_error(b, a):8.2%}")


if __name__ == "__main__":
    main()
