"""Turn any source of canonical batches into a dense, checked canonical trace on disk.

Every format and every generator goes through `write_canonical`, so these rules hold
for all traces: time never goes backwards within a VM, pages are densely remapped per
VM (the engine indexes arrays by page), the optional exact LRU filter is applied, the
trace is not empty, and the output appears under its final name only when complete.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from balloonreplay.errors import ConfigError, TraceError
from balloonreplay.traces.formats import (
    TraceFormat,
    check_options,
    directory_formats,
    get_format,
    sniff_format,
)
from balloonreplay.traces.io import TraceWriter, looked_for
from balloonreplay.traces.remap import LruFilter, PageRemapper, rows_by_vm
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata, conform_batch


class _TimeOrderCheck:
    """Raises when a VM's access time goes backwards, naming the access."""

    def __init__(self, source_path) -> None:
        self.source_path = source_path
        self.last_t_ns: dict[int, int] = {}

    def check(self, vm_ids: np.ndarray, t_ns: np.ndarray, first_row: int) -> None:
        for vm, rows in rows_by_vm(vm_ids):
            times = t_ns[rows]
            previous = self.last_t_ns.get(vm)
            if previous is not None and times[0] < previous:
                self._fail(vm, first_row + int(rows[0]), previous, int(times[0]))
            backwards = np.flatnonzero(times[1:] < times[:-1])
            if backwards.size:
                k = int(backwards[0])
                self._fail(vm, first_row + int(rows[k + 1]), int(times[k]), int(times[k + 1]))
            self.last_t_ns[vm] = int(times[-1])

    def _fail(self, vm: int, row: int, previous: int, got: int) -> None:
        raise TraceError(
            self.source_path,
            f"access #{row} (0-based, VM {vm})",
            f"expected t_ns >= {previous} (time must not go backwards within a VM), got {got}",
        )


def canonical_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    source_path=None,
    lru_filter_pages: int | None = None,
    stats: dict | None = None,
    command: str = "ingest",
) -> Iterator[pa.RecordBatch]:
    """Check, remap and filter a stream of canonical batches (raw pages in, dense out).

    `stats`, if given, is filled with ``accesses_in``, ``accesses_out`` (rows, frees
    among them), ``frees``, ``num_vms`` and ``pages_per_vm`` when the stream is
    exhausted. `command` (ingest, generate) is the one an error tells the user to run
    again otherwise.
    """
    remapper = PageRemapper()
    time_check = _TimeOrderCheck(source_path)
    lru_filter = LruFilter(lru_filter_pages) if lru_filter_pages else None
    rows_in = rows_out = frees_out = 0
    max_vm = -1
    for batch in batches:
        batch = conform_batch(batch, source_path)
        n = batch.num_rows
        if n == 0:
            continue
        vm_ids = batch.column("vm").to_numpy()
        t_ns = batch.column("t_ns").to_numpy()
        time_check.check(vm_ids, t_ns, rows_in)
        dense_pages = remapper.remap(vm_ids, batch.column("page").to_numpy())
        writes = batch.column("write").to_numpy(zero_copy_only=False)
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        columns["page"] = pa.array(dense_pages)
        if lru_filter is not None:
            frees = np.flatnonzero(batch.column("free").to_numpy(zero_copy_only=False))
            if frees.size:
                # A free changes what every memory size holds, so dropping the hits
                # around it is not exact any more; refuse rather than mislead.
                raise TraceError(
                    source_path,
                    f"access #{rows_in + int(frees[0])} (0-based)",
                    "expected no free events in a trace reduced with the LRU filter; "
                    f"{command} it without --lru-filter",
                )
            keep, writes = lru_filter.apply(vm_ids, dense_pages, writes)
            columns["write"] = pa.array(writes)
            out = pa.RecordBatch.from_arrays(
                [columns[name] for name in CANONICAL_SCHEMA.names], schema=CANONICAL_SCHEMA
            ).filter(pa.array(keep))
        else:
            out = pa.RecordBatch.from_arrays(
                [columns[name] for name in CANONICAL_SCHEMA.names], schema=CANONICAL_SCHEMA
            )
        rows_in += n
        rows_out += out.num_rows
        frees_out += out.column("free").true_count  # the filter keeps none: it refuses them
        max_vm = max(max_vm, int(vm_ids.max()))
        yield out
    if stats is not None:
        stats.update(
            accesses_in=rows_in,
            accesses_out=rows_out,
            frees=frees_out,
            num_vms=max_vm + 1,
            pages_per_vm=remapper.pages_per_vm(max_vm + 1),
        )


def write_canonical(
    batches: Iterable[pa.RecordBatch],
    out_path: str | os.PathLike,
    metadata: TraceMetadata,
    *,
    lru_filter_pages: int | None = None,
    source_path=None,
    progress=None,
    command: str = "ingest",
    stats: dict | None = None,
) -> TraceMetadata:
    """Check, remap, filter and write `batches` to `out_path` atomically.

    `progress` (e.g. a tqdm bar) is advanced by the number of input accesses; `command`
    (ingest, generate) is the one the errors name; `stats`, if given, is filled as
    canonical_batches fills it (the frees apart from the accesses, for a report). Returns
    the metadata as written, whose ``accesses`` counts the rows, frees among them.
    """
    metadata.check(source_path)
    stats = {} if stats is None else stats
    with TraceWriter(out_path, metadata) as writer:
        for input_rows, out_batch in _with_input_counts(
            batches, source_path, lru_filter_pages, stats, command
        ):
            writer.write(out_batch)
            if progress is not None:
                progress.update(input_rows)
        if stats.get("accesses_in", 0) == 0:
            raise TraceError(source_path, None, "expected at least one access; the trace is empty")
        if stats["frees"] == stats["accesses_out"]:
            # Frees of pages never touched: nothing a replay could do with them.
            raise TraceError(
                source_path,
                None,
                f"expected at least one access; the trace holds only {stats['frees']} free "
                "events (free = true), which are no accesses",
            )
        num_vms = stats["num_vms"]
        config_pages = metadata.config_pages
        if config_pages is not None and len(config_pages) == 1:
            config_pages = config_pages * num_vms  # one size is every VM's, as in a replay
        for name, per_vm in (
            ("config_pages", config_pages),
            ("vm_names", metadata.vm_names),
            ("vm_images", metadata.vm_images),
        ):
            # More sizes than VMs: a replay would refuse them (one size per VM).
            too_many = name == "config_pages" and per_vm is not None and len(per_vm) > num_vms
            if per_vm is not None and (len(per_vm) < num_vms or too_many):
                raise TraceError(
                    source_path,
                    None,
                    f"the trace has {num_vms} VMs but {name} (from the command line or the "
                    f"source's metadata) gives {len(per_vm)} values; expected one per VM",
                )
        writer.metadata = metadata.overlay(
            config_pages=config_pages,
            dense=True,
            pages_per_vm=stats["pages_per_vm"],
            accesses=stats["accesses_out"],
            # Filtering a filtered trace again keeps it exact only from the larger K.
            lru_filter_pages=max(
                (k for k in (metadata.lru_filter_pages, lru_filter_pages) if k), default=None
            ),
        )
    return writer.metadata


def _with_input_counts(batches, source_path, lru_filter_pages, stats, command):
    """Pair each output batch with its input row count (for progress on input)."""
    counts: list[int] = []

    def counted():
        for batch in batches:
            counts.append(batch.num_rows)
            yield batch

    for out in canonical_batches(
        counted(),
        source_path=source_path,
        lru_filter_pages=lru_filter_pages,
        stats=stats,
        command=command,
    ):
        yield counts[-1], out
        counts.clear()


def vm_mem_pages(vm_mem: str | Iterable[str | int] | int, page_size_bytes: int | None) -> list[int]:
    """Each VM's configured memory in pages of the trace's page size: ``"2MiB,1MiB"`` (empty
    parts skipped, as in every size list: ``"1GiB,"`` is one size), a list, or one size
    or page count (every VM's). The one check of ``--vm-mem`` (the command line passes
    it through): ConfigError ``vm_mem`` naming the size and what was expected."""
    from balloonreplay.units import PAGE_SIZE_BYTES, parse_size_pages, size_parts

    page_size_bytes = page_size_bytes or PAGE_SIZE_BYTES
    parts = size_parts(vm_mem if isinstance(vm_mem, str | int) else list(vm_mem))
    if not parts:
        raise ConfigError(
            "vm_mem", f"expected one size or more (512MiB, 2GiB or 1000p), got {vm_mem!r}"
        )
    pages = []
    for part in parts:
        try:
            pages.append(parse_size_pages(part, page_size_bytes))
        except ValueError as exc:
            raise ConfigError("vm_mem", str(exc)) from None
        if pages[-1] < 1:
            where = f" in {vm_mem!r}" if len(parts) > 1 else ""
            raise ConfigError(
                "vm_mem",
                f"expected at least 1 page of {page_size_bytes} bytes per VM, got {part!r}{where}",
            )
    return pages


def _reader_options(
    fmt: TraceFormat, options: Mapping[str, Any] | Iterable[str] | None, page_size_bytes: int | None
) -> Any:
    """The reader's options, with the trace's page size (``--page-size``) as its option
    ``page_size_bytes`` when it has one: a reader that cuts addresses into pages must cut
    them at the size the footer records, or a replay's sizes in pages would be off by the
    ratio. The two given and different is refused (ConfigError ``page_size_bytes``)."""
    reader_options = fmt.make_options(options)
    has_option = any(f.name == "page_size_bytes" for f in dataclasses.fields(reader_options))
    if page_size_bytes is None or not has_option:
        return reader_options
    given = reader_options.page_size_bytes
    if _names_option(options, "page_size_bytes") and given != page_size_bytes:
        raise ConfigError(
            "page_size_bytes",
            f"{page_size_bytes} contradicts the reader option page_size_bytes={given}; "
            "give one of them (the reader cuts pages at the size the trace records)",
        )
    reader_options = dataclasses.replace(reader_options, page_size_bytes=page_size_bytes)
    check_options(reader_options, f"format {fmt.name!r}")
    return reader_options


def _names_option(options: Mapping[str, Any] | Iterable[str] | None, name: str) -> bool:
    """Whether `options` (a mapping, or ``key=value`` strings) sets option `name`, spelled
    as parse_options takes it (``page-size-bytes`` too)."""
    if options is None:
        return False
    keys = options.keys() if isinstance(options, Mapping) else (o.split("=", 1)[0] for o in options)
    return any(str(key).strip().replace("-", "_") == name for key in keys)


def ingest(
    source_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    format_name: str | None = None,
    options: Mapping[str, Any] | Iterable[str] | None = None,
    lru_filter_pages: int | None = None,
    metadata_overrides: Mapping[str, Any] | None = None,
    vm_mem: str | Iterable[str | int] | None = None,
    progress=None,
    stats: dict | None = None,
) -> TraceMetadata:
    """Read `source_path` with a format plug-in (named, or sniffed) into a canonical trace.
    A ``page_size_bytes`` override is the page size a reader that computes pages from
    addresses cuts them at (its option of that name); a source of page ids is labelled.
    ``vm_mem``: each VM's configured memory to record (``"2MiB,1MiB"``, or a list; one size
    is every VM's), converted to pages of the trace's own page size: the override's, else
    what the source and the reader's options say (an 8 KiB-page reader halves the pages).
    `progress` (e.g. a tqdm bar) is advanced by the accesses read, and its ``total`` set
    when the format can count them beforehand (Parquet, oracleGeneral); `stats`, if given,
    is filled as write_canonical fills it."""
    if not os.path.exists(source_path):
        raise TraceError(source_path, None, "file not found" + looked_for(source_path))
    fmt: TraceFormat = get_format(format_name) if format_name else sniff_format(source_path)
    if os.path.isdir(source_path) and not fmt.reads_directory:
        # Else each reader fails in its own way: a size of 4096 bytes "truncated", an
        # IsADirectoryError blamed on the plug-in.
        raise TraceError(
            source_path,
            None,
            f"expected a file, got a directory (format {fmt.name!r} reads one file; "
            f"formats that read a directory: {directory_formats()})",
        )
    reader_options = _reader_options(
        fmt, options, (metadata_overrides or {}).get("page_size_bytes")
    )
    metadata = fmt.read_metadata(source_path, reader_options)
    if progress is not None:
        total = fmt.count_accesses(source_path, reader_options)
        if total is not None:
            progress.total = total  # a tqdm bar (or the CLI's counter) shows it
    metadata = metadata.overlay(
        source=metadata.source or fmt.name,
        parameters={
            **(metadata.parameters or {}),
            "format": fmt.name,
            "source_path": os.fspath(source_path),
            "reader_options": dataclasses.asdict(reader_options),
        },
        **(metadata_overrides or {}),
    )
    if vm_mem is not None:
        metadata = metadata.overlay(config_pages=vm_mem_pages(vm_mem, metadata.page_size_bytes))
    return write_canonical(
        fmt.read(source_path, reader_options),
        out_path,
        metadata,
        lru_filter_pages=lru_filter_pages,
        source_path=source_path,
        progress=progress,
        stats=stats,
    )
