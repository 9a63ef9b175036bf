"""Exact LRU miss-ratio curves in one pass (Mattson et al., 1970).

For every access the LRU stack distance is the number of distinct pages touched since
the previous access to the same page, itself included. A memory of ``s`` pages misses
exactly the accesses whose distance exceeds ``s`` plus the first touches, so one pass
gives the miss count at every size. Distances come from a Fenwick tree over access
positions that holds a 1 at each page's most recent access; positions are renumbered
when the tree fills, so memory stays O(distinct pages), not O(trace).
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
def _stack_distances(pages, last_position, tree, state, histogram):
    """Add this batch's stack distances of one VM to `histogram` (index = distance).

    `state` = [next free position, number of distinct pages seen]; histogram[0]
    counts first touches (infinite distance).
    """
    capacity = tree.shape[0] - 1
    next_position = state[0]
    distinct = state[1]
    for i in range(pages.shape[0]):
        if next_position == capacity:
            # Renumber the live positions 0..distinct-1 in their order and rebuild.
            live = np.flatnonzero(last_position >= 0)
            order = np.argsort(last_position[live])
            tree[:] = 0
            for rank in range(order.shape[0]):
                last_position[live[order[rank]]] = rank
                _fenwick_add(tree, rank, 1)
            next_position = order.shape[0]
        p = pages[i]
        previous = last_position[p]
        if previous < 0:
            histogram[0] += 1
            distinct += 1
        else:
            distance = _fenwick_prefix(tree, next_position) - _fenwick_prefix(tree, previous)
            histogram[distance] += 1
            _fenwick_add(tree, previous, -1)
        last_position[p] = next_position
        _fenwick_add(tree, next_position, 1)
        next_position += 1
    state[0] = next_position
    state[1] = distinct


class _VmCurve:
    def __init__(self, pages_hint: int):
        self.last_position = np.full(max(pages_hint, 16), -1, dtype=np.int64)
        self.histogram = np.zeros(self.last_position.shape[0] + 1, dtype=np.int64)
        self.tree = np.zeros(2 * self.last_position.shape[0] + 1, dtype=np.int64)
        self.state = np.zeros(2, dtype=np.int64)
        self.accesses = 0

    def add(self, pages: np.ndarray) -> None:
        top = int(pages.max()) + 1
        if top > self.last_position.shape[0]:
            self._grow(max(top, 2 * self.last_position.shape[0]))
        _stack_distances(pages, self.last_position, self.tree, self.state, self.histogram)
        self.accesses += pages.shape[0]

    def _grow(self, num_pages: int) -> None:
        old = self.last_position.shape[0]
        self.last_position = np.concatenate(
            [self.last_position, np.full(num_pages - old, -1, dtype=np.int64)]
        )
        self.histogram = np.concatenate([self.histogram, np.zeros(num_pages - old, dtype=np.int64)])
        # A bigger tree: force a renumbering at the next access by marking it full.
        self.tree = np.zeros(2 * num_pages + 1, dtype=np.int64)
        self.state[0] = self.tree.shape[0] - 1

    def curve(self, vm: int) -> pd.DataFrame:
        distinct = int(self.state[1])
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
        for vm, rows in rows_by_vm(vm_ids):
            if vm not in curves:
                curves[vm] = _VmCurve(hints[vm] if vm < len(hints) else 1024)
            curves[vm].add(pages[rows])
        if progress is not None:
            progress.update(batch.num_rows)
    frames = [curves[vm].curve(vm) for vm in sorted(curves)]
    return pd.concat(frames, ignore_index=True)[MRC_COLUMNS]


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
