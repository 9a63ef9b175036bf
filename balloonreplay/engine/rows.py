"""Trace rows into the kernel's columns: checked, then grouped by VM, one pass each.

The replay driver (replay.py, ``_Buffers.prepare``) runs these in its reading thread,
beside the kernel, on every batch of the trace. Done with numpy (a page-range check per
bound, a stable argsort by VM and a gather per column), that work took about 45 ms per
million rows of an 8-VM trace: as much CPU as the kernel's own, on a 2-core machine.
A counting sort needs no sort: the VMs are few, so one pass counts each VM's rows and
checks them, and then each column is written, row by row, to its VM's next free slot.
With several VMs, that slot is usually in the VM's ring of the kernel's own columns
(``group_into_rings``), so a batch is written once, in the reading thread, and the main
thread only publishes it.
"""

from __future__ import annotations

from balloonreplay.engine.flags import entry, inline


@entry
def first_bad_row(t, page, limit, last_t):
    """One VM's rows: the index of the first whose page id is not below ``limit`` or
    whose time is before the row's before it (``last_t[0]``: the last time of the
    batches before, updated to this batch's), or -1. A time that goes backwards would
    not fail in the kernel: the VM would wait in host time, and the replay would report
    a slowdown that is an artefact of the trace. ``t`` and ``last_t`` are uint64, as
    t_ns is: compared signed, times crossing 2**63 would go backwards."""
    last = last_t[0]
    for i in range(page.shape[0]):
        p = page[i]
        if p < 0 or p >= limit:  # page ids are uint64 viewed as int64
            return i
        ti = t[i]
        if ti < last:
            last_t[0] = last
            return i
        last = ti
    last_t[0] = last
    return -1


@entry
def count_rows(vm, t, page, npages, counts, last_t):
    """Several VMs' rows: count each VM's into ``counts`` (zeroed, one per VM); the index
    of the first row whose VM index is not below ``len(counts)``, whose page id is not
    below its VM's ``npages`` or whose time is before its VM's row before it
    (``last_t``, one per VM, kept from batch to batch), or -1 when every row is sound.
    ``t`` and ``last_t`` are uint64, as in first_bad_row."""
    nvm = counts.shape[0]
    for i in range(vm.shape[0]):
        v = vm[i]
        if v >= nvm:
            return i
        p = page[i]
        if p < 0 or p >= npages[v]:
            return i
        ti = t[i]
        if ti < last_t[v]:
            return i
        last_t[v] = ti
        counts[v] += 1
    return -1


@inline
def _scatter(vm, starts, cursor, src, add_vm, add, dst):
    """dst[slot] = src[i] + add_vm[vm[i]] + add, each VM's rows from its start on."""
    for v in range(starts.shape[0]):
        cursor[v] = starts[v]
    for i in range(vm.shape[0]):
        v = vm[i]
        d = cursor[v]
        cursor[v] = d + 1
        dst[d] = src[i] + add_vm[v] + add


@entry
def group_by_vm(
    vm, starts, cursor, pbase, zeros, t0, t, page, write, known, content, file_backed,
    out_t, out_page, out_write, out_known, out_content, out_file,
):  # fmt: skip
    """Write row i of each column to the next slot of its VM, ``starts[vm[i]]`` on, in
    the ``out_`` columns: a stable grouping by VM (``starts``: the counts' exclusive
    prefix sums). Host time 0 is ``t0`` (the trace's earliest time), and page ids move into
    the VM's range of global ids (``pbase``). ``cursor``: scratch, one per VM; ``zeros``:
    one zero per VM (the kernels do not allocate).

    One column at a time: the VMs' regions of a column lie a power of two apart when
    the VMs have as many rows each, so six columns at once would write 48 streams that
    share a few cache sets (measured: 24 ms per million rows of 8 VMs, against 8 ms)."""
    _scatter(vm, starts, cursor, t, zeros, -t0, out_t)
    _scatter(vm, starts, cursor, page, pbase, 0, out_page)
    _scatter(vm, starts, cursor, write, zeros, 0, out_write)
    _scatter(vm, starts, cursor, known, zeros, 0, out_known)
    _scatter(vm, starts, cursor, content, zeros, 0, out_content)
    _scatter(vm, starts, cursor, file_backed, zeros, 0, out_file)


@inline
def _scatter_ring(vm, start, cursor, lo, hi, src, add_vm, add, dst):
    """dst[slot] = src[i] + add_vm[vm[i]] + add, each VM's rows from ``start`` on, going
    round from ``hi`` back to ``lo``."""
    for v in range(start.shape[0]):
        cursor[v] = start[v]
    for i in range(vm.shape[0]):
        v = vm[i]
        d = cursor[v]
        dst[d] = src[i] + add_vm[v] + add
        d += 1
        if d == hi[v]:
            d = lo[v]
        cursor[v] = d


@entry
def group_into_rings(
    vm, start, cursor, lo, hi, pbase, zeros, t0, t, page, write, known, content, file_backed,
    out_t, out_page, out_write, out_known, out_content, out_file,
):  # fmt: skip
    """``group_by_vm`` into rings: VM v's rows go to slots ``start[v]``, ``start[v] + 1``,
    ... of the ``out_`` columns, wrapping from ``hi[v]`` to ``lo[v]`` (its ring). The
    caller has checked that they overwrite no row the kernel has yet to read."""
    _scatter_ring(vm, start, cursor, lo, hi, t, zeros, -t0, out_t)
    _scatter_ring(vm, start, cursor, lo, hi, page, pbase, 0, out_page)
    _scatter_ring(vm, start, cursor, lo, hi, write, zeros, 0, out_write)
    _scatter_ring(vm, start, cursor, lo, hi, known, zeros, 0, out_known)
    _scatter_ring(vm, start, cursor, lo, hi, content, zeros, 0, out_content)
    _scatter_ring(vm, start, cursor, lo, hi, file_backed, zeros, 0, out_file)
