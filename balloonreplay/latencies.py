"""Stall latencies of the model, in ns per 4 KiB page, with where each number comes from.

They are model inputs (DESIGN.md, "Defaults with their sources"): a study should sweep
them. Two sets ship: ``ssd`` (the default) and ``hdd``. A VM stalls for these on the
access that needs them (closed-loop time); host work done in the background (proactive
host swap-out at an epoch boundary, the sharing scanner) stalls nobody.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from balloonreplay.errors import ConfigError

# Orders of magnitude from J. Dean, "Numbers everyone should know" (LADIS 2009 keynote):
# disk seek ~10 ms; read 1 MB sequentially from memory ~250 us, i.e. ~1 us per 4 KiB
# page. Dean's slide has no SSD row: "read 4K randomly from SSD ~150 us" is from the list
# extended from it, "Latency Numbers Every Programmer Should Know" (J. Bonér, 2012).
SSD_RANDOM_4K_NS = 150_000
HDD_SEEK_NS = 10_000_000
MEMORY_4K_COPY_NS = 1_000


@dataclass(frozen=True)
class Latencies:
    guest_swap_in_ns: int = SSD_RANDOM_4K_NS  # guest reads a page from its swap disk
    # A swap-out in direct reclaim waits for its write; SSD writes to a drive's cache are
    # no slower than random reads at this granularity, so the same figure is used.
    guest_swap_out_ns: int = SSD_RANDOM_4K_NS
    disk_read_ns: int = SSD_RANDOM_4K_NS  # page-cache fill of a file-backed page
    disk_write_ns: int = SSD_RANDOM_4K_NS  # write-back of a dirty file-backed victim
    host_swap_in_ns: int = SSD_RANDOM_4K_NS  # hypervisor reads a guest page from its swap
    host_swap_out_ns: int = SSD_RANDOM_4K_NS  # synchronous host reclaim on a VM's behalf
    # Copy of one page plus the write-protection fault; ~2 page copies.
    cow_break_ns: int = 2 * MEMORY_4K_COPY_NS
    zero_fill_ns: int = MEMORY_4K_COPY_NS  # clear one page on first touch
    # One balloon page: a guest allocation plus its share of a batched hypercall (Linux
    # virtio-balloon sends up to 256 PFNs per request); order of magnitude only.
    balloon_page_ns: int = MEMORY_4K_COPY_NS

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


LATENCY_SETS: dict[str, Latencies] = {
    "ssd": Latencies(),
    # Rotating disk: every swap or file I/O is a seek (Dean's 10 ms).
    "hdd": Latencies(
        guest_swap_in_ns=HDD_SEEK_NS,
        guest_swap_out_ns=HDD_SEEK_NS,
        disk_read_ns=HDD_SEEK_NS,
        disk_write_ns=HDD_SEEK_NS,
        host_swap_in_ns=HDD_SEEK_NS,
        host_swap_out_ns=HDD_SEEK_NS,
    ),
}


def get_latencies(name_or_value: str | Latencies | dict | None = None, **overrides) -> Latencies:
    """A named set (``ssd``, ``hdd``), a mapping of overrides on the SSD set, or a value."""
    if name_or_value is None:
        base = LATENCY_SETS["ssd"]
    elif isinstance(name_or_value, Latencies):
        base = name_or_value
    elif isinstance(name_or_value, dict):
        base = LATENCY_SETS["ssd"]
        overrides = {**name_or_value, **overrides}
    elif name_or_value in LATENCY_SETS:
        base = LATENCY_SETS[name_or_value]
    else:
        raise ConfigError(
            "latencies", f"unknown latency set {name_or_value!r}; known: {', '.join(LATENCY_SETS)}"
        )
    known = {f.name for f in dataclasses.fields(Latencies)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"latencies.{key}", f"unknown latency; known: {', '.join(known)}")
        if int(value) < 0:
            raise ConfigError(f"latencies.{key}", f"must be >= 0 ns, got {value}")
    return dataclasses.replace(base, **{k: int(v) for k, v in overrides.items()})
