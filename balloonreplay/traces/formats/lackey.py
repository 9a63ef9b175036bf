"""Valgrind lackey memory traces: the output of ``valgrind --tool=lackey --trace-mem=yes``.

Lines (addresses hex, sizes decimal)::

    I  0040100c,2      instruction fetch of 2 bytes
     L 00403000,1      load
     S 00403000,1      store
     M 00403000,1      modify: a load and then a store of the same bytes
    ==3973== ...       valgrind's own messages (also ``--pid--``), skipped; blank lines too

Every other line is an error naming its line number (so run lackey with ``--log-file`` to
keep the program's own output out of the trace).

Each I/L/S/M line is one *record*. A record becomes one access per page it touches
(page = address >> log2(``page_size_bytes``); an access crossing a page boundary touches both
pages, lower address first); ``M`` becomes a load then a store. Instruction fetches are
dropped unless option ``instructions`` is true.

Time: ``t_ns`` is the record's sequence number in the trace (0, 1, 2, ...; I lines count even
when dropped, so time follows the program's progress), shared by every access the record
makes. With option ``instructions_per_ns`` it is instead (index of the most recent
instruction) / ``instructions_per_ns``, rounded down: an instruction and the data accesses
it makes share a time, and instructions are assumed to run at that rate.

With ``collapse_repeats``, a run of consecutive accesses to one page becomes a single access
with the run's first time, flagged as a write if any access in the run was a write.

The final line must end with a newline: valgrind always writes one, so a last line without
one means the file was cut short.

Parsing is a numba loop over the bytes of 16 MiB chunks: 10–20 million lines/s here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numba
import numpy as np
import pyarrow as pa

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import (
    PAGE_SIZE,
    VM_INDEX,
    Bounds,
    TraceFormat,
    option,
    reader_page_shift,
)
from balloonreplay.traces.schema import TraceMetadata, make_batch
from balloonreplay.units import PAGE_SIZE_BYTES

CHUNK_BYTES = 16 << 20
BATCH_ROWS = 1 << 20
MAX_LINE_BYTES = 1 << 16  # lackey lines are ~15 bytes; a longer run means not lackey text
MAX_ACCESS_BYTES = 1 << 16  # XSAVE-sized accesses are a few KiB; more means garbage

# Parser status.
_OK = 0
_BAD_LINE = 1


@dataclasses.dataclass
class LackeyOptions:
    vm: int = option(0, "VM index of every access", bounds=VM_INDEX)
    page_size_bytes: int = option(
        PAGE_SIZE_BYTES, "page size in bytes: page = addr >> log2(this)", bounds=PAGE_SIZE
    )
    instructions: bool = option(False, "keep instruction fetches (I lines) as loads")
    collapse_repeats: bool = option(
        False, "merge consecutive accesses to one page (a write if any of them was)"
    )
    instructions_per_ns: float | None = option(
        None,
        "time = instructions so far / this; default: time = record sequence number",
        bounds=Bounds(0, 1e15, above=True),
    )


class LackeyFormat(TraceFormat):
    name = "lackey"
    description = "valgrind --tool=lackey --trace-mem=yes output (I/L/S/M lines)"
    Options = LackeyOptions

    def sniff(self, path: str | os.PathLike) -> bool:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            head = fh.read(4096)
        return b"Lackey, an example Valgrind tool" in head or (
            head.startswith((b"I  ", b" L ", b" S ", b" M ")) and b"," in head[:40]
        )

    def read_metadata(self, path, options: LackeyOptions) -> TraceMetadata:
        return TraceMetadata(
            source=self.name,
            parameters=dataclasses.asdict(options),
            page_size_bytes=options.page_size_bytes,
        )

    def read(self, path, options: LackeyOptions) -> Iterator[pa.RecordBatch]:
        shift = reader_page_shift(options.page_size_bytes, path)
        ipns = options.instructions_per_ns
        pending = None  # the last run, held back while it may still grow (collapse_repeats)
        for page, write, record_seq, instruction_index in _parse_file(path, shift, options):
            if ipns is None:
                t_ns = record_seq.astype(np.uint64)
            else:
                t_ns = (np.maximum(instruction_index, 0) / ipns).astype(np.uint64)
            if options.collapse_repeats:
                page, write, t_ns, pending = collapse_runs(page, write, t_ns, pending)
            if len(page):
                yield make_batch(options.vm, t_ns, page, write)
        if pending is not None:
            pending_page, pending_write, pending_t_ns = pending
            yield make_batch(options.vm, pending_t_ns, pending_page, pending_write)


def collapse_runs(page, write, t_ns, pending):
    """Merge runs of equal consecutive pages; the run keeps its first time and is a write if
    any access in it was. The last run is returned as `pending` (it may continue in the next
    chunk) and prepended to the next call."""
    if pending is not None:
        page = np.concatenate([pending[0], page])
        write = np.concatenate([pending[1], write])
        t_ns = np.concatenate([pending[2], t_ns])
    if len(page) == 0:
        return page, write, t_ns, None
    run_start = np.flatnonzero(np.concatenate([[True], page[1:] != page[:-1]]))
    run_write = np.logical_or.reduceat(write, run_start)
    page, t_ns = page[run_start], t_ns[run_start]
    last = slice(len(run_start) - 1, None)
    return page[:-1], run_write[:-1], t_ns[:-1], (page[last], run_write[last], t_ns[last])


def _parse_file(path, shift: int, options: LackeyOptions):
    """Yield (page, write, record_seq, instruction_index) arrays, chunk by chunk."""
    state = np.zeros(3, dtype=np.int64)  # records so far, instruction index, lines so far
    state[1] = -1  # no instruction seen yet
    out_page = np.empty(BATCH_ROWS, dtype=np.uint64)
    out_write = np.empty(BATCH_ROWS, dtype=np.bool_)
    out_seq = np.empty(BATCH_ROWS, dtype=np.int64)
    out_instr = np.empty(BATCH_ROWS, dtype=np.int64)
    carry = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            data = carry + chunk if carry else chunk
            if not chunk:
                if data:
                    raise TraceError(
                        path,
                        f"line {state[2] + 1}",
                        f"expected the line to end with a newline, the file ends after "
                        f"{len(data)} bytes of it (truncated): {data[:60]!r}",
                    )
                return
            complete = data.rfind(b"\n") + 1
            if complete == 0 and len(data) > MAX_LINE_BYTES:
                raise TraceError(
                    path,
                    f"line {state[2] + 1}",
                    f"expected lackey text lines, found {len(data)} bytes without a newline",
                )
            buf = np.frombuffer(data, dtype=np.uint8, count=complete)
            pos = 0
            while pos < complete:
                consumed, n_out, status = _parse_lines(
                    buf[pos:],
                    shift,
                    options.instructions,
                    state,
                    out_page,
                    out_write,
                    out_seq,
                    out_instr,
                )
                if status != _OK:
                    _raise_bad_line(path, data, pos + consumed, int(state[2]) + 1)
                pos += consumed
                if n_out:
                    yield (
                        out_page[:n_out].copy(),
                        out_write[:n_out].copy(),
                        out_seq[:n_out].copy(),
                        out_instr[:n_out].copy(),
                    )
            carry = data[complete:]


def _raise_bad_line(path, data: bytes, line_start: int, line_number: int):
    line_end = data.find(b"\n", line_start)
    text = data[line_start : line_end if line_end >= 0 else None][:80]
    raise TraceError(
        path,
        f"line {line_number}",
        "expected 'I  ADDR,SIZE', ' L ADDR,SIZE', ' S ADDR,SIZE', ' M ADDR,SIZE' (hex address, "
        f"decimal size 1..{MAX_ACCESS_BYTES}) or a valgrind '==PID==' message, got {text!r}",
    )


# Value of each byte as a hex digit, -1 if it is not one (a table: cheaper than branches).
_HEX_DIGIT = np.full(256, -1, dtype=np.int64)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX_DIGIT[_char] = _value
for _value, _char in enumerate(b"ABCDEF"):
    _HEX_DIGIT[_char] = 10 + _value


@numba.njit(cache=True, nogil=True)
def _parse_lines(buf, shift, keep_instructions, state, out_page, out_write, out_seq, out_instr):
    """Parse whole lines of `buf` (which ends with a newline) into accesses.

    Stops early, before a line, when the outputs might overflow. Returns (bytes consumed,
    accesses written, status); on a bad line, status is _BAD_LINE and `consumed` is the
    offset of that line's first byte. `state` (records, instruction index, lines) advances.
    """
    n = buf.shape[0]
    capacity = out_page.shape[0]
    records = state[0]
    instruction = state[1]
    lines = state[2]
    n_out = 0
    pos = 0
    while pos < n:
        line_start = pos
        end = pos
        while buf[end] != 10:  # the caller guarantees a newline at the end of buf
            end += 1
        stop = end
        if stop > line_start and buf[stop - 1] == 13:  # tolerate CRLF
            stop -= 1
        length = stop - line_start
        if length == 0 or (
            length >= 2
            and (
                (buf[line_start] == 61 and buf[line_start + 1] == 61)  # "==pid=="
                or (buf[line_start] == 45 and buf[line_start + 1] == 45)  # "--pid--"
            )
        ):
            lines += 1
            pos = end + 1
            continue
        # Kind: 'I' (73) at column 0, or 'L' (76) 'S' (83) 'M' (77) at column 1.
        if length < 6 or buf[line_start + 2] != 32:
            break
        c0 = buf[line_start]
        c1 = buf[line_start + 1]
        if c0 == 73 and c1 == 32:
            kind = 73
        elif c0 == 32 and (c1 == 76 or c1 == 83 or c1 == 77):
            kind = c1
        else:
            break
        p = line_start + 3
        addr_bits = 0  # int64 bit pattern of the address; 16 hex digits fill it exactly
        digits = 0
        while p < stop and buf[p] != 44:  # ','
            v = _HEX_DIGIT[buf[p]]
            if v < 0 or digits == 16:
                digits = -1
                break
            addr_bits = (addr_bits << 4) | v
            digits += 1
            p += 1
        addr = np.uint64(addr_bits)
        if digits <= 0 or p >= stop:
            break
        p += 1
        size = 0
        size_digits = 0
        while p < stop:
            c = buf[p]
            if c < 48 or c > 57 or size_digits == 6:
                size_digits = -1
                break
            size = size * 10 + (c - 48)
            size_digits += 1
            p += 1
        if size_digits <= 0 or size == 0 or size > MAX_ACCESS_BYTES:
            break
        last = addr + np.uint64(size - 1)
        if last < addr:  # wraps around the address space
            break
        first_page = addr >> np.uint64(shift)
        last_page = last >> np.uint64(shift)
        pages = np.int64(last_page - first_page) + 1
        if kind == 73:
            instruction += 1
            emit = pages if keep_instructions else 0
        elif kind == 77:
            emit = 2 * pages
        else:
            emit = pages
        if n_out + emit > capacity:
            if n_out == 0:  # unreachable with BATCH_ROWS >> 2 * 17 pages; never spin
                break
            pos = line_start
            state[0] = records
            state[1] = instruction - (1 if kind == 73 else 0)
            state[2] = lines
            return pos, n_out, _OK
        if emit:
            # M is a load then a store; each touches its pages in address order.
            passes = 2 if kind == 77 else 1
            for k in range(passes):
                is_write = kind == 83 or (kind == 77 and k == 1)
                page = first_page
                while True:
                    out_page[n_out] = page
                    out_write[n_out] = is_write
                    out_seq[n_out] = records
                    out_instr[n_out] = instruction
                    n_out += 1
                    if page == last_page:
                        break
                    page += np.uint64(1)
        records += 1
        lines += 1
        pos = end + 1
    state[0] = records
    state[1] = instruction
    state[2] = lines
    if pos < n:
        return pos, n_out, _BAD_LINE
    return pos, n_out, _OK
