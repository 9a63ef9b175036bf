"""The one-pass miss-ratio curve equals single-size LRU replays at every size."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import lru_misses

from balloonreplay.errors import TraceError
from balloonreplay.mrc import miss_ratio_curves
from balloonreplay.traces.ingest import write_canonical
from balloonreplay.traces.schema import TraceMetadata, make_batch


def write(tmp_path, vms, pages, batch_rows=None, free=None):
    n = len(pages)
    batch = make_batch(vms, np.arange(n), pages, np.zeros(n, bool), free=free)
    batches = (
        [batch] if not batch_rows else [batch.slice(i, batch_rows) for i in range(0, n, batch_rows)]
    )
    path = tmp_path / "t.parquet"
    write_canonical(batches, path, TraceMetadata())
    return path


@settings(max_examples=60)
@given(
    data=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=300),
    batch_rows=st.none() | st.integers(1, 64),
)
def test_curve_equals_repeated_lru_replays(tmp_path_factory, data, batch_rows):
    tmp_path = tmp_path_factory.mktemp("mrc")
    vms = [v for v, _ in data]
    pages = [p for _, p in data]
    curves = miss_ratio_curves(write(tmp_path, vms, pages, batch_rows))
    for vm in sorted(set(vms)):
        seq = [p for v, p in data if v == vm]
        curve = curves[curves.vm == vm].set_index("size_pages")
        assert list(curve.index) == list(range(len(set(seq)) + 1))
        for size in curve.index:
            assert curve.loc[size, "misses"] == lru_misses(seq, size)
        assert curve.loc[len(set(seq)), "misses"] == len(set(seq))


def test_renumbering_keeps_distances_right(tmp_path):
    # a long trace over few pages forces many renumberings of the Fenwick positions
    rng = np.random.default_rng(4)
    pages = rng.integers(0, 30, 20000)
    curves = miss_ratio_curves(write(tmp_path, np.zeros(20000), pages))
    for size in (1, 5, 17, 29):
        assert curves.loc[curves.size_pages == size, "misses"].item() == lru_misses(pages, size)


def test_mrc_command_writes_curves_and_figure(tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from balloonreplay.cli import main

    rng = np.random.default_rng(1)
    path = write(tmp_path, np.zeros(2000), rng.integers(0, 50, 2000))
    result = CliRunner().invoke(
        main,
        [
            "mrc",
            str(path),
            "-o",
            str(tmp_path / "m.parquet"),
            "--plot",
            str(tmp_path / "m.png"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    curves = pd.read_parquet(tmp_path / "m.parquet")
    assert list(curves.columns) == ["vm", "size_pages", "misses", "miss_ratio"]
    assert curves.misses.is_monotonic_decreasing
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mrc_refuses_a_trace_that_was_not_ingested(tmp_path):
    import pytest

    from balloonreplay.errors import TraceError
    from balloonreplay.traces.io import write_trace

    write_trace([make_batch([0], [0], [5], [False])], tmp_path / "raw.parquet")
    with pytest.raises(TraceError, match="dense"):
        miss_ratio_curves(tmp_path / "raw.parquet")


def test_curve_equals_single_size_engine_replays(tmp_path):
    """Issue 4: the one-pass curve equals the engine's guest `lru` faults at each size."""
    import balloonreplay

    rng = np.random.default_rng(11)
    n = 3000
    vms = rng.integers(0, 2, n)
    pages = np.where(vms == 0, rng.zipf(1.4, n) % 60, rng.integers(0, 25, n))
    path = write(tmp_path, vms, pages)
    curves = miss_ratio_curves(path)
    for size in (1, 4, 10, 24, 40):
        result = balloonreplay.replay(path, vms=f"{size}p", guest_policy="lru")
        faults = result.metrics.groupby("vm")["guest_faults"].sum()
        for vm in (0, 1):
            curve = curves[curves.vm == vm].set_index("size_pages")["misses"]
            expected = curve.loc[min(size, curve.index.max())]
            assert faults.loc[vm] == expected, (vm, size)


def lru_misses_with_frees(rows, size):
    """A plain LRU of `size` pages: a free takes its page out (its frame stays free until
    a page needs one) and is no access."""
    from collections import OrderedDict

    cache, misses = OrderedDict(), 0
    for page, free in rows:
        if free:
            cache.pop(page, None)
        elif page in cache:
            cache.move_to_end(page)
        else:
            misses += 1
            if size == 0:
                continue
            if len(cache) == size:
                cache.popitem(last=False)
            cache[page] = True
    return misses


def write_with_frees(tmp_path, rows, batch_rows=None):
    """One VM's (page, free) rows."""
    free = np.array([f for _, f in rows], dtype=bool)
    return write(tmp_path, np.zeros(len(rows), int), [p for p, _ in rows], batch_rows, free)


@settings(max_examples=80)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 9).map(lambda x: x == 0)),
        min_size=1,
        max_size=400,
    ),
    batch_rows=st.none() | st.integers(1, 64),
)
def test_a_free_leaves_a_hole_and_its_next_access_is_a_first_touch(
    tmp_path_factory, rows, batch_rows
):
    # Found by an audit: mrc counted frees as accesses and never restarted a first touch
    # after one (A B A free(A) A: 3 and 2 misses at 1 and 2 pages instead of 4 and 3).
    tmp_path = tmp_path_factory.mktemp("mrcfree")
    accesses = sum(not free for _, free in rows)
    if not accesses:  # refused as having no access, as an empty trace is
        with pytest.raises(TraceError, match="holds only .* free events"):
            write_with_frees(tmp_path, rows, batch_rows)
        return
    curve = miss_ratio_curves(write_with_frees(tmp_path, rows, batch_rows))
    curve = curve.set_index("size_pages")
    for size in curve.index:
        assert curve.loc[size, "misses"] == lru_misses_with_frees(rows, size), size
        assert curve.loc[size, "miss_ratio"] == curve.loc[size, "misses"] / accesses
    # Beyond the curve's last size only first touches miss.
    largest = int(curve.index.max())
    assert lru_misses_with_frees(rows, largest + 5) == curve.loc[largest, "misses"]


def test_mrc_with_frees_equals_the_engine(tmp_path):
    import balloonreplay

    rng = np.random.default_rng(4)
    rows = [(int(rng.integers(0, 40)), bool(rng.random() < 0.1)) for _ in range(3000)]
    path = write_with_frees(tmp_path, rows)
    curve = miss_ratio_curves(path).set_index("size_pages")
    for size in (1, 5, 17, 30):
        faults = balloonreplay.replay(path, vms=f"{size}p").metrics.guest_faults.sum()
        assert curve.loc[size, "misses"] == faults


def test_the_mrc_policy_takes_a_traces_frees_as_the_curves_do(tmp_path):
    """The mrc policy reads the rows the engine replayed from the trace (frees among
    them, which are no access) and builds the curve miss_ratio_curves gives."""
    from policy_helpers import snapshot, start_snapshot

    from balloonreplay.policies import make_policy
    from balloonreplay.policies.mrc import misses_by_size
    from balloonreplay.traces.io import open_trace

    rng = np.random.default_rng(9)
    rows = [(int(rng.integers(0, 40)), bool(rng.random() < 0.1)) for _ in range(3000)]
    path = write_with_frees(tmp_path, rows, batch_rows=256)
    curve = miss_ratio_curves(path).set_index("size_pages").misses
    policy = make_policy("mrc:period_s=1000")
    policy.attach(open_trace(path))
    policy.start(start_snapshot([64], 64))
    frees = sum(free for _, free in rows)
    for start in range(0, len(rows), 700):  # epochs of 700 rows, across batches
        epoch = rows[start : start + 700]
        state = snapshot([64], 64, accesses=[sum(not free for _, free in epoch)])
        state.guest_frees[0] = sum(free for _, free in epoch)
        policy.decide(state)
    assert policy._curves[0].accesses == len(rows) - frees
    largest = int(curve.index.max())
    assert list(misses_by_size(policy._curves[0], largest)) == list(curve)


def test_a_filtered_trace_gives_exact_misses_from_k_up_and_says_so(tmp_path):
    # Found by an audit: sizes below the filter's K were reported as if exact, and the
    # ratio's denominator is the kept accesses, without a word.
    import pytest

    rng = np.random.default_rng(2)
    n = 4000
    pages = rng.zipf(1.3, n) % 200
    batch = make_batch(np.zeros(n, int), np.arange(n), pages, np.zeros(n, bool))
    full, filtered = tmp_path / "full.parquet", tmp_path / "filtered.parquet"
    write_canonical([batch], full, TraceMetadata())
    write_canonical([batch], filtered, TraceMetadata(), lru_filter_pages=16)
    exact = miss_ratio_curves(full).set_index("size_pages").misses
    with pytest.warns(UserWarning, match="exact from 16 pages up"):
        reduced = miss_ratio_curves(filtered).set_index("size_pages").misses
    assert reduced.index.min() == 16
    for size in reduced.index:
        assert reduced[size] == exact[size]


@pytest.mark.parametrize(
    "pages, frees, message",
    [
        ([3, -4], None, "expected page ids >= 0, got -4"),  # the old -(p + 1) encoding
        ([3, 4], [False], "expected one free flag per page id, got 1 for 2"),
    ],
)
def test_the_mrc_policy_feed_refuses_what_it_cannot_count(pages, frees, message):
    from balloonreplay.policies import make_policy

    policy = make_policy("mrc")
    with pytest.raises(ValueError, match=re.escape(message)):
        policy.feed(0, np.array(pages), None if frees is None else np.array(frees))
