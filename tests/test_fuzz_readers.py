"""Hostile input (issue 7): every trace reader, the ingest path and `balloonreplay info` end in
a valid trace or the reader's own TraceError naming the file, the place and what was expected.

Each file a test builds is read the way `balloonreplay ingest` reads it (reader, then the
checks and dense remapping of `canonical_batches`), without writing the output; a few cases
go through the command line to show what the user sees. The small valid fixtures in
tests/data (tests/data/README.md) are truncated at every offset and mutated byte by byte;
hypothesis builds structured garbage for each format (huge numbers, negative sizes, wrong
column types, missing columns, bad footer metadata).

`CASES_TRIED` counts the cases each test ran; `test_report_cases_tried` prints the total
(``pytest -s -k cases_tried``) for the issue's note.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import TEST_DATA
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from balloonreplay.cli import main
from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats.csv import KNOWN_COLUMNS
from balloonreplay.traces.formats.drmemtrace import RECORD as DRMEM_RECORD
from balloonreplay.traces.formats.memtrace import TAG_LOAD, TAG_STORE
from balloonreplay.traces.formats.oracle_general import RECORD as ORACLE_RECORD
from balloonreplay.traces.info import trace_info
from balloonreplay.traces.ingest import canonical_batches, ingest
from balloonreplay.traces.schema import (
    CANONICAL_SCHEMA,
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
)

FIXTURES = {
    "lackey": TEST_DATA / "touch_pages.lackey",
    "memtrace": TEST_DATA / "touch_pages.memtrace.out",
    "csv": TEST_DATA / "touch_pages.csv",
    "parquet": TEST_DATA / "touch_pages.parquet",
    "oracle-general": TEST_DATA / "touch_pages.oracleGeneral.bin",
}
DRMEMTRACE_FIXTURE = TEST_DATA / "threadsig_head"
FILE_FORMATS = sorted(FIXTURES)
CASES_TRIED: Counter = Counter()
# Each example overwrites the files it reads, so sharing the scratch directory between
# examples is safe.
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# A full ingest (written, then read back by `info`) for every WRITE_EVERY-th truncation;
# the others stop before writing, which is where most of the time would go.
WRITE_EVERY = 16


@pytest.fixture
def scratch(tmp_path):
    """A scratch directory in memory when the machine has one: these tests write and delete
    tens of thousands of small files."""
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    yield path
    if path != tmp_path:
        shutil.rmtree(path, ignore_errors=True)


def read_as_ingest(format_name: str, path: Path, options=None, write=True) -> int | TraceError:
    """Ingest `path` as `balloonreplay ingest` does; return the accesses of the valid trace
    written, or the TraceError (after checking that it is clear and that no output, not
    even a temporary file, was left behind). Any other exception fails the test.

    With `write=False`, the reader and every check of the ingest path run, but nothing is
    written."""
    if not write:
        return read_without_writing(format_name, path, options)
    out = path.parent / "ingested.parquet"
    out.unlink(missing_ok=True)
    if format_name == "parquet":
        check_info(path)  # `balloonreplay info` reads any Parquet file, not only ingested ones
    try:
        meta = ingest(path, out, format_name=format_name, options=options or {})
    except TraceError as exc:
        assert_clear(exc, path)
        assert not out.exists()
        assert not list(path.parent.glob(".ingested.parquet.*"))
        return exc
    info = trace_info(out)
    # The footer's "accesses" counts rows; info tells frees (no accesses) apart.
    assert info.accesses + info.frees == meta.accesses == pq.ParquetFile(out).metadata.num_rows
    for vm in info.vms:  # dense: the remapping table covers every page id
        assert vm.distinct_pages == meta.pages_per_vm[vm.vm]
    return meta.accesses


def read_without_writing(format_name: str, path: Path, options=None) -> int | TraceError:
    fmt = get_format(format_name)
    try:
        reader_options = fmt.make_options(options or {})
        fmt.read_metadata(path, reader_options)
        rows = 0
        for batch in canonical_batches(fmt.read(path, reader_options), source_path=path):
            assert batch.schema == CANONICAL_SCHEMA
            rows += batch.num_rows
        return rows
    except TraceError as exc:
        assert_clear(exc, path)
        return exc


def check_info(path: Path) -> None:
    try:
        trace_info(path)
    except TraceError as exc:
        assert_clear(exc, path)


def assert_clear(exc: TraceError, path: Path) -> None:
    """The message names the file (or, for a drmemtrace directory, a file in it) and says
    what was expected, on one line."""
    message = str(exc)
    assert exc.path is not None and Path(exc.path).is_relative_to(path), message
    assert message.startswith(exc.path), message
    assert exc.expected.strip(), message
    assert "\n" not in message, message


def expected_rows(format_name: str) -> int:
    rows = read_as_ingest(format_name, FIXTURES[format_name], write=False)
    assert isinstance(rows, int) and rows > 0
    return rows


# ---------------------------------------------------------------- truncation at every offset


@pytest.mark.parametrize("format_name", FILE_FORMATS)
def test_truncation_at_every_offset(scratch, format_name):
    data = FIXTURES[format_name].read_bytes()
    full_rows = expected_rows(format_name)
    path = scratch / FIXTURES[format_name].name
    outcomes = Counter()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        result = read_as_ingest(format_name, path, write=cut % WRITE_EVERY == 0)
        if isinstance(result, TraceError):
            outcomes["error"] += 1
        else:
            # A truncated file that still reads is a prefix of the trace, never more.
            assert result <= full_rows, cut
            outcomes["valid"] += 1
    CASES_TRIED[f"truncate {format_name}"] += len(data)
    assert outcomes["error"] > 0


def test_truncation_of_drmemtrace_zips_and_chunks_at_every_offset(scratch):
    """Both the zip file itself (its directory is at the end) and the records inside it."""
    threads = sorted(DRMEMTRACE_FIXTURE.glob("*.trace.zip"))
    full_rows = read_as_ingest("drmemtrace", DRMEMTRACE_FIXTURE, write=False)
    assert isinstance(full_rows, int) and full_rows > 0
    trace_dir = scratch / "trace"
    trace_dir.mkdir()
    for other in threads[1:]:
        (trace_dir / other.name).write_bytes(other.read_bytes())
    victim = trace_dir / threads[0].name
    data = threads[0].read_bytes()
    chunk = zipfile.ZipFile(threads[0]).read("chunk.0000")
    for cut in range(len(data)):
        victim.write_bytes(data[:cut])
        result = read_as_ingest("drmemtrace", trace_dir, write=cut % WRITE_EVERY == 0)
        assert isinstance(result, TraceError)
    for cut in range(len(chunk)):
        victim.write_bytes(zip_of({"chunk.0000": chunk[:cut]}))
        result = read_as_ingest("drmemtrace", trace_dir, write=cut % WRITE_EVERY == 0)
        assert isinstance(result, TraceError) or result <= full_rows
        if cut % DRMEM_RECORD.itemsize:
            assert isinstance(result, TraceError) and "truncated" in str(result)
    CASES_TRIED["truncate drmemtrace"] += len(data) + len(chunk)


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# ---------------------------------------------------------------- random bytes and mutations


@pytest.mark.parametrize("format_name", FILE_FORMATS)
@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(scratch, format_name, data):
    path = scratch / f"random.{format_name}"
    path.write_bytes(data)
    read_as_ingest(format_name, path)
    CASES_TRIED[f"random bytes {format_name}"] += 1


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8)


def mutate(data: bytes, edits) -> bytes:
    """Overwrite bytes: each edit is (offset modulo the length, new value)."""
    out = bytearray(data)
    for offset, value in edits:
        out[offset % len(out)] = value
    return bytes(out)


@pytest.mark.parametrize("format_name", sorted(set(FILE_FORMATS) - {"parquet"}))
@FUZZ
@given(edits=EDITS)
def test_mutated_fixture(scratch, format_name, edits):
    path = scratch / FIXTURES[format_name].name
    path.write_bytes(mutate(FIXTURES[format_name].read_bytes(), edits))
    read_as_ingest(format_name, path)
    CASES_TRIED[f"mutated {format_name}"] += 1


@settings(FUZZ, max_examples=300)
@given(edits=EDITS)
# Found by this test (each raised a raw pyarrow or json error before): a corrupt page header
# (OSError from thrift), columns of unequal length (ArrowInvalid), footer metadata that is
# not UTF-8 (UnicodeDecodeError) or not JSON (JSONDecodeError), a bad type width in the
# schema (ArrowNotImplementedError).
@example(edits=[(4, 0)])
@example(edits=[(44, 0)])
@example(edits=[(814, 255)])
@example(edits=[(1391, 0)])
@example(edits=[(1753, 65)])
def test_mutated_parquet(scratch, edits):
    path = scratch / "touch_pages.parquet"
    path.write_bytes(mutate(FIXTURES["parquet"].read_bytes(), edits))
    read_as_ingest("parquet", path)
    CASES_TRIED["mutated parquet"] += 1


DRMEM_OPTIONS = st.sampled_from(
    [{}, {"instructions": True}, {"threads_as_vms": True}, {"block_records": 7}]
)


@FUZZ
@given(edits=EDITS, inside=st.booleans(), options=DRMEM_OPTIONS)
# Found by this test: corrupt deflate data raised zlib.error, and an unsupported zip
# version NotImplementedError, instead of a TraceError.
@example(edits=[(28, 255)], inside=False, options={})
@example(edits=[(616, 255)], inside=False, options={})
def test_mutated_drmemtrace(scratch, edits, inside, options):
    """Bytes of the zip itself (zip and deflate structure), or of the records inside it."""
    threads = sorted(DRMEMTRACE_FIXTURE.glob("*.trace.zip"))
    trace_dir = scratch / "trace"
    trace_dir.mkdir(exist_ok=True)
    for thread in threads[1:]:
        (trace_dir / thread.name).write_bytes(thread.read_bytes())
    victim = trace_dir / threads[0].name
    if inside:
        chunk = zipfile.ZipFile(threads[0]).read("chunk.0000")
        victim.write_bytes(zip_of({"chunk.0000": mutate(chunk, edits)}))
    else:
        victim.write_bytes(mutate(threads[0].read_bytes(), edits))
    read_as_ingest("drmemtrace", trace_dir, options)
    CASES_TRIED["mutated drmemtrace"] += 1


# ---------------------------------------------------------------- structured garbage per format

CSV_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["", "true", "FALSE", "R", "w", "read", "1e3", "0x10", " 7", "nan", "-0", "1.5"]
        + [str(2**64), str(2**64 - 1), "65535", "65536", '"3"', '"a,b"', "\x00"]
    ),
    st.text(max_size=6),
)


@FUZZ
@given(
    columns=st.lists(st.sampled_from((*KNOWN_COLUMNS, "tns", "")), min_size=1, max_size=6),
    rows=st.lists(st.lists(CSV_VALUES, max_size=7), max_size=12),
    options=st.sampled_from([{}, {"page_size_bytes": 1}, {"block_size_bytes": 64}]),
)
@example(columns=["page", "write"], rows=[["-1", "1"]], options={})
@example(columns=["page", "write"], rows=[[str(2**64), "1"]], options={})
@example(columns=["vm", "page", "write"], rows=[["65536", "1", "1"]], options={})
def test_csv_text(scratch, columns, rows, options):
    path = scratch / "t.csv"
    text = ",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = read_as_ingest("csv", path, options)
    if isinstance(result, int):  # -1 is no valid value in any column
        assert "-1" not in {value for row in rows for value in row}
    CASES_TRIED["csv text"] += 1


HEX = st.one_of(
    st.integers(0, 2**72).map(lambda a: f"{a:x}"), st.text("0123456789abcdefxX-", max_size=20)
)
LACKEY_LINES = st.one_of(
    st.builds(
        lambda kind, addr, size: f"{kind}{addr},{size}",
        st.sampled_from(["I  ", " L ", " S ", " M ", " X ", "L ", "I ", "  "]),
        HEX,
        st.one_of(st.integers(-5, 2**20).map(str), st.text("0123456789-", max_size=8)),
    ),
    st.sampled_from(["==123== msg", "--123-- x", "", "\r", "I  ,4", " L 10,"]),
    st.text(max_size=30),
)


@FUZZ
@given(
    lines=st.lists(LACKEY_LINES, max_size=12),
    final_newline=st.booleans(),
    options=st.sampled_from(
        [{}, {"instructions": True, "collapse_repeats": True}, {"instructions_per_ns": 0.5}]
        + [{"page_size_bytes": 1}]
    ),
)
@example(lines=[" L ffffffffffffffff,16"], final_newline=True, options={})  # wraps around
@example(lines=[" S 10000000000000000,1"], final_newline=True, options={})  # 17 hex digits
@example(lines=[" L 1000,65537"], final_newline=True, options={})  # bigger than any access
def test_lackey_text(scratch, lines, final_newline, options):
    path = scratch / "t.lackey"
    text = "\n".join(lines) + ("\n" if final_newline else "")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    read_as_ingest("lackey", path, options)
    CASES_TRIED["lackey text"] += 1


def memtrace_entry(tag: int, length: int, insn_seq: int, addr: int, body_bytes: int) -> bytes:
    """`u16 tag, u16 len, u32 insn_seq, u64 addr` then `body_bytes` zeros: a length that
    disagrees with the bytes present is part of the garbage."""
    return struct.pack("<HHIQ", tag, length, insn_seq, addr) + bytes(body_bytes)


MEMTRACE_ENTRIES = st.builds(
    memtrace_entry,
    st.one_of(
        st.sampled_from([TAG_LOAD, TAG_STORE, 0x4D40, 0x4D52, 0x4D53]), st.integers(0, 0xFFFF)
    ),
    st.one_of(st.integers(0, 40), st.integers(0, 0xFFFF)),
    st.integers(0, 2**32 - 1),
    st.one_of(st.integers(0, 2**64 - 1), st.just(2**64 - 1)),
    st.sampled_from([0, 4, 8, 16]),
)


@FUZZ
@given(
    entries=st.lists(MEMTRACE_ENTRIES, max_size=10),
    page_size=st.sampled_from([1, 4096, 1 << 20]),
)
def test_memtrace_entries(scratch, entries, page_size):
    path = scratch / "memtrace.out"
    path.write_bytes(FIXTURES["memtrace"].read_bytes()[:0x18] + b"".join(entries))
    read_as_ingest("memtrace", path, {"page_size_bytes": page_size})
    CASES_TRIED["memtrace entries"] += 1


def test_memtrace_huge_accesses_with_tiny_pages_stay_in_bounds(scratch):
    """Regression: the parser kept room for 17 pages per access (4 KiB pages), so with
    1-byte pages a run of 64 KiB accesses wrote past the end of its output buffers."""
    length = 0xFFF8  # the largest 8-byte-aligned entry: a 65,512-byte load
    entries = 20
    entry = struct.pack("<HHIQ", TAG_LOAD, length, 0, 0) + bytes(length - 16)
    path = scratch / "memtrace.out"
    path.write_bytes(FIXTURES["memtrace"].read_bytes()[:0x18] + entry * entries)
    rows = read_as_ingest("memtrace", path, {"page_size_bytes": 1})
    assert rows == entries * (length - 16)


ORACLE_RECORDS = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.one_of(st.integers(0, 50), st.integers(0, 2**64 - 1)),
        st.integers(0, 2**32 - 1),
        st.one_of(st.just(-1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 20)),
    ),
    max_size=20,
)


@FUZZ
@given(
    records=ORACLE_RECORDS,
    options=st.sampled_from(
        [{}, {"split_vms": True}, {"time": "clock"}, {"time": "clock", "split_vms": True}]
    ),
)
def test_oracle_general_records(scratch, records, options):
    path = scratch / "t.oracleGeneral.bin"
    path.write_bytes(np.array(records, dtype=ORACLE_RECORD).tobytes())
    read_as_ingest("oracle-general", path, options)
    CASES_TRIED["oracle-general records"] += 1


DRMEM_RECORDS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([0, 1, 10, 25, 28, 29, 47, 49]), st.integers(0, 0xFFFF)),
        st.one_of(st.sampled_from([0, 1, 2, 8, 0xFFFF]), st.integers(0, 0xFFFF)),
        st.one_of(st.integers(0, 2**20), st.integers(0, 2**64 - 1), st.just(2**64 - 1)),
    ),
    max_size=20,
)


@FUZZ
@given(
    threads=st.lists(DRMEM_RECORDS, min_size=1, max_size=3),
    header_first=st.booleans(),
    options=st.sampled_from(
        [{}, {"instructions": True, "threads_as_vms": True}, {"page_size_bytes": 1}]
    ),
)
# Timestamps at the ends of the u64 range (time arithmetic must neither wrap nor fail).
@example(
    threads=[[(28, 2, 2**64 - 1), (0, 8, 0)], [(28, 2, 0), (1, 8, 4096), (28, 2, 5)]],
    header_first=True,
    options={},
)
def test_drmemtrace_records(scratch, threads, header_first, options):
    trace_dir = scratch / "trace"
    trace_dir.mkdir(exist_ok=True)
    for old in trace_dir.iterdir():
        old.unlink()
    for index, records in enumerate(threads):
        if header_first:
            records = [(25, 0, 5), *records]
        data = np.array(records, dtype=DRMEM_RECORD).tobytes()
        (trace_dir / f"t{index}.trace.zip").write_bytes(zip_of({"chunk.0000": data}))
    result = read_as_ingest("drmemtrace", trace_dir, options)
    if any(records and records[0][0] != 25 for records in threads) and not header_first:
        assert isinstance(result, TraceError)  # every thread starts with its header
    CASES_TRIED["drmemtrace records"] += 1


# ---------------------------------------------------------------- Parquet: types, columns, footer


def column_values(kind: str, rows: int):
    nullable = st.none() | st.integers(0, 3)
    values = {
        "uint64": st.integers(0, 2**64 - 1) | st.integers(0, 4),
        "int64": st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 4),
        "int8": st.integers(-128, 127),
        "float64": st.floats(allow_nan=True) | st.sampled_from([0.0, 1.5, 2.0**64]),
        "string": st.text(max_size=4) | st.sampled_from(["1", "-1", "true"]),
        "bool": st.booleans(),
        "nullable": nullable,
    }[kind]
    return st.lists(values, min_size=rows, max_size=rows)


PA_TYPES = {
    "uint64": pa.uint64(),
    "int64": pa.int64(),
    "int8": pa.int8(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "nullable": pa.uint16(),
}


@st.composite
def hostile_tables(draw) -> pa.Table:
    rows = draw(st.integers(0, 6))
    columns = {}
    names = list(CANONICAL_SCHEMA.names) + ["extra"]
    for name in names:
        optional = name not in REQUIRED_COLUMNS
        kind = draw(
            st.sampled_from(["missing", *PA_TYPES])
            if optional or draw(st.booleans())
            else st.just("uint64")
        )
        if name in REQUIRED_COLUMNS and kind == "missing" and draw(st.integers(0, 3)):
            kind = "uint64"  # mostly present, so the checks behind the column check run too
        if kind == "missing":
            continue
        columns[name] = pa.array(draw(column_values(kind, rows)), type=PA_TYPES[kind])
    if draw(st.booleans()) and "t_ns" in columns:
        columns["t_ns"] = pa.array(np.arange(rows, dtype=np.uint64))  # often time-ordered
    return pa.table(columns) if columns else pa.table({"x": pa.array([], pa.int8())})


@settings(FUZZ, max_examples=200)
@given(table=hostile_tables(), row_group_rows=st.sampled_from([1, 3, 1 << 20]))
@example(table=pa.table({"vm": [0], "t_ns": [0], "page": [-1], "write": [True]}), row_group_rows=1)
@example(table=pa.table({"vm": [0], "t_ns": [0.5], "page": [1], "write": [True]}), row_group_rows=1)
@example(table=pa.table({"vm": [0], "t_ns": [0], "write": [True]}), row_group_rows=1)
@example(table=pa.table({"vm": [0], "t_ns": [0], "page": ["7"], "write": [1]}), row_group_rows=1)
# Regression: Arrow's cast read any non-zero number as true in a boolean column.
@example(
    table=pa.table({"vm": [0], "t_ns": [0], "page": [0], "write": [0], "file_backed": [0.5]}),
    row_group_rows=1,
)
# Regression: the up-front column check saw the canonical schema instead of the file's
# whenever the table was empty, so an empty file with a missing column passed it.
@example(
    table=pa.table({name: pa.array([], pa.uint64()) for name in ("vm", "t_ns", "page")}),
    row_group_rows=1,
)
# Regression: info's accesses leave frees out, the footer's count them as rows.
@example(
    table=pa.table({"vm": [0], "t_ns": [0], "page": [0], "write": [0], "free": [1]}),
    row_group_rows=1,
)
# Regression: a value holding a line break, quoted in the error, split it over two lines.
@example(table=pa.table({"vm": ["\n"], "t_ns": [0], "page": [0], "write": [0]}), row_group_rows=1)
def test_parquet_types_and_columns(scratch, table, row_group_rows):
    path = scratch / "t.parquet"
    pq.write_table(table, path, row_group_size=row_group_rows)
    result = read_as_ingest("parquet", path)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        assert isinstance(result, TraceError) and "missing required column" in str(result)
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            if table.num_rows and isinstance(result, int):
                values = table.column(name).to_numpy(zero_copy_only=False)
                assert np.all(values == np.floor(values))  # a fraction is never cut silently
    CASES_TRIED["parquet tables"] += 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
METADATA_FIELDS = (
    "source", "parameters", "seed", "page_size_bytes", "config_pages", "vm_names",
    "vm_images", "dense", "pages_per_vm", "accesses", "lru_filter_pages", "version",
)  # fmt: skip


@FUZZ
@given(
    footer=st.one_of(
        st.binary(max_size=40),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(METADATA_FIELDS), JSON_VALUES, max_size=4).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
@example(footer=b"\xff\xfe")  # not UTF-8: raised UnicodeDecodeError
@example(footer=b'{"source": ')  # not JSON: raised JSONDecodeError
@example(footer=b'{"config_pages": 5}')  # raised TypeError (len of an int) at ingest
def test_parquet_footer_metadata(scratch, footer):
    table = pq.read_table(FIXTURES["parquet"])
    table = table.replace_schema_metadata({METADATA_KEY: footer})
    path = scratch / "t.parquet"
    pq.write_table(table, path)
    result = read_as_ingest("parquet", path)
    if isinstance(result, TraceError):
        assert "metadata" in str(result)
    CASES_TRIED["parquet footers"] += 1


def test_info_on_an_empty_trace_is_a_trace_error(scratch):
    """Regression: `balloonreplay info` on a valid Parquet file with no rows failed in
    numpy (concatenating nothing)."""
    path = scratch / "empty.parquet"
    pq.write_table(CANONICAL_SCHEMA.empty_table(), path)
    with pytest.raises(TraceError, match="empty"):
        trace_info(path)


# ---------------------------------------------------------------- what the user sees


def claim_rows(parquet_bytes: bytes, rows: int, claimed: int) -> bytes:
    """The file with every i64 thrift field holding `rows` in its footer (the file's and the
    row group's num_rows, the columns' num_values) rewritten to claim `claimed`."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    footer_length = struct.unpack("<I", parquet_bytes[-8:-4])[0]
    footer = parquet_bytes[-8 - footer_length : -8]
    field = b"\x16"  # compact protocol: field id delta 1, type i64
    old = field + varint(rows * 2)  # i64 values are zigzag-encoded
    assert old in footer
    footer = footer.replace(old, field + varint(claimed * 2))
    return parquet_bytes[: -8 - footer_length] + footer + struct.pack("<I", len(footer)) + b"PAR1"


def run_cli(*args: str, memory_limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit():  # in the child only
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

    return subprocess.run(
        [str(Path(sys.executable).parent / "balloonreplay"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit if memory_limit_bytes else None,
    )


def assert_one_error_line(output: str, path: Path) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), output
    assert "Traceback" not in output


def test_a_footer_claiming_a_trillion_rows_allocates_nothing(scratch):
    """`balloonreplay ingest` and `info` on a file whose footer claims 10^12 rows end in one
    error line under a 2 GiB address-space limit, not in an attempt to allocate them."""
    rows = pq.ParquetFile(FIXTURES["parquet"]).metadata.num_rows
    path = scratch / "claims.parquet"
    path.write_bytes(claim_rows(FIXTURES["parquet"].read_bytes(), rows, 10**12))
    out = scratch / "out.parquet"
    for args in (["ingest", str(path), "-o", str(out), "-q"], ["info", str(path), "-q"]):
        result = run_cli(*args, memory_limit_bytes=2 << 30)
        assert result.returncode == 1, result.stderr
        assert_one_error_line(result.stderr, path)
        assert not out.exists()
    CASES_TRIED["cli"] += 2


@pytest.mark.parametrize(
    ("format_name", "cut"),
    [("lackey", 1000), ("memtrace", 1001), ("csv", 700), ("parquet", 2000)]
    + [("oracle-general", 100)],
)
def test_cli_ingest_of_a_truncated_file_prints_one_error_line(scratch, format_name, cut):
    source = scratch / FIXTURES[format_name].name
    source.write_bytes(FIXTURES[format_name].read_bytes()[:cut])
    out = scratch / "out" / "trace.parquet"
    args = ["ingest", str(source), "-f", format_name, "-o", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, source)
    assert result.stdout == ""
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary file
    CASES_TRIED["cli"] += 1


def test_cli_info_on_a_corrupt_trace_prints_one_error_line(scratch):
    path = scratch / "t.parquet"
    path.write_bytes(mutate(FIXTURES["parquet"].read_bytes(), [(44, 0)]))
    result = CliRunner().invoke(main, ["info", str(path), "-q"])
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, path)
    CASES_TRIED["cli"] += 1


def test_report_cases_tried():
    """Runs last in this file: the number of hostile inputs tried, for the issue's note
    (``pytest -s tests/test_fuzz_readers.py``)."""
    for kind, count in sorted(CASES_TRIED.items()):
        print(f"{kind:32s} {count}")
    print(f"{'total':32s} {sum(CASES_TRIED.values())}")
