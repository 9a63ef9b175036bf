"""The engine state's allocation: memory a run touches only sparsely stays sparse."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from balloonreplay.engine.config import ReplayConfig
from balloonreplay.engine.state import allocate, sparse_zeros

SMAPS = Path("/proc/self/smaps")
THP = Path("/sys/kernel/mm/transparent_hugepage")


def _mapping(address: int) -> dict[str, str]:
    """The fields of this process's mapping that holds ``address`` (/proc/self/smaps)."""
    fields: dict[str, str] | None = None
    for line in SMAPS.read_text().splitlines():
        head, _, rest = line.partition(" ")
        if not head.endswith(":"):  # a mapping's first line: its address range
            if fields is not None:
                break
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= address < hi:
                fields = {}
        elif fields is not None:
            fields[head[:-1]] = rest.strip()
    if fields is None:
        raise AssertionError(f"no mapping holds {address:#x}")
    return fields


@pytest.mark.parametrize("shape", [(5, 3), (1 << 20, 3), 3_000_000])
def test_sparse_zeros_are_writable_zeros_of_the_shape_asked(shape):
    a = sparse_zeros(shape, np.int64)
    assert a.shape == np.zeros(shape).shape and a.dtype == np.int64
    assert a.flags.c_contiguous and a.flags.writeable
    assert not a.any()
    a.reshape(-1)[[0, -1]] = 7
    assert a.sum() == 14


@pytest.mark.skipif(not SMAPS.exists(), reason="needs Linux's /proc/self/smaps")
def test_a_sparse_table_costs_memory_only_where_written():
    """Entries written cost a small page each, and reading an entry never written costs
    nothing: the share tables are read at every lookup."""
    table = sparse_zeros((1 << 21, 3), np.int64)  # 48 MiB
    before_kib = int(_mapping(table.ctypes.data)["Rss"].split()[0])
    rows = np.arange(64) * (table.shape[0] // 64)
    table[rows, 2] = 1
    assert table[:: 512 // 3].sum() >= 0  # reads across the whole table
    grown_kib = int(_mapping(table.ctypes.data)["Rss"].split()[0]) - before_kib
    assert grown_kib <= 64 * 4 + 64, f"{grown_kib} KiB resident for 64 entries"


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not hasattr(mmap, "MADV_NOHUGEPAGE")
    or not THP.exists(),
    reason="transparent huge pages are Linux's, where the kernel has them",
)
def test_share_and_balloon_tables_are_not_on_huge_pages():
    state = allocate(ReplayConfig(config_pages=[600_000, 400_000], host_pages=800_000), [1, 1])
    for name in ("SH", "CA", "BS"):
        table = getattr(state, name)
        assert table.nbytes >= 1 << 22, name
        assert "nh" in _mapping(table.ctypes.data)["VmFlags"].split(), name
