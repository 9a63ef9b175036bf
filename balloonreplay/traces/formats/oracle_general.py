"""libCacheSim's ``oracleGeneral`` binary trace, read and written, for cross-checks in libCacheSim.

A file is packed little-endian 24-byte records, one request each, no header::

    u32 clock_time          seconds
    u64 obj_id
    u32 obj_size            bytes
    i64 next_access_vtime   1-based position of the next request to obj_id; -1 = never

``next_access_vtime`` counts requests from 1 (the first record is vtime 1): that is what
libCacheSim's own converter writes (checked on the CloudPhysics trace in ../shared/data,
whose every value equals the next request's 0-based index plus one). libCacheSim's reader
also takes INT64_MAX for never. The format has no magic number, so this field is what
tells a file of another kind: a value other than never must be a later vtime (own vtime <
value <= 2**40, a trillion requests, more than any published trace), or the file is
refused naming the byte offset. Text read as records gives values above 10**17, as do
most other binary layouts. A piece cut from a longer trace (``head -c``), whose last
requests point past its end, is read.

Reading: one request becomes one load of page ``obj_id`` by VM option ``vm``; time is the
record's sequence number (0, 1, 2, ...) unless option ``time=clock`` (then
``clock_time`` × 10⁹ ns, absolute as stored). With ``split_vms=true`` the top 16 bits of
``obj_id`` are the VM and the low 48 the page, undoing the writer's multi-VM encoding.

Writing: ``obj_id = (vm << 48) | page`` (so one VM's trace keeps its page numbers as ids),
``obj_size`` = option ``page_size_bytes``, ``clock_time`` = ``t_ns`` // 10⁹. Loads and stores
are both plain requests (the format has no operation field); a ``free`` row is not an
access and has no request (a cache simulator would count it as one), and content and
file-backed flags are not kept. ``next_access_vtime`` is
patched in a backward pass over the written file, so the writer holds one chunk of records
plus one (object id, next vtime) pair per distinct object: 16 bytes per distinct page.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import ROW_COUNT, VM_INDEX, Bounds, TraceFormat, option
from balloonreplay.traces.formats.parquet import PARQUET_MAGIC
from balloonreplay.traces.io import atomic_path
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata, conform_batch, make_batch
from balloonreplay.units import PAGE_SIZE_BYTES

RECORD = np.dtype(
    [
        ("clock_time", "<u4"),
        ("obj_id", "<u8"),
        ("obj_size", "<u4"),
        ("next_access_vtime", "<i8"),
    ]
)
assert RECORD.itemsize == 24  # packed, no padding
NO_NEXT_ACCESS = -1
NEVER_AGAIN = (1 << 63) - 1  # INT64_MAX, libCacheSim's reader's other "no next access"
MAX_VTIME = 1 << 40  # beyond any real trace's length; garbage is far above it
VM_SHIFT = 48  # obj_id = (vm << 48) | page
PAGE_MASK = (1 << VM_SHIFT) - 1
NS_PER_S = 1_000_000_000
UINT32_MAX = (1 << 32) - 1
TIME_SOURCES = ("sequence", "clock")


@dataclasses.dataclass
class OracleGeneralOptions:
    vm: int = option(0, "VM index of every request (unless split_vms)", bounds=VM_INDEX)
    time: str = option(
        "sequence", "t_ns source: sequence (record number) or clock (s × 1e9)", choices=TIME_SOURCES
    )
    split_vms: bool = option(False, "obj_id holds (vm << 48) | page, as this writer encodes it")
    page_size_bytes: int = option(
        PAGE_SIZE_BYTES,
        "obj_size the writer gives every request",
        bounds=Bounds(1, (1 << 32) - 1),  # the record's obj_size is a u32
    )
    batch_rows: int = option(1 << 20, "records per record batch", bounds=ROW_COUNT)


class OracleGeneralFormat(TraceFormat):
    name = "oracle-general"
    description = "libCacheSim oracleGeneral binary (24-byte requests); reader and writer"
    Options = OracleGeneralOptions
    writes_frees = False  # a free is no request
    writer_options = ("page_size_bytes", "batch_rows")

    def sniff(self, path: str | os.PathLike) -> bool:
        # The format has no magic number; libCacheSim names its files *.oracleGeneral[.bin].
        # The name alone decides, so that a truncated file gets the reader's own error
        # (the byte offset where it is cut) rather than "could not recognise the format";
        # but a canonical trace may be named so too (w.oracleGeneral.parquet).
        name = os.path.basename(os.fspath(path)).lower()
        if "oraclegeneral" not in name or not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            return fh.read(len(PARQUET_MAGIC)) != PARQUET_MAGIC

    def read_metadata(self, path, options: OracleGeneralOptions) -> TraceMetadata:
        return TraceMetadata(source=self.name, parameters=dataclasses.asdict(options))

    def count_accesses(self, path, options) -> int:
        return os.path.getsize(path) // RECORD.itemsize  # one access per record

    def read(self, path, options: OracleGeneralOptions) -> Iterator[pa.RecordBatch]:
        size_bytes = os.path.getsize(path)
        whole_records, partial_bytes = divmod(size_bytes, RECORD.itemsize)
        if partial_bytes:
            # Caught before reading anything, so no batch of a broken file is ever yielded.
            raise TraceError(
                path,
                f"byte offset {whole_records * RECORD.itemsize}",
                f"expected a whole 24-byte record, the file ends after {partial_bytes} bytes "
                "(truncated)",
            )
        with open(path, "rb") as fh:
            first_vtime = 1
            while True:
                raw = fh.read(options.batch_rows * RECORD.itemsize)
                if not raw:
                    break
                records = np.frombuffer(raw, dtype=RECORD)
                _check_next_access(path, records, first_vtime)
                yield _to_batch(records, first_vtime - 1, options)
                first_vtime += len(records)

    def write(self, batches: Iterable[pa.RecordBatch], path, options=None) -> None:
        options = options or OracleGeneralOptions()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as out:
                for batch in batches:
                    if batch.schema != CANONICAL_SCHEMA:
                        batch = conform_batch(batch, path)
                    out.write(_to_records(batch, path, options.page_size_bytes).tobytes())
            _patch_next_access(tmp, options.batch_rows)


def _check_next_access(path, records: np.ndarray, first_vtime: int) -> None:
    """A next access is a later vtime, or never; anything else (text, another binary
    format) is no oracleGeneral file. Cheap: two comparisons per record. A later vtime
    past the file's end is a piece of a longer trace, and is read."""
    vtime = np.arange(first_vtime, first_vtime + len(records), dtype=np.int64)
    next_vtime = records["next_access_vtime"]
    never = (next_vtime == NO_NEXT_ACCESS) | (next_vtime == NEVER_AGAIN)
    bad = np.flatnonzero(~never & ((next_vtime <= vtime) | (next_vtime > MAX_VTIME)))
    if bad.size:
        index = int(bad[0])
        own = first_vtime + index
        raise TraceError(
            path,
            f"byte offset {(own - 1) * RECORD.itemsize + 16}",
            f"expected next_access_vtime -1 (no next access) or a later vtime, "
            f"{own + 1}..{MAX_VTIME}, at own vtime {own}, got {int(next_vtime[index])} "
            "(not an oracleGeneral file?)",
        )


def _to_batch(records: np.ndarray, first_index: int, options: OracleGeneralOptions):
    obj_id = records["obj_id"]
    if options.split_vms:
        vm = (obj_id >> np.uint64(VM_SHIFT)).astype(np.uint16)
        page = obj_id & np.uint64(PAGE_MASK)
    else:
        vm, page = options.vm, obj_id
    if options.time == "clock":
        t_ns = records["clock_time"].astype(np.uint64) * np.uint64(NS_PER_S)
    else:
        t_ns = np.arange(first_index, first_index + len(records), dtype=np.uint64)
    return make_batch(vm, t_ns, page, np.zeros(len(records), dtype=bool))


def _to_records(batch: pa.RecordBatch, path, page_size_bytes: int) -> np.ndarray:
    free = batch.column("free")
    if free.true_count:  # frees are no requests
        batch = batch.filter(pc.invert(free))
    vm = batch.column("vm").to_numpy().astype(np.uint64)
    page = batch.column("page").to_numpy()
    t_ns = batch.column("t_ns").to_numpy()
    if page.size and int(page.max()) > PAGE_MASK:
        raise TraceError(
            path, None, f"cannot encode page {int(page.max())}: pages must be below 2**{VM_SHIFT}"
        )
    clock_s = t_ns // np.uint64(NS_PER_S)
    if clock_s.size and int(clock_s.max()) > UINT32_MAX:
        raise TraceError(path, None, "cannot encode t_ns: clock_time seconds must fit in 32 bits")
    records = np.empty(len(page), dtype=RECORD)
    records["clock_time"] = clock_s
    records["obj_id"] = (vm << np.uint64(VM_SHIFT)) | page
    records["obj_size"] = page_size_bytes
    records["next_access_vtime"] = NO_NEXT_ACCESS
    return records


def _patch_next_access(path, chunk_records: int) -> None:
    """Fill next_access_vtime in place, walking the file from its end to its start.

    `later_ids` (sorted) and `later_vtimes` map every object seen in later chunks to the
    vtime of its first request there, which is the next access of its last request here.
    """
    total = os.path.getsize(path) // RECORD.itemsize
    later_ids = np.empty(0, dtype=np.uint64)
    later_vtimes = np.empty(0, dtype=np.int64)
    with open(path, "r+b") as fh:
        end = total
        while end > 0:
            start = max(0, end - chunk_records)
            fh.seek(start * RECORD.itemsize)
            records = np.frombuffer(fh.read((end - start) * RECORD.itemsize), RECORD).copy()
            obj_id = records["obj_id"]
            vtime = np.arange(start + 1, end + 1, dtype=np.int64)
            order = np.argsort(obj_id, kind="stable")  # by object, then by time
            sorted_ids = obj_id[order]
            next_vtime = np.full(len(records), NO_NEXT_ACCESS, dtype=np.int64)
            same_as_next = sorted_ids[1:] == sorted_ids[:-1]
            next_vtime[order[:-1][same_as_next]] = vtime[order[1:][same_as_next]]
            # An object's last request in this chunk: its next access is in a later chunk.
            last_in_chunk = np.append(~same_as_next, True)
            last_rows = order[last_in_chunk]
            pos = np.searchsorted(later_ids, obj_id[last_rows])
            found = pos < len(later_ids)
            found[found] = later_ids[pos[found]] == obj_id[last_rows][found]
            next_vtime[last_rows[found]] = later_vtimes[pos[found]]
            records["next_access_vtime"] = next_vtime
            fh.seek(start * RECORD.itemsize)
            fh.write(records.tobytes())
            # This chunk's first request of each object becomes the map entry for it.
            first_in_chunk = np.insert(~same_as_next, 0, True)
            first_rows = order[first_in_chunk]
            ids = np.concatenate([obj_id[first_rows], later_ids])
            vtimes = np.concatenate([vtime[first_rows], later_vtimes])
            later_ids, keep = np.unique(ids, return_index=True)  # keeps this chunk's entry
            later_vtimes = vtimes[keep]
            end = start
