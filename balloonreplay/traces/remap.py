"""Streaming kernels of ingest: dense page remapping and the exact LRU trace filter.

Both keep per-VM state between record batches, so a trace of any length is processed
in bounded memory: O(distinct pages) for the remapping table, O(K + distinct pages)
for the filter.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

from balloonreplay.engine_config import JIT_OPTIONS

_NO_ENTRY = -1


@njit(**JIT_OPTIONS)
def _remap_pages(page_ids, raw_pages, out_pages, next_id):
    """Give each raw page number a dense id in first-appearance order; return the next id."""
    for i in range(raw_pages.shape[0]):
        raw = raw_pages[i]
        dense = page_ids.get(raw, -1)
        if dense < 0:
            dense = next_id
            page_ids[raw] = dense
            next_id += 1
        out_pages[i] = dense
    return next_id


class PageRemapper:
    """Per-VM tables from raw page numbers to dense ids 0..P-1."""

    def __init__(self) -> None:
        self._tables: dict[int, Dict] = {}
        self._next_id: dict[int, int] = {}

    def remap(self, vm_ids: np.ndarray, raw_pages: np.ndarray) -> np.ndarray:
        dense_pages = np.empty(raw_pages.shape[0], dtype=np.uint64)
        raw_pages = raw_pages.astype(np.int64, copy=False)  # numba dict keys: wrap-safe view
        for vm, rows in rows_by_vm(vm_ids):
            table = self._tables.get(vm)
            if table is None:
                table = Dict.empty(key_type=types.int64, value_type=types.int64)
                self._tables[vm] = table
                self._next_id[vm] = 0
            out = np.empty(rows.shape[0], dtype=np.int64)
            self._next_id[vm] = _remap_pages(table, raw_pages[rows], out, self._next_id[vm])
            dense_pages[rows] = out
        return dense_pages

    def pages_per_vm(self, num_vms: int) -> list[int]:
        return [int(self._next_id.get(vm, 0)) for vm in range(num_vms)]


def rows_by_vm(vm_ids: np.ndarray):
    """(vm, row indices in original order) for each VM present in the batch."""
    if vm_ids.shape[0] == 0:
        return
    first = vm_ids[0]
    if np.all(vm_ids == first):  # the common single-VM case, without a sort
        yield int(first), np.arange(vm_ids.shape[0])
        return
    order = np.argsort(vm_ids, kind="stable")
    sorted_vms = vm_ids[order]
    bounds = np.flatnonzero(np.diff(sorted_vms)) + 1
    for rows in np.split(order, bounds):
        yield int(vm_ids[rows[0]]), rows


@njit(**JIT_OPTIONS)
def _lru_filter(
    pages,
    writes,
    keep,
    lru_prev,
    lru_next,
    in_lru,
    lru_state,
    pending_row,
    pending_write,
    pending_pages,
    capacity_pages,
):
    """Mark which accesses of one VM survive the exact LRU filter of size `capacity_pages`.

    A miss in the K-page LRU is always kept. Of the hits between two consecutive misses
    only the last access to each page is kept, and it becomes a write if any access it
    stands for was one. The LRU and pending state persist across batches in the arrays
    given; a batch boundary ends the pending segment, which keeps a few more accesses
    but stays exact (every dropped access is still a hit followed by a kept access to
    the same page before the next miss).
    """
    head = lru_state[0]
    tail = lru_state[1]
    size = lru_state[2]
    num_pending = 0
    for i in range(pages.shape[0]):
        p = pages[i]
        if in_lru[p]:
            if pending_row[p] >= 0:
                keep[pending_row[p]] = False
                pending_write[p] = pending_write[p] or writes[i]
            else:
                pending_pages[num_pending] = p
                num_pending += 1
                pending_write[p] = writes[i]
            pending_row[p] = i
            keep[i] = True
            # move p to the head
            if head != p:
                prv = lru_prev[p]
                nxt = lru_next[p]
                lru_next[prv] = nxt
                if nxt >= 0:
                    lru_prev[nxt] = prv
                else:
                    tail = prv
                lru_prev[p] = -1
                lru_next[p] = head
                lru_prev[head] = p
                head = p
        else:
            for k in range(num_pending):
                q = pending_pages[k]
                writes[pending_row[q]] = pending_write[q]
                pending_row[q] = -1
            num_pending = 0
            keep[i] = True
            in_lru[p] = True
            lru_prev[p] = -1
            lru_next[p] = head
            if head >= 0:
                lru_prev[head] = p
            head = p
            if tail < 0:
                tail = p
            size += 1
            if size > capacity_pages:
                victim = tail
                tail = lru_prev[victim]
                lru_next[tail] = -1
                in_lru[victim] = False
                size -= 1
    for k in range(num_pending):
        q = pending_pages[k]
        writes[pending_row[q]] = pending_write[q]
        pending_row[q] = -1
    lru_state[0] = head
    lru_state[1] = tail
    lru_state[2] = size


class _VmLruFilterState:
    def __init__(self, capacity_pages: int):
        self.capacity_pages = capacity_pages
        self.lru_state = np.array([-1, -1, 0], dtype=np.int64)
        self.pending_pages = np.empty(capacity_pages + 1, dtype=np.int64)
        self._grow(1024)

    def _grow(self, num_pages: int) -> None:
        old = getattr(self, "in_lru", None)
        old_n = 0 if old is None else old.shape[0]
        new_n = max(num_pages, 2 * old_n)

        def extend(arr, fill, dtype):
            out = np.full(new_n, fill, dtype=dtype)
            if arr is not None:
                out[:old_n] = arr
            return out

        self.lru_prev = extend(getattr(self, "lru_prev", None), -1, np.int64)
        self.lru_next = extend(getattr(self, "lru_next", None), -1, np.int64)
        self.in_lru = extend(old, False, np.bool_)
        self.pending_row = extend(getattr(self, "pending_row", None), -1, np.int64)
        self.pending_write = extend(getattr(self, "pending_write", None), False, np.bool_)

    def ensure(self, max_page: int) -> None:
        if max_page >= self.in_lru.shape[0]:
            self._grow(max_page + 1)


class LruFilter:
    """The exact LRU trace reduction (issue 2, "Page filter"), per VM, streaming.

    Replaying the reduced trace gives exactly the LRU fault counts of the full trace for
    every memory of at least `capacity_pages` pages. Pages must already be dense.
    """

    def __init__(self, capacity_pages: int):
        if capacity_pages < 1:
            raise ValueError(f"the LRU filter needs at least 1 page, got {capacity_pages}")
        self.capacity_pages = capacity_pages
        self._states: dict[int, _VmLruFilterState] = {}

    def apply(
        self, vm_ids: np.ndarray, dense_pages: np.ndarray, writes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (keep mask, write flags after folding dropped writes into kept rows)."""
        keep = np.zeros(dense_pages.shape[0], dtype=np.bool_)
        new_writes = writes.copy()
        for vm, rows in rows_by_vm(vm_ids):
            state = self._states.get(vm)
            if state is None:
                state = self._states[vm] = _VmLruFilterState(self.capacity_pages)
            vm_pages = dense_pages[rows].astype(np.int64)
            state.ensure(int(vm_pages.max()))
            vm_keep = np.zeros(rows.shape[0], dtype=np.bool_)
            vm_writes = writes[rows].copy()
            _lru_filter(
                vm_pages,
                vm_writes,
                vm_keep,
                state.lru_prev,
                state.lru_next,
                state.in_lru,
                state.lru_state,
                state.pending_row,
                state.pending_write,
                state.pending_pages,
                self.capacity_pages,
            )
            keep[rows] = vm_keep
            new_writes[rows] = vm_writes
        return keep, new_writes
