"""What a trace holds: the numbers `balloonreplay info` prints."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from balloonreplay.errors import TraceError
from balloonreplay.traces.ingest import canonical_batches
from balloonreplay.traces.io import open_trace
from balloonreplay.traces.remap import rows_by_vm
from balloonreplay.traces.schema import TraceMetadata

# Per-page content state at the end of the trace.
_UNTOUCHED, _KNOWN, _UNKNOWN = 0, 1, 2  # unknown: null content, never shareable


@dataclass
class VmInfo:
    vm: int
    accesses: int
    distinct_pages: int
    write_fraction: float
    first_t_ns: int
    last_t_ns: int
    config_pages: int | None

    @property
    def duration_ns(self) -> int:
        return self.last_t_ns - self.first_t_ns


@dataclass
class TraceInfo:
    path: str
    accesses: int
    vms: list[VmInfo]
    write_fraction: float
    # Over the pages' contents at the end of the trace: zero pages, and non-zero pages whose
    # content some other page (of any VM) also holds, i.e. what a sharing scanner could merge.
    zero_page_fraction: float
    shareable_page_fraction: float
    metadata: TraceMetadata
    frees: int = 0  # free rows: no accesses (the file's rows are accesses + frees)
    # VMs 0..num_vms-1, as ingest and a replay count them: one with no row is a VM too
    # (vms lists those with rows).
    num_vms: int = 0

    @property
    def duration_ns(self) -> int:
        return max(v.last_t_ns for v in self.vms) - min(v.first_t_ns for v in self.vms)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["duration_ns"] = self.duration_ns
        for vm, vm_dict in zip(self.vms, out["vms"], strict=True):
            vm_dict["duration_ns"] = vm.duration_ns
        return out


class _VmTally:
    def __init__(self) -> None:
        self.accesses = 0
        self.frees = 0
        self.writes = 0
        self.first_t_ns: int | None = None
        self.last_t_ns = 0
        self.last_content = np.empty(0, dtype=np.uint64)
        self.content_state = np.empty(0, dtype=np.int8)

    def add(self, pages, writes, t_ns, contents, content_states, frees) -> None:
        # A free is no access, and leaves its page without a content (not a zero page,
        # nor one to share), though the page was touched.
        self.frees += int(frees.sum())
        self.accesses += pages.shape[0] - int(frees.sum())
        self.writes += int((writes & ~frees).sum())
        content_states = np.where(frees, _UNKNOWN, content_states).astype(np.int8)
        if self.first_t_ns is None:
            self.first_t_ns = int(t_ns[0])
        self.last_t_ns = int(t_ns[-1])
        top = int(pages.max()) + 1
        old = self.last_content.shape[0]
        if top > old:
            size = max(top, 2 * old)
            self.last_content = np.concatenate([self.last_content, np.zeros(size - old, np.uint64)])
            self.content_state = np.concatenate([self.content_state, np.zeros(size - old, np.int8)])
        # Fancy assignment keeps the last value for repeated indices: the content at the end.
        self.last_content[pages] = contents
        self.content_state[pages] = content_states

    @property
    def distinct_pages(self) -> int:
        return int((self.content_state != _UNTOUCHED).sum())

    @property
    def known_contents(self) -> np.ndarray:
        return self.last_content[self.content_state == _KNOWN]


def trace_info(path: str | os.PathLike, progress=None) -> TraceInfo:
    trace = open_trace(path)
    tallies: dict[int, _VmTally] = {}
    for batch in canonical_batches(trace.iter_batches(), source_path=path):
        vm_ids = batch.column("vm").to_numpy()
        pages = batch.column("page").to_numpy().astype(np.int64)
        writes = batch.column("write").to_numpy(zero_copy_only=False)
        t_ns = batch.column("t_ns").to_numpy()
        content_col = batch.column("content")
        contents = content_col.fill_null(0).to_numpy()
        states = np.where(
            content_col.is_null().to_numpy(zero_copy_only=False), _UNKNOWN, _KNOWN
        ).astype(np.int8)
        frees = batch.column("free").to_numpy(zero_copy_only=False)
        for vm, rows in rows_by_vm(vm_ids):
            tallies.setdefault(vm, _VmTally()).add(
                pages[rows], writes[rows], t_ns[rows], contents[rows], states[rows], frees[rows]
            )
        if progress is not None:
            progress.update(batch.num_rows)
    if not tallies:
        raise TraceError(path, None, "expected at least one access; the trace is empty")
    config_pages = trace.metadata.config_pages
    vms = [
        VmInfo(
            vm=vm,
            accesses=t.accesses,
            distinct_pages=t.distinct_pages,
            write_fraction=t.writes / max(t.accesses, 1),
            first_t_ns=t.first_t_ns or 0,
            last_t_ns=t.last_t_ns,
            config_pages=config_pages[vm] if config_pages and vm < len(config_pages) else None,
        )
        for vm, t in sorted(tallies.items())
    ]
    total_pages = max(sum(v.distinct_pages for v in vms), 1)
    known = np.concatenate([t.known_contents for t in tallies.values()])
    zero_pages = int((known == 0).sum())
    _, counts = np.unique(known[known != 0], return_counts=True)
    shareable_pages = int(counts[counts > 1].sum())
    accesses = sum(v.accesses for v in vms)
    return TraceInfo(
        path=os.fspath(path),
        accesses=accesses,
        vms=vms,
        write_fraction=sum(t.writes for t in tallies.values()) / max(accesses, 1),
        zero_page_fraction=zero_pages / total_pages,
        shareable_page_fraction=shareable_pages / total_pages,
        metadata=trace.metadata,
        frees=sum(t.frees for t in tallies.values()),
        num_vms=max(trace.metadata.num_vms or 0, max(tallies) + 1),
    )
