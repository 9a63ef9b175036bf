"""DynamoRIO drmemtrace offline traces: a directory of per-thread ``*.trace.zip`` files.

Each zip holds ``chunk.0000``, ``chunk.0001``, ... of packed little-endian 12-byte records
``{u16 type; u16 size; u64 addr}`` (DynamoRIO's ``trace_entry_t``). The types used here
(DynamoRIO's ``trace_type_t``):

- 0 read, 1 write: a data access of ``size`` bytes at ``addr``;
- 10–16, 31, 48, 49: an instruction fetch (DynamoRIO's ``type_is_instr``); 17 (a bundle)
  and 29 (``INSTR_NO_FETCH``: a repeated iteration of a rep-string instruction, which
  fetches nothing) are instructions that are not fetches;
- 25 the header, which must be each thread's first record;
- 28 a marker whose ``size`` is its kind: 2 = timestamp, ``addr`` in µs since 1601.

Every other type up to 49 (thread and pid records, prefetches, flushes, encodings, other
markers) is skipped; a type above 49 is an error.

Data accesses become accesses to page ``addr >> log2(page_size_bytes)`` (an access crossing
a page boundary touches both pages); instruction fetches are added by option
``instructions``. Data prefetches are not accesses of the program and are dropped.

Time: timestamps come every few thousand records, so each record's time is interpolated
linearly between the timestamps before and after it, by record position (records after a
thread's last timestamp continue at that thread's last rate; records before its first take
the first). ``t_ns`` is that time in ns since the earliest timestamp of the trace. The
threads are merged into one VM (option ``vm``) in time order — ties go to the thread whose
file sorts first — or, with ``threads_as_vms``, each thread becomes VM 0, 1, ... in the
order of its file name (the rows still come out in global time order).

Streaming: each thread is read in blocks of ``block_records`` records, and the merge only
emits accesses up to the earliest time any unfinished thread has buffered, so memory holds
about one block per thread (≈ ``block_records`` × 12 bytes × threads).
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import (
    AT_LEAST_ONE,
    PAGE_SIZE,
    ROW_COUNT,
    VM_INDEX,
    TraceFormat,
    option,
    reader_page_shift,
)
from balloonreplay.traces.schema import TraceMetadata, make_batch
from balloonreplay.units import PAGE_SIZE_BYTES

RECORD = np.dtype([("type", "<u2"), ("size", "<u2"), ("addr", "<u8")])
assert RECORD.itemsize == 12
TYPE_READ = 0
TYPE_WRITE = 1
TYPE_HEADER = 25
TYPE_MARKER = 28
TYPE_MAX = 49  # TRACE_TYPE_INSTR_UNTAKEN_JUMP, the last of trace_type_t
MARKER_TIMESTAMP = 2
INSTRUCTION_FETCH_TYPES = np.array([10, 11, 12, 13, 14, 15, 16, 31, 48, 49], dtype=np.uint16)
NS_PER_US = 1000
DEFAULT_NS_PER_RECORD = 1.0  # a thread with a single timestamp has no rate of its own
# Accesses waiting for the next timestamp are held in memory. DynamoRIO writes one per
# buffer flush (at most 12,414 records apart in the threadsig sample), so a far longer
# stretch without one is a corrupt or hostile file, refused before it exhausts memory.
MAX_RECORDS_WITHOUT_TIMESTAMP = 1 << 24
# Rows one call of _extract may write (a block is split to stay near this): an access of
# up to 64 KiB with tiny pages touches many pages, and a block of them must not allocate
# without bound.
MAX_ROWS_PER_EXTRACT = 1 << 22
THREAD_FILE_SUFFIX = ".trace.zip"
CHUNK_NAME = re.compile(r"chunk\.\d+")
# What zipfile raises on a corrupt or unsupported archive: bad headers, CRC and truncated
# members (BadZipFile, EOFError, OSError), broken deflate/lzma streams, and compression
# methods or encryption it does not support (NotImplementedError, RuntimeError).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    ValueError,
)


@dataclasses.dataclass
class DrmemtraceOptions:
    vm: int = option(0, "VM index of every access (unless threads_as_vms)", bounds=VM_INDEX)
    threads_as_vms: bool = option(False, "each thread becomes its own VM, in file-name order")
    instructions: bool = option(False, "keep instruction fetches as loads")
    page_size_bytes: int = option(
        PAGE_SIZE_BYTES, "page size in bytes: page = addr >> log2(this)", bounds=PAGE_SIZE
    )
    block_records: int = option(1 << 18, "records read per thread at a time", bounds=ROW_COUNT)
    max_records_per_thread: int | None = option(
        None,
        "read only this many records of each thread (a quick look at a big trace)",
        bounds=AT_LEAST_ONE,
    )
    batch_rows: int = option(1 << 20, "rows per record batch (about)", bounds=ROW_COUNT)


class DrmemtraceFormat(TraceFormat):
    name = "drmemtrace"
    description = "DynamoRIO drmemtrace offline trace: a directory of per-thread *.trace.zip"
    Options = DrmemtraceOptions
    reads_directory = True

    def sniff(self, path: str | os.PathLike) -> bool:
        return Path(path).is_dir() and any(Path(path).glob("*" + THREAD_FILE_SUFFIX))

    def read_metadata(self, path, options: DrmemtraceOptions) -> TraceMetadata:
        threads = thread_files(path)
        names = [f.name.removesuffix(THREAD_FILE_SUFFIX) for f in threads]
        return TraceMetadata(
            source=self.name,
            parameters=dataclasses.asdict(options),
            page_size_bytes=options.page_size_bytes,
            vm_names=names if options.threads_as_vms else None,
        )

    def read(self, path, options: DrmemtraceOptions) -> Iterator[pa.RecordBatch]:
        shift = reader_page_shift(options.page_size_bytes, path)
        files = thread_files(path)
        base_us = min(
            (
                ts
                for f in files
                if (ts := _first_timestamp_us(f, options.block_records)) is not None
            ),
            default=0,
        )
        threads = [_ThreadReader(f, base_us, shift, options).accesses() for f in files]
        for t_ns, page, write, thread in _merge_by_time(threads, options.batch_rows):
            vm = thread if options.threads_as_vms else options.vm
            yield make_batch(vm, t_ns, page, write)


def thread_files(path) -> list[Path]:
    directory = Path(path)
    if not directory.is_dir():
        raise TraceError(path, None, "expected a directory of per-thread *.trace.zip files")
    files = sorted(directory.glob("*" + THREAD_FILE_SUFFIX))
    if not files:
        raise TraceError(path, None, "expected *.trace.zip files (one per thread), found none")
    return files


def _chunk_names(zip_path: Path, archive: zipfile.ZipFile) -> list[str]:
    names = sorted(n for n in archive.namelist() if CHUNK_NAME.fullmatch(n))
    if not names:
        raise TraceError(zip_path, None, "expected chunk.NNNN members in the zip, found none")
    return names


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except ZIP_ERRORS as exc:
        raise TraceError(zip_path, None, f"expected a zip of chunk.NNNN files ({exc})") from None


def _first_timestamp_us(zip_path: Path, block_records: int) -> int | None:
    """The thread's first timestamp (normally among its first few records)."""
    with _open_zip(zip_path) as archive:
        for name in _chunk_names(zip_path, archive):
            try:
                with archive.open(name) as member:
                    while raw := member.read(block_records * RECORD.itemsize):
                        records = np.frombuffer(raw, RECORD, count=len(raw) // RECORD.itemsize)
                        is_stamp = (records["type"] == TYPE_MARKER) & (
                            records["size"] == MARKER_TIMESTAMP
                        )
                        if is_stamp.any():
                            return int(records["addr"][is_stamp][0])
            except ZIP_ERRORS as exc:
                raise TraceError(zip_path, name, f"expected readable zip data ({exc})") from None
    return None


class _ThreadReader:
    """One thread's data accesses, timed by interpolating between its timestamp markers."""

    def __init__(self, zip_path: Path, base_us: int, shift: int, options: DrmemtraceOptions):
        self.zip_path = zip_path
        self.base_us = base_us
        self.shift = np.uint64(shift)
        self.options = options
        # The last timestamp seen: its record position and time (ns since base).
        self.stamp_pos: int | None = None
        self.stamp_ns = 0
        self.ns_per_record = DEFAULT_NS_PER_RECORD
        # Accesses after the last timestamp, waiting for the next one to be timed.
        self.pending_pos = np.empty(0, np.int64)
        self.pending_page = np.empty(0, np.uint64)
        self.pending_write = np.empty(0, bool)

    def accesses(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (t_ns int64, page uint64, write bool) arrays in time order."""
        for position, records in self._blocks():
            rows = _output_rows(records, self.options.instructions, self.shift)
            for start, stop in _split_by_rows(rows, MAX_ROWS_PER_EXTRACT):
                timed = self._time_block(position + start, records[start:stop])
                if timed is not None:
                    yield timed
        if self.pending_pos.size:
            yield (
                self._time_after_last_stamp(self.pending_pos),
                self.pending_page,
                self.pending_write,
            )

    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (position of the first record, records) blocks, checking the records."""
        limit = self.options.max_records_per_thread
        block_bytes = self.options.block_records * RECORD.itemsize
        position = 0
        with _open_zip(self.zip_path) as archive:
            for name in _chunk_names(self.zip_path, archive):
                member_offset = 0
                try:
                    with archive.open(name) as member:
                        carry = b""
                        while True:
                            raw = member.read(block_bytes)
                            if not raw:
                                break
                            data = carry + raw if carry else raw
                            whole = len(data) // RECORD.itemsize
                            carry = data[whole * RECORD.itemsize :]
                            records = np.frombuffer(data, RECORD, count=whole)
                            if limit is not None and position + whole > limit:
                                records = records[: max(limit - position, 0)]
                            self._check(name, member_offset, position, records)
                            yield position, records
                            position += len(records)
                            member_offset += len(records) * RECORD.itemsize
                            if limit is not None and position >= limit:
                                return
                except ZIP_ERRORS as exc:
                    raise TraceError(
                        self.zip_path,
                        f"{name} byte offset {member_offset}",
                        f"expected readable zip data ({exc})",
                    ) from None
                if carry:
                    raise TraceError(
                        self.zip_path,
                        f"{name} byte offset {member_offset}",
                        f"expected a whole 12-byte record, the chunk ends after {len(carry)} "
                        "bytes (truncated)",
                    )

    def _check(self, name: str, member_offset: int, position: int, records: np.ndarray) -> None:
        def fail(index: int, expected: str):
            raise TraceError(
                self.zip_path,
                f"{name} byte offset {member_offset + index * RECORD.itemsize}",
                expected,
            )

        if position == 0 and records.size and records["type"][0] != TYPE_HEADER:
            fail(
                0, f"expected the header record (type {TYPE_HEADER}), got type {records['type'][0]}"
            )
        bad = np.flatnonzero(records["type"] > TYPE_MAX)
        if bad.size:
            fail(
                int(bad[0]), f"expected a record type 0..{TYPE_MAX}, got {records['type'][bad[0]]}"
            )

    def _time_block(self, position: int, records: np.ndarray):
        n = len(records)
        stamp_pos = np.empty(n, np.int64)
        stamp_us = np.empty(n, np.uint64)
        room = int(_output_rows(records, self.options.instructions, self.shift).sum())
        out_pos = np.empty(room, np.int64)
        out_page = np.empty(room, np.uint64)
        out_write = np.empty(room, np.bool_)
        n_out, n_stamps = _extract(
            records["type"], records["size"], records["addr"], position,
            self.options.instructions, self.shift, _FETCH_TYPE_TABLE,
            out_pos, out_page, out_write, stamp_pos, stamp_us,
        )  # fmt: skip
        assert n_out >= 0, "_output_rows counts exactly what _extract writes"
        pos = np.concatenate([self.pending_pos, out_pos[:n_out]])
        page = np.concatenate([self.pending_page, out_page[:n_out]])
        write = np.concatenate([self.pending_write, out_write[:n_out]])
        if n_stamps == 0:
            since = self.stamp_pos if self.stamp_pos is not None else 0
            if position + n - since > MAX_RECORDS_WITHOUT_TIMESTAMP:
                raise TraceError(
                    self.zip_path,
                    f"record {position + n - 1}",
                    f"expected a timestamp marker at least every {MAX_RECORDS_WITHOUT_TIMESTAMP} "
                    f"records (DynamoRIO writes one per buffer), found none since record {since}",
                )
            self.pending_pos, self.pending_page, self.pending_write = pos, page, write
            return None
        stamp_pos = stamp_pos[:n_stamps]
        # Relative to the trace's earliest first stamp; a stamp before it (a clock stepping
        # back) counts as the start.
        stamp_ns = np.maximum(stamp_us[:n_stamps].astype(np.int64) - self.base_us, 0) * NS_PER_US
        if self.stamp_pos is not None:
            stamp_pos = np.concatenate([[self.stamp_pos], stamp_pos])
            stamp_ns = np.concatenate([[self.stamp_ns], stamp_ns])
        # A clock that steps back would break per-VM time order; hold it level instead.
        stamp_ns = np.maximum.accumulate(stamp_ns)
        t_ns = np.empty(len(pos), np.int64)
        closed = _interpolate(pos, stamp_pos, stamp_ns, t_ns)
        if len(stamp_pos) >= 2:
            last_span = int(stamp_pos[-1] - stamp_pos[-2])
            self.ns_per_record = float(stamp_ns[-1] - stamp_ns[-2]) / max(last_span, 1)
        self.stamp_pos, self.stamp_ns = int(stamp_pos[-1]), int(stamp_ns[-1])
        # Accesses after the block's last timestamp wait for the next one.
        self.pending_pos, self.pending_page = pos[closed:], page[closed:]
        self.pending_write = write[closed:]
        return t_ns[:closed], page[:closed], write[:closed]

    def _time_after_last_stamp(self, pos: np.ndarray) -> np.ndarray:
        if self.stamp_pos is None:  # no timestamp at all: one record per ns
            return pos.copy()
        offset = np.maximum(pos - self.stamp_pos, 0).astype(np.float64)
        return self.stamp_ns + (offset * self.ns_per_record).astype(np.int64)


_FETCH_TYPE_TABLE = np.zeros(TYPE_MAX + 1, dtype=np.bool_)
_FETCH_TYPE_TABLE[INSTRUCTION_FETCH_TYPES] = True


def _output_rows(records: np.ndarray, keep_fetches: bool, shift: np.uint64) -> np.ndarray:
    """Rows `_extract` writes per record: one per page an access touches, else none.
    Records must already be checked (types <= TYPE_MAX)."""
    types = records["type"]
    is_access = types <= TYPE_WRITE
    if keep_fetches:
        is_access |= _FETCH_TYPE_TABLE[np.minimum(types, TYPE_MAX)]
    addr = records["addr"]
    size = np.maximum(records["size"], 1).astype(np.uint64)
    first = addr >> shift
    last = (addr + (size - np.uint64(1))) >> shift  # wraps like _extract's uint64 sum
    pages = np.where(last < first, 0, last - first).astype(np.int64) + 1
    return np.where(is_access, pages, 0)


def _split_by_rows(rows: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """(start, stop) record ranges each producing about `limit` rows at most (one record
    may exceed it alone), covering all records in order."""
    total = np.cumsum(rows)
    start = 0
    while start < len(rows):
        before = int(total[start - 1]) if start else 0
        stop = int(np.searchsorted(total, before + limit, side="right"))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


@numba.njit(cache=True, nogil=True)
def _extract(
    types, sizes, addrs, first_pos, keep_fetches, shift, fetch_types,
    out_pos, out_page, out_write, stamp_pos, stamp_us,
):  # fmt: skip
    """One pass over a block: an output row per page each access touches (in address order,
    with the access's record position), and the block's timestamps. Returns the counts."""
    n_out = 0
    n_stamps = 0
    for i in range(types.shape[0]):
        kind = types[i]
        if kind == 28:  # marker
            if sizes[i] == 2:  # timestamp
                stamp_pos[n_stamps] = first_pos + i
                stamp_us[n_stamps] = addrs[i]
                n_stamps += 1
            continue
        if kind > 1 and not (keep_fetches and fetch_types[kind]):
            continue
        addr = addrs[i]
        size = max(np.int64(sizes[i]), 1)
        page = addr >> shift
        last = (addr + np.uint64(size - 1)) >> shift
        if last < page:  # wraps around the address space
            last = page
        while True:
            if n_out == out_pos.shape[0]:
                return -1, n_stamps  # the caller's buffers are too small (absurd sizes)
            out_pos[n_out] = first_pos + i
            out_page[n_out] = page
            out_write[n_out] = kind == 1
            n_out += 1
            if page == last:
                break
            page += np.uint64(1)
    return n_out, n_stamps


@numba.njit(cache=True, nogil=True)
def _interpolate(pos, stamp_pos, stamp_ns, t_ns):
    """Time each access (sorted by record position) linearly between the timestamps around
    it; accesses before the first stamp take the first. Returns how many accesses come
    before the last stamp (the rest cannot be timed yet)."""
    seg = 0
    last_seg = stamp_pos.shape[0] - 1
    for k in range(pos.shape[0]):
        p = pos[k]
        while seg < last_seg and stamp_pos[seg + 1] <= p:
            seg += 1
        if p < stamp_pos[seg]:  # before the thread's first timestamp
            t_ns[k] = stamp_ns[seg]
            continue
        if seg == last_seg:
            return k
        span_ns = stamp_ns[seg + 1] - stamp_ns[seg]
        span_records = stamp_pos[seg + 1] - stamp_pos[seg]
        t_ns[k] = stamp_ns[seg] + np.int64((p - stamp_pos[seg]) * (span_ns / span_records))
    return pos.shape[0]


def _merge_by_time(threads: list[Iterator], batch_rows: int):
    """Merge per-thread (t_ns, page, write) streams into time order, batch by batch.

    Accesses up to the *horizon* (the earliest last-buffered time among threads that may
    still produce more) are safe to emit: no thread can later produce anything earlier.
    Yields (t_ns uint64, page, write, thread index) arrays.
    """
    buffers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    live = dict(enumerate(threads))
    out: list[tuple] = []
    out_rows = 0
    while live or buffers:
        for index in list(live):
            while index not in buffers:
                try:
                    t_ns, page, write = next(live[index])
                except StopIteration:
                    del live[index]
                    break
                if len(t_ns):
                    buffers[index] = (t_ns, page, write)
        if not buffers:
            break
        horizon = min((buffers[i][0][-1] for i in live if i in buffers), default=None)
        parts = []
        for index in sorted(buffers):
            t_ns, page, write = buffers[index]
            cut = len(t_ns) if horizon is None else np.searchsorted(t_ns, horizon, side="right")
            if cut:
                parts.append((t_ns[:cut], page[:cut], write[:cut], np.full(cut, index, np.uint16)))
            if cut == len(t_ns):
                del buffers[index]
            else:
                buffers[index] = (t_ns[cut:], page[cut:], write[cut:])
        t_ns, page, write, thread = (np.concatenate(column) for column in zip(*parts, strict=True))
        order = np.argsort(t_ns, kind="stable")  # ties: thread order, then record order
        out.append((t_ns[order], page[order], write[order], thread[order]))
        out_rows += len(order)
        if out_rows >= batch_rows:
            yield _join(out)
            out, out_rows = [], 0
    if out_rows:
        yield _join(out)


def _join(parts):
    t_ns, page, write, thread = (np.concatenate(column) for column in zip(*parts, strict=True))
    return t_ns.astype(np.uint64), page, write, thread
