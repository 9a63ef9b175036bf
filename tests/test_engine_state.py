"""The engine state's allocation: memory a run touches only sparsely stays sparse."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from balloonreplay.engine.config import ReplayConfig
from balloonreplay.engine.state import allocate, sparse_zeros


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping that holds ``address`` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("shape", [(5, 3), (1 << 20, 3), 3_000_000])
def test_sparse_zeros_are_writable_zeros_of_the_shape_asked(shape):
    a = sparse_zeros(shape, np.int64)
    assert a.shape == np.zeros(shape).shape and a.dtype == np.int64
    assert a.flags.c_contiguous and a.flags.writeable
    assert not a.any()
    a.reshape(-1)[[0, -1]] = 7
    assert a.sum() == 14


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_NOHUGEPAGE"),
    reason="transparent huge pages are Linux's",
)
def test_share_and_balloon_tables_are_not_on_huge_pages():
    """Sparsely written tables must not fault in 2 MiB per entry; the dense page and frame
    rows keep numpy's huge pages (each of their lines is touched)."""
    state = allocate(ReplayConfig(config_pages=[600_000, 400_000], host_pages=800_000), [1, 1])
    for name in ("SH", "CA", "BS"):
        table = getattr(state, name)
        assert table.nbytes >= 1 << 22, name
        assert "nh" in _vm_flags(table.ctypes.data), name
    assert "nh" not in _vm_flags(state.FC.ctypes.data)
