"""The lackey format on a real trace of tests/data/touch_pages.c, whose pages are counted by hand
(tests/data/README.md): data pages 0x403..0x412 (its 16-page array), code page 0x401."""

import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from conftest import TEST_DATA

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats import lackey as lackey_module

LACKEY = get_format("lackey")
FIXTURE = TEST_DATA / "touch_pages.lackey"
ARRAY_PAGES = list(range(0x403, 0x413))
CODE_PAGE = 0x401


def read(path=FIXTURE, **options) -> pa.Table:
    return pa.Table.from_batches(list(LACKEY.read(path, LACKEY.make_options(options))))


def assert_time_non_decreasing(table):
    assert (np.diff(table["t_ns"].to_numpy().astype(np.int64)) >= 0).all()


def test_data_accesses_hand_counted():
    table = read()
    pages = table["page"].to_numpy()
    writes = table["write"].to_numpy()
    # 16 stores + 16 modifies (load and store) + 1 straddling store (2 pages) + 16 loads.
    assert table.num_rows == 16 + 2 * 16 + 2 + 16
    assert sorted(set(pages.tolist())) == ARRAY_PAGES
    assert writes.sum() == 16 + 16 + 2
    np.testing.assert_array_equal(pages[:16], ARRAY_PAGES)  # the store loop
    assert writes[:16].all()
    # Each modify is a load then a store of the same page at the same time.
    modifies = table.slice(16, 32).to_pydict()
    assert modifies["page"][0::2] == modifies["page"][1::2] == ARRAY_PAGES
    assert modifies["write"][0::2] == [False] * 16
    assert modifies["write"][1::2] == [True] * 16
    assert modifies["t_ns"][0::2] == modifies["t_ns"][1::2]
    # The straddling store touches pages 0 and 1 of the array, in address order, at one time.
    straddle = table.slice(48, 2).to_pydict()
    assert straddle["page"] == [0x403, 0x404]
    assert straddle["write"] == [True, True]
    assert straddle["t_ns"][0] == straddle["t_ns"][1]
    np.testing.assert_array_equal(pages[50:], ARRAY_PAGES)  # the load loop
    assert not writes[50:].any()
    assert (table["vm"].to_numpy() == 0).all()
    assert_time_non_decreasing(table)


@pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("valgrind")), reason="needs gcc and valgrind"
)
def test_a_fresh_trace_of_the_fixture_program_reads_the_same(tmp_path):
    binary = tmp_path / "touch_pages"
    subprocess.run(
        ["gcc", "-O1", "-static", "-nostdlib", "-fno-stack-protector", "-o", str(binary),
         str(TEST_DATA / "touch_pages.c")],
        check=True,
    )  # fmt: skip
    trace = tmp_path / "fresh.lackey"
    subprocess.run(
        ["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={trace}", str(binary)],
        check=True,
    )
    assert read(trace, instructions=True).equals(read(instructions=True))


def test_time_is_the_record_sequence_number():
    # The first store is the 7th record: after the 6 instructions 0x401000..0x401014.
    assert read()["t_ns"][0].as_py() == 6
    assert read(vm=3)["vm"].to_pylist() == [3] * 66


def test_instructions_kept_on_request():
    table = read(instructions=True)
    is_code = table["page"].to_numpy() == CODE_PAGE
    assert is_code.sum() == 301  # valgrind's "guest instrs: 301"
    assert table.num_rows == 66 + 301
    assert not table["write"].to_numpy()[is_code].any()
    assert table["t_ns"].to_pylist() == sorted(table["t_ns"].to_pylist())
    assert table["t_ns"].to_pylist()[:7] == [0, 1, 2, 3, 4, 5, 6]


def test_instructions_per_ns_times_accesses_by_instruction_count():
    # The first store belongs to the 6th instruction (index 5).
    assert read(instructions_per_ns=1.0)["t_ns"][0].as_py() == 5
    assert read(instructions_per_ns=0.5)["t_ns"][0].as_py() == 10
    assert read(instructions_per_ns=2.0)["t_ns"][0].as_py() == 2
    table = read(instructions_per_ns=1.0, instructions=True)
    assert table["t_ns"].to_pylist()[:7] == [0, 1, 2, 3, 4, 5, 5]
    assert table["t_ns"].to_pylist()[-1] == 300  # the last of 301 instructions
    assert_time_non_decreasing(table)


def test_collapse_repeats():
    table = read(collapse_repeats=True)
    pages = table["page"].to_numpy()
    assert (pages[1:] != pages[:-1]).all()
    # Each modify's load+store collapses to one write; nothing else repeats a page.
    assert table.num_rows == 16 + 16 + 2 + 16
    assert table["write"].to_pylist()[16:32] == [True] * 16
    full = read()
    assert table["t_ns"].to_pylist()[16:32] == full["t_ns"].to_pylist()[16:48:2]
    assert_time_non_decreasing(table)


def test_collapse_run_is_a_write_if_any_access_was_and_spans_chunks(tmp_path, monkeypatch):
    path = tmp_path / "runs.lackey"
    path.write_text(
        " L 00001000,4\n S 00001008,4\n L 00001010,4\n L 00002000,8\n L 00002008,8\n L 00001000,4\n"
    )
    monkeypatch.setattr(lackey_module, "CHUNK_BYTES", 5)  # one line per chunk, or less
    table = read(path, collapse_repeats=True)
    assert table.to_pydict()["page"] == [1, 2, 1]
    assert table.to_pydict()["write"] == [True, False, False]
    assert table.to_pydict()["t_ns"] == [0, 3, 5]


def test_small_chunks_and_batches_give_the_same_trace(monkeypatch):
    expected = read(instructions=True)
    monkeypatch.setattr(lackey_module, "CHUNK_BYTES", 37)
    monkeypatch.setattr(lackey_module, "BATCH_ROWS", 40)
    batches = list(LACKEY.read(FIXTURE, LACKEY.make_options({"instructions": True})))
    assert len(batches) > 5
    assert pa.Table.from_batches(batches).equals(expected)


def test_valgrind_chatter_blank_lines_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "chatter.lackey"
    path.write_bytes(
        b"==12== Lackey, an example Valgrind tool\r\n--12-- a warning, with, commas\n\n"
        b"I  00401000,5\r\n S 7ffffffff000,8\n"
    )
    table = read(path)
    assert table.to_pydict()["page"] == [0x7FFFFFFFF]
    assert table.to_pydict()["t_ns"] == [1]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("hello world", "garbage"),
        (" X 00403000,1", "unknown kind"),
        (" S 0040zz00,1", "bad hex"),
        (" S 00403000,0", "size zero"),
        (" S 00403000,99999999", "oversized"),
        (" S 00403000,-1", "negative size"),
        (" S 11112222333344445,1", "address wider than 64 bits"),
        (" S 00403000", "no size"),
        ("I 00401000,2", "one space"),
        (" L ffffffffffffffff,2", "wraps around the address space"),
    ],
)
def test_bad_line_names_its_line_number(tmp_path, line, why):
    lines = FIXTURE.read_text().splitlines(keepends=True)
    lines[99] = line + "\n"
    path = tmp_path / "bad.lackey"
    path.write_text("".join(lines))
    with pytest.raises(TraceError) as info:
        read(path)
    assert f"{path}: line 100: expected 'I  ADDR,SIZE'" in str(info.value), why


def test_truncated_last_line(tmp_path):
    text = FIXTURE.read_text()
    cut = text.index(" L 00404000,1")
    path = tmp_path / "truncated.lackey"
    path.write_text(text[: cut + 7])
    line = text[:cut].count("\n") + 1
    with pytest.raises(TraceError, match=f"line {line}: expected the line to end with a newline"):
        read(path)


def test_binary_garbage_fails_fast(tmp_path):
    path = tmp_path / "garbage.lackey"
    path.write_bytes(np.random.default_rng(0).integers(11, 256, 300_000, dtype=np.uint8).tobytes())
    with pytest.raises(TraceError, match="line 1"):
        read(path)


def test_page_size_must_be_a_power_of_two():
    with pytest.raises(TraceError, match="power of two"):
        read(page_size_bytes=3000)
