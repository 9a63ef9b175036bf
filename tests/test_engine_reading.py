"""The replay's Parquet fast path (columns its statistics show constant are not read)
gives the counters of the general path and of the reference model."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import assert_frames_equal
from hypothesis import given, settings
from hypothesis import strategies as st

import balloonreplay
from balloonreplay.replay import _parquet_batches
from balloonreplay.traces.io import Trace, write_trace
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata, make_batch


def write(tmp_path, vms, content, file_backed, n=3_000, pages=40):
    rng = np.random.default_rng(7)
    vm = np.arange(n) % vms
    page = rng.integers(0, pages, n)
    write_ = rng.random(n) < 0.4
    if content == "some":
        values = (page % 5).astype(np.uint64)
        content = [None if i % 3 == 0 else int(values[i]) for i in range(n)]
    elif content == "all":
        content = (page % 5).astype(np.uint64)
    else:
        content = None
    file_backed = (page % 4 == 0) if file_backed else None
    batch = make_batch(vm, np.arange(n) * 2_000 + 5, page, write_, content, file_backed)
    meta = TraceMetadata(
        source="test", seed=7, config_pages=[16] * vms, dense=True, pages_per_vm=[pages] * vms
    )
    path = tmp_path / f"t-{vms}-{content is None}-{file_backed is None}.parquet"
    write_trace([batch], path, meta)
    return path, batch


@pytest.mark.parametrize("vms", [1, 3])
@pytest.mark.parametrize("content", ["none", "some", "all"])
@pytest.mark.parametrize("file_backed", [False, True])
def test_parquet_fast_path_equals_reference(tmp_path, vms, content, file_backed):
    path, batch = write(tmp_path, vms, content, file_backed)
    options = dict(
        vms="16p",
        host=f"{12 * vms}p",
        sharing=True,
        scan_rate_pages_per_s=200_000,
        quantum_ns=10_000,
        epoch_ns=200_000,
    )
    fast = balloonreplay.replay(path, batch_rows=257, **options)
    table = balloonreplay.replay(batch, batch_rows=100, **options)
    reference = balloonreplay.replay(path, engine="reference", **options)
    assert_frames_equal(fast.metrics, reference.metrics)
    assert_frames_equal(table.metrics, reference.metrics)
    assert fast.summary["end_ns"] == reference.summary["end_ns"]


def test_parquet_fast_path_skips_constant_columns(tmp_path):
    path, _ = write(tmp_path, 1, "none", False)
    names = next(_parquet_batches(Trace(path), 1000, 1)).schema.names
    assert names == ["t_ns", "page", "write"]
    path, _ = write(tmp_path, 2, "some", True)
    names = next(_parquet_batches(Trace(path), 1000, 2)).schema.names
    assert names == ["vm", "t_ns", "page", "write", "content", "file_backed"]  # no free rows


def test_host_time_0_and_the_fast_path_come_from_the_footer_read_once(tmp_path, monkeypatch):
    """Host time 0 is the least t_ns the row groups' statistics record (here VM 1's,
    whose rows come first but start later), and the reading thread's reader takes the
    footer the trace already parsed: the replay reads the footer once and the times
    never (a pass over them is for files without statistics)."""
    import pyarrow.parquet as pq

    from balloonreplay import replay as replay_module

    n = 400
    vm = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    t = np.r_[np.arange(n // 2) * 1000 + 70_000, np.arange(n // 2) * 1000 + 5]
    batch = make_batch(vm, t, np.arange(n) % 8, np.arange(n) % 3 == 0)
    meta = TraceMetadata(source="test", config_pages=[8, 8], dense=True, pages_per_vm=[8, 8])
    path = tmp_path / "t.parquet"
    write_trace([batch], path, meta)
    options = dict(host="10p", quantum_ns=500, epoch_ns=20_000)
    reference = balloonreplay.replay(path, engine="reference", **options)

    footers_read = []
    real = pq.ParquetFile

    def counting(source, *args, metadata=None, **kwargs):
        if metadata is None:
            footers_read.append(source)
        return real(source, *args, metadata=metadata, **kwargs)

    def no_pass_over_the_times(trace):
        raise AssertionError("the times were read for host time 0")

    replay_module.warm_up()  # (its tiny in-memory trace has no footer)
    monkeypatch.setattr(pq, "ParquetFile", counting)
    monkeypatch.setattr(replay_module, "_time_columns", no_pass_over_the_times)
    engine = balloonreplay.replay(path, **options)
    assert footers_read == [path]
    assert_frames_equal(engine.metrics, reference.metrics)
    assert engine.summary["slowdown"] == reference.summary["slowdown"]


def test_a_corrupt_data_page_is_a_trace_error_naming_the_row_group(tmp_path):
    from balloonreplay.errors import TraceError

    path, _ = write(tmp_path, 1, "none", False, n=50_000, pages=4000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(range(64))  # inside the first row group's pages
    path.write_bytes(bytes(data))
    # LZ4 (the page ids' codec) would decode the damage into other page ids; each page's
    # CRC catches it.
    with pytest.raises(TraceError, match="row group 0.*CRC checksum verification failed"):
        balloonreplay.replay(path, vms="16p")


def test_canonical_files_use_delta_times_and_byte_stream_split_lz4_pages(tmp_path):
    import pyarrow.parquet as pq

    path, _ = write(tmp_path, 1, "none", False)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = [meta.column(i) for i in range(meta.num_columns)]
    encodings = {c.path_in_schema: c.encodings for c in columns}
    assert "DELTA_BINARY_PACKED" in encodings["t_ns"]
    assert "BYTE_STREAM_SPLIT" in encodings["page"]
    codecs = {c.path_in_schema: c.compression for c in columns}
    assert codecs.pop("page") in ("LZ4", "LZ4_RAW")
    assert set(codecs.values()) == {"ZSTD"}


@pytest.mark.parametrize("column", ["t_ns", "page", "write"])
def test_nulls_that_the_footer_denies_are_a_trace_error(column):
    """The Parquet fast path skips conform_batch, trusting the footer's statistics to rule
    out nulls; a batch that has them anyway is refused, not read as zeros."""
    import pyarrow as pa

    from balloonreplay.errors import TraceError
    from balloonreplay.replay import _Buffers

    batch = make_batch(0, [0, 1, 2], [0, 1, 2], [False, True, False])
    i = batch.schema.names.index(column)
    values = batch.column(i).to_pylist()
    values[1] = None
    batch = batch.set_column(i, column, pa.array(values, batch.schema.field(i).type))
    with pytest.raises(TraceError, match=f"rows 0-2: expected no null values in column '{column}'"):
        _Buffers(None, [4], "t.parquet", 8).prepare(batch)


def test_a_time_before_the_earliest_the_statistics_record_is_refused():
    """Host time 0 comes from the footer's statistics; a row they belie is refused, not
    replayed at a negative time."""
    from balloonreplay.errors import TraceError
    from balloonreplay.replay import _Buffers

    batch = make_batch([0, 1, 1], [7, 5, 9], [0, 1, 2], [False, True, False])
    with pytest.raises(TraceError, match="row 1: expected t_ns >= 6, .* got 5"):
        _Buffers(None, [4, 4], "t.parquet", 8, t0=6).prepare(batch)
    buffers = _Buffers(None, [4, 4], "t.parquet", 8, t0=5)
    buffers.prepare(batch)
    assert buffers.first_t.tolist() == [2, 0]  # each VM's first access, from host time 0


def test_times_crossing_2_63_are_compared_as_the_unsigned_times_they_are():
    """t_ns is unsigned: a VM at 2**63 + 10 is 20 ns after one at 2**63 - 10, not before
    it (a review found it refused as earlier than the trace's earliest time)."""
    from balloonreplay.replay import _Buffers

    batch = make_batch([0, 1], [2**63 - 10, 2**63 + 10], [0, 1], [False, False])
    buffers = _Buffers(None, [4, 4], "t.parquet", 8, t0=2**63 - 10)
    buffers.prepare(batch)
    assert buffers.first_t.tolist() == [0, 20]


@pytest.mark.parametrize("vms", [1, 3])
@pytest.mark.parametrize("source", ["file", "table"])
def test_a_vms_times_crossing_2_63_replay_as_the_unsigned_times_they_are(tmp_path, vms, source):
    """t_ns is uint64: each VM's times running from 2**63 - 600 to 2**63 + 600 go
    forwards, which the reading thread's order checks (count_rows; first_bad_row for a
    file's single VM, whose vm column is a constant) took for going backwards when
    compared as the int64 they are viewed as. The engine equals the reference there."""
    n = 240
    rng = np.random.default_rng(3)
    t = 2**63 - 600 + np.arange(n, dtype=np.uint64) * 5
    batch = make_batch(np.arange(n) % vms, t, rng.integers(0, 12, n), rng.random(n) < 0.4)
    meta = TraceMetadata(source="test", config_pages=[8] * vms, dense=True, pages_per_vm=[12] * vms)
    path = tmp_path / "t.parquet"
    write_trace([batch], path, meta)
    trace = path if source == "file" else batch
    options = dict(host=f"{6 * vms}p", quantum_ns=20, epoch_ns=200, metadata=None)
    if source == "table":
        options["metadata"] = meta
    engine = balloonreplay.replay(trace, batch_rows=64, **options)
    reference = balloonreplay.replay(trace, engine="reference", **options)
    assert_frames_equal(engine.metrics, reference.metrics)
    assert engine.summary["end_ns"] == reference.summary["end_ns"]
    assert engine.metrics["accesses"].sum() == n


def test_a_time_going_backwards_across_2_63_is_refused_naming_the_unsigned_times(tmp_path):
    """The other way round: 2**63 + 5 then 2**63 - 5 goes backwards, which compared
    signed looked like going forwards; ingest's own order check agrees."""
    from balloonreplay.errors import TraceError
    from balloonreplay.traces.ingest import ingest

    t = [0, 2**63 + 5, 2**63 - 5]
    for vms, vm in ((1, [0, 0, 0]), (2, [1, 0, 0])):
        batch = make_batch(vm, t, [0, 1, 2], [False] * 3)
        path, message = replay_error(tmp_path, batch, vms, 4)
        assert message == (
            f"{path}: access #2 (0-based, VM 0): expected t_ns >= {2**63 + 5} (time must "
            f"not go backwards within a VM), got {2**63 - 5}"
        )
        raw = tmp_path / f"raw-{vms}.parquet"
        write_trace([batch], raw, TraceMetadata(source="test", config_pages=[4] * vms))
        with pytest.raises(TraceError) as caught:
            ingest(raw, tmp_path / f"t-{vms}.parquet")
        assert caught.value.expected == message.split("VM 0): ", 1)[1]
    forwards = make_batch([0, 0], [2**63 - 5, 2**63 + 5], [0, 1], [False] * 2)
    raw = tmp_path / "raw-forwards.parquet"
    write_trace([forwards], raw, TraceMetadata(source="test", config_pages=[4]))
    assert ingest(raw, tmp_path / "t-forwards.parquet").accesses == 2


def test_statistics_recording_an_earlier_time_than_any_access_are_refused():
    """Host time 0 taken from statistics that are too low would shift every time later
    (empty epochs before the first access): the end of the input names it."""
    from balloonreplay.engine.state import VM_FIELDS
    from balloonreplay.errors import TraceError
    from balloonreplay.replay import _Buffers

    batch = make_batch([0, 1], [7, 9], [0, 1], [False, False])
    buffers = _Buffers(None, [4, 4], "t.parquet", 8, t0=5)
    buffers.prepare(batch)
    with pytest.raises(
        TraceError, match="record 5 as its earliest t_ns, but its earliest access is at 7"
    ):
        buffers.input_done()
    exact = _Buffers(np.zeros((2, VM_FIELDS), dtype=np.int64), [4, 4], "t.parquet", 8, t0=7)
    exact.prepare(batch)
    exact.input_done()


@pytest.mark.parametrize("offset", [0, 3, 8, 13])
def test_bool_columns_unpack_to_bytes_from_any_offset(offset):
    """_flags reads Arrow's bit-packed buffer itself; a sliced column starts mid-byte."""
    import pyarrow as pa

    from balloonreplay.replay import _flags

    rng = np.random.default_rng(offset)
    values = rng.random(70) < 0.4
    column = pa.array(values).slice(offset, 50)
    out = _flags(column)
    assert out.dtype == np.uint8 and out.shape == (50,)
    assert out.tolist() == values[offset : offset + 50].astype(np.uint8).tolist()


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    nvm=st.integers(1, 5),
    n=st.integers(1, 300),
    t0=st.integers(0, 10**12),
    free=st.booleans(),
)
def test_prepare_groups_rows_by_vm_in_order(data, nvm, n, t0, free):
    """A batch's rows come out grouped by VM, each VM's in trace order, times from the
    first row, page ids in the VM's global range (its pages_per_vm offset), the content
    validity as `known` and a free as FREE_OP: what a stable sort by VM gives."""
    from balloonreplay.engine.state import FREE_OP
    from balloonreplay.replay import _Buffers

    npages = data.draw(st.lists(st.integers(1, 50), min_size=nvm, max_size=nvm))
    vm = np.array(data.draw(st.lists(st.integers(0, nvm - 1), min_size=n, max_size=n)))
    page = np.array([data.draw(st.integers(0, npages[v] - 1)) for v in vm], dtype=np.uint64)
    t = t0 + np.cumsum(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    write_ = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    content = data.draw(st.lists(st.none() | st.integers(0, 2**64 - 1), min_size=n, max_size=n))
    file_backed = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    frees = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) & free
    batch = make_batch(vm, t, page, write_, content, file_backed, frees if free else None)
    got = _Buffers(None, npages, None, 10**6).prepare(batch)
    # allocate() numbers each VM's pages from its first id: VM 0 from 0, then in order
    pbase = np.concatenate([[0], np.cumsum(npages)[:-1]])

    order = np.argsort(vm, kind="stable")
    known = np.array([c is not None for c in content])
    value = np.array([0 if c is None else c for c in content], dtype=np.uint64).view(np.int64)
    flag = np.where(frees, FREE_OP, write_).astype(np.uint8)
    assert got["counts"].tolist() == np.bincount(vm, minlength=nvm).tolist()
    assert got["t"].tolist() == (t - t[0])[order].tolist()
    assert got["page"].tolist() == (page.astype(np.int64) + pbase[vm])[order].tolist()
    assert got["write"].tolist() == flag[order].tolist()
    assert got["known"].tolist() == known[order].astype(np.uint8).tolist()
    assert got["content"].tolist() == value[order].tolist()
    assert got["file"].tolist() == file_backed[order].astype(np.uint8).tolist()


def replay_error(tmp_path, batch, vms: int, pages: int):
    """Replay `batch` from a file written without ingest (dense, `pages` per VM) in
    batches of 64 rows; the file and the TraceError's message the replay must raise."""
    from balloonreplay.errors import TraceError

    meta = TraceMetadata(
        source="test", config_pages=[4] * vms, dense=True, pages_per_vm=[pages] * vms
    )
    path = tmp_path / "bad.parquet"
    write_trace([batch], path, meta)
    with pytest.raises(TraceError) as caught:
        balloonreplay.replay(path, batch_rows=64)
    return path, str(caught.value)


@pytest.mark.parametrize("vms", [1, 3])
def test_a_page_id_out_of_range_is_a_trace_error_naming_its_row(tmp_path, vms):
    """Checked in the reading thread: the first id equal to its VM's pages_per_vm is out
    of range, and the error names the file, the row (counted from the trace's start,
    here in the third batch), the VM's id space and the bad value."""

    n, bad_row, pages = 300, 150, 10
    rng = np.random.default_rng(3)
    page = rng.integers(0, pages, n)
    page[bad_row] = pages  # the smallest id out of range
    batch = make_batch(np.arange(n) % vms, np.arange(n) * 10, page, rng.random(n) < 0.5)
    path, message = replay_error(tmp_path, batch, vms, pages)
    assert message.startswith(f"{path}: row {bad_row}: ")
    assert message.endswith(f"below {pages} (VM {bad_row % vms}'s pages_per_vm), got {pages}")


@pytest.mark.parametrize("vms", [1, 3])
@pytest.mark.parametrize("bad_row", [4, 150])
def test_a_time_that_goes_backwards_is_a_trace_error_naming_its_access(tmp_path, vms, bad_row):
    """Within a VM, time never goes backwards (ingest refuses it): a file written
    without ingest is checked in the reading thread too, within a batch and across
    batches (row 150 is in the third batch of 64 rows), since the
    kernel would take the earlier time as a wait and report a slowdown of millions."""

    n, pages = 300, 10
    rng = np.random.default_rng(5)
    vm = np.arange(n) % vms
    t = np.arange(n) * 10
    previous = (bad_row - vms) * 10  # its VM's row before it
    t[bad_row] = previous - 5
    batch = make_batch(vm, t, rng.integers(0, pages, n), rng.random(n) < 0.5)
    path, message = replay_error(tmp_path, batch, vms, pages)
    assert message == (
        f"{path}: access #{bad_row} (0-based, VM {bad_row % vms}): expected t_ns >= "
        f"{previous} (time must not go backwards within a VM), got {previous - 5}"
    )


def test_a_vm_index_out_of_range_is_a_trace_error_naming_its_row(tmp_path):
    from balloonreplay.errors import TraceError
    from balloonreplay.replay import _Buffers

    path, batch = write(tmp_path, 3, "none", False, n=300, pages=40)
    buffers = _Buffers(None, [40, 40], path, 10**6)
    with pytest.raises(
        TraceError, match=r": row 2: expected a VM index below 2 in column 'vm', got 2$"
    ):
        buffers.prepare(batch)


def test_a_page_id_beyond_the_signed_range_is_a_trace_error(tmp_path):
    """Page ids are uint64 read as int64: one of 2**63 or more reads as negative."""
    from balloonreplay.errors import TraceError

    batch = make_batch(0, [0, 1], np.array([1, 2**63 + 5], dtype=np.uint64), [False, True])
    meta = TraceMetadata(source="test", config_pages=[4], dense=True, pages_per_vm=[8])
    path = tmp_path / "huge.parquet"
    write_trace([batch], path, meta)
    with pytest.raises(TraceError, match=rf"row 1: .*below 8 .*got {2**63 + 5}$"):
        balloonreplay.replay(path)


def _reading_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "balloonreplay-prefetch"]


@pytest.mark.parametrize("failure", ["allocate", "trace"])
def test_the_reading_thread_stops_on_every_way_out(tmp_path, monkeypatch, failure):
    """Reading starts before the engine state is allocated: a failure there, or a bad row
    read by the thread, stops it (and a finished replay leaves none behind either)."""
    import time

    from balloonreplay.engine import state as engine_state
    from balloonreplay.errors import TraceError

    path, _ = write(tmp_path, 2, "none", False, n=3_000, pages=40)
    balloonreplay.replay(path, vms="16p", batch_rows=64)
    if failure == "allocate":

        def refuse(*args, **kwargs):
            raise MemoryError("no room for the engine state")

        monkeypatch.setattr(engine_state, "allocate", refuse)
        with pytest.raises(MemoryError):
            balloonreplay.replay(path, vms="16p", batch_rows=64)
    else:
        from balloonreplay.replay import _Buffers

        real = _Buffers.prepare

        def bad_from_the_third(self, batch):
            if self.rows_read >= 128:
                raise TraceError(self.path, f"row {self.rows_read}", "expected a good row")
            return real(self, batch)

        monkeypatch.setattr(_Buffers, "prepare", bad_from_the_third)
        with pytest.raises(TraceError, match="row 128"):
            balloonreplay.replay(path, vms="16p", batch_rows=64)
    deadline = time.monotonic() + 5
    while _reading_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _reading_threads() == []


def test_a_corrupt_row_group_is_named_alone_when_a_batch_spans_several(tmp_path):
    import pyarrow.parquet as pq

    from balloonreplay.errors import TraceError
    from balloonreplay.traces.io import TraceWriter

    path = tmp_path / "groups.parquet"
    rng = np.random.default_rng(3)
    meta = TraceMetadata(source="test", config_pages=[16], dense=True, pages_per_vm=[4000])
    with TraceWriter(path, meta) as writer:
        for g in range(6):  # one row group per write
            t_ns = (np.arange(2000) + g * 2000) * 1000
            writer.write(make_batch(0, t_ns, rng.integers(0, 4000, 2000), rng.random(2000) < 0.4))
    file_meta = pq.ParquetFile(path).metadata
    assert file_meta.num_row_groups == 6
    pages = file_meta.row_group(3).column(CANONICAL_SCHEMA.get_field_index("page"))
    data = bytearray(path.read_bytes())
    middle = pages.data_page_offset + pages.total_compressed_size // 2
    data[middle : middle + 16] = bytes(range(16))
    path.write_bytes(bytes(data))
    # Batches of 1 Mi rows read all six groups at once; the error names the one damaged.
    with pytest.raises(TraceError, match=r"row group 3: expected readable Parquet data"):
        list(Trace(path).iter_batches(1 << 20))
    with pytest.raises(TraceError, match=r"row group 3: "):
        balloonreplay.replay(path, vms="16p")
