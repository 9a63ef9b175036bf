"""Page-access traces as CSV text, one access per line, with a header line.

Columns (by header name, in any order; every other name is an error, so a typo such as
``tns`` is reported instead of silently ignored):

=============== ======== =====================================================================
column          required meaning
=============== ======== =====================================================================
``vm``          no       VM index, 0..65535; absent: every row belongs to option ``vm``
``t_ns``        no       access time in ns, a whole number, non-decreasing within a VM;
                         absent: the row's sequence number in the file (0, 1, 2, ...)
``page``        one of   page number (or any page id), a whole number
``addr``        the two  byte address instead; page = addr >> log2(option ``page_size_bytes``)
``write``       one of   1/0 or true/false (any case): store or load
``op``          the two  ``R``/``W`` (or ``read``/``write``, any case) instead of ``write``
``content``     no       content hash after the access, a whole number; 0 = the zero page;
                         empty = unknown
``file_backed`` no       1/0 or true/false: a page-cache page rather than anonymous memory
``free``        no       1/0 or true/false: the guest frees the page (not an access)
=============== ======== =====================================================================

Numbers are decimal, or hexadecimal after ``0x`` (at most 16 digits, as tools print
addresses). Empty lines are skipped. Errors name the line as an editor numbers it (the
header is line 1, empty lines count).

The writer emits all seven canonical columns (``vm,t_ns,page,write,content,file_backed,free``), so a
canonical trace round-trips through CSV unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import (
    PAGE_SIZE,
    VM_INDEX,
    Bounds,
    TraceFormat,
    option,
    reader_page_shift,
)
from balloonreplay.traces.io import atomic_path
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata, conform_batch, make_batch
from balloonreplay.units import PAGE_SIZE_BYTES

KNOWN_COLUMNS = ("vm", "t_ns", "page", "addr", "write", "op", "content", "file_backed", "free")
UINT16_MAX = (1 << 16) - 1
UINT64_MAX = (1 << 64) - 1
# What Arrow's cast to uint64 takes: decimal digits, or 0x and up to 16 hex digits.
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}")


def _whole_number(text: str) -> int | None:
    if _DECIMAL.fullmatch(text):
        return int(text)
    return int(text, 16) if _HEX.fullmatch(text) else None


_ANY_ROW = re.compile(r"Row #(\d+)")
_BAD_ROW = re.compile(r"Row #(\d+): Expected (\d+) columns, got (\d+): (.*)", re.DOTALL)
_TRUE_WORDS = ("1", "true")
_FALSE_WORDS = ("0", "false")
_READ_OPS = ("r", "read")
_WRITE_OPS = ("w", "write")


@dataclasses.dataclass
class CsvOptions:
    vm: int = option(0, "VM index of every row when the file has no vm column", bounds=VM_INDEX)
    page_size_bytes: int = option(
        PAGE_SIZE_BYTES, "page size in bytes, used with an addr column", bounds=PAGE_SIZE
    )
    block_size_bytes: int = option(
        16 << 20,
        "bytes of text parsed per record batch (each block holds whole lines)",
        bounds=Bounds(1, (1 << 31) - 1),  # pyarrow's block size is an int32
    )


class CsvFormat(TraceFormat):
    name = "csv"
    description = (
        "CSV with a header: [vm,] [t_ns,] page|addr, write|op [, content] [, file_backed] [, free]"
    )
    Options = CsvOptions
    writer_options = ()  # the writer writes every column as it is

    def sniff(self, path: str | os.PathLike) -> bool:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            first_line = fh.readline(4096)
        try:
            names = [n.strip().strip('"') for n in first_line.decode("utf-8").strip().split(",")]
        except UnicodeDecodeError:
            return False
        return (
            all(n in KNOWN_COLUMNS for n in names)
            and ("page" in names or "addr" in names)
            and ("write" in names or "op" in names)
        )

    def read_metadata(self, path, options: CsvOptions) -> TraceMetadata:
        return TraceMetadata(
            source=self.name,
            parameters=dataclasses.asdict(options),
            page_size_bytes=options.page_size_bytes,
        )

    def read(self, path, options: CsvOptions) -> Iterator[pa.RecordBatch]:
        shift = reader_page_shift(options.page_size_bytes, path)
        with open(path, "rb") as fh:
            header = fh.readline(1 << 16)
        try:
            header.decode("utf-8")
        except UnicodeDecodeError:
            header = b"\0"
        if b"\0" in header or not header.strip():
            raise TraceError(path, "line 1", "expected a CSV header line naming the columns")
        try:
            # Every column is read as text and converted here, batch by batch, so that a bad
            # value can be traced to its line (pyarrow's own conversion errors name no row).
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=options.block_size_bytes
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in KNOWN_COLUMNS},
                    strings_can_be_null=False,
                ),
            )
            names = reader.schema.names
            _check_header(path, names)
            rows_before = 0
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield _convert(path, batch, rows_before, options, shift)
                rows_before += batch.num_rows
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) or "Empty CSV file or block" in str(exc):
                # The header is not empty (checked above), so the block cut a line.
                raise TraceError(
                    path,
                    None,
                    f"expected every line to fit in one block of option block_size_bytes "
                    f"({options.block_size_bytes} bytes); a line is longer: raise the option",
                ) from None
            # pyarrow counts rows from 1 at the header, skipping empty lines.
            found = _BAD_ROW.search(str(exc))
            if found:
                row, expected, got, text = found.groups()
                raise TraceError(
                    path,
                    f"line {_line_number(path, int(row))}",
                    f"expected {expected} comma-separated columns as in the header, "
                    f"got {got}: {text[:80]!r}",
                ) from None
            row = _ANY_ROW.search(str(exc))
            raise TraceError(
                path,
                f"line {_line_number(path, int(row.group(1)))}" if row else None,
                f"expected UTF-8 CSV text ({exc})",
            ) from None

    def write(self, batches: Iterable[pa.RecordBatch], path, options=None) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write((",".join(CANONICAL_SCHEMA.names) + "\n").encode())
            for batch in batches:
                if batch.schema != CANONICAL_SCHEMA:
                    batch = conform_batch(batch, path)
                if batch.num_rows:
                    pacsv.write_csv(
                        batch, out, pacsv.WriteOptions(include_header=False, quoting_style="none")
                    )


def _check_header(path, names: list[str]) -> None:
    def fail(problem: str):
        raise TraceError(
            path,
            "line 1",
            f"{problem}; expected a header with page or addr, write or op, and optionally "
            "vm, t_ns, content, file_backed, free",
        )

    for name in names:
        if name not in KNOWN_COLUMNS:
            fail(f"unknown column {name!r}")
    if len(set(names)) != len(names):
        fail("a column is named twice")
    if ("page" in names) == ("addr" in names):
        fail("exactly one of the columns page and addr is required")
    if ("write" in names) == ("op" in names):
        fail("exactly one of the columns write and op is required")


_LINE_SCAN_BYTES = 1 << 20


def _line_number(path, nonempty_line: int) -> int:
    """The line number, as an editor shows it, of the file's `nonempty_line`-th non-empty
    line (pyarrow skips empty lines and counts the rest, so its row numbers and ours fall
    one short after each). Counted from the raw bytes only when an error names a line, so
    that reading pays nothing for it. Lines end at LF, CR LF or CR, as pyarrow's do."""
    lines_before = nonempty_before = 0
    after_line_end = True  # the file's start counts as one: an empty first line
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_LINE_SCAN_BYTES)
            # A CR LF cut between two chunks is one line end, not two.
            while chunk.endswith(b"\r") and (extra := fh.read(1)):
                chunk += extra
            if not chunk:
                break
            one_end = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            ends = np.frombuffer(one_end, np.uint8) == ord("\n")
            follows_end = np.empty_like(ends)
            follows_end[0] = after_line_end
            follows_end[1:] = ends[:-1]
            nonempty_ends = np.flatnonzero(ends & ~follows_end)
            wanted = nonempty_line - nonempty_before
            if wanted <= len(nonempty_ends):
                return lines_before + int(ends[: nonempty_ends[wanted - 1] + 1].sum())
            nonempty_before += len(nonempty_ends)
            lines_before += int(ends.sum())
            after_line_end = bool(ends[-1])
    return lines_before + 1  # the last line, which has no line end


def _first_bad(values: list, is_good) -> int:
    for index, value in enumerate(values):
        if not is_good(value):
            return index
    raise AssertionError("no bad value found")


def _convert(
    path, batch: pa.RecordBatch, rows_before: int, options: CsvOptions, shift: int
) -> pa.RecordBatch:
    """Text columns of one batch → a canonical batch; errors name the line of the bad value."""
    n = batch.num_rows
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))

    def fail(column: str, index: int, expected: str):
        # Row i of this batch is the (rows_before + i + 2)th non-empty line (the header is
        # the first).
        value = columns[column][index].as_py()
        raise TraceError(
            path,
            f"line {_line_number(path, rows_before + index + 2)}",
            f"column {column!r}: expected {expected}, got {value!r}",
        )

    def whole_numbers(column: str, max_value: int) -> np.ndarray:
        text = columns[column]
        expected = f"a whole number in 0..{max_value} (decimal, or hexadecimal after 0x)"
        try:
            values = pc.cast(text, pa.uint64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # The same rule as the cast's, so the line named is the one the cast refused.
            index = _first_bad(
                text.to_pylist(),
                lambda v: (number := _whole_number(v)) is not None and number <= UINT64_MAX,
            )
            fail(column, index, expected)
        too_big = np.flatnonzero(values > max_value)
        if too_big.size:
            fail(column, int(too_big[0]), expected)
        return values

    def flags(column: str, true_words, false_words) -> np.ndarray:
        lowered = pc.utf8_lower(columns[column])
        is_true = pc.is_in(lowered, pa.array(true_words)).to_numpy(zero_copy_only=False)
        is_false = pc.is_in(lowered, pa.array(false_words)).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~(is_true | is_false))
        if bad.size:
            fail(column, int(bad[0]), " or ".join(true_words + false_words))
        return is_true

    vm = whole_numbers("vm", UINT16_MAX) if "vm" in columns else options.vm
    if "t_ns" in columns:
        t_ns = whole_numbers("t_ns", UINT64_MAX)
    else:
        t_ns = np.arange(rows_before, rows_before + n, dtype=np.uint64)
    if "page" in columns:
        page = whole_numbers("page", UINT64_MAX)
    else:
        page = whole_numbers("addr", UINT64_MAX) >> np.uint64(shift)
    if "write" in columns:
        write = flags("write", _TRUE_WORDS, _FALSE_WORDS)
    else:
        write = flags("op", _WRITE_OPS, _READ_OPS)
    content = None
    if "content" in columns:
        text = columns["content"]
        unknown = pc.equal(text, "")
        text = pc.if_else(unknown, pa.scalar(None, pa.string()), text)
        try:
            content = pc.cast(text, pa.uint64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # The cast's rule (0x numbers too), so the line named is the one it refused.
            index = _first_bad(
                text.to_pylist(),
                lambda v: v is None or ((n := _whole_number(v)) is not None and n <= UINT64_MAX),
            )
            fail(
                "content",
                index,
                f"empty or a whole number in 0..{UINT64_MAX} (decimal, or hexadecimal after 0x)",
            )
    file_backed = (
        flags("file_backed", _TRUE_WORDS, _FALSE_WORDS) if "file_backed" in columns else None
    )
    free = flags("free", _TRUE_WORDS, _FALSE_WORDS) if "free" in columns else None
    return make_batch(vm, t_ns, page, write, content=content, file_backed=file_backed, free=free)
