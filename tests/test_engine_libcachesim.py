"""Cross-check against libCacheSim: one VM, ample host memory, no policy: the engine's
guest_faults equal libCacheSim's misses for lru/LRU, clock/Clock and fifo/FIFO."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import balloonreplay
from balloonreplay.traces.formats.oracle_general import OracleGeneralFormat
from balloonreplay.traces.schema import make_batch

lcs = pytest.importorskip("libcachesim")

POLICIES = [("lru", "LRU"), ("clock", "Clock"), ("fifo", "FIFO")]


def zipf_pages(n: int, distinct: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, distinct + 1) ** alpha
    pages = rng.choice(distinct, size=n, p=weights / weights.sum())
    return rng.permutation(distinct)[pages]  # popular pages are not the low ids


def libcachesim_misses(path, cache_class: str, cache_pages: int, requests: int) -> int:
    reader = lcs.TraceReader(
        str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=True)
    )
    cache = getattr(lcs, cache_class)(cache_size=cache_pages)
    miss_ratio, _ = cache.process_trace(reader)
    # reader.close() crashes the interpreter at exit in libcachesim 0.3.5; let GC do it.
    return round(miss_ratio * requests)


def write_oracle(pages: np.ndarray, path) -> pa.RecordBatch:
    batch = make_batch(0, np.arange(len(pages)), pages, np.zeros(len(pages), bool))
    OracleGeneralFormat().write([batch], path)
    return batch


def test_cache_size_counts_objects_with_ignore_obj_size(tmp_path):
    # 1 2 3 1 in a 2-object LRU: all four miss; in a 3-object LRU the last one hits.
    path = tmp_path / "tiny.oracleGeneral"
    write_oracle(np.array([1, 2, 3, 1]), path)
    assert libcachesim_misses(path, "LRU", 2, 4) == 4
    assert libcachesim_misses(path, "LRU", 3, 4) == 3


@pytest.mark.parametrize(("guest_policy", "cache_class"), POLICIES)
@pytest.mark.parametrize("cache_pages", [1, 7, 100, 1000])
def test_guest_faults_equal_libcachesim_misses(tmp_path, guest_policy, cache_class, cache_pages):
    n, distinct = 30_000, 2_000
    pages = zipf_pages(n, distinct, alpha=0.9, seed=cache_pages)
    path = tmp_path / "zipf.oracleGeneral"
    batch = write_oracle(pages, path)
    expected = libcachesim_misses(path, cache_class, cache_pages, n)
    result = balloonreplay.replay(
        batch, vms=f"{cache_pages}p", guest_policy=guest_policy, epoch_ns=10_000_000
    )
    assert result.summary["guest_faults"] == expected
    assert result.summary["host_swap_out"] == 0
