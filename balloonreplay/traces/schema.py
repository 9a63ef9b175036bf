"""The one canonical trace schema (DESIGN.md, "The canonical trace") and its footer metadata.

One row per page access. Rows are sorted by ``t_ns`` within each VM; across VMs any order
will do. The generators write the whole file ordered by ``(t_ns, vm)``, so a streaming
replay interleaves their VMs without holding many rows back; ingest keeps its source's
order (a replay holds back, in memory or on disk, the rows of a VM that runs ahead).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from balloonreplay.errors import TraceError
from balloonreplay.units import PAGE_SIZE_BYTES, PAGE_SIZE_EXPECTED, page_shift

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
    def from_json(cls, text: str | bytes, path=None) -> TraceMetadata:
        """Parse footer metadata, checking every known field's type (a hostile or corrupt
        footer must fail here, naming the field, not deep inside a replay)."""
        where = f"footer metadata {METADATA_KEY.decode()!r}"
        try:
            raw = json.loads(text)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise TraceError(path, where, f"expected a UTF-8 JSON object ({exc})") from None
        if not isinstance(raw, dict):
            raise TraceError(path, where, f"expected a JSON object, got {type(raw).__name__}")
        values = {name: raw[name] for name in _METADATA_FIELD_CHECKS if name in raw}
        bad = _first_bad_field(values)
        if bad is not None:
            name, expected = bad
            raise TraceError(
                path, f"{where} field {name!r}", f"expected {expected}, got {raw[name]!r:.80}"
            )
        return cls(**values)

    def check(self, path=None) -> None:
        """Refuse metadata a reader would refuse (from_json), before it is written: a
        value given on the command line or by a reader is checked like a footer's."""
        bad = _first_bad_field(asdict(self))
        if bad is not None:
            name, expected = bad
            raise TraceError(
                path,
                f"metadata field {name!r}",
                f"expected {expected}, got {getattr(self, name)!r:.80}",
            )

    @classmethod
    def from_schema(cls, schema: pa.Schema, path=None) -> TraceMetadata:
        meta = schema.metadata or {}
        if METADATA_KEY in meta:
            return cls.from_json(meta[METADATA_KEY], path)
        return cls()

    def overlay(self, **overrides: Any) -> TraceMetadata:
        """Values given on the command line or in config win over the file's metadata."""
        data = asdict(self)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return TraceMetadata(**data)


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 2**63


def _is_page_size(value: int) -> bool:
    try:
        page_shift(value)
    except ValueError:
        return False
    return True


def _optional(check):
    return lambda value: value is None or check(value)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _first_bad_field(values: dict[str, Any]) -> tuple[str, str] | None:
    """The first field whose value fails its check: (name, what was expected)."""
    for name, (check, expected) in _METADATA_FIELD_CHECKS.items():
        if name in values and not check(values[name]):
            return name, expected
    return None


_METADATA_FIELD_CHECKS = {
    "source": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "parameters": (lambda v: isinstance(v, dict), "a JSON object"),
    "seed": (_optional(_is_int), "a whole number >= 0 or null"),
    "page_size_bytes": (lambda v: _is_int(v, 1) and _is_page_size(v), PAGE_SIZE_EXPECTED),
    "config_pages": (_optional(_list_of(lambda v: _is_int(v, 1))), "a list of pages >= 1"),
    "vm_names": (_optional(_list_of(lambda v: isinstance(v, str))), "a list of strings"),
    "vm_images": (_optional(_list_of(lambda v: isinstance(v, str))), "a list of strings"),
    "dense": (lambda v: isinstance(v, bool), "true or false"),
    "pages_per_vm": (_optional(_list_of(_is_int)), "a list of page counts >= 0"),
    "accesses": (_optional(_is_int), "a whole number >= 0 or null"),
    "lru_filter_pages": (_optional(lambda v: _is_int(v, 1)), "a whole number >= 1 or null"),
    "version": (_is_int, "a whole number"),
}


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
        # An empty table keeps its own schema, so the column checks below still apply to it.
        batch = (
            batch.combine_chunks().to_batches()[0]
            if batch.num_rows
            else pa.RecordBatch.from_pylist([], schema=batch.schema)
        )
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
            if pa.types.is_boolean(fld.type) and not pa.types.is_boolean(column.type):
                _check_zero_or_one(column, fld.name, path)
            try:
                column = column.cast(fld.type, safe=True)
            except pa.ArrowException as exc:
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


def _check_zero_or_one(column: pa.Array, name: str, path) -> None:
    """Numbers in a boolean column must be 0 or 1: Arrow's cast would read 0.5 or 7 as true."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return  # strings ("true", "0") and other types are left to the cast, which names them
    values = column.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise TraceError(
            path,
            f"column {name!r}",
            f"expected booleans (or 0/1), got {values[bad[0]]!r} in row {int(bad[0])} of a batch",
        )
