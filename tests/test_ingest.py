"""Ingest: dense remapping, time-order checks, empty traces, atomic output, the LRU filter."""

from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import lru_misses

from balloonreplay.errors import TraceError
from balloonreplay.traces.ingest import canonical_batches, ingest, write_canonical
from balloonreplay.traces.io import open_trace, write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch


def naive_hit_drop(pages, capacity_pages):
    """The rule the issue warns about: drop every hit of a K-page LRU."""
    cache = OrderedDict()
    kept = []
    for p in pages:
        if p in cache:
            cache.move_to_end(p)
        else:
            kept.append(p)
            cache[p] = True
            if len(cache) > capacity_pages:
                cache.popitem(last=False)
    return kept


def filtered(pages, writes, k, batch_rows=None, vms=None):
    n = len(pages)
    vms = np.zeros(n, np.uint16) if vms is None else np.asarray(vms, np.uint16)
    batch = make_batch(vms, np.arange(n), np.asarray(pages), np.asarray(writes, bool))
    batches = [batch] if batch_rows is None else batch_slices(batch, batch_rows)
    out = pa.Table.from_batches(list(canonical_batches(batches, lru_filter_pages=k)))
    return out


def batch_slices(batch, rows):
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)]


page_sequences = st.lists(st.integers(0, 24), min_size=1, max_size=400)


@settings(max_examples=150)
@given(pages=page_sequences, k=st.integers(1, 12), batch_rows=st.none() | st.integers(1, 50))
def test_lru_filter_is_exact_for_every_memory_of_at_least_k_pages(pages, k, batch_rows):
    out = filtered(pages, [False] * len(pages), k, batch_rows)
    # Dense remapping is a bijection per VM, so miss counts compare directly.
    reduced = out.column("page").to_pylist()
    for memory_pages in range(k, k + 14):
        assert lru_misses(reduced, memory_pages) == lru_misses(pages, memory_pages)


def test_lru_filter_below_k_and_naive_rule_are_not_exact():
    rng = np.random.default_rng(7)
    found_below = found_naive = False
    for _ in range(200):
        pages = rng.integers(0, 12, 80).tolist()
        k = 4
        reduced = filtered(pages, [False] * 80, k).column("page").to_pylist()
        # map dense ids back: first-appearance order of the original pages
        order = list(dict.fromkeys(pages))
        reduced = [order[p] for p in reduced]
        if any(lru_misses(reduced, m) != lru_misses(pages, m) for m in range(1, k)):
            found_below = True
        naive = naive_hit_drop(pages, k)
        if any(lru_misses(naive, m) != lru_misses(pages, m) for m in range(k + 1, k + 8)):
            found_naive = True
    assert found_below, "the filter should not be exact below K on random traces"
    assert found_naive, "dropping every K-LRU hit should not be exact on random traces"


def test_lru_filter_folds_writes_into_the_kept_access():
    # K=2: a, b miss; then b(w), a, b are hits; c misses. Kept: a, b, [a, b], c.
    pages = [1, 2, 2, 1, 2, 3]
    writes = [False, False, True, False, False, False]
    out = filtered(pages, writes, 2)
    assert out.column("t_ns").to_pylist() == [0, 1, 3, 4, 5]
    assert out.column("write").to_pylist() == [False, False, False, True, False]


def test_lru_filter_is_per_vm():
    pages = [1, 1, 2, 2, 1, 1]
    vms = [0, 1, 0, 1, 0, 1]
    out = filtered(pages, [False] * 6, 1, vms=vms)
    # each VM sees 1, 2, 1 with a 1-page LRU: three misses each
    assert out.num_rows == 6


def test_remapping_is_dense_per_vm_in_first_appearance_order(tmp_path):
    batch = make_batch([0, 1, 0, 1, 0], [0, 0, 1, 1, 2], [900, 5, 7, 900, 900], [0, 0, 1, 0, 0])
    meta = write_canonical([batch], tmp_path / "t.parquet", TraceMetadata())
    table = open_trace(tmp_path / "t.parquet").read_table()
    assert table.column("page").to_pylist() == [0, 0, 1, 1, 0]
    assert meta.pages_per_vm == [2, 2]
    assert meta.dense and meta.accesses == 5


def test_time_going_backwards_within_a_vm_names_the_access(tmp_path):
    batch = make_batch([0, 1, 0, 0], [5, 1, 6, 4], [1, 2, 3, 4], [0, 0, 0, 0])
    with pytest.raises(TraceError, match=r"access #3 .*VM 0.*expected t_ns >= 6.*got 4"):
        write_canonical([batch], tmp_path / "t.parquet", TraceMetadata(), source_path="x.csv")
    assert not list(tmp_path.iterdir()), "a failed ingest must leave no output"


def test_time_going_backwards_across_batches(tmp_path):
    b1 = make_batch([0], [10], [1], [0])
    b2 = make_batch([0], [9], [1], [0])
    with pytest.raises(TraceError, match="access #1"):
        write_canonical([b1, b2], tmp_path / "t.parquet", TraceMetadata())


def test_other_vms_may_interleave_out_of_order(tmp_path):
    batch = make_batch([0, 1, 0], [5, 1, 6], [1, 2, 3], [0, 0, 0])
    write_canonical([batch], tmp_path / "t.parquet", TraceMetadata())


def test_empty_trace_is_an_error(tmp_path):
    empty = make_batch([], [], [], [])
    with pytest.raises(TraceError, match="empty"):
        write_canonical([empty], tmp_path / "t.parquet", TraceMetadata(), source_path="e.csv")
    assert not (tmp_path / "t.parquet").exists()


def test_metadata_listing_fewer_vms_than_the_trace_is_an_error(tmp_path):
    batch = make_batch([0, 1, 2], [0, 0, 0], [1, 1, 1], [0, 0, 0])
    with pytest.raises(TraceError, match="3 VMs but config_pages .* gives 2 values"):
        write_canonical([batch], tmp_path / "t.parquet", TraceMetadata(config_pages=[10, 10]))
    with pytest.raises(TraceError, match="3 VMs but vm_names .* gives 1 values"):
        write_canonical([batch], tmp_path / "t.parquet", TraceMetadata(vm_names=["a"]))
    assert not (tmp_path / "t.parquet").exists()


def test_one_configured_memory_is_every_vms(tmp_path):
    """As in a replay (--vm-mem 1GiB for every VM)."""
    batch = make_batch([0, 1], [0, 0], [1, 1], [0, 0])
    meta = write_canonical([batch], tmp_path / "t.parquet", TraceMetadata(config_pages=[10]))
    assert meta.config_pages == [10, 10]


def test_a_plain_six_column_parquet_file_is_a_valid_trace(tmp_path):
    table = pa.table(
        {
            "vm": pa.array([0, 0], pa.uint16()),
            "t_ns": pa.array([0, 1], pa.uint64()),
            "page": pa.array([10, 11], pa.uint64()),
            "write": [True, False],
            "content": pa.array([None, 0], pa.uint64()),
            "file_backed": [False, True],
        }
    )
    pq.write_table(table, tmp_path / "user.parquet")
    meta = ingest(
        tmp_path / "user.parquet",
        tmp_path / "out.parquet",
        metadata_overrides={"config_pages": [64]},
    )
    assert meta.config_pages == [64] and meta.pages_per_vm == [2]
    out = open_trace(tmp_path / "out.parquet")
    assert out.metadata.config_pages == [64]
    assert out.read_table().column("file_backed").to_pylist() == [False, True]


def test_only_the_four_required_columns_suffice(tmp_path):
    pq.write_table(
        pa.table({"vm": [0, 0], "t_ns": [0, 3], "page": [4, 4], "write": [False, True]}),
        tmp_path / "min.parquet",
    )
    ingest(tmp_path / "min.parquet", tmp_path / "out.parquet", format_name="parquet")
    table = open_trace(tmp_path / "out.parquet").read_table()
    assert table.column("content").null_count == 2


def test_missing_column_and_wrong_type_are_named(tmp_path):
    pq.write_table(pa.table({"vm": [0], "t_ns": [0], "write": [False]}), tmp_path / "a.parquet")
    with pytest.raises(TraceError, match="missing required column 'page'"):
        ingest(tmp_path / "a.parquet", tmp_path / "o.parquet", format_name="parquet")
    pq.write_table(
        pa.table({"vm": [0], "t_ns": ["soon"], "page": [1], "write": [False]}),
        tmp_path / "b.parquet",
    )
    with pytest.raises(TraceError, match="column 't_ns'.*uint64"):
        ingest(tmp_path / "b.parquet", tmp_path / "o.parquet", format_name="parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TraceError, match="junk.parquet"):
        ingest(tmp_path / "junk.parquet", tmp_path / "o.parquet", format_name="parquet")


def test_parquet_round_trip_keeps_rows_and_metadata(tmp_path):
    rng = np.random.default_rng(3)
    n = 1000
    batch = make_batch(
        np.zeros(n),
        np.arange(n),
        rng.integers(0, 50, n),
        rng.random(n) < 0.5,
        rng.integers(0, 9, n),
    )
    meta = TraceMetadata(source="test", seed=3, config_pages=[100])
    write_trace([batch], tmp_path / "a.parquet", meta)
    ingest(tmp_path / "a.parquet", tmp_path / "b.parquet")
    a = open_trace(tmp_path / "a.parquet")
    b = open_trace(tmp_path / "b.parquet")
    assert b.metadata.seed == 3 and b.metadata.config_pages == [100]
    for col in ("vm", "t_ns", "write", "content", "file_backed"):
        assert a.read_table().column(col).equals(b.read_table().column(col))


class _Progress:
    """What ingest needs of a progress bar: update(n), and a settable total."""

    def __init__(self):
        self.total = None
        self.n = 0

    def update(self, n):
        self.n += n


@pytest.mark.parametrize(
    ("source", "total"),
    [("touch_pages.parquet", 66), ("touch_pages.oracleGeneral.bin", 66), ("touch_pages.csv", None)],
)
def test_ingest_gives_the_progress_bar_a_total_when_the_format_can_count(tmp_path, source, total):
    from conftest import TEST_DATA

    progress = _Progress()
    ingest(TEST_DATA / source, tmp_path / "t.parquet", progress=progress)
    assert progress.total == total  # known beforehand for Parquet and oracleGeneral only
    assert progress.n == 66


def test_ingest_takes_one_page_count_for_every_vm(tmp_path):
    from conftest import TEST_DATA

    meta = ingest(TEST_DATA / "touch_pages.parquet", tmp_path / "t.parquet", vm_mem=1024)
    assert meta.config_pages == [1024] * len(meta.pages_per_vm)


@pytest.mark.parametrize("first_k, second_k", [(64, 8), (8, 64), (16, None)])
def test_filtering_a_filtered_trace_again_records_the_larger_k(tmp_path, first_k, second_k):
    # Found by an audit: K=64 then K=8 recorded 8, though the trace is exact only from 64.
    rng = np.random.default_rng(1)
    n = 3000
    write_trace(
        [make_batch(0, np.arange(n), rng.integers(0, 200, n), np.zeros(n, bool))],
        tmp_path / "raw.parquet",
    )
    once, twice = tmp_path / "once.parquet", tmp_path / "twice.parquet"
    ingest(tmp_path / "raw.parquet", once, lru_filter_pages=first_k)
    meta = ingest(once, twice, lru_filter_pages=second_k)
    assert (
        meta.lru_filter_pages
        == open_trace(twice).metadata.lru_filter_pages
        == max(first_k, second_k or 0)
    )
