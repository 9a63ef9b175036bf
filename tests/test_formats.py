"""Format plug-ins as a whole: registration, sniffing, and agreement across encodings.

Each format's own behaviour and bad-input handling are in tests/test_format_<name>.py.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import TEST_DATA, shared_data_dir

from balloonreplay.cli import main
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
