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
from balloonreplay.traces.schema import make_batch


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
    add, refill, close = (
        replay_module._Buffers.add,
        replay_module._Buffers.refill,
        replay_module._Buffers.close,
    )

    def note(self):
        seen["max_in_memory"] = max(seen["max_in_memory"], int(self.held().max()))
        seen["max_rows"] = self.max_rows

    def tracking_add(self, new):
        add(self, new)
        note(self)

    def tracking_refill(self):
        moved = refill(self)
        note(self)
        return moved

    def tracking_close(self):
        if self.spill is not None:
            seen["spilled"] += self.spill.spilled_rows
        close(self)

    monkeypatch.setattr(replay_module._Buffers, "add", tracking_add)
    monkeypatch.setattr(replay_module._Buffers, "refill", tracking_refill)
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


def read_rows(buffers, used, counts):
    """What the kernel reads of each VM's segment (up to ``counts[v]`` rows, counted in
    ``used``), then what the main thread does when a VM runs out (``refill``)."""
    from balloonreplay.engine import state as S

    VS = buffers.VS
    for v in range(len(used)):
        n = min(counts[v], int(VS[v, S.V_END] - VS[v, S.V_POS]))
        VS[v, S.V_POS] += n
        used[v] += n
    while buffers.refill():
        pass


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
    the next ones of its own sequence (rings grow, rows go round a ring, the overflow
    waits on disk), and never more than max_rows of them."""
    from balloonreplay.engine import state as S

    nvm = 3
    VS = np.zeros((nvm, S.VM_FIELDS), dtype=np.int64)
    buffers = replay_module._Buffers(VS, [10**9] * nvm, None, max_rows)
    sent = [[] for _ in range(nvm)]  # every row each VM was given, in order (its t)
    used = [0] * nvm
    t = 0
    try:
        for consume, bring in steps:
            read_rows(buffers, used, consume)
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
            check_rows_in_memory(buffers, VS, sent, used, unpublished=[0] * nvm)
    finally:
        buffers.close()


def check_rows_in_memory(buffers, VS, sent, used, unpublished, pbase=None):
    """Each VM's rows in memory, its kernel segment then the ones waiting their turn, are
    the next of its sequence (the rows ``sent``, of which the kernel read ``used``, the
    last ``unpublished`` in batches not added yet), no more than max_rows, and every row
    of the sequence is read, in memory, on disk or in a batch not added yet. Row t's
    page is 7 t (plus its VM's ``pbase``), its content -t."""
    from balloonreplay.engine import state as S

    arrays = buffers.arrays()
    t_kernel, page, write, known, content, file_backed = arrays
    dtypes = (np.int64, np.int64, np.uint8, np.uint8, np.int64, np.uint8)
    for a, dtype in zip(arrays, dtypes, strict=True):
        # the kernel's one array type per argument (another would compile anew)
        assert a.dtype == dtype and a.flags.c_contiguous and not a.flags.writeable
    assert (buffers.ring <= buffers.max_rows).all()  # memory stays bounded
    for v in range(len(sent)):
        segments = [(int(VS[v, S.V_POS]), int(VS[v, S.V_END])), *buffers.queued[v]]
        for a, b in segments:
            assert buffers.ring_start[v] <= a <= b <= buffers.ring_start[v] + buffers.ring[v]

        def take(col, segments=segments):
            return np.concatenate([col[a:b] for a, b in segments])

        rows = take(t_kernel)
        assert len(rows) <= buffers.max_rows
        assert rows.tolist() == sent[v][used[v] : used[v] + len(rows)]
        offset = 0 if pbase is None else pbase[v]
        assert (take(page) == rows * 7 + offset).all() and (take(content) == -rows).all()
        assert (take(write) == rows % 2).all() and (take(known) == 1).all()
        assert (take(file_backed) == (rows % 3 == 0)).all()
        pending = 0 if buffers.spill is None else int(buffers.spill.pending[v])
        assert used[v] + len(rows) + pending + unpublished[v] == len(sent[v])


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.integers(0, 12), min_size=3, max_size=3),  # rows a batch brings
            st.lists(st.integers(0, 20), min_size=3, max_size=3),  # rows the kernel reads
            st.integers(0, 2),  # batches added
        ),
        max_size=30,
    ),
    max_rows=st.integers(1, 100),
)
def test_the_reading_thread_writes_rows_into_the_rings_in_order(steps, max_rows):
    """Batches prepared ahead (``prepare``, the reading thread's, writes a batch into the
    rings when they have room) and added later, in order, while the kernel reads on: each
    VM's rows in memory are still the next of its sequence, no row the kernel has yet to
    read is overwritten, and at most max_rows are in memory; at the end every row is read,
    in order."""
    from balloonreplay.engine import state as S

    nvm = 3
    VS = np.zeros((nvm, S.VM_FIELDS), dtype=np.int64)
    buffers = replay_module._Buffers(VS, [10**6] * nvm, None, max_rows)
    sent = [[] for _ in range(nvm)]
    used = [0] * nvm
    items: list[tuple[dict, list[int]]] = []  # prepared, not added yet (the queue)
    t = 0

    def use(counts):
        read_rows(buffers, used, counts)

    def add():
        buffers.add(items.pop(0)[0])

    try:
        for bring, consume, adds in steps:
            if len(items) < 3 and sum(bring):  # the queue holds two, the thread one more
                vm = np.repeat(np.arange(nvm), bring)
                np.random.default_rng(t).shuffle(vm)  # interleaved, each VM's in order
                t_col = np.arange(t, t + len(vm), dtype=np.int64)
                t += len(vm)
                for v in range(nvm):
                    sent[v].extend(t_col[vm == v].tolist())
                batch = make_batch(
                    vm.astype(np.uint16),
                    t_col.astype(np.uint64),
                    (t_col * 7).astype(np.uint64),
                    t_col % 2 == 1,
                    (-t_col).view(np.uint64),
                    t_col % 3 == 0,
                )
                while buffers._unwritten:  # the reading thread waits for add() (_reserve)
                    add()
                items.append((buffers.prepare(batch), bring))
            use(consume)
            for _ in range(min(adds, len(items))):
                add()
            unpublished = np.sum([c for _, c in items], axis=0) if items else [0] * nvm
            check_rows_in_memory(buffers, VS, sent, used, list(unpublished), buffers.pbase)
        while items:
            add()
        buffers.input_done()
        for _ in range(100):  # the kernel reads on until every VM is done and read out
            use([10**6] * nvm)
            buffers.input_done()
            if VS[:, S.V_INPUT_DONE].all() and (VS[:, S.V_POS] == VS[:, S.V_END]).all():
                break
        assert not any(buffers.queued)
        assert used == [len(rows) for rows in sent]
    finally:
        buffers.close()


def test_a_batch_is_written_into_the_rings_by_the_reading_thread():
    """Once the first batch has made the rings, the next ones that fit are written by
    ``prepare`` (the reading thread) and ``add`` only publishes them."""
    from balloonreplay.engine import state as S

    VS = np.zeros((2, S.VM_FIELDS), dtype=np.int64)
    buffers = replay_module._Buffers(VS, [100, 100], None, 1000)

    def batch(t):
        return make_batch([0, 1, 1, 0], [t, t + 1, t + 2, t + 3], [1, 2, 3, 4], [True] * 4)

    first = buffers.prepare(batch(0))
    assert "written_at" not in first  # no rings yet
    buffers.add(first)
    second = buffers.prepare(batch(4))
    assert "written_at" in second and "t" not in second
    assert VS[:, S.V_END].tolist() == (buffers.ring_start + 2).tolist()  # not published yet
    buffers.add(second)
    t_col = buffers.arrays()[0]
    for v in range(2):
        pos, end = VS[v, S.V_POS], VS[v, S.V_END]
        assert t_col[pos:end].tolist() == ([0, 3, 4, 7] if v == 0 else [1, 2, 5, 6])


def test_the_reading_thread_waits_for_an_unwritten_batch_to_be_taken():
    """After a batch it could not write into the rings, the reading thread writes no later
    one before add() has taken it: that batch's rows come first."""
    import threading

    from balloonreplay.engine import state as S

    VS = np.zeros((2, S.VM_FIELDS), dtype=np.int64)
    buffers = replay_module._Buffers(VS, [100, 100], None, 1000)
    first = buffers.prepare(make_batch([0, 1], [0, 1], [1, 2], [True, False]))
    assert "written_at" not in first  # no rings yet: unwritten
    second: dict = {}
    thread = threading.Thread(
        target=lambda: second.update(
            buffers.prepare(make_batch([1, 0], [2, 3], [3, 4], [True] * 2))
        )
    )
    thread.start()
    try:
        thread.join(0.5)
        assert thread.is_alive() and not second  # waiting for add()
        buffers.add(first)
        thread.join(10)
        assert not thread.is_alive() and "written_at" in second
    finally:
        buffers.close()  # releases a thread still waiting
        thread.join(10)
    buffers.add(second)
    t_col = buffers.arrays()[0]
    assert [t_col[VS[v, S.V_POS] : VS[v, S.V_END]].tolist() for v in range(2)] == [[0, 3], [1, 2]]


def test_a_huge_batch_size_asks_no_memory_for_rows_the_trace_lacks():
    """ "Read it all at once": the rings grow with the rows the VMs hold, so a batch size far
    beyond the trace (max_rows of 7e12 rows per VM) costs nothing more."""
    table = uneven_trace(600)
    whole = balloonreplay.replay(table, batch_rows=10**12, **OPTIONS)
    pd.testing.assert_frame_equal(whole.metrics, balloonreplay.replay(table, **OPTIONS).metrics)
