"""Bounded replay memory: rows a VM has not reached yet wait on disk (balloonreplay/spill.py),
and a replay that spills gives exactly the metrics of one that holds everything."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from engine_helpers import trace_table
from hypothesis import given, settings
from hypothesis import strategies as st

import balloonreplay
from balloonreplay import replay as replay_module
from balloonreplay.spill import RowSpill


def uneven_trace(n: int = 4000):
    """Three VMs interleaved in time; VM 0 thrashes (many pages, stalls, falls behind in
    host time) while VMs 1 and 2 hit a few pages, so VM 0's rows pile up unconsumed."""
    rng = np.random.default_rng(5)
    vm = np.arange(n) % 3
    page = np.where(vm == 0, rng.integers(0, 400, n), rng.integers(0, 4, n))
    return trace_table(vm, np.arange(n, dtype=np.int64) * 100, page, rng.random(n) < 0.3)


def vm_sorted_trace(n: int = 3000):
    """All of VM 0's rows, then VM 1's (the canonical order is per VM only): every row of
    VM 0 is read before VM 1 can start."""
    rng = np.random.default_rng(6)
    half = n // 2
    vm = np.repeat([0, 1], [half, n - half])
    t_ns = np.concatenate([np.arange(half), np.arange(n - half)]).astype(np.int64) * 100
    return trace_table(vm, t_ns, rng.integers(0, 50, n), rng.random(n) < 0.3)


OPTIONS = dict(vms="32p", epoch_ns=50_000, quantum_ns=5_000)


def track_buffers(monkeypatch):
    """Record the most unconsumed rows any VM held in memory, and the rows spilled."""
    seen = {"max_rows": 0, "max_in_memory": 0, "spilled": 0}
    append, close = replay_module._Buffers._append, replay_module._Buffers.close

    def tracking_append(self, fresh):
        append(self, fresh)
        held = self.VS[:, self.V_END] - self.VS[:, self.V_POS]
        seen["max_in_memory"] = max(seen["max_in_memory"], int(held.max()))
        seen["max_rows"] = self.max_rows

    def tracking_close(self):
        if self.spill is not None:
            seen["spilled"] += self.spill.spilled_rows
        close(self)

    monkeypatch.setattr(replay_module._Buffers, "_append", tracking_append)
    monkeypatch.setattr(replay_module._Buffers, "close", tracking_close)
    return seen


@pytest.mark.parametrize("make_trace", [uneven_trace, vm_sorted_trace])
@pytest.mark.parametrize("batch_rows", [1, 16, 200])
def test_spilling_replay_equals_one_in_memory(monkeypatch, make_trace, batch_rows):
    table = make_trace()
    whole = balloonreplay.replay(table, batch_rows=table.num_rows, **OPTIONS)
    seen = track_buffers(monkeypatch)
    spilled = balloonreplay.replay(table, batch_rows=batch_rows, **OPTIONS)
    assert seen["spilled"] > 0  # the scenario does need the disk
    # Memory bound: never more than max_rows unconsumed rows of a VM in memory.
    assert seen["max_in_memory"] <= seen["max_rows"]
    pd.testing.assert_frame_equal(spilled.metrics, whole.metrics)
    assert spilled.summary["slowdown"] == whole.summary["slowdown"]


def test_row_spill_is_a_fifo_per_vm():
    spill = RowSpill(2, {"t": np.int64, "flag": np.uint8})
    try:
        spill.push(0, {"t": np.arange(5), "flag": np.ones(5, dtype=np.uint8)})
        spill.push(1, {"t": np.arange(100, 103), "flag": np.zeros(3, dtype=np.uint8)})
        spill.push(0, {"t": np.arange(5, 8), "flag": np.zeros(3, dtype=np.uint8)})
        assert spill.pending.tolist() == [8, 3]
        first = spill.pop(0, 6)
        assert first["t"].tolist() == [0, 1, 2, 3, 4, 5]
        assert first["flag"].tolist() == [1, 1, 1, 1, 1, 0]
        assert spill.pop(1, 10)["t"].tolist() == [100, 101, 102]
        assert spill.pop(0, 10)["t"].tolist() == [6, 7]
        assert spill.pending.tolist() == [0, 0]
        assert list(spill.directory.iterdir()) == []  # drained files are removed
        spill.push(0, {"t": np.array([9]), "flag": np.array([1], dtype=np.uint8)})
        assert spill.pop(0, 1)["t"].tolist() == [9]
    finally:
        spill.close()
    assert not spill.directory.exists()


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.integers(0, 40), min_size=3, max_size=3),  # rows the kernel uses
            st.lists(st.integers(0, 30), min_size=3, max_size=3),  # rows a batch brings
        ),
        max_size=25,
    ),
    max_rows=st.integers(1, 60),
)
def test_buffers_give_each_vm_its_rows_in_order(steps, max_rows):
    """Whatever the kernel consumes and the batches bring, each VM's rows in memory are
    the next ones of its own sequence (regions grow, unconsumed rows move to a region's
    start, the overflow waits on disk), and never more than max_rows of them."""
    from balloonreplay.engine import state as S

    nvm = 3
    VS = np.zeros((nvm, S.VM_FIELDS), dtype=np.int64)
    buffers = replay_module._Buffers(VS, [10**9] * nvm, None, max_rows)
    sent = [[] for _ in range(nvm)]  # every row each VM was given, in order (its t)
    used = [0] * nvm
    t = 0
    try:
        for consume, bring in steps:
            for v in range(nvm):
                n = min(consume[v], int(VS[v, S.V_END] - VS[v, S.V_POS]))
                VS[v, S.V_POS] += n
                used[v] += n
            while buffers.refill():
                pass
            t_col = np.arange(t, t + sum(bring), dtype=np.int64)
            t += sum(bring)
            vm = np.repeat(np.arange(nvm), bring)
            for v in range(nvm):
                sent[v].extend(t_col[vm == v].tolist())
            buffers.add(
                {
                    "t": t_col,
                    "page": t_col * 7,
                    "write": (t_col % 2).astype(np.uint8),
                    "known": np.ones(len(t_col), dtype=np.uint8),
                    "content": -t_col,
                    "file": (t_col % 3 == 0).astype(np.uint8),
                    "counts": np.array(bring, dtype=np.int64),
                }
            )
            arrays = buffers.arrays()
            t_kernel, page, write, known, content, file_backed = arrays
            dtypes = (np.int64, np.int64, np.uint8, np.uint8, np.int64, np.uint8)
            for a, dtype in zip(arrays, dtypes, strict=True):
                # the kernel's one array type per argument (another would compile anew)
                assert a.dtype == dtype and a.flags.c_contiguous and not a.flags.writeable
            assert (buffers.region <= max_rows).all()  # memory stays bounded
            for v in range(nvm):
                pos, end = int(VS[v, S.V_POS]), int(VS[v, S.V_END])
                assert end - pos <= max_rows
                rows = t_kernel[pos:end]
                assert rows.tolist() == sent[v][used[v] : used[v] + end - pos]
                assert (page[pos:end] == rows * 7).all() and (content[pos:end] == -rows).all()
                assert (write[pos:end] == rows % 2).all() and (known[pos:end] == 1).all()
                assert (file_backed[pos:end] == (rows % 3 == 0)).all()
                pending = 0 if buffers.spill is None else int(buffers.spill.pending[v])
                assert used[v] + (end - pos) + pending == len(sent[v])
    finally:
        buffers.close()
