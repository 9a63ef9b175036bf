"""The one canonical trace schema (DESIGN.md, "The canonical trace") and its footer metadata.

One row per page access. Rows are sorted by ``t_ns`` within each VM; writers in this
package also keep the whole file ordered by ``(t_ns, vm)`` so a streaming replay can
interleave VMs without buffering much.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from balloonreplay.errors import TraceError
from balloonreplay.units import PAGE_SIZE_BYTES

CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("vm", pa.uint16(), nullable=False),
        pa.field("t_ns", pa.uint64(), nullable=False),
        pa.field("page", pa.uint64(), nullable=False),
        pa.field("write", pa.bool_(), nullable=False),
        # Hash of the page's content after the access; 0 = the zero page; null = unknown
        # (treated as unique, so never shareable).
        pa.field("content", pa.uint64(), nullable=True),
        pa.field("file_backed", pa.bool_(), nullable=False),
        # The guest frees the page (munmap, free of a heap page, process exit): not an
        # access; its frame returns to the guest's free list with its host state, and the
        # page's next access is a first touch. `write` and `content` are ignored.
        pa.field("free", pa.bool_(), nullable=False),
    ]
)
REQUIRED_COLUMNS = ("vm", "t_ns", "page", "write")
OPTIONAL_COLUMNS = ("content", "file_backed", "free")
ZERO_CONTENT = 0

METADATA_KEY = b"balloonreplay"
METADATA_VERSION = 1


@dataclass
class TraceMetadata:
    """Footer metadata of a canonical trace. Every field is optional in a user's file."""

    source: str | None = None  # generator name or source format
    parameters: dict[str, Any] = field(default_factory=dict)  # generator or reader options
    seed: int | None = None
    page_size_bytes: int = PAGE_SIZE_BYTES
    # Configured guest memory per VM, in pages (None: not recorded; give it on the command line).
    config_pages: list[int] | None = None
    vm_names: list[str] | None = None
    vm_images: list[str] | None = None
    # Filled at ingest: when `dense`, every page id of VM v is < pages_per_vm[v] (the size of
    # its dense id space, i.e. the remapping table), so kernels index arrays by page.
    dense: bool = False
    pages_per_vm: list[int] | None = None
    accesses: int | None = None
    lru_filter_pages: int | None = None
    version: int = METADATA_VERSION

    @property
    def num_vms(self) -> int | None:
        for per_vm in (self.pages_per_vm, self.config_pages, self.vm_names):
            if per_vm is not None:
                return len(per_vm)
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TraceMetadata:
        raw = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> TraceMetadata:
        meta = schema.metadata or {}
        if METADATA_KEY in meta:
            return cls.from_json(meta[METADATA_KEY])
        return cls()

    def overlay(self, **overrides: Any) -> TraceMetadata:
        """Values given on the command line or in config win over the file's metadata."""
        data = asdict(self)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return TraceMetadata(**data)


def empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=CANONICAL_SCHEMA)


def make_batch(
    vm,
    t_ns,
    page,
    write,
    content=None,
    file_backed=None,
    free=None,
) -> pa.RecordBatch:
    """Build a canonical batch from numpy arrays (or sequences). Missing optional columns
    become all-null content and all-false file_backed and free."""
    n = len(page)
    vm_arr = pa.array(
        np.asarray(vm, dtype=np.uint16) if not np.isscalar(vm) else np.full(n, vm, np.uint16)
    )
    arrays = [
        vm_arr,
        pa.array(np.asarray(t_ns, dtype=np.uint64)),
        pa.array(np.asarray(page, dtype=np.uint64)),
        pa.array(np.asarray(write, dtype=bool)),
        pa.nulls(n, pa.uint64()) if content is None else pa.array(content, type=pa.uint64()),
        pa.array(np.zeros(n, dtype=bool) if file_backed is None else np.asarray(file_backed, bool)),
        pa.array(np.zeros(n, dtype=bool) if free is None else np.asarray(free, bool)),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA)


def conform_batch(batch: pa.RecordBatch | pa.Table, path=None) -> pa.RecordBatch:
    """Cast a batch with the canonical columns (optional ones may be missing) to the schema.

    Raises TraceError naming the missing column or the column whose type cannot be cast.
    """
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else empty_batch()
    names = batch.schema.names
    for col in REQUIRED_COLUMNS:
        if col not in names:
            raise TraceError(
                path,
                None,
                f"missing required column {col!r}; a canonical trace has columns "
                f"{', '.join(CANONICAL_SCHEMA.names)} ({', '.join(OPTIONAL_COLUMNS)} optional)",
            )
    n = batch.num_rows
    arrays = []
    for fld in CANONICAL_SCHEMA:
        if fld.name in names:
            column = batch.column(names.index(fld.name))
            if fld.name != "content" and column.null_count:
                raise TraceError(path, f"column {fld.name!r}", "expected no null values")
            try:
                column = column.cast(fld.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TraceError(
                    path,
                    f"column {fld.name!r}",
                    f"expected values of type {fld.type} ({exc})",
                ) from None
        elif fld.name == "content":
            column = pa.nulls(n, pa.uint64())
        else:
            column = pa.array(np.zeros(n, dtype=bool))
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA)
