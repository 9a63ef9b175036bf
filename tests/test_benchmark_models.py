"""The models the benchmarks time beside the engine are the model: benchmarks/lru_ceiling.py's
``plain`` variant (the whole model for one lru VM that no host takes part in, written for
that case alone) must count what the engine counts, or what it measures says nothing
about what a kernel of its own for that case could gain. The script checks its counts on
the benchmark's trace when it runs; this holds them on traces the benchmark never has:
file-backed pages, one-frame guests, random latencies and epochs."""

from __future__ import annotations

import sys

import numpy as np
from conftest import REPO
from engine_helpers import QUANTUM_NS, trace_table
from hypothesis import given, settings
from hypothesis import strategies as st

import balloonreplay
from balloonreplay.latencies import Latencies

sys.path.insert(0, str(REPO / "benchmarks"))
from lru_ceiling import PLAIN_COUNTS, engine_counts, plain_model_lru  # noqa: E402


@st.composite
def lone_vm_traces(draw):
    num_pages = draw(st.integers(1, 40))
    n = draw(st.integers(1, 400))
    pages = np.array(draw(st.lists(st.integers(0, num_pages - 1), min_size=n, max_size=n)))
    # The page's file flag is fixed (a change of it is outside the plain case).
    file_pages = np.array(draw(st.lists(st.booleans(), min_size=num_pages, max_size=num_pages)))
    write = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    gaps = draw(st.lists(st.integers(0, 5 * QUANTUM_NS), min_size=n, max_size=n))
    t_ns = np.cumsum(gaps, dtype=np.int64)
    capacity = draw(st.integers(1, num_pages))
    latencies = draw(st.lists(st.integers(0, 3 * QUANTUM_NS), min_size=5, max_size=5))
    epoch_ns = draw(st.integers(1, 30)) * QUANTUM_NS
    return pages, file_pages[pages], write, t_ns, capacity, latencies, epoch_ns


@settings(max_examples=150)
@given(lone_vm_traces())
def test_the_plain_benchmark_model_counts_what_the_engine_counts(trace):
    pages, file_backed, write, t_ns, capacity, latencies, epoch_ns = trace
    swap_in, swap_out, disk_read, disk_write, zero_fill = latencies
    metrics = balloonreplay.replay(
        trace_table(np.zeros(len(pages), dtype=np.uint16), t_ns, pages, write, None, file_backed),
        vms=f"{capacity}p",
        latencies=Latencies(
            guest_swap_in_ns=swap_in,
            guest_swap_out_ns=swap_out,
            disk_read_ns=disk_read,
            disk_write_ns=disk_write,
            zero_fill_ns=zero_fill,
        ),
        quantum_ns=QUANTUM_NS,
        epoch_ns=epoch_ns,
    ).metrics
    replayed, counts = plain_model_lru(
        t_ns - t_ns[0],
        pages.astype(np.int64),
        write.astype(np.uint8),
        file_backed.astype(np.uint8),
        capacity,
        int(pages.max()) + 1,
        epoch_ns,
        np.array(latencies, dtype=np.int64),
    )
    assert replayed == len(pages)
    assert dict(zip(PLAIN_COUNTS, counts, strict=True)) == dict(
        zip(PLAIN_COUNTS, engine_counts(metrics), strict=True)
    )
