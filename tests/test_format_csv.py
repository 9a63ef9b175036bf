"""The csv format: documented columns, defaults, round trip, and errors naming the line."""

import numpy as np
import pyarrow as pa
import pytest

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.schema import CANONICAL_SCHEMA, make_batch

CSV = get_format("csv")


def read(path, **options) -> pa.Table:
    return pa.Table.from_batches(
        list(CSV.read(path, CSV.make_options(options))), schema=CANONICAL_SCHEMA
    )


def write_text(tmp_path, text, name="trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_all_columns(tmp_path):
    path = write_text(
        tmp_path,
        "vm,t_ns,page,write,content,file_backed,free\n0,10,7,1,0,false,0\n3,20,8,false,,TRUE,1\n",
    )
    table = read(path)
    assert table.to_pydict() == {
        "vm": [0, 3],
        "t_ns": [10, 20],
        "page": [7, 8],
        "write": [True, False],
        "content": [0, None],
        "file_backed": [False, True],
        "free": [False, True],
    }


def test_minimal_columns_take_vm_option_and_sequence_time(tmp_path):
    path = write_text(tmp_path, "page,write\n5,0\n6,1\n5,0\n")
    table = read(path, vm=4)
    assert table["vm"].to_pylist() == [4, 4, 4]
    assert table["t_ns"].to_pylist() == [0, 1, 2]
    assert table["content"].null_count == 3
    assert table["file_backed"].to_pylist() == [False] * 3


def test_addr_and_op_columns(tmp_path):
    path = write_text(tmp_path, "op,addr\nR,4095\nW,4096\nwrite,8192\nread,0\n")
    table = read(path)
    assert table["page"].to_pylist() == [0, 1, 2, 0]
    assert table["write"].to_pylist() == [False, True, True, False]
    assert read(path, page_size_bytes=8192)["page"].to_pylist() == [0, 0, 1, 0]


def test_sequence_time_continues_across_batches(tmp_path):
    rows = "".join(f"{i % 7},{i % 2}\n" for i in range(5000))
    path = write_text(tmp_path, "page,write\n" + rows)
    batches = list(CSV.read(path, CSV.make_options({"block_size_bytes": 1024})))
    assert len(batches) > 5
    t_ns = pa.Table.from_batches(batches)["t_ns"].to_numpy()
    np.testing.assert_array_equal(t_ns, np.arange(5000))


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n = 3000
    content = pa.array(rng.integers(0, 5, n).astype(np.uint64), mask=rng.random(n) < 0.3)
    original = make_batch(
        rng.integers(0, 3, n),
        np.sort(rng.integers(0, 1 << 62, n).astype(np.uint64)),
        rng.integers(0, 1 << 63, n).astype(np.uint64),
        rng.random(n) < 0.4,
        content=content,
        file_backed=rng.random(n) < 0.2,
        free=rng.random(n) < 0.1,
    )
    path = tmp_path / "rt.csv"
    CSV.write([original.slice(0, 1000), original.slice(1000)], path)
    assert path.read_text().splitlines()[0] == "vm,t_ns,page,write,content,file_backed,free"
    assert read(path, block_size_bytes=4096).equals(pa.Table.from_batches([original]))


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("vm,t_ns,page\n0,1,2\n", "line 1", "exactly one of the columns write and op"),
        ("t_ns,write\n0,1\n", "line 1", "exactly one of the columns page and addr"),
        ("page,addr,write\n1,2,0\n", "line 1", "exactly one of the columns page and addr"),
        ("page,write,tns\n1,0,5\n", "line 1", "unknown column 'tns'"),
        ("page,write\n1,0\n2,yes\n", "line 3", "column 'write'"),
        ("page,op\n1,R\n2,X\n", "line 3", "column 'op'"),
        ("page,write\n1,0\n-2,1\n", "line 3", "column 'page': expected a whole number"),
        ("page,write\n1,0\n\n2,1\n3\n", "line 5", "expected 2 comma-separated columns"),
        ("page,write\n1,0\n2", "line 3", "expected 2 comma-separated columns"),  # truncated
        ("vm,page,write\n70000,1,0\n", "line 2", "column 'vm'"),
        ("page,write\n99999999999999999999999,0\n", "line 2", "column 'page'"),
        ("page,write,content\n1,0,abc\n", "line 2", "column 'content'"),
        ("page,write,file_backed\n1,0,\n", "line 2", "column 'file_backed'"),
        ("t_ns,page,write\n1.5,1,0\n", "line 2", "column 't_ns'"),
    ],
)
def test_bad_input_names_the_line(tmp_path, text, where, what):
    path = write_text(tmp_path, text)
    with pytest.raises(TraceError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message
    assert where in message
    assert what in message


def test_bad_value_deep_in_a_multi_batch_file_names_its_line(tmp_path):
    rows = ["1,0"] * 4000
    rows[3210] = "1,maybe"
    path = write_text(tmp_path, "page,write\n" + "\n".join(rows) + "\n")
    with pytest.raises(TraceError, match="line 3212: column 'write'"):
        read(path, block_size_bytes=2048)


def test_binary_garbage_is_a_trace_error(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(TraceError, match="line 1: expected a CSV header"):
        read(path)


def test_invalid_utf8_in_a_row_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"vm,page,write\n0,1,0\n\x80\x81,1,0\n")
    with pytest.raises(TraceError, match="line 3: expected UTF-8 CSV text"):
        read(path)


@pytest.mark.parametrize("block_size_bytes", [5, 40])
def test_a_line_longer_than_the_block_names_the_option(tmp_path, block_size_bytes):
    # pyarrow says "Empty CSV file or block" (block shorter than the header) or "straddling
    # object" (a later line); both mean the option is too small for this file.
    path = write_text(tmp_path, "page,write\n1,0\n2,1\n" + "0" * 200 + "3,1\n")
    with pytest.raises(TraceError, match=f"block_size_bytes \\({block_size_bytes} bytes\\)"):
        read(path, block_size_bytes=block_size_bytes)
    assert read(path, block_size_bytes=4096).num_rows == 3


def test_hexadecimal_numbers_are_read_and_a_bad_value_is_named_on_its_own_line(tmp_path):
    # Found by a workflow audit: Arrow's cast took 0x numbers but the check that names a
    # bad line did not, so one bad value blamed the first hexadecimal one (line 2).
    rows = "".join(f"0x{4096 * i:x},0\n" for i in range(30))
    path = write_text(tmp_path, "addr,write\n" + rows)
    assert read(path)["page"].to_pylist() == list(range(30))
    path = write_text(tmp_path, "addr,write\n" + rows + "12z,1\n")
    with pytest.raises(TraceError, match=r"line 32: column 'addr': expected a whole number"):
        read(path)


def test_a_bad_content_after_a_hexadecimal_one_is_named_on_its_own_line(tmp_path):
    # Found by an audit: the cast took 0x10 but the search for the bad row did not, so
    # 'zz' on line 3 was blamed on line 2.
    path = write_text(tmp_path, "t_ns,page,write,content\n1,1,0,0x10\n2,2,0,zz\n")
    with pytest.raises(TraceError, match=r"line 3: column 'content': .* got 'zz'"):
        read(path)
    path = write_text(tmp_path, "t_ns,page,write,content\n1,1,0,0x10\n2,2,0,\n")
    assert read(path)["content"].to_pylist() == [16, None]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("block_size_bytes", [64, 1 << 20])
def test_a_line_number_counts_the_empty_lines_before_it(
    tmp_path, end, block_size_bytes, monkeypatch
):
    # Found by an audit: each empty line made the numbers after it one short (pyarrow
    # skips them); 'zz' on line 5 was said to be on line 4.
    import balloonreplay.traces.formats.csv as csv_format

    monkeypatch.setattr(csv_format, "_LINE_SCAN_BYTES", 7)  # CR LF cut between chunks too
    lines = ["t_ns,page,write"] + ["1,10,0", "", "2,11,1", "", "", "3,12,0"] * 5
    for bad, where in (("4,zz,1", "column 'page'"), ("4,13", "expected 3 comma-separated")):
        path = tmp_path / "t.csv"
        path.write_bytes(end.join([*lines, bad, "5,14,0", ""]).encode())
        with pytest.raises(TraceError, match=f"line {len(lines) + 1}: {where}"):
            read(path, block_size_bytes=block_size_bytes)
