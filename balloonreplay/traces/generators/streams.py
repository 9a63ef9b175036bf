"""Per-VM access streams, produced phase by phase in chunks.

Chunk boundaries never change the result: every random draw comes from a per-(VM, phase,
repetition, purpose) PCG64 stream consumed one uniform double per access, and every
index-dependent quantity (scan position, heap size, drift) is computed from the access's
absolute index within its phase.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from balloonreplay.traces.generators.content import (
    WRITE_FRESH,
    WRITE_MODE_CODES,
    WRITE_ZERO,
    VmContentState,
)
from balloonreplay.traces.generators.spec import Phase, VmInstance, heap_split

# Purposes of the random streams of one phase run.
_STREAM_TIME, _STREAM_PAGE, _STREAM_WRITE, _STREAM_LAYOUT = range(4)


def _rng(seed: int, vm_index: int, phase_index: int, repetition: int, purpose: int):
    entropy = [seed, vm_index, phase_index, repetition, purpose]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


@lru_cache(maxsize=16)
def _zipf_cdf(footprint_pages: int, alpha: float) -> np.ndarray:
    """CDF over popularity ranks 0..F-1, P(rank r) proportional to (r + 1)^-alpha."""
    weights = np.arange(1, footprint_pages + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf.setflags(write=False)  # shared by every VM of a type through the cache
    return cdf


@dataclass
class AccessChunk:
    """One VM's accesses, in time order."""

    vm_index: int
    t_ns: np.ndarray  # uint64
    page: np.ndarray  # uint64
    write: np.ndarray  # bool
    content: np.ndarray  # uint64
    file_backed: np.ndarray  # bool
    free: np.ndarray  # bool: the guest frees the page (heap phase, release: free)

    def __len__(self) -> int:
        return len(self.t_ns)


class PhaseRun:
    """One repetition of one access phase of one VM, starting at `start_ns`."""

    def __init__(
        self,
        phase: Phase,
        *,
        seed: int,
        vm_index: int,
        phase_index: int,
        repetition: int,
        start_ns: int,
    ):
        self.phase = phase
        self.start_ns = start_ns
        self.last_ns = start_ns  # time of the latest access produced
        self.done = 0
        self.active_ns = 0  # time spent accessing since the phase began (no burst gaps)
        self._time_rng = _rng(seed, vm_index, phase_index, repetition, _STREAM_TIME)
        self._page_rng = _rng(seed, vm_index, phase_index, repetition, _STREAM_PAGE)
        self._write_rng = _rng(seed, vm_index, phase_index, repetition, _STREAM_WRITE)
        self._write_mode = WRITE_MODE_CODES[phase.write_content]
        if phase.kind == "zipf":
            self._cdf = _zipf_cdf(phase.footprint_pages, phase.alpha)
            # Scatter popularity ranks over the footprint by an affine bijection (seeded
            # per VM, not per repetition, so a repeated phase keeps its hot set).
            layout = _rng(seed, vm_index, phase_index, 0, _STREAM_LAYOUT)
            self._scatter_mul, self._scatter_add = _affine_bijection(phase.footprint_pages, layout)

    @property
    def remaining(self) -> int:
        return self.phase.accesses - self.done

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The next `n` accesses: (t_ns, page, write, write_mode, free)."""
        phase = self.phase
        index = np.arange(self.done, self.done + n, dtype=np.int64)
        u_page = self._page_rng.random(n)
        writes = self._write_rng.random(n) < phase.write_fraction
        modes = np.full(n, self._write_mode, dtype=np.uint8)
        frees = np.zeros(n, dtype=bool)
        footprint = phase.footprint_pages

        if phase.kind == "zipf":
            rank = np.minimum(np.searchsorted(self._cdf, u_page, side="right"), footprint - 1)
            local = (rank * self._scatter_mul + self._scatter_add) % footprint
        elif phase.kind == "uniform":
            local = (u_page * footprint).astype(np.int64)
        elif phase.kind in ("scan", "boot"):
            local = index % footprint
        elif phase.kind == "heap":
            local = self._heap_pages(index, u_page, writes, modes, frees)
        else:  # pragma: no cover - spec.py admits no other kind with accesses
            raise AssertionError(phase.kind)
        local = np.minimum(local, footprint - 1)  # guards u * F rounding up to F

        page = phase.offset_pages + local
        if phase.shift is not None:
            page = page + (index // phase.shift.every_accesses) * phase.shift.pages

        t_ns = self._times(n)
        self.done += n
        return t_ns, page.astype(np.uint64), writes, modes, frees

    def _times(self, n: int) -> np.ndarray:
        """Inter-access gaps of k >= 1 whole ns, so a VM's times strictly rise, drawn
        geometric: P(gap > k) = q^k with q = 1 - 1/mean. That is the exponential's
        memoryless twin on whole ns, and its mean is exactly ``mean_interaccess_ns``
        (below 1 ns, every gap is 1 ns). Exponential gaps rounded to whole ns, with 0
        lifted to 1, had a mean too long by about P(gap < 0.5 ns): 2.2 ns for 2."""
        u = self._time_rng.random(n)
        mean = self.phase.mean_interaccess_ns
        if mean <= 1:
            gaps = np.ones(n, dtype=np.int64)
        else:
            # The inverse CDF: 1 + floor(log(1 - u) / log(q)).
            gaps = 1 + np.floor(np.log1p(-u) / np.log1p(-1.0 / mean)).astype(np.int64)
        active = self.active_ns + np.cumsum(gaps)
        self.active_ns = int(active[-1])
        burst = self.phase.burst
        if burst is not None:
            # Access k of active time tau falls in on-window (tau - 1) // on; every
            # window before it added off_ns of silence.
            active = active + ((active - 1) // burst.on_ns) * burst.off_ns
        t_ns = (self.start_ns + active).astype(np.uint64)
        self.last_ns = int(t_ns[-1])
        return t_ns

    def _heap_pages(self, index, u_page, writes, modes, frees) -> np.ndarray:
        """Heap growth then release: the live size rises linearly to the footprint over
        the first grow_fraction of the accesses and falls back to zero after.

        When the live size grows, the access is the allocation write to the new top page;
        when it shrinks and release is "zero", the access zeroes the page just freed (a
        guest that scrubs freed memory); with "free" the row frees that page (the guest
        returns it to its free list, as munmap or a freed huge allocation does). Other
        accesses hit the live heap uniformly."""
        phase = self.phase
        live = self._heap_live(index)
        live_before = self._heap_live(index - 1)
        grew = live > live_before
        shrank = live < live_before
        local = (u_page * np.maximum(live, 1)).astype(np.int64)
        local = np.where(grew, live - 1, local)
        writes[grew] = True
        modes[grew] = WRITE_FRESH
        if phase.release == "zero":
            local = np.where(shrank, live, local)
            writes[shrank] = True
            modes[shrank] = WRITE_ZERO
        elif phase.release == "free":
            local = np.where(shrank, live, local)
            writes[shrank] = False
            frees[shrank] = True
        return local

    def _heap_live(self, index: np.ndarray) -> np.ndarray:
        """Live heap pages after access `index` (-1 means before the phase: 0 pages)."""
        phase = self.phase
        footprint, total = phase.footprint_pages, phase.accesses
        grow_n, release_n = heap_split(total, phase.grow_fraction)
        # Ceil, so the first access allocates page 0 (with floor the heap stayed empty
        # for grow_n / F accesses, which read page 0 before it was allocated); at most
        # one page per access, as grow_n >= F (spec._check_heap_pace); F at grow_n - 1.
        growing = -((-(index + 1) * footprint) // grow_n)
        growing = np.minimum(growing, footprint)
        if release_n > 0:
            left = total - 1 - index  # accesses still to come in the release part
            releasing = -((-left * footprint) // release_n)  # ceil
        else:
            releasing = np.full_like(index, footprint)
        live = np.where(index < grow_n, growing, releasing)
        return np.where(index < 0, 0, live)


def _affine_bijection(footprint: int, rng: np.random.Generator) -> tuple[int, int]:
    """(mul, add) with gcd(mul, F) = 1, so r -> (r * mul + add) mod F permutes 0..F-1.

    Products must fit in int64, so footprints of 2^31 pages (8 TiB) or more keep ranks
    in place (offset only)."""
    add = int(rng.integers(0, footprint))
    if footprint >= 1 << 31 or footprint < 3:
        return 1, add
    # Near the golden-ratio point of F spreads consecutive ranks far apart.
    mul = int(footprint * 0.6180339887) + int(rng.integers(0, max(1, footprint // 16)))
    mul = max(1, mul % footprint)
    while math.gcd(mul, footprint) != 1:
        mul = mul % (footprint - 1) + 1
    return mul, add


def vm_access_chunks(
    vm: VmInstance, *, seed: int, image_id: int, chunk_accesses: int
) -> Iterator[AccessChunk]:
    """All accesses of one VM, in time order, in chunks of at most `chunk_accesses`."""
    vm_type = vm.vm_type
    content = VmContentState(vm.index, image_id, vm_type.content, vm_type.page_space, seed)
    now_ns = vm.start_ns
    for repetition in range(vm_type.repeat):
        for phase_index, phase in enumerate(vm_type.phases):
            if phase.kind == "idle":
                now_ns += phase.duration_ns
                continue
            run = PhaseRun(
                phase,
                seed=seed,
                vm_index=vm.index,
                phase_index=phase_index,
                repetition=repetition,
                start_ns=now_ns,
            )
            while run.remaining:
                t_ns, page, write, modes, free = run.take(min(chunk_accesses, run.remaining))
                yield AccessChunk(
                    vm_index=vm.index,
                    t_ns=t_ns,
                    page=page,
                    write=write,
                    content=content.contents(page, write, modes),
                    file_backed=np.full(len(page), phase.file_backed, dtype=bool),
                    free=free,
                )
            now_ns = run.last_ns
