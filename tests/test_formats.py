"""Format plug-ins as a whole: registration, sniffing, and agreement across encodings.

Each format's own behaviour and bad-input handling are in tests/test_format_<name>.py.
"""

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import TEST_DATA, shared_data_dir

from balloonreplay.cli import main
from balloonreplay.errors import BalloonreplayError
from balloonreplay.traces.formats import available_formats, get_format, sniff_format
from balloonreplay.traces.schema import CANONICAL_SCHEMA

BUILT_INS = ("parquet", "csv", "lackey", "memtrace", "drmemtrace", "oracle-general")


def read_table(format_name, path, **options) -> pa.Table:
    fmt = get_format(format_name)
    batches = list(fmt.read(path, fmt.make_options(options)))
    for batch in batches:
        assert batch.schema == CANONICAL_SCHEMA
    return pa.Table.from_batches(batches, schema=CANONICAL_SCHEMA)


def test_every_built_in_format_is_registered_with_a_description_and_default_options():
    installed = available_formats()
    for name in BUILT_INS:
        assert name in installed
        fmt = get_format(name)
        assert fmt.name == name
        assert fmt.description
        fmt.make_options()  # every option has a default


def test_cli_lists_every_format_and_marks_writers():
    result = CliRunner().invoke(main, ["formats"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line[:1] != " "}
    for name in BUILT_INS:
        assert name in lines
    assert "[read/write]" in lines["csv"]
    assert "[read/write]" in lines["oracle-general"]
    assert "[read]" in lines["lackey"]


# Each reader option out of its range, with what the error must say. Before the options
# declared their bounds, these gave an OverflowError traceback (vm), pyarrow's ValueError
# (parquet batch_rows) or "the trace is empty" (oracle-general batch_rows,
# drmemtrace block_records and max_records_per_thread), or were accepted (oracle-general
# page_size_bytes=0).
BAD_OPTIONS = [
    ("csv", "vm=70000", "'vm' must be 0..65535, got 70000"),
    ("csv", "block_size_bytes=0", "'block_size_bytes' must be 1..2147483647"),
    ("lackey", "vm=65536", "'vm' must be 0..65535"),
    ("lackey", "vm=1.5", "'vm' expects a whole number, got '1.5'"),
    ("lackey", "instructions_per_ns=0", "'instructions_per_ns' must be > 0 and <= 1e+15, got 0.0"),
    ("lackey", "instructions_per_ns=nan", "'instructions_per_ns' must be > 0 and <= 1e+15"),
    ("lackey", "instructions_per_ns=inf", "'instructions_per_ns' must be > 0 and <= 1e+15"),
    ("lackey", "page_size_bytes=-4096", "'page_size_bytes' must be 1..1073741824, got -4096"),
    ("csv", "page_size_bytes=18446744073709551616", "'page_size_bytes' must be 1..1073741824"),
    ("memtrace", "vm=-1", "'vm' must be 0..65535, got -1"),
    ("drmemtrace", "vm=70000", "'vm' must be 0..65535"),
    ("drmemtrace", "batch_rows=0", "'batch_rows' must be 1..2147483647, got 0"),
    ("drmemtrace", "block_records=0", "'block_records' must be 1..2147483647"),
    ("drmemtrace", "max_records_per_thread=0", "'max_records_per_thread' must be 1..4611686"),
    ("oracle-general", "vm=70000", "'vm' must be 0..65535"),
    ("oracle-general", "batch_rows=0", "'batch_rows' must be 1..2147483647"),
    ("oracle-general", "batch_rows=9223372036854775808", "'batch_rows' must be 1..2147483647"),
    ("oracle-general", "time=wall", "'time' must be one of sequence, clock, got 'wall'"),
    ("oracle-general", "page_size_bytes=0", "'page_size_bytes' must be 1..4294967295"),
    ("parquet", "batch_rows=-1", "'batch_rows' must be 1..2147483647, got -1"),
]


@pytest.mark.parametrize(("format_name", "setting", "message"), BAD_OPTIONS)
def test_a_reader_option_out_of_range_is_refused_naming_it(format_name, setting, message):
    fmt = get_format(format_name)
    with pytest.raises(BalloonreplayError, match=re.escape(message)):
        fmt.make_options([setting])
    # The same value in a config mapping (as YAML gives it, already a number) too.
    key, text = setting.split("=")
    value = None if text in ("nan", "inf") else (float(text) if "." in text else text)
    if value is not None and not isinstance(value, str):
        with pytest.raises(BalloonreplayError, match=f"'{key}'"):
            fmt.make_options({key: value})


@pytest.mark.parametrize(
    "source",
    [
        TEST_DATA / "touch_pages.csv",
        TEST_DATA / "touch_pages.lackey",
        TEST_DATA / "touch_pages.oracleGeneral.bin",
    ],
)
def test_cli_refuses_an_option_out_of_range_before_reading(tmp_path, source):
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        main, ["ingest", str(source), "--opt", "vm=70000", "-o", str(out), "--vm-mem", "64p"]
    )
    assert result.exit_code != 0
    assert "option 'vm' must be 0..65535, got 70000" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_options_made_by_hand_are_checked_before_a_read():
    fmt = get_format("lackey")
    with pytest.raises(BalloonreplayError, match="plug-in 'lackey'.*'vm' must be 0..65535"):
        next(iter(fmt.read(TEST_DATA / "touch_pages.lackey", fmt.Options(vm=70000))))
    with pytest.raises(BalloonreplayError, match="'vm' expects a whole number, got '3'"):
        next(iter(fmt.read(TEST_DATA / "touch_pages.lackey", fmt.Options(vm="3"))))


def test_options_take_numpy_numbers_and_follow_their_annotation():
    import dataclasses

    from balloonreplay.traces.formats import option, parse_options

    assert get_format("csv").make_options({"vm": np.int64(3)}).vm == 3

    @dataclasses.dataclass
    class Options:  # a plug-in's float option whose default is written as an int
        rate: float = option(1, "a rate")
        count: int = option(2, "a count")

    assert parse_options(Options, ["rate=0.5"], context="x").rate == 0.5
    assert parse_options(Options, {"rate": 0.5}, context="x").rate == 0.5
    with pytest.raises(BalloonreplayError, match="'count' expects a whole number, got 2.5"):
        parse_options(Options, {"count": 2.5}, context="x")


def test_option_bounds_edges_are_accepted():
    assert get_format("csv").make_options(["vm=65535", "block_size_bytes=1"]).vm == 65535
    assert (
        get_format("drmemtrace")
        .make_options(["max_records_per_thread=none"])
        .max_records_per_thread
        is None
    )
    assert get_format("lackey").make_options({"instructions_per_ns": 1}).instructions_per_ns == 1


def test_cli_formats_shows_what_each_bounded_option_takes():
    result = CliRunner().invoke(main, ["formats"])
    assert result.exit_code == 0, result.output
    vm_lines = [line for line in result.output.splitlines() if line.strip().startswith("vm=")]
    assert len(vm_lines) == 5 and all(line.endswith("[0..65535]") for line in vm_lines)
    assert "[sequence or clock]" in result.output


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (TEST_DATA / "touch_pages.lackey", "lackey"),
        (TEST_DATA / "touch_pages.memtrace.out", "memtrace"),
        (shared_data_dir() / "drmemtrace.threadsig.x86_64", "drmemtrace"),
        (shared_data_dir() / "cloudPhysicsIO.oracleGeneral.bin", "oracle-general"),
    ],
)
def test_sniff_recognises_real_files(path, expected):
    assert sniff_format(path).name == expected


def test_sniff_recognises_a_canonical_csv(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("vm,t_ns,page,write\n0,0,1,1\n")
    assert sniff_format(path).name == "csv"


def test_lackey_and_memtrace_agree_on_the_same_program():
    """Both tools traced the same binary: the same data accesses in the same order."""
    lackey = read_table("lackey", TEST_DATA / "touch_pages.lackey")
    memtrace = read_table("memtrace", TEST_DATA / "touch_pages.memtrace.out")
    assert lackey.num_rows == memtrace.num_rows == 66
    assert lackey["page"].to_pylist() == memtrace["page"].to_pylist()
    assert lackey["write"].to_pylist() == memtrace["write"].to_pylist()


def test_cloudphysics_encodings_agree():
    """oracleGeneral, the csv's lbn column and the txt hold the same request sequence."""
    data = shared_data_dir()
    oracle = read_table("oracle-general", data / "cloudPhysicsIO.oracleGeneral.bin")
    csv_lbn = pd.read_csv(data / "cloudPhysicsIO.csv")["lbn"].to_numpy(np.uint64)
    txt_ids = np.loadtxt(data / "cloudPhysicsIO.txt", dtype=np.uint64)
    pages = oracle["page"].to_numpy()
    assert len(pages) == len(csv_lbn) == len(txt_ids) == 113_872
    np.testing.assert_array_equal(pages, csv_lbn)
    np.testing.assert_array_equal(pages, txt_ids)


def test_the_csv_and_parquet_descriptions_name_every_column_they_read():
    # Found by an audit: `free` was read by both but missing from their descriptions and
    # from the README's table of formats.
    from balloonreplay.traces.formats.csv import KNOWN_COLUMNS

    readme = (TEST_DATA.parents[1] / "README.md").read_text()
    csv_row = next(line for line in readme.splitlines() if line.startswith("| `csv` |"))
    for fmt, columns in (("csv", KNOWN_COLUMNS), ("parquet", CANONICAL_SCHEMA.names)):
        description = get_format(fmt).description
        for column in columns:
            assert re.search(rf"\b{column}\b", description), (fmt, column)
            if fmt == "csv":
                assert re.search(rf"\b{column}\b", csv_row), column
