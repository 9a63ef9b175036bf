"""The public replay API: ``balloonreplay.replay(trace, vms=..., host=..., policy=...)``.

This layer checks inputs, streams the trace into per-VM buffers, calls the numba kernel
(balloonreplay/engine/kernel.py) until it needs more trace or reaches an epoch boundary,
and there asks the host policy for its decision. Memory is O(distinct pages + batch):
the engine state is indexed by dense page and frame ids, and only unconsumed rows are
buffered, at most four batches' worth in all; the rows of a VM that lags behind the
others (it stalls more, or the trace is sorted by VM) wait on disk (spill.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from balloonreplay.engine.config import ReplayConfig
from balloonreplay.errors import ConfigError, TraceError
from balloonreplay.latencies import get_latencies
from balloonreplay.metrics import ALL_COLUMNS, metrics_frame, totals, write_metrics
from balloonreplay.policies import (
    Decision,
    HostPolicy,
    Snapshot,
    call_policy,
    make_policy,
    plugin_errors,
    policy_label,
)
from balloonreplay.traces.io import (
    DEFAULT_BATCH_ROWS,
    Trace,
    check_output_path,
    checked_batches,
    open_trace,
)
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata, conform_batch
from balloonreplay.units import parse_sizes_pages

ENGINES = ("numba", "reference")


@dataclass
class ReplayResult:
    metrics: pd.DataFrame  # one row per VM per epoch (balloonreplay.metrics columns)
    summary: dict[str, Any]  # totals, slowdowns, replay_seconds, ...
    config: ReplayConfig
    policy: dict[str, Any]
    trace: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Everything needed to reproduce the run, for the metrics file."""
        return {
            "config": self.config.as_dict(),
            "policy": self.policy,
            "trace": self.trace,
            "summary": self.summary,
            "invariants_ok": self.summary.get("invariants_ok"),
        }

    def write(self, path: str | os.PathLike) -> None:
        write_metrics(self.metrics, path, self.metadata())


# --------------------------------------------------------------------------- inputs
class _TableTrace:
    """An in-memory table or batch behaving like traces.io.Trace."""

    def __init__(self, table: pa.Table | pa.RecordBatch, metadata: TraceMetadata | None):
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self.table = table
        self.metadata = metadata or TraceMetadata.from_schema(table.schema)
        self.path = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        for batch in self.table.to_batches(max_chunksize=batch_rows):
            yield conform_batch(batch)


def _as_trace(trace, metadata: TraceMetadata | None):
    if isinstance(trace, Trace | _TableTrace):
        return trace
    if isinstance(trace, pa.Table | pa.RecordBatch):
        return _TableTrace(trace, metadata)
    if isinstance(trace, str | os.PathLike):
        return open_trace(trace)
    raise TypeError(f"expected a trace path, Trace or Arrow table, got {type(trace).__name__}")


def _trace_identity(trace) -> dict[str, Any]:
    ident: dict[str, Any] = {"rows": trace.num_rows}
    meta = trace.metadata
    ident["metadata"] = {
        "source": meta.source,
        "parameters": meta.parameters,
        "seed": meta.seed,
        "config_pages": meta.config_pages,
        "pages_per_vm": meta.pages_per_vm,
        "page_size_bytes": meta.page_size_bytes,
    }
    if trace.path is not None:
        path = Path(trace.path)
        stat = path.stat()
        ident["path"] = str(path)
        ident["size_bytes"] = stat.st_size
        # The Parquet footer holds every row group's statistics: a cheap fingerprint.
        with open(path, "rb") as fh:
            fh.seek(max(stat.st_size - (1 << 16), 0))
            ident["footer_sha256"] = hashlib.sha256(fh.read()).hexdigest()
    return ident


# Page ids an in-memory table may span without being dense (sparse ids beyond this are
# refused, _pages_per_vm): 16 Mi rows of the page table, about 1 GiB.
_TABLE_ID_SPACE_LIMIT = 1 << 24


def _pages_per_vm(trace, num_vms: int) -> list[int]:
    meta = trace.metadata
    if meta.pages_per_vm is not None and meta.dense:
        pages = list(meta.pages_per_vm)
        if len(pages) < num_vms:
            pages += [0] * (num_vms - len(pages))
        return pages[:num_vms]
    if isinstance(trace, _TableTrace):
        # In-memory tables (tests, notebooks): the id space is max page + 1 per VM.
        t = trace.table
        if t.num_rows == 0:
            return [0] * num_vms
        vm = t.column("vm").to_numpy().astype(np.int64)
        page = t.column("page").to_numpy().astype(np.int64)
        out = np.zeros(num_vms, dtype=np.int64)
        np.maximum.at(out, vm[vm < num_vms], page[vm < num_vms] + 1)
        # The engine's page table has a row (64 bytes) per id up to the largest:
        # raw addresses would claim gigabytes for a handful of pages, or overflow it.
        id_space = int(out.sum())
        if id_space >= _TABLE_ID_SPACE_LIMIT and id_space > 8 * len(
            np.unique(np.stack([vm, page], axis=1), axis=0)
        ):
            raise TraceError(
                None,
                "column 'page'",
                f"page ids up to {int(page.max())} in an in-memory table without the dense "
                f"flag: the engine sizes its page table by the largest id ({id_space} rows "
                "for these ids); ingest the trace first (`balloonreplay ingest` renumbers "
                "pages densely) or renumber them 0..P-1 per VM",
            )
        return out.tolist()
    raise TraceError(
        trace.path,
        None,
        "expected a dense trace (page ids 0..P-1 per VM, pages_per_vm in its metadata); "
        "ingest it first with `balloonreplay ingest`",
    )


def _sizes(value, page_size: int, key: str) -> list[int]:
    try:
        return parse_sizes_pages(value, page_size)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def build_config(
    trace,
    vms=None,
    host=None,
    guest_policy: str = "lru",
    num_vms: int | None = None,
    latencies=None,
    **options,
) -> ReplayConfig:
    """Resolve sizes (``512MiB``, ``1000p``, pages) against the trace's metadata."""
    meta = trace.metadata
    page_size = meta.page_size_bytes or 4096
    if vms is None:
        if meta.config_pages is None:
            raise ConfigError(
                "vm_mem", "the trace records no configured memory per VM; give --vm-mem"
            )
        config_pages = list(meta.config_pages)
    else:
        config_pages = _sizes(vms, page_size, "vm_mem")
    n = num_vms or meta.num_vms
    if n is None:
        n = len(config_pages)
        if len(config_pages) == 1 and isinstance(trace, _TableTrace) and trace.num_rows:
            n = max(1, int(pa.compute.max(trace.table.column("vm")).as_py()) + 1)
    if len(config_pages) == 1 and n > 1:
        config_pages = config_pages * n
    if len(config_pages) != n:
        raise ConfigError("vm_mem", f"the trace has {n} VMs; got {len(config_pages)} sizes")
    overhead = options.get("overhead_pages")
    if overhead is not None:
        # Sizes in the trace's pages, like vm_mem; one size is every VM's.
        overhead = _sizes(overhead, page_size, "overhead")
        options["overhead_pages"] = overhead * n if len(overhead) == 1 else overhead
    if host is None:
        host_pages = sum(config_pages) + sum(options.get("overhead_pages") or [0])
    else:
        sizes = _sizes(host, page_size, "host_mem")
        if len(sizes) != 1:
            raise ConfigError("host_mem", f"expected one size for the whole host, got {host!r}")
        host_pages = sizes[0]
    return ReplayConfig(
        config_pages=config_pages,
        host_pages=host_pages,
        guest_policy=guest_policy,
        latencies=get_latencies(latencies),
        **options,
    )


# --------------------------------------------------------------------------- engine driver
class _Buffers:
    """Unconsumed rows, grouped by VM, in the columns the kernel reads: int64 times, pages
    and contents, uint8 flags. Every column is handed to the kernel read-only (Arrow's
    zero-copy views are; the rest are marked so), which keeps one compiled kernel and
    spares a copy of each batch.

    With several VMs, each VM has a ring in the columns (``ring[v]`` slots from
    ``ring_start[v]``); the kernel reads one contiguous segment of it, ``V_POS`` to
    ``V_END``, and the rows that went round to the ring's start wait in ``queued[v]``
    until it reaches the segment's end (``refill``). Rows are written into the rings
    once, and usually by the reading thread (``prepare``, ``_reserve``), while the
    kernel runs: a batch comes to the main thread already in place, and ``add`` only
    publishes it. A batch goes the old way, grouped into columns of its own and copied
    in by the main thread (``_take``), before the rings exist, when a ring has no room
    for it as far as the reading thread can tell (the main thread then grows the ring,
    or sends what is beyond max_rows to disk) or while rows wait on disk (see
    ``_reserve``). Copying every row into its VM's region on the main thread
    took 0.13-0.4 s per 20 M rows of bench_replay.py's 8-VM trace, in series with the
    kernel."""

    COLUMNS = ("t", "page", "write", "known", "content", "file")
    MIN_RING_ROWS = 1024
    READ_AHEAD = 3  # batches: two in _Prefetch's queue, one being prepared
    DTYPES = {
        "t": np.int64,
        "page": np.int64,
        "write": np.uint8,
        "known": np.uint8,
        "content": np.int64,
        "file": np.uint8,
    }

    def __init__(
        self,
        VS: np.ndarray | None,
        pages_per_vm: list[int],
        trace_path,
        max_rows: int,
        t0: int | None = None,
    ):
        """``VS``: the engine's per-VM rows, whose buffer positions the main thread's
        methods move; it may be set later (``prepare``, the reading thread's, writes
        into rings only once they exist), so that reading starts before the state is
        allocated. ``t0``: host time 0, the trace's earliest ``t_ns`` (_earliest_t_ns);
        None takes the first row's (for tests of the buffers alone)."""
        from balloonreplay.engine.state import V_END, V_INPUT_DONE, V_POS, first_ids

        self.VS = VS
        self.V_POS, self.V_END, self.V_INPUT_DONE = V_POS, V_END, V_INPUT_DONE
        # Unconsumed rows kept in memory per VM; the rest wait on disk (balloonreplay/spill.py).
        self.max_rows = max(int(max_rows), 1)
        self.spill = None
        self.npages = np.asarray(pages_per_vm, dtype=np.int64)
        self.nvm = len(self.npages)
        self.pbase = first_ids(self.npages)  # each VM's first global page id (V_PBASE)
        # Each VM's last access time so far: a time that goes backwards is refused. Unsigned,
        # as t_ns is (rows.count_rows compares the times' uint64 view).
        self.last_t = np.zeros(self.nvm, dtype=np.uint64)
        self.cols = {c: _readonly(np.zeros(0, dtype=self.DTYPES[c])) for c in self.COLUMNS}
        # With several VMs: writable columns behind self.cols, cut in per-VM rings, none
        # until the first batch comes to the main thread.
        self.base = {c: np.zeros(0, dtype=self.DTYPES[c]) for c in self.COLUMNS}
        # Per VM: its ring's size and first slot, its next free slot, the rows ever
        # written into it (published or not), the rows read before the kernel's
        # segment, and where that segment starts.
        (
            self.ring,
            self.ring_start,
            self.tail,
            self.written,
            self.consumed_base,
            self.segment_start,
        ) = np.zeros((6, self.nvm), dtype=np.int64)
        self.queued: list[list[tuple[int, int]]] = [[] for _ in range(self.nvm)]
        # Batches the reading thread has handed over unwritten and add() has not taken:
        # while there are any, it waits (their rows go first, and may move the rings).
        self._unwritten = 0
        self._wanted = np.zeros(self.nvm, dtype=np.int64)  # ring sizes the thread lacked
        self._finished = False
        self._closed = False
        self._lock = threading.Condition()
        # Held as the int64 the kernel's times are viewed as (a time of 2**63 ns or more
        # is negative there), so that t - t0 is the same either way.
        self.t0: int | None = None if t0 is None else int(np.uint64(t0).view(np.int64))
        # Given, t0 is the trace's earliest time, which every VM's first row must respect
        # (_note_first_times; later rows follow their VM's order, count_rows) and the
        # earliest of them must equal (input_done).
        self._t0_is_earliest = t0 is not None
        # Each VM's first access time (relative to t0; -1 until seen): the start of its
        # own timeline, from which its slowdown is measured.
        self.first_t = np.full(self.nvm, -1, dtype=np.int64)
        self._firsts_missing = self.nvm
        self.rows_read = 0  # rows prepared so far: a bad row's offset in the trace
        self.path = trace_path

    def arrays(self):
        c = self.cols
        return c["t"], c["page"], c["write"], c["known"], c["content"], c["file"]

    def prepare(self, batch: pa.RecordBatch) -> dict[str, np.ndarray] | None:
        """Columns of one canonical batch as kernel arrays, checked and grouped by VM (runs
        in the prefetch thread, in parallel with the kernel, which releases the GIL;
        batches are prepared in order; host time 0 is ``t0``, else the first row's). With several
        VMs the rows usually go straight into the rings, and what comes back is only
        ``counts`` and ``written_at`` (``_reserve``); otherwise the grouped columns, for
        add() to copy, after which the next call waits until add() has taken them."""
        from balloonreplay.engine import rows
        from balloonreplay.engine.state import first_ids

        n = batch.num_rows
        if n == 0:
            return None
        # A batch from _parquet_batches lacks the columns its file holds as constants.
        names = batch.schema.names
        vm_col = batch.column(names.index("vm")) if "vm" in names else None
        t_col = batch.column(names.index("t_ns"))
        page_col = batch.column(names.index("page"))
        write_col = batch.column(names.index("write"))
        content_col = batch.column(names.index("content")) if "content" in names else None
        file_col = batch.column(names.index("file_backed")) if "file_backed" in names else None
        free_col = batch.column(names.index("free")) if "free" in names else None
        # The Parquet fast path trusts its footer's statistics to rule out nulls, which
        # conform_batch refuses elsewhere; data that belies them is refused here.
        for name, column in (
            ("vm", vm_col),
            ("t_ns", t_col),
            ("page", page_col),
            ("write", write_col),
            ("file_backed", file_col),
            ("free", free_col),
        ):
            if column is not None and column.null_count:
                raise TraceError(
                    self.path,
                    f"rows {self.rows_read}-{self.rows_read + n - 1}",
                    f"expected no null values in column {name!r}",
                )
        t = t_col.to_numpy().view(np.int64)
        page = page_col.to_numpy().view(np.int64)
        counts = np.zeros(self.nvm, dtype=np.int64)
        vm = None if vm_col is None else _readonly(vm_col.to_numpy())
        t_unsigned = t.view(np.uint64)  # the order of the times is the unsigned one
        if vm is None:
            bad = rows.first_bad_row(t_unsigned, page, self.npages[0], self.last_t)
            counts[0] = n
        else:
            bad = rows.count_rows(vm, t_unsigned, page, self.npages, counts, self.last_t)
        if bad >= 0:
            self._bad_row(bad, vm, t, page)
        if content_col is None or content_col.null_count == n:
            known = np.zeros(n, dtype=np.uint8)
            content = np.zeros(n, dtype=np.int64)
        elif content_col.null_count == 0:
            known = np.ones(n, dtype=np.uint8)
            content = content_col.to_numpy().view(np.int64)
        else:
            known = content_col.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
            content = content_col.fill_null(0).to_numpy().view(np.int64)
        if self.t0 is None:
            self.t0 = int(t[0])
        if self._firsts_missing:
            self._note_first_times(vm, t, counts)
        write = _flags(write_col)
        if free_col is not None and free_col.true_count:
            from balloonreplay.engine.state import FREE_OP

            # The kernel reads a free as a third kind of row (FREE_OP in the write flag).
            write = np.where(_flags(free_col) != 0, FREE_OP, write).astype(np.uint8)
        file_backed = np.zeros(n, dtype=np.uint8) if file_col is None else _flags(file_col)
        self.rows_read += n
        if self.nvm == 1:
            return {
                "t": t - self.t0 if self.t0 != 0 else t,
                "page": page,
                "write": write,
                "known": known,
                "content": content,
                "file": file_backed,
                "counts": counts,
            }
        if vm is None:
            vm = _readonly(np.zeros(n, dtype=np.uint16))
        inputs = tuple(map(_readonly, (t, page, write, known, content, file_backed)))
        reserved = self._reserve(counts)
        if reserved is not None:  # straight into the rings, beside the kernel
            start, lo, hi, base = reserved
            cursor, zeros = np.zeros((2, self.nvm), dtype=np.int64)
            rows.group_into_rings(
                vm, start, cursor, lo, hi, self.pbase, zeros, self.t0, *inputs, *base.values()
            )
            return {"counts": counts, "written_at": start}
        # Grouped by VM into columns of its own (stable: each VM's rows in order), which
        # add() copies into the rings.
        cols = {name: np.empty(n, dtype=self.DTYPES[name]) for name in self.COLUMNS}
        starts = first_ids(counts)  # each VM's first slot in the grouped columns
        cursor, zeros = np.zeros((2, self.nvm), dtype=np.int64)
        rows.group_by_vm(vm, starts, cursor, self.pbase, zeros, self.t0, *inputs, *cols.values())
        cols["counts"] = counts
        cols["unwritten"] = np.ones(1, dtype=bool)
        return cols

    def _note_first_times(self, vm: np.ndarray | None, t: np.ndarray, counts: np.ndarray) -> None:
        """Record the first access time of each VM first seen in this batch (once per VM:
        a numpy pass per VM, nearly always in the first batch)."""
        t0 = self.t0 % (1 << 64)  # compared as the unsigned times they are
        for v in np.flatnonzero((counts > 0) & (self.first_t < 0)):
            i = 0 if vm is None else int(np.argmax(vm == v))
            first = int(t[i]) % (1 << 64)
            if self._t0_is_earliest and first < t0:
                raise TraceError(
                    self.path,
                    f"row {self.rows_read + i}",
                    f"expected t_ns >= {t0}, the trace's earliest time as its file's "
                    f"statistics record it, got {first}",
                )
            self.first_t[v] = first - t0
            self._firsts_missing -= 1

    def _bad_row(self, i: int, vm: np.ndarray | None, t: np.ndarray, page: np.ndarray) -> None:
        """Raise the TraceError for row i of the batch being prepared."""
        where = f"row {self.rows_read + i}"
        v = 0 if vm is None else int(vm[i])
        if v >= self.nvm:
            raise TraceError(
                self.path, where, f"expected a VM index below {self.nvm} in column 'vm', got {v}"
            )
        if 0 <= page[i] < self.npages[v]:  # the page is sound, so its time went backwards
            raise TraceError(
                self.path,
                f"access #{self.rows_read + i} (0-based, VM {v})",
                f"expected t_ns >= {int(self.last_t[v])} (time must not go backwards within "
                f"a VM), got {int(t[i]) % (1 << 64)}",
            )
        raise TraceError(
            self.path,
            where,
            f"expected in column 'page' a dense page id below {int(self.npages[v])} (VM {v}'s "
            f"pages_per_vm), got {int(page[i]) & 0xFFFFFFFFFFFFFFFF}",
        )

    # ------------------------------------------------------------ several VMs: the rings
    def _reserve(self, counts: np.ndarray):
        """In the reading thread: slots for a batch's rows, behind each VM's rows in its
        ring, if every ring has room for them without overwriting a row the kernel has
        yet to read; then ``(first slot per VM, ring starts, ring ends, columns)``, for
        the caller to write into outside the lock. None (the batch goes to add()
        unwritten) if not, before the rings exist, or while rows wait on disk. After an
        unwritten batch it waits until add() has taken that one: its rows come before
        this batch's, and add() may move the rings for them.

        The invariant: the main thread moves the rings (``_grow``) or writes into them
        (``_take``, ``refill``) only while no reserved batch is unpublished. It does so
        only for an unwritten batch or for rows from disk; a reservation waits for the
        former and refuses the latter, and the queue is first-in first-out, so every
        batch reserved before an unwritten one is published before it is taken."""
        with self._lock:
            while self._unwritten and not self._closed:
                self._lock.wait(0.1)
            ok = (
                not self._closed
                and self.VS is not None
                and bool(self.ring.all())
                and (self.spill is None or not self.spill.pending.any())
            )
            if ok:
                # The kernel moves V_POS on meanwhile: a stale one counts more rows as
                # unread, never fewer.
                held = self.written - self._consumed(self.VS[:, self.V_POS])
                ok = bool((held + counts <= self.ring).all())
                if not ok:
                    self._wanted = np.maximum(self._wanted, held + counts)
            if not ok:
                self._unwritten += 1
                return None
            start = self.tail.copy()
            self.tail = self.ring_start + (self.tail - self.ring_start + counts) % self.ring
            self.written += counts
            return start, self.ring_start.copy(), self.ring_start + self.ring, self.base

    def _consumed(self, pos: np.ndarray) -> np.ndarray:
        """Rows each VM's kernel has read, given its read position."""
        return self.consumed_base + pos - self.segment_start

    def add(self, new: dict[str, np.ndarray] | None) -> None:
        """Take a prepared batch: publish rows already in the rings, or put them there."""
        if new is None:
            return
        counts = new.pop("counts")
        if self.nvm == 1:
            # One VM: no regrouping; keep the unconsumed tail, if any, in front.
            pos = self.VS[0, self.V_POS]
            end = self.VS[0, self.V_END]
            for name in self.COLUMNS:
                fresh = new[name]
                if end > pos:
                    fresh = np.concatenate([self.cols[name][pos:end], fresh])
                self.cols[name] = _readonly(fresh)
            self.VS[0, self.V_POS] = 0
            self.VS[0, self.V_END] = len(self.cols["t"])
            return
        with self._lock:
            if "written_at" in new:
                self._publish(new["written_at"], counts)
                return
            try:
                self._take(new, counts)
            finally:
                if "unwritten" in new:
                    self._unwritten -= 1
                    self._lock.notify_all()

    def _take(self, new: dict[str, np.ndarray], counts: np.ndarray) -> None:
        """Copy an unwritten batch's rows into the rings, each VM's up to max_rows
        unread rows in memory (the rest, and every row behind rows already on disk,
        go to disk), growing a ring that has no room."""
        from balloonreplay.engine.state import first_ids

        starts = first_ids(counts)
        held = self.written - self._consumed(self.VS[:, self.V_POS])  # exact: no kernel runs
        keep = np.zeros(self.nvm, dtype=np.int64)
        for v in range(self.nvm):
            spilled = self.spill is not None and self.spill.pending[v] > 0
            if not spilled:
                keep[v] = max(0, min(int(counts[v]), self.max_rows - int(held[v])))
        # Room for these rows and, within max_rows, for the reading thread's next ones:
        # it writes up to READ_AHEAD batches ahead of the kernel (like this one, or as
        # many rows as it lacked room for), which otherwise it hands over unwritten.
        need = np.maximum(held + keep + self.READ_AHEAD * counts, self._wanted)
        self._wanted[:] = 0
        if (need > self.ring).any() or not self.ring.all():
            self._grow(need)
        for v in range(self.nvm):
            rows = {name: new[name][starts[v] : starts[v] + counts[v]] for name in self.COLUMNS}
            self._put(v, {name: col[: keep[v]] for name, col in rows.items()})
            if keep[v] < counts[v]:
                if self.spill is None:
                    from balloonreplay.spill import RowSpill

                    self.spill = RowSpill(self.nvm, self.DTYPES)
                self.spill.push(v, {name: col[keep[v] :] for name, col in rows.items()})

    def _put(self, v: int, rows: dict[str, np.ndarray]) -> None:
        """Main thread: write VM v's rows at its ring's tail (which has room) and
        publish them."""
        n = len(rows["t"])
        if n == 0:
            return
        lo, a = int(self.ring_start[v]), int(self.tail[v])
        hi = lo + int(self.ring[v])
        first = min(n, hi - a)
        for name, col in self.base.items():
            col[a : a + first] = rows[name][:first]
            col[lo : lo + n - first] = rows[name][first:]
        self.tail[v] = lo + (a - lo + n) % (hi - lo)
        self.written[v] += n
        self._publish_one(v, a, n)

    def _publish(self, start: np.ndarray, counts: np.ndarray) -> None:
        for v in np.flatnonzero(counts):
            self._publish_one(int(v), int(start[v]), int(counts[v]))

    def _publish_one(self, v: int, a: int, n: int) -> None:
        """VM v's n rows from slot a of its ring (going round to its start) are ready."""
        hi = int(self.ring_start[v] + self.ring[v])
        first = min(n, hi - a)
        self._segment(v, a, a + first)
        if n > first:
            lo = int(self.ring_start[v])
            self._segment(v, lo, lo + n - first)

    def _segment(self, v: int, a: int, b: int) -> None:
        """Rows a..b of VM v follow its others: the kernel's segment grows if they
        continue it, else they wait their turn (``_advance``)."""
        pos, end = self.VS[v, self.V_POS], self.VS[v, self.V_END]
        if self.queued[v] or (a != end and pos < end):
            self.queued[v].append((a, b))
        elif a == end:
            self.VS[v, self.V_END] = b
        else:
            self._switch(v, a, b)

    def _switch(self, v: int, a: int, b: int) -> None:
        """VM v has read its segment to the end; it goes on with rows a..b."""
        self.consumed_base[v] += self.VS[v, self.V_END] - self.segment_start[v]
        self.segment_start[v] = a
        self.VS[v, self.V_POS] = a
        self.VS[v, self.V_END] = b

    def _advance(self) -> bool:
        """Move every VM that has read its segment to the end onto its next one (and on
        through the ones that continue it); True if any moved."""
        moved = False
        for v in range(self.nvm):
            waiting = self.queued[v]
            if waiting and self.VS[v, self.V_POS] >= self.VS[v, self.V_END]:
                self._switch(v, *waiting.pop(0))
                moved = True
            while waiting and waiting[0][0] == self.VS[v, self.V_END]:
                self.VS[v, self.V_END] = waiting.pop(0)[1]
        return moved

    def _grow(self, need: np.ndarray) -> None:
        """New columns whose rings have room for ``need[v]`` unread rows of VM v (twice
        as many, so that they grow seldom, within max_rows), each VM's unread rows moved
        to its ring's start, in order. Rings grow with what the VMs need, not to max_rows
        at once: a VM walks its whole ring even if it keeps pace (the tail only moves
        forward), so a ring of max_rows would soon be resident, and a large
        ``batch_rows`` ("read it all at once") would ask for seven times the trace. The
        main thread's, while no reserved batch is unpublished (``_reserve``)."""
        from balloonreplay.engine.state import first_ids

        grown = np.minimum(np.maximum(2 * need, self.MIN_RING_ROWS), self.max_rows)
        ring = np.where((need > self.ring) | (self.ring == 0), grown, self.ring)
        ring_start = first_ids(ring)
        base = {name: np.empty(int(ring.sum()), dtype=self.DTYPES[name]) for name in self.COLUMNS}
        for v in range(self.nvm):
            pos, end = int(self.VS[v, self.V_POS]), int(self.VS[v, self.V_END])
            at = start = int(ring_start[v])
            for a, b in [(pos, end), *self.queued[v]]:
                for name, col in base.items():
                    col[at : at + b - a] = self.base[name][a:b]
                at += b - a
            self.consumed_base[v] += pos - self.segment_start[v]
            self.segment_start[v] = start
            self.VS[v, self.V_POS] = start
            self.VS[v, self.V_END] = at
            self.queued[v] = []
            self.tail[v] = at if at < start + ring[v] else start
        self.ring[:], self.ring_start[:] = ring, ring_start
        self.base = base
        for name, col in base.items():
            view = col.view()
            view.flags.writeable = False  # the kernel's one array type (_readonly)
            self.cols[name] = view

    def held(self) -> np.ndarray:
        """Unread rows of each VM in memory (main thread, between kernel calls),
        including rows the reading thread has reserved but add() not yet published."""
        if self.nvm == 1:
            return self.VS[:, self.V_END] - self.VS[:, self.V_POS]
        with self._lock:
            return self.written - self._consumed(self.VS[:, self.V_POS])

    def refill(self) -> bool:
        """Rows for the VMs that ran out, without reading the trace: their next segment
        of the ring, or rows back from disk. False if none of them has any (then the
        next batch of the trace is what they need)."""
        if self.nvm == 1:
            return False
        with self._lock:
            moved = self._advance()
            if self.spill is not None:
                VS = self.VS
                for v in range(self.nvm):
                    starving = VS[v, self.V_POS] >= VS[v, self.V_END] and not self.queued[v]
                    if starving and self.spill.pending[v] > 0:
                        # Nothing of v is unread in memory: no ring is reserved in while
                        # rows wait on disk (_reserve).
                        rows = self.spill.pop(v, self.max_rows)
                        if len(rows["t"]) > self.ring[v]:
                            need = self.written - self._consumed(VS[:, self.V_POS])
                            need[v] = len(rows["t"])
                            self._grow(need)
                        self._put(v, rows)
                        moved = True
            self._mark_done()
        return moved

    def input_done(self) -> None:
        """The trace is read to its end: a VM has all its rows once none wait on disk
        or in its ring."""
        seen = self.first_t[self.first_t >= 0]
        if self._t0_is_earliest and seen.size and seen.min() != 0:
            t0 = self.t0 % (1 << 64)
            raise TraceError(
                self.path,
                None,
                f"its file's statistics record {t0} as its earliest t_ns, but its earliest "
                f"access is at {t0 + int(seen.min())}",
            )
        with self._lock:
            self._finished = True
            self._mark_done()

    def _mark_done(self) -> None:
        if not self._finished:
            return
        for v in range(self.nvm):
            on_disk = self.spill is not None and self.spill.pending[v] > 0
            if not on_disk and not self.queued[v]:
                self.VS[v, self.V_INPUT_DONE] = 1

    def close(self) -> None:
        with self._lock:
            self._closed = True  # a reading thread waiting in _reserve goes
            self._lock.notify_all()
        if self.spill is not None:
            self.spill.close()


def _flags(column: pa.Array) -> np.ndarray:
    """A bool column as uint8 0/1 (Arrow packs bools in bits, so this unpacks a copy;
    numpy's unpackbits does it in a tenth of the time of Arrow's to_numpy, which
    took 0.02 s per 20 M rows). Never null: ``_Buffers.prepare`` refuses nulls before
    it calls this (bits under a null slot would read as values)."""
    bits = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset
    return np.unpackbits(bits, count=start + len(column), bitorder="little")[start:]


def _readonly(a: np.ndarray) -> np.ndarray:
    """One C-contiguous, read-only array type for every kernel argument (a writable one
    would compile a second kernel)."""
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class _Footer:
    """What the row groups' statistics of a canonical Parquet file record, from one walk
    over its footer (the one the Trace parsed when it opened the file)."""

    # The least t_ns; None when a row group with rows records none.
    earliest_t_ns: int | None
    # Whether every row holds the column's constant (vm 0, content null, file_backed and
    # free false); None when the statistics lack what the fast path needs to trust.
    constant: dict[str, bool] | None


def _read_footer(trace) -> _Footer | None:
    """The footer statistics of a trace read from a canonical Parquet file; None for an
    in-memory table or a file not exactly canonical (flat, so its Arrow field index is
    its Parquet column index)."""
    if not isinstance(trace, Trace):
        return None
    if not trace._file.schema_arrow.remove_metadata().equals(CANONICAL_SCHEMA):
        return None
    meta = trace._file.metadata
    index = {name: i for i, name in enumerate(CANONICAL_SCHEMA.names)}
    mins: list[int] | None = []
    constant: dict[str, bool] | None = {
        "vm": True,
        "content": True,
        "file_backed": True,
        "free": True,
    }
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for name in CANONICAL_SCHEMA.names:
            stats = group.column(index[name]).statistics
            if name == "t_ns" and group.num_rows and mins is not None:
                if stats is None or not stats.has_min_max:
                    mins = None
                else:
                    mins.append(int(stats.min))
            if constant is None:
                continue
            if stats is None or stats.null_count is None:
                constant = None
            elif name != "content" and stats.null_count != 0:
                constant = None  # the general path names the offending column
            elif name == "content":
                constant["content"] &= stats.null_count == group.num_rows
            elif name in constant and group.num_rows:
                if not stats.has_min_max:
                    constant = None
                else:
                    constant[name] &= stats.max == (False if name in ("file_backed", "free") else 0)
    return _Footer(None if mins is None else min(mins, default=0), constant)


def _earliest_t_ns(trace, footer: _Footer | None) -> int:
    """Host time 0: the trace's earliest access time. Rows need be in time order only
    within each VM, so the first row's time may be a later VM's. From the footer's
    statistics of a canonical Parquet file when every row group has them (the reading
    thread refuses a row they belie), else from the time column alone, cast as
    conform_batch casts it (an in-memory table, or a file without statistics or of
    another schema). A column missing or of the wrong type gives 0: the reading that
    follows names the error."""
    import pyarrow.compute as pc

    if footer is not None and footer.earliest_t_ns is not None:
        return footer.earliest_t_ns
    earliest = None
    try:
        for column in _time_columns(trace):
            low = pc.min(column.cast(pa.uint64(), safe=True)).as_py()
            if low is not None:
                earliest = low if earliest is None else min(earliest, low)
    except pa.ArrowException:
        return 0
    return earliest or 0


def _time_columns(trace) -> Iterator[pa.Array | pa.ChunkedArray]:
    """The trace's t_ns column in pieces, read alone; nothing if it has none."""
    if isinstance(trace, _TableTrace):
        if "t_ns" in trace.table.schema.names:
            yield trace.table.column("t_ns")
    elif "t_ns" in trace._file.schema_arrow.names:
        pieces = checked_batches(trace._file, trace.path, DEFAULT_BATCH_ROWS, ["t_ns"], False)
        for batch in pieces:
            yield batch.column(0)


def _parquet_batches(
    trace, batch_rows: int, num_vms: int, footer: _Footer | None = None
) -> Iterator[pa.RecordBatch] | None:
    """Batches straight from a canonical Parquet file, without the columns its statistics
    show to be constant (no content, no file-backed page, no free, a single VM): what
    ``trace.iter_batches`` yields, less the decoding and casting. None if the file is not
    exactly canonical or lacks statistics (then the general path checks and casts).
    ``footer``: the trace's _read_footer, if the caller has it."""
    import pyarrow.parquet as pq

    footer = _read_footer(trace) if footer is None else footer
    if footer is None or footer.constant is None:
        return None
    constant = dict(footer.constant, vm=footer.constant["vm"] and num_vms == 1)
    columns = [name for name in CANONICAL_SCHEMA.names if not constant.get(name, False)]
    # A reader of its own, for the reading thread (a policy may read the trace's own
    # beside it: MrcPolicy's iter_batches), on the footer the trace has parsed.
    try:
        pf = pq.ParquetFile(
            trace.path, metadata=trace._file.metadata, page_checksum_verification=True
        )
    except (pa.ArrowInvalid, OSError):
        return None
    # One decoding thread: this one already runs beside the kernel, and Arrow's own pool
    # would take the kernel's core for its column decoders (on 2 cores, interleaved
    # rounds of ab_replay.py: 1 VM whole footprint 0.66 -> 0.48 s median, 8 VMs fitting
    # 1.95 -> 1.89 s).
    return checked_batches(pf, trace.path, batch_rows, columns, use_threads=False)


_END = object()


class _Prefetch:
    """The next batches, read and converted by ``prepare`` in a thread that starts at
    once, so the first batch is decoded while the engine state is allocated, and every
    later one while the kernel runs. Iterate for ``(rows read, prepared)`` pairs; an
    exception in the thread is raised to the consumer. ``close()`` stops the thread
    (which holds this object, so dropping it would not)."""

    def __init__(self, batches: Iterator, prepare, depth: int = 2):
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        thread = threading.Thread(
            target=self._work, args=(batches, prepare), name="balloonreplay-prefetch", daemon=True
        )
        thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, batches: Iterator, prepare) -> None:
        try:
            for batch in batches:
                if not self._put((batch.num_rows, prepare(batch))):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._slots.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            self.close()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()


class _EpochRows:
    """One epoch's metrics rows, one per VM, as an int64 matrix whose columns are
    ALL_COLUMNS, gathered from the counters (CNT) and gauges (VS) by one kernel call
    (kernel.epoch_rows): a run whose faults stall its VMs far beyond their trace time has
    an epoch per second of stalled time (over a thousand in the benchmark's
    quarter-footprint replay), and pays this at every one."""

    def __init__(self, num_vms: int):
        from balloonreplay.engine import kernel
        from balloonreplay.engine import state as S
        from balloonreplay.reference import COUNTERS

        gauge_fields = {
            "balloon_pages": S.V_BAL_N,
            "balloon_target_pages": S.V_TARGET,
            "free_pages": S.V_FREE_N,
            "resident_pages": S.V_RESIDENT,
            "backed_pages": S.V_BACKED,
            "shared_pages": S.V_SHARED,
            "zero_shared_pages": S.V_ZSHARED,
            "host_swapped_pages": S.V_SWAPPED,
            "touched_pages": S.V_TOUCHED,
        }
        col = {name: j for j, name in enumerate(ALL_COLUMNS)}
        computed = set(kernel.ROW_COLUMNS) - set(gauge_fields)
        covered = set(COUNTERS) | set(gauge_fields) | computed
        if covered != set(ALL_COLUMNS) or len(COUNTERS) + len(gauge_fields) + len(computed) != len(
            ALL_COLUMNS
        ):
            raise AssertionError(f"metrics columns without a source: {covered ^ set(ALL_COLUMNS)}")
        self.num_vms = num_vms
        self.counter_cols = np.array([col[name] for name in COUNTERS], dtype=np.int64)
        self.gauge_cols = np.array([col[name] for name in gauge_fields], dtype=np.int64)
        self.gauge_fields = np.array(list(gauge_fields.values()), dtype=np.int64)
        self.fixed = np.array([col[name] for name in kernel.ROW_COLUMNS], dtype=np.int64)

    def take(self, state, epoch: int, t_ns: int) -> np.ndarray:
        from balloonreplay.engine import kernel

        out = np.empty((self.num_vms, len(ALL_COLUMNS)), dtype=np.int64)
        kernel.epoch_rows(
            state.F,
            state.VS,
            state.G,
            state.CNT,
            state.FS,
            self.counter_cols,
            self.gauge_cols,
            self.gauge_fields,
            self.fixed,
            epoch,
            t_ns,
            out,
        )
        return out

    @staticmethod
    def columns(rows: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics columns of a stack of these matrices, each column contiguous."""
        rows = np.asfortranarray(rows)
        return {name: rows[:, j] for j, name in enumerate(ALL_COLUMNS)}


class _Samples:
    """Each VM's working-set sample (frame ids, draws may repeat), drawn by the kernel
    with the VM's PRNG so the reference draws the same frames. Redrawn only at the start
    and after an epoch's sampling pass, which marks the frames of ``all`` accessed in the
    epoch (kernel.sampling_pass): a mid-epoch redraw would lose those accesses."""

    def __init__(self, num_vms: int):
        self.frames = [np.zeros(0, dtype=np.int64) for _ in range(num_vms)]
        self.all = np.zeros(0, dtype=np.int64)  # every VM's, for the kernel's epoch pass

    def redraw(self, state, sizes) -> None:
        from balloonreplay.engine import kernel

        for v, k in enumerate(np.asarray(sizes, dtype=np.int64)):
            new = np.zeros(max(int(k), 0), dtype=np.int64)
            kernel.draw_sample(state.F, state.VS, state.RNG, v, self.frames[v], new)
            self.frames[v] = new
        self.all = np.concatenate(self.frames)

    def counts(self, state) -> tuple[np.ndarray, np.ndarray]:
        from balloonreplay.engine import state as S

        sampled = np.array([len(f) for f in self.frames], dtype=np.int64)
        touched = np.array(
            [np.count_nonzero(state.F[f, S.F_ACCESS] & S.FA_SAMPLE_TOUCHED) for f in self.frames],
            dtype=np.int64,
        )
        return sampled, touched


def _snapshot(
    state, config: ReplayConfig, epoch: int, t_ns: int, samples: _Samples, rows: np.ndarray
) -> Snapshot:
    """The policy's view after an epoch; ``rows``: that epoch's metrics rows
    (_EpochRows.take), whose gauges and counters it copies (a policy may keep or change
    its snapshot's arrays)."""
    from balloonreplay.engine import state as S

    g = c = _EpochRows.columns(np.array(rows, order="F"))
    sampled, sampled_touched = samples.counts(state)
    VS = state.VS
    finished = (VS[:, S.V_POS] >= VS[:, S.V_END]) & (VS[:, S.V_INPUT_DONE] == 1)
    return Snapshot.from_measures(
        g,
        c,
        epoch=epoch,
        t_ns=t_ns,
        epoch_ns=config.epoch_ns,
        host_pages=config.host_pages,
        host_used_pages=int(state.G[S.G_HOST_USED]),
        overhead_pages=np.asarray(config.overhead_pages, dtype=np.int64),
        config_pages=np.asarray(config.config_pages, dtype=np.int64),
        sampled_pages=sampled,
        sampled_touched_pages=sampled_touched,
        finished=finished,
    )


def _apply(state, config: ReplayConfig, decision: Decision | None, samples: _Samples) -> None:
    """Carry out a decision already checked by call_policy (Decision.checked)."""
    from balloonreplay.engine import kernel
    from balloonreplay.engine import state as S

    if decision is None:
        return
    c = np.asarray(config.config_pages, dtype=np.int64)
    if decision.balloon_target_pages is not None:
        targets = np.asarray(decision.balloon_target_pages, dtype=np.int64)
        state.VS[:, S.V_TARGET] = np.clip(targets, 0, c - 1)
    if decision.allow_host_swap is not None:
        allow = np.asarray(decision.allow_host_swap, dtype=bool)
        state.VS[:, S.V_ALLOW] = np.broadcast_to(allow, (state.VS.shape[0],))
    if decision.scan_rate_pages_per_s is not None:
        rates = np.asarray(decision.scan_rate_pages_per_s, dtype=np.int64)
        state.VS[:, S.V_SCAN_RATE] = np.maximum(rates, 0)
    if decision.host_swap_target_pages is not None:
        targets = np.clip(np.asarray(decision.host_swap_target_pages, dtype=np.int64), 0, c)
        kernel.apply_swap_targets(
            state.F, state.FC, state.P, state.VS, state.G, state.CNT, state.RNG, state.SH, targets
        )
    if decision.unback_free_pages is not None:
        counts = np.maximum(np.asarray(decision.unback_free_pages, dtype=np.int64), 0)
        kernel.unback_free(
            state.F, state.FC, state.P, state.VS, state.G, state.CNT, state.SH, state.FS, counts
        )
    if decision.sample_pages is not None:
        samples.redraw(state, decision.sample_pages)


_WARM = False


def warm_up() -> None:
    """Load (or compile, the first time) every kernel on a tiny input, so timing and
    progress exclude JIT compilation."""
    global _WARM
    if _WARM:
        return

    class _EveryDecision(HostPolicy):
        name = "warm-up"

        def start(self, snapshot: Snapshot) -> Decision:
            ones = np.ones(snapshot.num_vms, dtype=np.int64)
            return Decision(unback_free_pages=ones, sample_pages=ones, host_swap_target_pages=ones)

    table = pa.table(
        {
            "vm": pa.array([0, 0, 0, 0], pa.uint16()),
            "t_ns": pa.array([0, 1, 2, 3], pa.uint64()),
            "page": pa.array([0, 1, 0, 1], pa.uint64()),
            "write": [True, False, True, False],
            "content": pa.array([0, None, 5, None], pa.uint64()),
            "file_backed": [False, True, False, False],
            "free": [False, False, False, True],
        },
        schema=CANONICAL_SCHEMA,
    )
    cfg = ReplayConfig(config_pages=[1], host_pages=1, sharing=True, scan_rate_pages_per_s=10**9)
    _run_engine(_TableTrace(table, None), cfg, _EveryDecision(), [2], 1 << 10, None, timed=False)
    # The reading thread's kernels for what that run did not read: several VMs' rows
    # (grouped by VM) and a file's batch without its constant vm column.
    two_vms = table.set_column(0, "vm", pa.array([0, 1, 0, 1], pa.uint16()))
    _Buffers(None, [2, 2], None, 4).prepare(two_vms.to_batches()[0])
    from balloonreplay.engine.state import VM_FIELDS

    rings = _Buffers(np.zeros((2, VM_FIELDS), dtype=np.int64), [2, 2], None, 4)
    rings.add(rings.prepare(two_vms.to_batches()[0]))  # makes the rings
    later = two_vms.set_column(1, "t_ns", pa.array([4, 5, 6, 7], pa.uint64()))
    rings.prepare(later.to_batches()[0])  # writes into them
    _Buffers(None, [2], None, 4).prepare(table.drop_columns(["vm"]).to_batches()[0])
    _WARM = True


def _run_engine(trace, config, policy, pages_per_vm, batch_rows, progress, timed=True):
    from balloonreplay.engine import kernel
    from balloonreplay.engine import state as S
    from balloonreplay.engine.checks import check_end_of_run
    from balloonreplay.engine.state import allocate

    # Up to seven batches' worth of rows per VM in memory (its share of seven batches),
    # the rest spilled to disk (spill.py): four for a VM that lags behind the others, and
    # three that the reading thread writes ahead of the kernel (two in the queue, one
    # being prepared), which used to wait in the queue as columns of their own. Once a
    # VM's rows go to disk, all its later rows follow them until it catches up, so a lag
    # hovering at the limit sends nearly every row through the disk: bench_replay.py's
    # 8-VM run spilled 4.7 M of its 20 M rows with two batches' worth of lag, none with
    # four (7 Mi rows of 27 bytes: 198 MB at most, the batches read ahead included).
    max_rows = 7 * batch_rows // config.num_vms
    footer = _read_footer(trace)  # host time 0 and the fast path's columns, in one walk
    buffers = _Buffers(
        None, pages_per_vm, getattr(trace, "path", None), max_rows, _earliest_t_ns(trace, footer)
    )
    source = _parquet_batches(trace, batch_rows, config.num_vms, footer)
    if source is None:
        source = iter(trace.iter_batches(batch_rows))
    rows: list[np.ndarray] = []
    batches = _Prefetch(source, buffers.prepare)  # reading starts now, beside the set-up
    try:
        state = allocate(config, pages_per_vm)
        buffers.VS = state.VS
        samples = _Samples(config.num_vms)
        epoch_rows = _EpochRows(config.num_vms)
        start = _snapshot(state, config, -1, 0, samples, epoch_rows.take(state, -1, 0))
        _apply(state, config, call_policy(policy, "start", start), samples)
        # A policy that keeps the base class's decide() changes nothing after its start
        # (``none``, ``static``): its epochs need no snapshot.
        decides = getattr(policy.decide, "__func__", None) is not HostPolicy.decide
        epoch = 0
        while True:
            status = kernel.run(*state, *buffers.arrays())
            if status == S.ST_NEED_DATA:
                if buffers.refill():
                    continue
                item = next(batches, None)
                if item is None:
                    buffers.input_done()
                else:
                    rows_read, prepared = item
                    buffers.add(prepared)
                    if progress is not None:
                        progress.update(rows_read)
            elif status == S.ST_EPOCH_END:
                t_ns = int(state.G[S.G_NOW])
                kernel.sampling_pass(state.F, state.FC, state.P, state.VS, state.G, samples.all)
                rows.append(epoch_rows.take(state, epoch, t_ns))
                state.CNT[:] = 0
                if decides:
                    snapshot = _snapshot(state, config, epoch, t_ns, samples, rows[-1])
                    _apply(state, config, call_policy(policy, "decide", snapshot), samples)
                epoch += 1
                state.G[S.G_EPOCH_END] += config.epoch_ns
            elif status == S.ST_DONE:
                kernel.sampling_pass(state.F, state.FC, state.P, state.VS, state.G, samples.all)
                rows.append(epoch_rows.take(state, epoch, int(state.G[S.G_NOW])))
                break
            else:
                from balloonreplay.engine.checks import InvariantError

                raise InvariantError(int(state.G[S.G_ERROR]), "during the run")
    finally:
        batches.close()  # stops the prefetch thread on every way out
        buffers.close()
    table = _EpochRows.columns(np.concatenate(rows))
    # Conservation laws on the final state: a broken one raises, so no metrics are
    # written from a run that lost or invented a page.
    check_end_of_run(state, table)
    done = [state.VS[v, S.V_DONE_ACC] > 0 for v in range(config.num_vms)]
    first_t = [int(t) if d else None for t, d in zip(buffers.first_t, done, strict=True)]
    last_t = [int(state.VS[v, S.V_LAST_T]) if done[v] else None for v in range(config.num_vms)]
    stall_in_run = [
        int(state.VS[v, S.V_STALL_LAST] - state.VS[v, S.V_STALL_FIRST])
        + max(0, int(state.VS[v, S.V_PRE_BUSY]) - first_t[v])
        if done[v]
        else 0
        for v in range(config.num_vms)
    ]
    stall_total = state.VS[:, S.V_STALL].tolist()
    return metrics_frame(table), first_t, last_t, stall_in_run, stall_total, int(state.G[S.G_NOW])


class _CheckedCalls(HostPolicy):
    """The policy as the reference model sees it: every call through call_policy, so a
    failure names the policy in both engines."""

    def __init__(self, policy: HostPolicy):
        super().__init__(policy.params)
        self.policy = policy

    def start(self, snapshot: Snapshot) -> Decision | None:
        return call_policy(self.policy, "start", snapshot)

    def decide(self, snapshot: Snapshot) -> Decision | None:
        return call_policy(self.policy, "decide", snapshot)


def _run_reference(trace, config, policy):
    from balloonreplay.reference import simulate

    table = pa.Table.from_batches(list(trace.iter_batches()), schema=CANONICAL_SCHEMA)
    rows, summary = simulate(table, config, _CheckedCalls(policy), check=config.debug_checks)
    return metrics_frame(rows), summary


def replay(
    trace,
    vms=None,
    host=None,
    policy: str | HostPolicy = "none",
    guest_policy: str = "lru",
    *,
    policy_params: dict[str, Any] | None = None,
    engine: str = "numba",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    metadata: TraceMetadata | None = None,
    progress: bool = False,
    output: str | os.PathLike | None = None,
    latencies=None,
    **options,
) -> ReplayResult:
    """Replay a canonical trace through the model (reference.py) and return its metrics.

    ``trace``: a path, an open Trace, or an Arrow table/batch in the canonical schema.
    ``vms``: per-VM configured memory (``"512MiB"``, ``"1000p"``, a page count, or a list;
    one value is used for every VM); default: the trace's ``config_pages``.
    ``host``: host memory; default: the sum of the VMs' (no overcommit).
    ``policy``: a host-policy name (``"none"``, ``"esx:tax=0.5"``) or a HostPolicy
    instance. ``policy_params``: parameters overlaid on a named policy's (as ``k=v`` in
    its name); with an instance they are refused (ConfigError), since it is used as built.
    ``guest_policy``: ``lru``, ``clock``, ``fifo`` or ``twolist``.
    ``latencies``: ``"ssd"`` (default), ``"hdd"``, a mapping of overrides or a Latencies.
    Other keyword options are ReplayConfig fields (``sharing=True``, ``epoch_ns=...``,
    page sharing defaults to the policy's ``wants_sharing``: on for ``esx`` and ``mom``;
    ``host_selection="lru-sampled"``, ``seed=...``, ``debug_checks=True``, ...).
    """
    if engine not in ENGINES:
        raise ConfigError("engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
    trace = _as_trace(trace, metadata)
    if output is not None:  # refused before the run, not after it
        check_output_path(output, trace.path)
    host_policy = make_policy(policy, policy_params)
    if options.get("sharing") is None:
        options["sharing"] = host_policy.wants_sharing
    config = build_config(trace, vms, host, guest_policy, latencies=latencies, **options)
    with plugin_errors(policy_label(host_policy), "attach()"):
        host_policy.attach(trace)
    ident = _trace_identity(trace)
    if engine == "numba":
        pages_per_vm = _pages_per_vm(trace, config.num_vms)
        warm_up()
        bar = None
        if progress:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal, so job logs stay readable.
            bar = tqdm(
                total=trace.num_rows,
                desc="replay",
                unit="acc",
                unit_scale=True,
                leave=False,
                disable=None,
            )
        started = time.perf_counter()
        try:
            frame, first_t, last_t, stall_in_run, stall_total, end_ns = _run_engine(
                trace, config, host_policy, pages_per_vm, batch_rows, bar
            )
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        from balloonreplay.reference import summarize_slowdowns

        slow = summarize_slowdowns(first_t, last_t, stall_in_run, stall_total)
    else:
        started = time.perf_counter()
        frame, slow = _run_reference(trace, config, host_policy)
        seconds = time.perf_counter() - started
        end_ns = slow.pop("end_ns")
    summary: dict[str, Any] = totals(frame)
    summary.update(slow)
    summary.update(
        {
            "vms": config.num_vms,
            "host_pages": config.host_pages,
            "config_pages": config.config_pages,
            "overcommit_ratio": sum(config.config_pages) / config.host_pages,
            "epochs": int(frame["epoch"].max()) + 1 if len(frame) else 0,
            "end_ns": int(end_ns),
            "replay_seconds": seconds,
            "engine": engine,
            # numba: checked on the final state (_run_engine); the reference checks at
            # every quantum only with debug_checks, and None says "not checked".
            "invariants_ok": True if engine == "numba" or config.debug_checks else None,
        }
    )
    result = ReplayResult(
        metrics=frame,
        summary=summary,
        config=config,
        policy=host_policy.describe(),
        trace=ident,
    )
    if output is not None:
        result.write(output)
    return result


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
JSON_KEYS = (
    "accesses",
    "guest_faults",
    "guest_swap_in",
    "guest_swap_out",
    "host_swap_in",
    "host_swap_out",
    "cow_breaks",
    "max_slowdown",
    "replay_seconds",
)


def parse_duration_ns(text: str | int, key: str = "duration") -> int:
    """``1s``, ``500ms``, ``100us``, ``250ns`` or a bare number of ns."""
    if isinstance(text, int):
        return text
    raw = str(text).strip().lower()
    for unit in sorted(_DURATION_UNITS, key=len, reverse=True):
        if raw.endswith(unit):
            number = raw[: -len(unit)].strip()
            break
    else:
        unit, number = "ns", raw
    try:
        value = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(key, f"expected a duration like 1s, 500ms, 100us or 250ns, got {text!r}")
    if value <= 0 or value != int(value):
        raise ConfigError(key, f"expected a positive whole number of ns, got {text!r}")
    return int(value)


def summary_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as the CLI prints it with --json: the promised keys first, then the rest."""
    out = {key: summary[key] for key in JSON_KEYS}
    out.update({k: v for k, v in summary.items() if k not in out})
    return out


def summary_line(summary: dict[str, Any]) -> str:
    rate = summary["accesses"] / summary["replay_seconds"] if summary["replay_seconds"] else 0.0
    return (
        f"{summary['accesses']:,} accesses of {summary['vms']} VMs in "
        f"{summary['replay_seconds']:.2f} s ({rate / 1e6:.1f} M/s): "
        f"guest faults {summary['guest_faults']:,}, guest swap in/out "
        f"{summary['guest_swap_in']:,}/{summary['guest_swap_out']:,}, host swap in/out "
        f"{summary['host_swap_in']:,}/{summary['host_swap_out']:,}, COW breaks "
        f"{summary['cow_breaks']:,}, max slowdown {summary['max_slowdown']:.3f}"
    )


class _CallableModule(types.ModuleType):
    """Importing this module makes ``balloonreplay.replay`` the module object (Python sets
    a package attribute per imported submodule); calling it still replays."""

    def __call__(self, *args, **kwargs) -> ReplayResult:
        return replay(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
