"""libCacheSim's oracleGeneral format: reader, writer (with next_access_vtime), and libCacheSim
itself reading what the writer wrote."""

import numpy as np
import pyarrow as pa
import pytest
from conftest import shared_data_dir
from oracles import lru_misses

from balloonreplay.errors import BalloonreplayError, TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats.oracle_general import RECORD
from balloonreplay.traces.io import write_trace
from balloonreplay.traces.schema import make_batch

ORACLE = get_format("oracle-general")
CLOUDPHYSICS = shared_data_dir() / "cloudPhysicsIO.oracleGeneral.bin"


def read(path, **options) -> pa.Table:
    return pa.Table.from_batches(list(ORACLE.read(path, ORACLE.make_options(options))))


def brute_force_next_vtime(obj_ids) -> list[int]:
    """1-based position of each request's next request to the same object, or -1."""
    result = []
    for i, obj in enumerate(obj_ids):
        later = [j for j in range(i + 1, len(obj_ids)) if obj_ids[j] == obj]
        result.append(later[0] + 1 if later else -1)
    return result


def random_trace(n=600, vms=3, pages=40, seed=0):
    rng = np.random.default_rng(seed)
    return make_batch(
        rng.integers(0, vms, n),
        np.sort(rng.integers(0, 50, n)).astype(np.uint64) * 1_000_000_000,
        rng.zipf(1.3, n).astype(np.uint64) % pages,
        rng.random(n) < 0.3,
    )


def test_reads_cloudphysics():
    table = read(CLOUDPHYSICS, vm=2)
    records = np.fromfile(CLOUDPHYSICS, RECORD)
    assert table.num_rows == len(records) == 113_872
    np.testing.assert_array_equal(table["page"].to_numpy(), records["obj_id"])
    assert table["t_ns"].to_pylist()[:3] == [0, 1, 2]
    assert set(table["vm"].to_pylist()) == {2}
    assert table["write"].to_numpy().sum() == 0
    clocked = read(CLOUDPHYSICS, time="clock")
    np.testing.assert_array_equal(
        clocked["t_ns"].to_numpy(), records["clock_time"].astype(np.uint64) * 1_000_000_000
    )


def test_writer_reproduces_libcachesims_own_file(tmp_path):
    """Rewriting the CloudPhysics trace gives back libCacheSim's clock, ids and next-access
    times exactly, with the backward pass done in many small chunks."""
    options = ORACLE.make_options({"time": "clock", "batch_rows": 1000})
    out = tmp_path / "rewritten.oracleGeneral.bin"
    ORACLE.write(ORACLE.read(CLOUDPHYSICS, options), out, options)
    original, rewritten = np.fromfile(CLOUDPHYSICS, RECORD), np.fromfile(out, RECORD)
    for field in ("clock_time", "obj_id", "next_access_vtime"):
        np.testing.assert_array_equal(rewritten[field], original[field])
    assert (rewritten["obj_size"] == 4096).all()


@pytest.mark.parametrize("chunk_records", [1, 7, 1 << 20])
def test_round_trip_with_vms_and_next_access(tmp_path, chunk_records):
    trace = random_trace()
    out = tmp_path / "rt.oracleGeneral"
    options = ORACLE.make_options({"batch_rows": chunk_records})
    ORACLE.write([trace.slice(0, 250), trace.slice(250)], out, options)
    records = np.fromfile(out, RECORD)
    vm = trace.column("vm").to_numpy().astype(np.uint64)
    page = trace.column("page").to_numpy()
    np.testing.assert_array_equal(records["obj_id"], (vm << np.uint64(48)) | page)
    assert records["next_access_vtime"].tolist() == brute_force_next_vtime(
        records["obj_id"].tolist()
    )
    back = read(out, split_vms=True, time="clock")
    assert back["vm"].to_pylist() == trace.column("vm").to_pylist()
    assert back["page"].to_pylist() == trace.column("page").to_pylist()
    assert back["t_ns"].to_pylist() == trace.column("t_ns").to_pylist()


def test_libcachesim_reads_the_written_file(tmp_path):
    import libcachesim as lcs

    trace = random_trace(n=5000, vms=2, pages=300, seed=3)
    out = tmp_path / "for_lcs.oracleGeneral.bin"
    ORACLE.write([trace], out)
    obj_ids = np.fromfile(out, RECORD)["obj_id"].tolist()
    for cache_pages in (10, 100):
        reader = lcs.TraceReader(
            str(out), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=True)
        )
        miss_ratio, _ = lcs.LRU(cache_size=cache_pages).process_trace(reader)
        # No reader.close(): libcachesim 0.3.5 crashes at exit if it is called.
        assert miss_ratio == pytest.approx(lru_misses(obj_ids, cache_pages) / len(obj_ids))


def test_sniff_goes_by_the_name_so_a_truncated_file_gets_the_readers_error(tmp_path):
    # Found by an audit: a cut *.oracleGeneral.bin was "could not recognise the format"
    # when sniffed, while -f oracle-general named the byte offset where it is cut.
    from balloonreplay.traces.formats import sniff_format

    assert ORACLE.sniff(CLOUDPHYSICS)
    odd = tmp_path / "x.oracleGeneral.bin"
    odd.write_bytes(b"\0" * 25)
    assert sniff_format(odd).name == "oracle-general"
    with pytest.raises(TraceError, match="byte offset 24: expected a whole 24-byte record"):
        read(odd)
    assert not ORACLE.sniff(tmp_path / "")
    unnamed = tmp_path / "x.bin"
    unnamed.write_bytes(CLOUDPHYSICS.read_bytes()[:240])
    assert not ORACLE.sniff(unnamed)
    # A canonical trace named for the format it came from is still Parquet.
    canonical = tmp_path / "w.oracleGeneral.parquet"
    write_trace([make_batch(0, [0, 1], [5, 6], [False, True])], canonical)
    assert not ORACLE.sniff(canonical)
    assert sniff_format(canonical).name == "parquet"


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.oracleGeneral.bin"
    path.write_bytes(CLOUDPHYSICS.read_bytes()[: 24 * 10 + 7])
    with pytest.raises(TraceError, match="byte offset 240: expected a whole 24-byte record"):
        read(path)


def test_garbage_fails_the_next_access_check(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 24 * 100, np.uint8).tobytes())
    with pytest.raises(TraceError, match=r"byte offset \d+: expected next_access_vtime -1"):
        read(path)


def test_backward_next_access_is_an_error(tmp_path):
    records = np.zeros(5, RECORD)
    records["obj_id"] = [1, 2, 1, 2, 1]
    records["next_access_vtime"] = [3, 4, 5, 2, -1]  # record 4 points back at record 2
    path = tmp_path / "back.oracleGeneral"
    records.tofile(path)
    with pytest.raises(TraceError, match=f"byte offset {3 * 24 + 16}:.*own vtime 4, got 2"):
        read(path)


def test_bad_time_option():
    with pytest.raises(BalloonreplayError, match="option 'time' must be one of sequence, clock"):
        read(CLOUDPHYSICS, time="wallclock")


def test_writer_rejects_pages_that_do_not_fit_48_bits(tmp_path):
    batch = make_batch(0, [0], [1 << 48], [False])
    out = tmp_path / "big.oracleGeneral"
    with pytest.raises(TraceError, match="below 2\\*\\*48"):
        ORACLE.write([batch], out)
    assert not out.exists()


def test_a_next_access_no_trace_could_have_is_refused(tmp_path):
    # Found by an audit: 240,000 bytes of CSV text passed as 10,000 records of garbage,
    # their next_access_vtime all far in the future (above 10**17).
    text = tmp_path / "text.oracleGeneral.bin"
    text.write_bytes((shared_data_dir() / "cloudPhysicsIO.csv").read_bytes()[:240_000])
    with pytest.raises(
        TraceError, match=r"byte offset 16: .*2\.\.1099511627776, at own vtime 1, got \d{18}"
    ):
        read(text)
    records = np.zeros(4, RECORD)
    records["obj_id"] = [1, 2, 1, 2]
    records["next_access_vtime"] = [3, 4, 2, -1]  # record 3's next access is before it
    path = tmp_path / "back.oracleGeneral"
    records.tofile(path)
    with pytest.raises(TraceError, match=f"byte offset {2 * 24 + 16}: .*own vtime 3, got 2"):
        read(path)
    # A piece cut from a longer trace points past its end; INT64_MAX is libCacheSim's
    # other "never": both are read.
    records["next_access_vtime"] = [3, 4, 10**9, (1 << 63) - 1]
    records.tofile(path)
    assert read(path).num_rows == 4
