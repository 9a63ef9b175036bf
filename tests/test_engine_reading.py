"""The replay's Parquet fast path (columns its statistics show constant are not read)
gives the counters of the general path and of the reference model."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import assert_frames_equal

import balloonreplay
from balloonreplay.replay import _parquet_batches
from balloonreplay.traces.io import Trace, write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch


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


def test_a_corrupt_data_page_is_a_trace_error_naming_the_row_group(tmp_path):
    from balloonreplay.errors import TraceError

    path, _ = write(tmp_path, 1, "none", False, n=50_000, pages=4000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(range(64))  # inside the first row group's pages
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="row group 0"):
        balloonreplay.replay(path, vms="16p")


def test_canonical_files_use_delta_times_and_byte_stream_split_pages(tmp_path):
    import pyarrow.parquet as pq

    path, _ = write(tmp_path, 1, "none", False)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(7)}
    assert "DELTA_BINARY_PACKED" in encodings["t_ns"]
    assert "BYTE_STREAM_SPLIT" in encodings["page"]
