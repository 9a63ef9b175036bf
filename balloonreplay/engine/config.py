"""The replay configuration shared by the numba engine and the reference model.

Plain Python (no numba) so the reference and the API can import it cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from balloonreplay.errors import ConfigError
from balloonreplay.latencies import Latencies
from balloonreplay.units import MAX_SIZE_PAGES

GUEST_POLICIES = ("lru", "clock", "fifo", "twolist")
HOST_SELECTIONS = ("random", "lru-sampled")
SCAN_ORDERS = ("round-robin", "random")

# Defaults, each with why.
DEFAULT_QUANTUM_NS = 100_000  # 100 us: DESIGN.md suggests 100 us..1 ms of host time
DEFAULT_EPOCH_NS = 1_000_000_000  # 1 s: Hyper-V adjusts about every second; others are multiples
DEFAULT_SCAN_RATE_PAGES_PER_S = 50  # ESX Mem/ShareScanVM (Waldspurger 2002)
# No real system documents a balloon speed; 1 GiB/s of 4 KiB pages is an order of magnitude
# for a guest allocator feeding a batched hypercall. Sweep it.
DEFAULT_BALLOON_RATE_PAGES_PER_S = 262_144
DEFAULT_TWOLIST_ACTIVE_PERCENT = 50  # Linux inactive_ratio is 1 (active ~ inactive) below 1 GiB
DEFAULT_SEED = 0


@dataclass
class ReplayConfig:
    """Everything the model needs besides the trace and the policy. Sizes in pages."""

    config_pages: list[int]
    host_pages: int
    overhead_pages: list[int] | None = None  # per-VM host overhead; default 0
    guest_policy: str = "lru"
    twolist_active_percent: int = DEFAULT_TWOLIST_ACTIVE_PERCENT
    host_selection: str = "random"
    sharing: bool = False
    scan_rate_pages_per_s: int = DEFAULT_SCAN_RATE_PAGES_PER_S
    scan_order: str = "round-robin"
    intra_vm_sharing_only: bool = True  # ESX Mem.ShareForceSalting=2 (KB 2080735)
    balloon_rate_pages_per_s: int = DEFAULT_BALLOON_RATE_PAGES_PER_S
    latencies: Latencies = field(default_factory=Latencies)
    quantum_ns: int = DEFAULT_QUANTUM_NS
    epoch_ns: int = DEFAULT_EPOCH_NS
    seed: int = DEFAULT_SEED
    debug_checks: bool = False

    def __post_init__(self) -> None:
        self.config_pages = [int(x) for x in self.config_pages]
        if self.overhead_pages is None:
            self.overhead_pages = [0] * len(self.config_pages)
        self.overhead_pages = [int(x) for x in self.overhead_pages]
        self.validate()

    @property
    def num_vms(self) -> int:
        return len(self.config_pages)

    def validate(self) -> None:
        if not self.config_pages:
            raise ConfigError("vms", "at least one VM is needed")
        # The engine holds these sums in int64; beyond, numpy raises OverflowError.
        for key, what, pages in (
            ("vm_mem", "the VMs' memory", self.config_pages),
            ("overhead_pages", "the VMs' overhead", self.overhead_pages),
            (
                "host_mem",
                "host memory (by default the VMs' memory and overhead)",
                [self.host_pages],
            ),
        ):
            if sum(pages) > MAX_SIZE_PAGES:
                raise ConfigError(key, f"{what} must be below 2**63 pages, got {sum(pages)}")
        if any(c < 1 for c in self.config_pages):
            raise ConfigError(
                "vm_mem",
                f"every VM needs at least 1 page, got {self.config_pages} (sizes round down "
                "to whole pages, and one without a unit is bytes: 1000p is 1000 pages)",
            )
        if len(self.overhead_pages) != len(self.config_pages):
            raise ConfigError(
                "overhead_pages",
                f"expected one size per VM ({self.num_vms} VMs), got {len(self.overhead_pages)}",
            )
        if any(o < 0 for o in self.overhead_pages):
            raise ConfigError("overhead_pages", "must be >= 0")
        if self.host_pages <= sum(self.overhead_pages):
            raise ConfigError(
                "host_mem",
                f"host memory ({self.host_pages} pages) must exceed the VMs' overhead "
                f"({sum(self.overhead_pages)} pages)",
            )
        for key, value, choices in (
            ("guest_policy", self.guest_policy, GUEST_POLICIES),
            ("host_selection", self.host_selection, HOST_SELECTIONS),
            ("scan_order", self.scan_order, SCAN_ORDERS),
        ):
            if value not in choices:
                raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
        if not 0 <= self.twolist_active_percent <= 100:
            raise ConfigError("twolist_active_percent", "must be within 0..100")
        if self.quantum_ns < 1 or self.epoch_ns < 1:
            raise ConfigError("epoch_ns", "quantum and epoch must be positive")
        if self.epoch_ns % self.quantum_ns:
            raise ConfigError(
                "epoch_ns",
                f"must be a multiple of the quantum ({self.quantum_ns} ns), got {self.epoch_ns}",
            )
        if self.scan_rate_pages_per_s < 0 or self.balloon_rate_pages_per_s < 0:
            raise ConfigError("rates", "scan and balloon rates must be >= 0")

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["latencies"] = self.latencies.as_dict()
        return data
