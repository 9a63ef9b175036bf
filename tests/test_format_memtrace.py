"""The memtrace format on a real recording of tests/data/touch_pages.c (see tests/data/README.md),
checked against memtrace's own ``report`` and against a fresh recording when the tools exist."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import TEST_DATA

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats import memtrace as memtrace_module

MEMTRACE = get_format("memtrace")
FIXTURE = TEST_DATA / "touch_pages.memtrace.out"
ARRAY_PAGES = list(range(0x403, 0x413))
MEMTRACE_CLI = Path(sys.executable).parent / "memtrace"


def read(path=FIXTURE, **options) -> pa.Table:
    return pa.Table.from_batches(list(MEMTRACE.read(path, MEMTRACE.make_options(options))))


def entry_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, tag) of every entry, walked the slow obvious way."""
    offsets, offset = [], 0
    while offset < len(data):
        tag, length = (
            int.from_bytes(data[offset : offset + 2], "little"),
            int.from_bytes(data[offset + 2 : offset + 4], "little"),
        )
        offsets.append((offset, tag))
        offset += (length + 7) & ~7
    return offsets


def test_hand_counted_accesses():
    table = read()
    # 16 stores, 16 (load, store) pairs, 1 store straddling two pages, 16 loads.
    assert table.num_rows == 66
    assert sorted(set(table["page"].to_pylist())) == ARRAY_PAGES
    assert table["write"].to_numpy().sum() == 34
    straddle = table.slice(48, 2).to_pydict()
    assert straddle["page"] == [0x403, 0x404]
    assert straddle["t_ns"] == [48, 48]  # one access, two pages, one time
    # t_ns is the access sequence number: 65 loads and stores.
    assert table["t_ns"].to_pylist() == list(range(49)) + list(range(48, 65))


@pytest.mark.skipif(not MEMTRACE_CLI.exists(), reason="memtrace CLI not installed")
def test_agrees_with_memtrace_report():
    report = subprocess.run(
        [str(MEMTRACE_CLI), "report", "-i", str(FIXTURE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected_pages, expected_writes = [], []
    for tag, bits, addr in re.findall(r"MT_(LOAD|STORE) uint(\d+)_t \[0x([0-9a-f]+)\]", report):
        first, last = int(addr, 16), int(addr, 16) + int(bits) // 8 - 1
        for page in range(first >> 12, (last >> 12) + 1):
            expected_pages.append(page)
            expected_writes.append(tag == "STORE")
    table = read()
    assert len(expected_pages) == 66
    assert table["page"].to_pylist() == expected_pages
    assert table["write"].to_pylist() == expected_writes


@pytest.mark.skipif(
    not (MEMTRACE_CLI.exists() and shutil.which("gcc")), reason="needs gcc and memtrace"
)
def test_a_fresh_recording_of_the_fixture_program_reads_the_same(tmp_path):
    binary = tmp_path / "touch_pages"
    subprocess.run(
        ["gcc", "-O1", "-static", "-nostdlib", "-fno-stack-protector", "-o", str(binary),
         str(TEST_DATA / "touch_pages.c")],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [str(MEMTRACE_CLI), "record", "--pc-range=0-0xffffffffffffffff:m", str(binary)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    fresh = read(tmp_path / "memtrace.out")
    assert fresh.equals(read())


def test_small_chunks_give_the_same_trace(monkeypatch):
    """Entries straddling chunk boundaries are carried over; full outputs are flushed."""
    expected = read()
    monkeypatch.setattr(memtrace_module, "CHUNK_BYTES", 13)
    monkeypatch.setattr(memtrace_module, "BATCH_ROWS", 1024 + 5)
    batches = list(MEMTRACE.read(FIXTURE, MEMTRACE.make_options()))
    assert len(batches) >= 66 // 5
    assert pa.Table.from_batches(batches).equals(expected)


def test_page_size_option():
    table = read(page_size_bytes=1 << 16, vm=2)
    assert set(table["page"].to_pylist()) == {0x40, 0x41}
    assert set(table["vm"].to_pylist()) == {2}


def corrupt(tmp_path, offset: int, new_bytes: bytes) -> Path:
    data = bytearray(FIXTURE.read_bytes())
    data[offset : offset + len(new_bytes)] = new_bytes
    path = tmp_path / "corrupt.out"
    path.write_bytes(bytes(data))
    return path


def first_entry(tag: int) -> int:
    return next(o for o, t in entry_offsets(FIXTURE.read_bytes()) if t == tag)


@pytest.mark.parametrize(
    ("offset_of", "new_bytes", "what"),
    [
        (lambda: 0, b"\x12\x34", "byte offset 0: expected the 64-bit little-endian memtrace header"),
        (lambda: 0, b"\x4d\x38", "byte offset 0: expected the 64-bit little-endian memtrace header (tag 0x4d38), got a big-endian"),
        (lambda: 0, b"\x34\x4d", "32-bit trace"),
        (lambda: first_entry(0x4D42), b"\x99\x99", "expected an entry tag in 0x4d34..0x4d52, got 0x9999"),
        (lambda: first_entry(0x4D44), b"\x44\x4d\x02\x00", "expected entry length of at least 4"),
        (lambda: first_entry(0x4D41), b"\x41\x4d\x10\x00", "expected entry length of at least 17"),
    ],
)  # fmt: skip
def test_corrupt_entries_name_their_byte_offset(tmp_path, offset_of, new_bytes, what):
    offset = offset_of()
    path = corrupt(tmp_path, offset, new_bytes)
    with pytest.raises(TraceError) as info:
        read(path)
    assert f"{path}: byte offset {offset}: " in str(info.value)
    assert what in str(info.value)


def test_truncated_file_names_the_last_entry(tmp_path):
    data = FIXTURE.read_bytes()
    last_entry, _ = entry_offsets(data)[-1]
    path = tmp_path / "truncated.out"
    path.write_bytes(data[:-5])
    with pytest.raises(TraceError, match=f"byte offset {last_entry}: expected a 24-byte entry"):
        read(path)
    path.write_bytes(data[: last_entry + 2])
    with pytest.raises(
        TraceError, match=f"byte offset {last_entry}: expected a 4-byte entry header"
    ):
        read(path)
    path.write_bytes(data[:3])
    with pytest.raises(TraceError, match="byte offset 0"):
        read(path)


def test_random_garbage_after_a_valid_header_fails_cleanly(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "garbage.out"
    path.write_bytes(FIXTURE.read_bytes()[:24] + rng.integers(0, 256, 100_000, np.uint8).tobytes())
    with pytest.raises(TraceError, match="byte offset 24: expected an entry tag"):
        read(path)
