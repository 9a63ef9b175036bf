"""Traces of the PyPI package ``memtrace`` 0.2.6 (a Valgrind tool): ``memtrace.out``.

Record one with ``memtrace record --pc-range=0-0xffffffffffffffff:m CMD`` (it always writes
``./memtrace.out``; without the ``:m`` flag it also logs registers and grows enormous).

Layout (checked against real recordings and ``memtrace report``): a sequence of entries,
each ``u16 tag, u16 len`` followed by ``len - 4`` bytes and padded with zeros to a multiple
of 8 bytes. Only 64-bit little-endian traces are read. The first entry is the header
(``MT_HEADER64``, tag 0x4d38). A load (``MT_LOAD``, 0x4d41) or store (``MT_STORE``, 0x4d42)
continues ``u32 insn_seq, u64 addr, value[len - 16]``: the access size is ``len - 16``
bytes. Every other entry (``MT_INSN``, ``MT_MMAP``, ``MT_REGMETA``, register entries, ...)
is skipped by its length; a tag outside memtrace's range 0x4d34..0x4d52 is an error.

Each load or store becomes one access per page it touches (page = addr >>
log2(``page_size_bytes``); an access crossing a page boundary touches both, lower first).

Time: ``t_ns`` is the access's sequence number among the trace's loads and stores (0, 1,
2, ...). ``insn_seq`` cannot serve: it numbers *static* instructions in the order they were
first translated (every iteration of a loop's store carries the same ``insn_seq``), not
executed instructions.

Parsing is a numba loop over 16 MiB chunks of the file (entries straddling a chunk
boundary are carried to the next chunk): well over 10 million accesses per second.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numba
import numpy as np
import pyarrow as pa

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import PAGE_SIZE, VM_INDEX, TraceFormat, option, reader_page_shift
from balloonreplay.traces.schema import TraceMetadata, make_batch
from balloonreplay.units import PAGE_SIZE_BYTES

TAG_HEADER32 = 0x4D34
TAG_HEADER64 = 0x4D38
TAG_LOAD = 0x4D41
TAG_STORE = 0x4D42
TAG_LAST = 0x4D52
ACCESS_PREFIX_BYTES = 16  # tag, len, insn_seq, addr
CHUNK_BYTES = 16 << 20
BATCH_ROWS = 1 << 20

_OK = 0
_BAD_TAG = 1
_BAD_LENGTH = 2


@dataclasses.dataclass
class MemtraceOptions:
    vm: int = option(0, "VM index of every access", bounds=VM_INDEX)
    page_size_bytes: int = option(
        PAGE_SIZE_BYTES, "page size in bytes: page = addr >> log2(this)", bounds=PAGE_SIZE
    )


class MemtraceFormat(TraceFormat):
    name = "memtrace"
    description = "memtrace.out of the PyPI memtrace 0.2.6 Valgrind tool (loads and stores)"
    Options = MemtraceOptions

    def sniff(self, path: str | os.PathLike) -> bool:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            head = fh.read(4)
        return len(head) == 4 and int.from_bytes(head[:2], "little") == TAG_HEADER64

    def read_metadata(self, path, options: MemtraceOptions) -> TraceMetadata:
        return TraceMetadata(
            source=self.name,
            parameters=dataclasses.asdict(options),
            page_size_bytes=options.page_size_bytes,
        )

    def read(self, path, options: MemtraceOptions) -> Iterator[pa.RecordBatch]:
        shift = reader_page_shift(options.page_size_bytes, path)
        # Room kept free for one more access: a load or store of up to 64 KiB - 17 bytes
        # touches at most this many pages (17 with 4 KiB pages; many more with tiny ones).
        room = BATCH_ROWS - ((0xFFFF >> shift) + 2)
        out_page = np.empty(BATCH_ROWS, dtype=np.uint64)
        out_write = np.empty(BATCH_ROWS, dtype=np.bool_)
        out_seq = np.empty(BATCH_ROWS, dtype=np.int64)
        accesses = np.zeros(1, dtype=np.int64)  # loads and stores so far (the time)
        with open(path, "rb") as fh:
            _check_header(path, fh.read(4))
            fh.seek(0)
            carry = b""
            carry_offset = 0  # file offset of carry's first byte
            while True:
                chunk = fh.read(CHUNK_BYTES)
                if not chunk:
                    break
                data = carry + chunk if carry else chunk
                buf = np.frombuffer(data, dtype=np.uint8)
                pos = 0
                while True:
                    consumed, n_out, status = _parse_entries(
                        buf[pos:], shift, room, accesses, out_page, out_write, out_seq
                    )
                    if status != _OK:
                        _raise_bad_entry(path, data, pos + consumed, carry_offset, status)
                    pos += consumed
                    if n_out:
                        yield make_batch(
                            options.vm,
                            out_seq[:n_out].astype(np.uint64),
                            out_page[:n_out].copy(),
                            out_write[:n_out].copy(),
                        )
                    if n_out < room:  # stopped for want of bytes, not of room
                        break
                carry = data[pos:]
                carry_offset += pos
            if carry:
                length = int.from_bytes(carry[2:4], "little") if len(carry) >= 4 else None
                expected = f"a {_padded(length)}-byte entry" if length else "a 4-byte entry header"
                raise TraceError(
                    path,
                    f"byte offset {carry_offset}",
                    f"expected {expected}, the file ends after {len(carry)} bytes (truncated)",
                )


def _padded(length: int) -> int:
    return (length + 7) & ~7


def _check_header(path, head: bytes) -> None:
    if len(head) < 4:
        raise TraceError(
            path, "byte offset 0", "expected a memtrace header entry, the file is too short"
        )
    tag_le = int.from_bytes(head[:2], "little")
    tag_be = int.from_bytes(head[:2], "big")
    if tag_le == TAG_HEADER64:
        return
    if tag_be in (TAG_HEADER32, TAG_HEADER64):
        problem = "a big-endian trace, which this reader does not support"
    elif tag_le == TAG_HEADER32:
        problem = "a 32-bit trace, which this reader does not support"
    else:
        problem = f"tag 0x{tag_le:04x} (not a memtrace.out file?)"
    raise TraceError(
        path,
        "byte offset 0",
        f"expected the 64-bit little-endian memtrace header (tag 0x{TAG_HEADER64:04x}), got "
        + problem,
    )


def _raise_bad_entry(path, data: bytes, offset: int, carry_offset: int, status: int):
    tag = int.from_bytes(data[offset : offset + 2], "little")
    length = int.from_bytes(data[offset + 2 : offset + 4], "little")
    if status == _BAD_TAG:
        expected = (
            f"expected an entry tag in 0x{TAG_HEADER32:04x}..0x{TAG_LAST:04x}, got 0x{tag:04x} "
            "(corrupt or not a memtrace.out file)"
        )
    else:
        minimum = ACCESS_PREFIX_BYTES + 1 if tag in (TAG_LOAD, TAG_STORE) else 4
        expected = f"expected entry length of at least {minimum} for tag 0x{tag:04x}, got {length}"
    raise TraceError(path, f"byte offset {carry_offset + offset}", expected)


@numba.njit(cache=True, nogil=True)
def _parse_entries(buf, shift, room, accesses, out_page, out_write, out_seq):
    """Walk whole entries of `buf`; write one row per page each load/store touches.

    Returns (bytes consumed, rows written, status). Stops at an entry that does not fit in
    `buf` (the caller carries it over) or when `room` rows are written (the outputs keep
    space for one more access beyond it). On a bad entry, `consumed` is its offset.
    """
    n = buf.shape[0]
    seq = accesses[0]
    n_out = 0
    pos = 0
    status = 0
    while pos + 4 <= n and n_out < room:
        tag = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
        length = np.int64(buf[pos + 2]) | (np.int64(buf[pos + 3]) << 8)
        if tag < 0x4D34 or tag > 0x4D52:
            status = 1
            break
        if length < 4:
            status = 2
            break
        padded = (length + 7) & ~7
        if pos + padded > n:
            break
        if tag == 0x4D41 or tag == 0x4D42:
            if length <= 16:
                status = 2
                break
            addr = np.uint64(0)
            for k in range(8):
                addr |= np.uint64(buf[pos + 8 + k]) << np.uint64(8 * k)
            last = addr + np.uint64(length - 17)  # size = length - 16 bytes
            page = addr >> np.uint64(shift)
            last_page = last >> np.uint64(shift)
            if last < addr:  # wraps around the address space: touches only the top page
                last_page = page
            is_write = tag == 0x4D42
            while True:
                out_page[n_out] = page
                out_write[n_out] = is_write
                out_seq[n_out] = seq
                n_out += 1
                if page == last_page:
                    break
                page += np.uint64(1)
            seq += 1
        pos += padded
    accesses[0] = seq
    return pos, n_out, status
