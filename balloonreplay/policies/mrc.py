"""Miss-ratio-curve-driven balancing in the spirit of MEB (Zhao & Wang, VEE 2009).

Each VM's LRU miss-ratio curve is maintained online from its accesses (exact Mattson stack
distances, the Fenwick-tree kernel of :mod:`balloonreplay.mrc`). Every period the host
memory available to the guests is split so that each next chunk of memory goes where it
cuts the most misses per page, with look-ahead over non-convex curves (as in utility-based
partitioning), above each VM's floor and up to its configured memory; the balloon of each
VM is its configured memory minus its share. Nothing is reclaimed while everything fits,
nor while host free memory stays above ``inflate_below_free_percent`` (balloons then only
shrink toward the shares): a VM that has not started yet has a flat curve and would
otherwise be ballooned to its floor before anyone needs its memory.

Where the accesses come from: the snapshot carries counters, not access streams, so the
policy reads the VMs' accesses itself from the trace being replayed (handed to it by the
replay through :meth:`HostPolicy.attach`, or another file named by ``trace_path``),
advancing each VM by the rows the engine reports it replayed in the epoch (accesses and
frees; a free does not enter the curve). Without a dense trace it falls back to a local
power-law model of each curve (misses inversely proportional to memory around the
current size, fitted to the epoch's guest faults), which equalises marginal gains at
memory proportional to sqrt(faults * current memory).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.mrc import _VmCurve
from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.policies._util import (
    PeriodicTimer,
    check_non_negative,
    check_period,
    check_within,
    guest_budget_pages,
    per_vm,
    round_preserving_sum,
    solve_level,
    split_proportionally,
)


def misses_by_size(curve: _VmCurve, max_size: int) -> np.ndarray:
    """Misses at every memory size 0..max_size of one VM's curve so far."""
    distinct = int(curve.state[1])
    cold = int(curve.histogram[0])
    by_distance = curve.histogram[1 : distinct + 1].astype(np.float64)
    # misses(s) = cold + accesses with stack distance > s
    tail = np.concatenate([np.cumsum(by_distance[::-1])[::-1], [0.0]])
    misses = np.full(max_size + 1, float(cold))
    upto = min(max_size, distinct)
    misses[: upto + 1] += tail[: upto + 1]
    return misses


def partition_by_curves(
    misses: list[np.ndarray],
    budget_pages: int,
    floor_pages: np.ndarray,
    cap_pages: np.ndarray,
    step_pages: int,
) -> np.ndarray:
    """Split `budget_pages` to minimise total misses: greedy with look-ahead.

    Each round gives one VM the extension (a multiple of `step_pages`) with the most
    misses saved per page, so a curve with a cliff further out is not starved by a
    shallow one nearby; ties go to the lower VM index. Memory no curve can use is shared
    in proportion to the VMs' remaining room.
    """
    alloc = np.minimum(floor_pages, cap_pages).astype(np.int64)
    left = int(budget_pages - alloc.sum())
    if left < 0:
        # Floors do not fit: scale them down.
        return split_proportionally(budget_pages, floor_pages, caps=cap_pages)
    step = max(1, int(step_pages))
    while left > 0:
        best_gain, best_vm, best_extension = 0.0, -1, 0
        for vm, curve in enumerate(misses):
            room = min(int(cap_pages[vm]) - int(alloc[vm]), left)
            if room <= 0:
                continue
            sizes = np.arange(step, room + step, step)
            sizes[-1] = min(sizes[-1], room)
            here = curve[min(int(alloc[vm]), len(curve) - 1)]
            there = curve[np.minimum(alloc[vm] + sizes, len(curve) - 1)]
            gain_per_page = (here - there) / sizes
            i = int(np.argmax(gain_per_page))
            if gain_per_page[i] > best_gain:
                best_gain, best_vm, best_extension = float(gain_per_page[i]), vm, int(sizes[i])
        if best_vm < 0:
            break
        alloc[best_vm] += best_extension
        left -= best_extension
    if left > 0:
        alloc += split_proportionally(left, cap_pages - alloc, caps=cap_pages - alloc)
    return alloc


class _TraceFeed:
    """Hands out each VM's next rows from a canonical trace, in trace order: page ids and
    free flags (a free counts as a replayed row; the curve takes it as a free, not as an
    access: mrc._stack_distances)."""

    def __init__(self, trace):
        from balloonreplay.traces.remap import rows_by_vm

        self._rows_by_vm = rows_by_vm
        self.pages_per_vm = list(trace.metadata.pages_per_vm or [])
        self._batches = trace.iter_batches()
        self._buffers: dict[int, deque[tuple[np.ndarray, np.ndarray]]] = {}
        self._buffered: dict[int, int] = {}
        self._done = False

    def _read_batch(self) -> bool:
        try:
            batch = next(self._batches)
        except StopIteration:
            self._done = True
            return False
        vm_ids = batch.column("vm").to_numpy()
        pages = batch.column("page").to_numpy().astype(np.int64)
        if "free" in batch.schema.names:
            frees = batch.column("free").to_numpy(zero_copy_only=False).view(np.uint8)
        else:
            frees = np.zeros(len(pages), dtype=np.uint8)
        for vm, rows in self._rows_by_vm(vm_ids):
            self._buffers.setdefault(vm, deque()).append((pages[rows], frees[rows]))
            self._buffered[vm] = self._buffered.get(vm, 0) + len(rows)
        return True

    def take(self, vm: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The VM's next ``count`` rows (fewer at the trace's end): pages and free flags."""
        while self._buffered.get(vm, 0) < count and not self._done:
            self._read_batch()
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        need = min(count, self._buffered.get(vm, 0))
        buffer = self._buffers.get(vm, deque())
        while need > 0:
            pages, frees = buffer[0]
            if len(pages) <= need:
                parts.append(buffer.popleft())
                need -= len(pages)
            else:
                parts.append((pages[:need], frees[:need]))
                buffer[0] = (pages[need:], frees[need:])
                need = 0
        taken = sum(len(pages) for pages, _ in parts)
        self._buffered[vm] = self._buffered.get(vm, 0) - taken
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([pages for pages, _ in parts]),
            np.concatenate([frees for _, frees in parts]),
        )


class MrcPolicy(HostPolicy):
    name = "mrc"
    description = "MEB-style: online LRU miss-ratio curves; memory goes where it saves most misses"

    @dataclass
    class Params:
        # The replayed trace, for the VMs' access streams; "" = the power-law fallback.
        trace_path: str = ""
        # Rebalancing period. MEB rebalances continuously; once per second matches the
        # engine's default epoch.
        period_s: float = 1.0
        # Floor per VM, % of its configured memory, and reservations in pages (the larger
        # wins). A floor keeps a VM whose curve is flat (streaming) running; 10% is our
        # choice, MEB leaves it to the administrator.
        min_percent: float = 10.0
        reservation_pages: list[int] | None = None
        # Look-ahead granularity, as a fraction of the budget.
        steps: int = 256
        # Multiply the curves by this after each rebalancing, so they follow phase
        # changes; 1.0 keeps the exact curve over the whole history.
        decay: float = 1.0
        # Memory kept free on the host, % of host memory.
        host_reserve_percent: float = 0.0
        # Inflate only while host free memory is below this share of host memory (ESX's
        # high free-memory state, 6%, as the balloon policy).
        inflate_below_free_percent: float = 6.0

    def __init__(self, params=None):
        super().__init__(params)
        self._timer = PeriodicTimer(self.params.period_s)
        self._feed: _TraceFeed | None = None
        self._attached = None
        self._curves: list[_VmCurve] = []
        self.allocation_pages: np.ndarray | None = None
        self._targets: np.ndarray | None = None

    def check_params(self) -> None:
        p = self.params
        if not 0 < p.decay <= 1:
            raise ConfigError("policy.decay", f"must be within (0, 1], got {p.decay}")
        check_period(p, "period_s", "the rebalancing period")
        check_within(p, "min_percent", 0.0, 100.0)
        check_within(p, "host_reserve_percent", 0.0, 100.0)
        check_within(p, "inflate_below_free_percent", 0.0, 100.0)
        check_within(p, "steps", 1, None)
        check_non_negative(p, ("reservation_pages",))

    def start(self, snapshot: Snapshot) -> Decision:
        self.check_params()
        p = self.params
        trace = self._attached
        if p.trace_path:
            from balloonreplay.traces.io import open_trace

            trace = open_trace(p.trace_path)
            if not trace.metadata.dense:
                raise ConfigError(
                    "policy.trace_path",
                    f"{p.trace_path}: expected an ingested (dense) trace; run ingest",
                )
        if trace is not None and trace.metadata.dense:
            self._feed = _TraceFeed(trace)
            hints = self._feed.pages_per_vm
            self._curves = [
                _VmCurve(hints[vm] if vm < len(hints) else 1024) for vm in range(snapshot.num_vms)
            ]
        self._timer.due(snapshot.t_ns)
        return Decision(
            balloon_target_pages=np.zeros(snapshot.num_vms, dtype=np.int64), allow_host_swap=True
        )

    def attach(self, trace) -> None:
        self._attached = trace

    def feed(self, vm: int, pages: np.ndarray, frees: np.ndarray | None = None) -> None:
        """Add rows of `vm` to its curve (for callers that have the stream): page ids, and
        ``frees`` (true where the row frees its page rather than accessing it; default
        none)."""
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        if frees is not None and len(frees) != len(pages):
            raise ValueError(
                f"expected one free flag per page id, got {len(frees)} for {len(pages)}"
            )
        if len(pages) and pages.min() < 0:
            # The jitted stack distances index by page id without bounds checks.
            raise ValueError(f"expected page ids >= 0, got {int(pages.min())}")
        while len(self._curves) <= vm:
            self._curves.append(_VmCurve(1024))
        if len(pages):
            if frees is None:
                flags = np.zeros(len(pages), dtype=np.uint8)
            else:
                flags = (np.asarray(frees) != 0).view(np.uint8)
            self._curves[vm].add(pages, flags)

    def floors(self, snapshot: Snapshot) -> np.ndarray:
        config = snapshot.config_pages.astype(np.int64)
        floor = np.ceil(config * self.params.min_percent / 100.0).astype(np.int64)
        reservation = per_vm(self.params.reservation_pages, snapshot.num_vms, 0, "reservation")
        return np.clip(np.maximum(floor, reservation), 1, config)

    def _fallback_allocation(self, snapshot: Snapshot, budget: int) -> np.ndarray:
        config = snapshot.config_pages.astype(np.float64)
        current = np.maximum(config - snapshot.balloon_pages, 1).astype(np.float64)
        # m(s) = F * c / s near the current size c: the marginal gain F * c / s^2 is equal
        # across VMs at s proportional to sqrt(F * c).
        weight = np.sqrt(np.maximum(snapshot.guest_faults, 0) * current)
        floor = self.floors(snapshot).astype(np.float64)
        if weight.sum() == 0:
            weight = config.copy()

        def at(level):
            return np.clip(weight * level, floor, config)

        total = max(budget, int(floor.sum()))
        alloc = at(solve_level(at, total))
        return round_preserving_sum(alloc, min(total, int(config.sum())), caps=config)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        if self._feed is not None:
            for vm in range(snapshot.num_vms):
                rows = int(snapshot.accesses[vm]) + int(snapshot.guest_frees[vm])
                self.feed(vm, *self._feed.take(vm, rows))
        if not self._timer.due(snapshot.t_ns):
            return None
        config = snapshot.config_pages.astype(np.int64)
        reserve = int(np.ceil(snapshot.host_pages * self.params.host_reserve_percent / 100.0))
        budget = guest_budget_pages(snapshot, reserve)
        if config.sum() <= budget:
            alloc = config.copy()
        elif self._curves and any(c.accesses for c in self._curves):
            misses = [
                misses_by_size(self._curves[vm], int(config[vm]))
                if vm < len(self._curves)
                else np.zeros(int(config[vm]) + 1)
                for vm in range(snapshot.num_vms)
            ]
            step = max(1, budget // max(1, self.params.steps))
            alloc = partition_by_curves(misses, budget, self.floors(snapshot), config, step)
            if self.params.decay < 1:
                for curve in self._curves:
                    curve.histogram = np.floor(curve.histogram * self.params.decay).astype(np.int64)
        else:
            alloc = self._fallback_allocation(snapshot, budget)
        self.allocation_pages = alloc
        targets = np.clip(config - alloc, 0, config - 1)
        threshold = snapshot.host_pages * self.params.inflate_below_free_percent / 100.0
        if snapshot.host_free_pages >= threshold:
            current = self._targets if self._targets is not None else np.zeros_like(targets)
            targets = np.minimum(targets, current)  # memory is ample: only give back
        self._targets = targets
        return Decision(balloon_target_pages=targets.copy())
