"""The drmemtrace format: timing and merging on hand-made threads, counts on the real sample in
../shared/data (checked against a direct numpy count), and bad input."""

import zipfile

import numpy as np
import pyarrow as pa
import pytest
from conftest import shared_data_dir

from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats.drmemtrace import INSTRUCTION_FETCH_TYPES, RECORD

DRMEMTRACE = get_format("drmemtrace")
SAMPLE = shared_data_dir() / "drmemtrace.threadsig.x86_64"
HEADER, READ, WRITE, INSTR, THREAD, MARKER, TIMESTAMP = 25, 0, 1, 10, 22, 28, 2


def read(path, **options) -> pa.Table:
    return pa.Table.from_batches(list(DRMEMTRACE.read(path, DRMEMTRACE.make_options(options))))


def write_thread(directory, name, records, chunks=1, compression=zipfile.ZIP_DEFLATED):
    """A thread zip holding `records` ((type, size, addr) tuples) split over `chunks` members."""
    array = np.array(records, dtype=RECORD)
    with zipfile.ZipFile(directory / f"{name}.trace.zip", "w", compression) as archive:
        for index, part in enumerate(np.array_split(array, chunks)):
            archive.writestr(f"chunk.{index:04d}", part.tobytes())
    return directory / f"{name}.trace.zip"


def two_threads(directory, chunks=1):
    """Thread a: stamps at 1000 µs (record 3) and 1001 µs (record 7): 250 ns per record.
    Thread b: stamps at 999 µs (record 2) and 1002 µs (record 4): 1500 ns per record.
    The trace starts at 999 µs, b's first stamp."""
    write_thread(
        directory,
        "a",
        [
            (HEADER, 0, 5), (THREAD, 4, 1), (24, 4, 1),
            (MARKER, TIMESTAMP, 1000),  # 3: t = 1000 ns
            (READ, 8, 0x1000),  # 4: 1250
            (WRITE, 8, 0x2000),  # 5: 1500
            (INSTR, 3, 0x5000),  # 6: 1750
            (MARKER, TIMESTAMP, 1001),  # 7: 2000
            (READ, 4, 0x3FFE),  # 8: 2250, crosses into page 4 (after the last stamp: 250/record)
            (23, 4, 1),
        ],
        chunks=chunks,
    )  # fmt: skip
    write_thread(
        directory,
        "b",
        [
            (HEADER, 0, 5),
            (READ, 8, 0x7000),  # 1: before the first stamp: takes it, t = 0
            (MARKER, TIMESTAMP, 999),  # 2: 0
            (WRITE, 8, 0x9000),  # 3: 1500
            (MARKER, TIMESTAMP, 1002),  # 4: 3000
            (READ, 8, 0x9008),  # 5: 4500
        ],
        chunks=chunks,
    )  # fmt: skip
    return directory


def test_timestamps_interpolate_and_threads_merge_by_time(tmp_path):
    table = read(two_threads(tmp_path)).to_pydict()
    assert table["page"] == [7, 1, 2, 9, 3, 4, 9]
    assert table["t_ns"] == [0, 1250, 1500, 1500, 2250, 2250, 4500]  # tie: thread a first
    assert table["write"] == [False, False, True, True, False, False, False]
    assert set(table["vm"]) == {0}


def test_threads_as_vms(tmp_path):
    table = read(two_threads(tmp_path), threads_as_vms=True).to_pydict()
    assert table["vm"] == [1, 0, 0, 1, 0, 0, 1]
    assert table["t_ns"] == [0, 1250, 1500, 1500, 2250, 2250, 4500]
    meta = DRMEMTRACE.read_metadata(tmp_path, DRMEMTRACE.make_options({"threads_as_vms": True}))
    assert meta.vm_names == ["a", "b"]


def test_instruction_fetches_on_request(tmp_path):
    table = read(two_threads(tmp_path), instructions=True).to_pydict()
    assert table["page"] == [7, 1, 2, 9, 5, 3, 4, 9]
    assert table["t_ns"][4] == 1750


def test_chunks_and_small_blocks_give_the_same_trace(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir()
    split.mkdir()
    expected = read(two_threads(whole))
    two_threads(split, chunks=3)
    assert read(split, block_records=2, batch_rows=1).equals(expected)


def count_accesses(zip_path, max_records=None, instructions=False):
    """Data accesses (and fetches) of one thread, counted directly; crossing ones count twice."""
    with zipfile.ZipFile(zip_path) as archive:
        records = np.concatenate(
            [np.frombuffer(archive.read(n), RECORD) for n in sorted(archive.namelist())]
        )
    records = records[:max_records]
    kinds = [READ, WRITE] + (INSTRUCTION_FETCH_TYPES.tolist() if instructions else [])
    accesses = records[np.isin(records["type"], kinds)]
    first = accesses["addr"] >> np.uint64(12)
    last = (accesses["addr"] + accesses["size"].astype(np.uint64) - np.uint64(1)) >> np.uint64(12)
    return len(accesses) + int((first != last).sum())


def test_real_sample_full_read():
    """All 21 threads, 61.6 million records: 32,631,544 data accesses (2 of them cross a page
    boundary) on 87 distinct data pages, in non-decreasing time."""
    rows = writes = 0
    pages = set()
    previous_t_ns = 0
    for batch in DRMEMTRACE.read(SAMPLE, DRMEMTRACE.make_options()):
        t_ns = batch.column("t_ns").to_numpy()
        assert t_ns[0] >= previous_t_ns and (np.diff(t_ns.astype(np.int64)) >= 0).all()
        previous_t_ns = t_ns[-1]
        rows += batch.num_rows
        writes += int(batch.column("write").to_numpy(zero_copy_only=False).sum())
        pages.update(np.unique(batch.column("page").to_numpy()).tolist())
    assert rows == 32_631_544 + 2
    assert writes == 17_411_740
    assert len(pages) == 87


def test_real_sample_prefix_per_thread_counts():
    limit = 200_000
    table = read(SAMPLE, threads_as_vms=True, max_records_per_thread=limit)
    files = sorted(SAMPLE.glob("*.trace.zip"))
    vm = table["vm"].to_numpy()
    t_ns = table["t_ns"].to_numpy().astype(np.int64)
    assert (np.diff(t_ns) >= 0).all()  # globally time-ordered, hence per VM too
    counts = np.bincount(vm, minlength=len(files))
    assert len(files) == 21
    for index, path in enumerate(files):
        assert counts[index] == count_accesses(path, limit), path.name


def test_real_sample_prefix_with_instructions():
    limit = 100_000
    table = read(SAMPLE, threads_as_vms=True, instructions=True, max_records_per_thread=limit)
    counts = np.bincount(table["vm"].to_numpy())
    for index, path in enumerate(sorted(SAMPLE.glob("*.trace.zip"))[:3]):
        assert counts[index] == count_accesses(path, limit, instructions=True)


def test_not_a_directory(tmp_path):
    with pytest.raises(TraceError, match="expected a directory"):
        read(tmp_path / "nothing")


def test_empty_directory(tmp_path):
    with pytest.raises(TraceError, match="found none"):
        read(tmp_path)


def test_not_a_zip(tmp_path):
    (tmp_path / "t.trace.zip").write_bytes(b"not a zip at all")
    with pytest.raises(TraceError, match="t.trace.zip: expected a zip of chunk.NNNN files"):
        read(tmp_path)


def test_zip_without_chunks(tmp_path):
    with zipfile.ZipFile(tmp_path / "t.trace.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(TraceError, match="expected chunk.NNNN members"):
        read(tmp_path)


def test_truncated_record(tmp_path):
    path = write_thread(tmp_path, "t", [(HEADER, 0, 5), (MARKER, TIMESTAMP, 1), (READ, 8, 64)])
    with zipfile.ZipFile(path, "w") as archive:
        data = np.array([(HEADER, 0, 5), (READ, 8, 64)], RECORD).tobytes()
        archive.writestr("chunk.0000", data + b"\1\2\3\4\5")
    with pytest.raises(TraceError, match="chunk.0000 byte offset 24: expected a whole 12-byte"):
        read(tmp_path)


def test_missing_header(tmp_path):
    write_thread(tmp_path, "t", [(READ, 8, 64), (READ, 8, 64)])
    with pytest.raises(TraceError, match="chunk.0000 byte offset 0: expected the header record"):
        read(tmp_path)


def test_unknown_record_type(tmp_path):
    write_thread(tmp_path, "t", [(HEADER, 0, 5), (READ, 8, 64), (77, 8, 64)], chunks=1)
    with pytest.raises(TraceError, match="chunk.0000 byte offset 24: expected a record type 0..49"):
        read(tmp_path)


def test_corrupt_zip_data(tmp_path):
    path = write_thread(
        tmp_path, "t", [(HEADER, 0, 5)] + [(READ, 8, 64)] * 100, compression=zipfile.ZIP_STORED
    )
    data = bytearray(path.read_bytes())
    data[data.index(b"chunk.0000") + 10 + 12 * 50] ^= 0xFF  # a byte inside the stored records
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="t.trace.zip: chunk.0000"):
        read(tmp_path)
