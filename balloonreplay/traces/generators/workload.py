"""Interleave the VMs of a workload into one canonical trace ordered by (t_ns, vm)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from balloonreplay.errors import ConfigError
from balloonreplay.traces.generators.spec import WorkloadSpec
from balloonreplay.traces.generators.streams import AccessChunk, vm_access_chunks
from balloonreplay.traces.schema import TraceMetadata, make_batch

GENERATOR_SOURCE = "balloonreplay.generate"
DEFAULT_CHUNK_ACCESSES = 1 << 20
_MIN_VM_CHUNK = 4096


def generate_batches(
    spec: WorkloadSpec,
    seed: int,
    *,
    chunk_accesses: int = DEFAULT_CHUNK_ACCESSES,
) -> Iterator[pa.RecordBatch]:
    """Canonical batches of the whole workload, globally ordered by (t_ns, vm).

    Memory stays around two chunks whatever the trace length: each VM holds a buffer of
    chunk_accesses / V accesses, and only rows no VM can still precede are emitted.
    Each VM's times strictly rise, so after emitting every row with t <= T, where T is
    the smallest last-buffered time of any VM, no row at or before T can come later.
    """
    check_seed(seed)
    if chunk_accesses < 1:
        raise ConfigError("chunk_accesses", f"expected a positive integer, got {chunk_accesses}")
    per_vm_chunk = max(_MIN_VM_CHUNK, chunk_accesses // max(1, len(spec.vms)))
    streams = {
        vm.index: vm_access_chunks(
            vm,
            seed=seed,
            image_id=spec.image_id(vm.vm_type.image),
            chunk_accesses=per_vm_chunk,
        )
        for vm in spec.vms
    }
    buffers: dict[int, AccessChunk] = {}

    while True:
        for vm_index in list(streams):
            if vm_index not in buffers:
                chunk = next(streams[vm_index], None)
                if chunk is None:
                    del streams[vm_index]
                else:
                    buffers[vm_index] = chunk
        if not buffers:
            return
        # VMs whose stream is finished impose no limit: all their rows may go.
        live = [buffers[v].t_ns[-1] for v in streams if v in buffers]
        cutoff = min(live) if live else None
        parts: list[AccessChunk] = []
        for vm_index in list(buffers):
            chunk = buffers[vm_index]
            take = (
                len(chunk) if cutoff is None else int(np.searchsorted(chunk.t_ns, cutoff, "right"))
            )
            if take == 0:
                continue
            parts.append(_slice(chunk, 0, take))
            if take == len(chunk):
                del buffers[vm_index]
            else:
                buffers[vm_index] = _slice(chunk, take, len(chunk))
        yield _merge(parts)


def _slice(chunk: AccessChunk, start: int, stop: int) -> AccessChunk:
    return AccessChunk(
        vm_index=chunk.vm_index,
        t_ns=chunk.t_ns[start:stop],
        page=chunk.page[start:stop],
        write=chunk.write[start:stop],
        content=chunk.content[start:stop],
        file_backed=chunk.file_backed[start:stop],
        free=chunk.free[start:stop],
    )


def _merge(parts: list[AccessChunk]) -> pa.RecordBatch:
    vm = np.concatenate([np.full(len(p), p.vm_index, dtype=np.uint16) for p in parts])
    t_ns = np.concatenate([p.t_ns for p in parts])
    order = np.lexsort((vm, t_ns))  # by t_ns, ties by VM index
    return make_batch(
        vm[order],
        t_ns[order],
        np.concatenate([p.page for p in parts])[order],
        np.concatenate([p.write for p in parts])[order],
        content=np.concatenate([p.content for p in parts])[order],
        file_backed=np.concatenate([p.file_backed for p in parts])[order],
        free=np.concatenate([p.free for p in parts])[order],
    )


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
        raise ConfigError("seed", f"expected an integer between 0 and 2^63-1, got {seed!r}")
    return seed


def workload_metadata(spec: WorkloadSpec, seed: int) -> TraceMetadata:
    return TraceMetadata(
        source=GENERATOR_SOURCE,
        parameters={"workload": spec.name, "spec": spec.raw},
        seed=seed,
        config_pages=[vm.vm_type.memory_pages for vm in spec.vms],
        vm_names=[vm.name for vm in spec.vms],
        vm_images=[vm.vm_type.image for vm in spec.vms],
    )


def generate_trace(
    spec: WorkloadSpec,
    out_path: str | os.PathLike,
    seed: int,
    *,
    chunk_accesses: int = DEFAULT_CHUNK_ACCESSES,
    lru_filter_pages: int | None = None,
    progress=None,
    stats: dict | None = None,
) -> TraceMetadata:
    """Generate `spec` with `seed` into a canonical Parquet trace, written atomically.

    The trace goes through ingest's `write_canonical` like every other source (time-order
    check, dense page remapping, optional exact LRU filter). `progress` (e.g. a tqdm bar
    with total=spec.accesses) is advanced by generated accesses; `stats`, if given, is
    filled as write_canonical fills it.
    """
    from balloonreplay.traces.ingest import write_canonical

    check_seed(seed)
    return write_canonical(
        generate_batches(spec, seed, chunk_accesses=chunk_accesses),
        out_path,
        workload_metadata(spec, seed),
        lru_filter_pages=lru_filter_pages,
        source_path=f"workload {spec.name!r}",
        progress=progress,
        command="generate",
        stats=stats,
    )
