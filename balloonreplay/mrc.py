"""Exact LRU miss-ratio curves in one pass (Mattson et al., 1970).

For every access the LRU stack distance is the number of distinct pages touched since
the previous access to the same page, itself included. A memory of ``s`` pages misses
exactly the accesses whose distance exceeds ``s`` plus the first touches, so one pass
gives the miss count at every size. Distances come from a Fenwick tree over access
positions that holds a 1 at each page's most recent access; positions are renumbered
when the tree fills, so memory stays O(distinct pages), not O(trace). A free (the trace's
``free`` rows) is no access: it leaves a hole in the stack, and the page's next access is
a first touch, as the engine replays it (``_stack_distances``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from numba import njit

from balloonreplay.engine_config import JIT_OPTIONS
from balloonreplay.traces.io import open_trace
from balloonreplay.traces.remap import rows_by_vm

MRC_COLUMNS = ["vm", "size_pages", "misses", "miss_ratio"]


@njit(**JIT_OPTIONS)
def _fenwick_add(tree, position, delta):
    i = position + 1
    n = tree.shape[0]
    while i < n:
        tree[i] += delta
        i += i & (-i)


@njit(**JIT_OPTIONS)
def _fenwick_prefix(tree, position):
    """Sum of positions 0..position-1."""
    total = 0
    i = position
    while i > 0:
        total += tree[i]
        i -= i & (-i)
    return total


@njit(**JIT_OPTIONS)
def _hole_push(holes, state, position):
    """Push a hole's position on the max-heap ``holes[:state[2]]``."""
    i = state[2]
    state[2] += 1
    holes[i] = position
    while i > 0 and holes[(i - 1) // 2] < holes[i]:
        parent = (i - 1) // 2
        holes[i], holes[parent] = holes[parent], holes[i]
        i = parent


@njit(**JIT_OPTIONS)
def _hole_pop(holes, state):
    """Pop the topmost hole (the most recent position)."""
    top = holes[0]
    state[2] -= 1
    n = state[2]
    holes[0] = holes[n]
    i = 0
    while True:
        largest = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < n and holes[child] > holes[largest]:
                largest = child
        if largest == i:
            return top
        holes[i], holes[largest] = holes[largest], holes[i]
        i = largest


@njit(**JIT_OPTIONS)
def _stack_distances(pages, frees, last_position, tree, holes, state, histogram):
    """Add this batch's stack distances of one VM to `histogram` (index = distance).

    `state` = [next free position, stack entries, holes]; histogram[0] counts first
    touches (infinite distance), a page's first access after it was freed included.

    A free leaves a *hole* where its page stood in the LRU stack: the frame the guest
    frees stays in every memory that held the page, empty, until a page fills it. So the
    stack keeps the hole's position (an access's distance counts holes above it, as each
    is a frame of the memories it lies in), and the next page to move up past the
    topmost hole fills it instead of pushing the rest down: a first touch (or a hit
    from below the hole) consumes the topmost hole, and a hit's own old position
    becomes a hole if it consumed one. Without frees this is Mattson's stack.
    """
    capacity = tree.shape[0] - 1
    next_position = state[0]
    entries = state[1]
    for i in range(pages.shape[0]):
        if next_position == capacity:
            # Renumber the live positions (pages' and holes') 0.. in their order.
            live = np.flatnonzero(last_position >= 0)
            nholes = state[2]
            positions = np.concatenate((last_position[live], holes[:nholes]))
            order = np.argsort(positions)
            rank_of = np.empty(positions.shape[0], dtype=np.int64)
            rank_of[order] = np.arange(positions.shape[0])
            tree[:] = 0
            for j in range(live.shape[0]):
                last_position[live[j]] = rank_of[j]
            for j in range(nholes):
                holes[j] = rank_of[live.shape[0] + j]  # order kept: still a heap
            for rank in range(positions.shape[0]):
                _fenwick_add(tree, rank, 1)
            next_position = positions.shape[0]
        p = pages[i]
        previous = last_position[p]
        if frees[i]:
            if previous >= 0:  # its place becomes a hole; its next access a first touch
                _hole_push(holes, state, previous)
                last_position[p] = -1
            continue
        if previous < 0:
            histogram[0] += 1
            if state[2] > 0:
                _fenwick_add(tree, _hole_pop(holes, state), -1)
            else:
                entries += 1
        else:
            distance = _fenwick_prefix(tree, next_position) - _fenwick_prefix(tree, previous)
            histogram[distance] += 1
            if state[2] > 0 and holes[0] > previous:
                _fenwick_add(tree, _hole_pop(holes, state), -1)
                _hole_push(holes, state, previous)  # its mark stays, as a hole
            else:
                _fenwick_add(tree, previous, -1)
        last_position[p] = next_position
        _fenwick_add(tree, next_position, 1)
        next_position += 1
    state[0] = next_position
    state[1] = entries


class _VmCurve:
    def __init__(self, pages_hint: int):
        self.last_position = np.full(max(pages_hint, 16), -1, dtype=np.int64)
        self.histogram = np.zeros(self.last_position.shape[0] + 1, dtype=np.int64)
        self.tree = np.zeros(2 * self.last_position.shape[0] + 1, dtype=np.int64)
        self.holes = np.zeros(self.last_position.shape[0], dtype=np.int64)
        self.state = np.zeros(3, dtype=np.int64)
        self.accesses = 0

    def add(self, pages: np.ndarray, frees: np.ndarray) -> None:
        top = int(pages.max()) + 1
        if top > self.last_position.shape[0]:
            self._grow(max(top, 2 * self.last_position.shape[0]))
        _stack_distances(
            pages, frees, self.last_position, self.tree, self.holes, self.state, self.histogram
        )
        self.accesses += pages.shape[0] - int(np.count_nonzero(frees))

    def _grow(self, num_pages: int) -> None:
        old = self.last_position.shape[0]
        self.last_position = np.concatenate(
            [self.last_position, np.full(num_pages - old, -1, dtype=np.int64)]
        )
        self.histogram = np.concatenate([self.histogram, np.zeros(num_pages - old, dtype=np.int64)])
        self.holes = np.concatenate([self.holes, np.zeros(num_pages - old, dtype=np.int64)])
        # A bigger tree: force a renumbering at the next access by marking it full.
        self.tree = np.zeros(2 * num_pages + 1, dtype=np.int64)
        self.state[0] = self.tree.shape[0] - 1

    def curve(self, vm: int) -> pd.DataFrame:
        distinct = int(self.state[1])  # the stack's entries: the most pages ever held
        cold = int(self.histogram[0])
        by_distance = self.histogram[1 : distinct + 1]
        # misses(s) = cold + accesses with distance > s, for s = 0..distinct
        tail = np.concatenate([np.cumsum(by_distance[::-1])[::-1], [0]])
        misses = cold + tail
        return pd.DataFrame(
            {
                "vm": np.full(distinct + 1, vm, dtype=np.uint16),
                "size_pages": np.arange(distinct + 1, dtype=np.int64),
                "misses": misses.astype(np.int64),
                "miss_ratio": misses / max(self.accesses, 1),
            }
        )


def miss_ratio_curves(trace_path: str | os.PathLike, progress=None) -> pd.DataFrame:
    """Each VM's exact LRU miss-ratio curve: columns vm, size_pages, misses, miss_ratio.

    `size_pages` runs from 0 to the VM's distinct pages (beyond that only first touches
    miss). First touches count as misses, as libCacheSim and the engine count them.
    """
    trace = open_trace(trace_path)
    if not trace.metadata.dense:
        from balloonreplay.errors import TraceError

        raise TraceError(trace_path, None, "expected an ingested (dense) trace; run ingest first")
    hints = trace.metadata.pages_per_vm or []
    curves: dict[int, _VmCurve] = {}
    for batch in trace.iter_batches():
        vm_ids = batch.column("vm").to_numpy()
        pages = batch.column("page").to_numpy().astype(np.int64)
        frees = batch.column("free").to_numpy(zero_copy_only=False).astype(np.uint8)
        for vm, rows in rows_by_vm(vm_ids):
            if vm not in curves:
                curves[vm] = _VmCurve(hints[vm] if vm < len(hints) else 1024)
            curves[vm].add(pages[rows], frees[rows])
        if progress is not None:
            progress.update(batch.num_rows)
    frames = [curves[vm].curve(vm) for vm in sorted(curves)]
    result = pd.concat(frames, ignore_index=True)[MRC_COLUMNS]
    filter_pages = trace.metadata.lru_filter_pages
    if filter_pages:
        import warnings

        # The filter keeps exactly what a memory of at least K pages misses: below K the
        # counts are not the trace's, and the accesses it dropped are not in the file.
        warnings.warn(
            f"{os.fspath(trace_path)} was reduced by the LRU filter (K = {filter_pages} pages):"
            f" misses are exact from {filter_pages} pages up (smaller sizes left out), and"
            " miss_ratio is per access the filter kept, not per access of the original trace",
            stacklevel=2,
        )
        result = result[result.size_pages >= filter_pages].reset_index(drop=True)
    return result


def write_curves(curves: pd.DataFrame, out_path: str | os.PathLike, trace_path=None) -> None:
    """Write curves to Parquet atomically, recording the trace they came from."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from balloonreplay.traces.io import atomic_path

    table = pa.Table.from_pandas(curves, preserve_index=False)
    meta = {"trace": os.fspath(trace_path) if trace_path else None, "kind": "lru_mrc"}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"balloonreplay": json.dumps(meta)}
    )
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
