"""Reading and writing canonical traces as Parquet, streaming, with atomic output.

A failed write never leaves a file under the final name: data goes to a hidden
temporary file beside it and is renamed into place only when the writer closes
cleanly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from balloonreplay.errors import OutputError, TraceError
from balloonreplay.traces.schema import (
    CANONICAL_SCHEMA,
    METADATA_KEY,
    TraceMetadata,
    conform_batch,
)

DEFAULT_BATCH_ROWS = 1 << 20
ROW_GROUP_ROWS = 1 << 20
# What pyarrow raises on a corrupt file: ArrowInvalid, ArrowNotImplementedError (bad type
# widths), OSError (decompression, thrift), IndexError/ValueError on some bad footers.
_PARQUET_ERRORS = (pa.ArrowException, OSError, IndexError, ValueError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def looked_for(path: str | os.PathLike, resolved: str | os.PathLike | None = None) -> str:
    """`` (looked for /abs/path)`` for a missing input whose absolute path (`resolved`,
    by default `path` from the working directory) differs from `path` as written, else
    ``""``: a relative path is taken from a directory the user may not have in mind (the
    working directory of a script or a rule, a config's repository root)."""
    absolute = os.path.abspath(path if resolved is None else resolved)
    return "" if absolute == os.fspath(path) else f" (looked for {absolute})"


def check_output_path(final_path: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Refuse, before any work, an output path that cannot become a file: an empty name,
    a directory, a path under a file, a directory this process cannot write in, or one
    of the command's own inputs (which the output would replace)."""
    if not os.fspath(final_path):
        raise OutputError(final_path, "expected a file name, got an empty one")
    final_path = Path(final_path)
    if final_path.is_dir():
        raise OutputError(final_path, "it is a directory; expected a file name")
    for source in inputs:
        if source is not None and final_path.exists() and Path(source).exists():
            if os.path.samefile(final_path, source):
                raise OutputError(final_path, "it is this command's input, which it would replace")
    # The nearest existing directory above it: the one the missing ones are made in.
    parent = final_path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(final_path, f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(final_path, f"no permission to write in {parent}")


@contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `final_path`; rename it into place on success. An
    operating-system error making the directory, the temporary file or the rename is an
    OutputError naming the path."""
    final_path = Path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final_path.name}.", suffix=suffix + ".tmp", dir=final_path.parent
        )
    except OSError as exc:
        raise OutputError(final_path, _one_line(exc)) from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise users sharing results
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, final_path)
        except OSError as exc:
            raise OutputError(final_path, _one_line(exc)) from exc
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


ENCODED_COLUMNS = {"t_ns": "DELTA_BINARY_PACKED", "page": "BYTE_STREAM_SPLIT"}


class TraceWriter:
    """Streams canonical record batches into a Parquet file, atomically.

    Metadata may be completed up to `close()` (ingest learns the distinct page counts
    only at the end).
    """

    def __init__(self, path: str | os.PathLike, metadata: TraceMetadata | None = None):
        self.path = Path(path)
        self.metadata = metadata or TraceMetadata()
        self.rows = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(
            self._tmp,
            CANONICAL_SCHEMA,
            # Page ids compress with LZ4, which decodes in half zstd's time (a replay
            # decodes them beside the kernel, and its thread could not keep up with a
            # one-VM kernel: 20 M Zipf page ids 0.17 -> 0.09 CPU s, 47 -> 53 MiB). LZ4
            # has no checksum of its own, so every page carries a CRC, which readers
            # verify (page_checksum_verification): a corrupt page is an error, never
            # other page ids.
            compression={
                name: "lz4" if name == "page" else "zstd" for name in CANONICAL_SCHEMA.names
            },
            write_page_checksum=True,
            write_statistics=True,
            # Times rise (small deltas) and page ids are spread out: delta and byte-stream-
            # split encodings decode about 4x faster than dictionaries of unique values,
            # and compress better (20 M Zipf accesses: 96 -> 56 MiB, 1.66 -> 0.41 CPU s).
            use_dictionary=[n for n in CANONICAL_SCHEMA.names if n not in ENCODED_COLUMNS],
            column_encoding=ENCODED_COLUMNS,
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if batch.schema != CANONICAL_SCHEMA:
            batch = conform_batch(batch, self.path)
        self._writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
        self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.add_key_value_metadata({METADATA_KEY.decode(): self.metadata.to_json()})
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._writer.close()
        try:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:
            pass

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def write_trace(
    batches: Iterable[pa.RecordBatch],
    path: str | os.PathLike,
    metadata: TraceMetadata | None = None,
) -> int:
    """Write batches to `path` atomically; return the number of rows written."""
    with TraceWriter(path, metadata) as writer:
        for batch in batches:
            writer.write(batch)
    return writer.rows


class Trace:
    """A canonical trace on disk: metadata plus streaming access to its rows."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise TraceError(self.path, None, "file not found" + looked_for(self.path))
        try:
            self._file = pq.ParquetFile(self.path, page_checksum_verification=True)
            schema = self._file.schema_arrow
        except _PARQUET_ERRORS as exc:
            raise TraceError(
                self.path, None, f"expected a Parquet file ({_one_line(exc)})"
            ) from None
        kv = self._file.metadata.metadata or {}
        self.metadata = (
            TraceMetadata.from_json(kv[METADATA_KEY], self.path)
            if METADATA_KEY in kv
            else TraceMetadata()
        )
        # Check the columns up front so a bad file fails before any work is done.
        conform_batch(schema.empty_table(), self.path)

    @property
    def num_rows(self) -> int:
        return self._file.metadata.num_rows

    def iter_batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        for batch in checked_batches(self._file, self.path, batch_rows):
            yield conform_batch(batch, self.path)

    def read_table(self) -> pa.Table:
        """The whole trace in memory; for tests and small traces only."""
        return pa.Table.from_batches(list(self.iter_batches()), schema=CANONICAL_SCHEMA)


def checked_batches(
    parquet_file: pq.ParquetFile,
    path,
    batch_rows: int,
    columns: list[str] | None = None,
    use_threads: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Record batches of about ``batch_rows`` rows, read a few whole row groups at a time,
    raising TraceError (naming the row group) for corrupt data and for a group holding
    other than the rows its footer claims, instead of pyarrow's own errors.

    Not one ``ParquetFile.iter_batches`` over the file: in pyarrow 26 its reader keeps what
    it has decoded until it is exhausted (measured: Arrow's allocation grew by 520 MiB
    over 40 batches of 1 Mi rows, and by 36 MiB this way), so a 500-million-row trace
    would not fit in memory. Reading row groups by index frees each table once its
    batches are used."""
    meta = parquet_file.metadata
    groups = meta.num_row_groups
    g = 0
    while g < groups:
        chunk = [g]
        claimed = meta.row_group(g).num_rows
        g += 1
        while g < groups and claimed < batch_rows:
            chunk.append(g)
            claimed += meta.row_group(g).num_rows
            g += 1
        try:
            # One contiguous chunk per column, so batches have batch_rows rows whatever
            # the row-group size.
            table = parquet_file.read_row_groups(
                chunk, columns=columns, use_threads=use_threads
            ).combine_chunks()
        except _PARQUET_ERRORS:
            table = None
        if table is None or table.num_rows != claimed:
            # Only on failure: read the chunk's groups one by one to name the bad one.
            _raise_for_bad_group(parquet_file, path, chunk, columns)
        yield from table.to_batches(max_chunksize=batch_rows)


def _raise_for_bad_group(parquet_file: pq.ParquetFile, path, chunk: list[int], columns) -> None:
    """Raise TraceError naming the first of ``chunk``'s row groups that cannot be read or
    holds other than the rows its footer claims."""
    for group in chunk:
        try:
            rows = parquet_file.read_row_group(group, columns=columns, use_threads=False).num_rows
        except _PARQUET_ERRORS as exc:
            raise TraceError(
                path, f"row group {group}", f"expected readable Parquet data ({_one_line(exc)})"
            ) from None
        claimed = parquet_file.metadata.row_group(group).num_rows
        if rows != claimed:  # pyarrow stops at the data's end, whatever the footer says
            raise TraceError(
                path,
                f"row group {group}",
                f"expected {claimed} rows as the footer says, the data holds {rows}",
            )
    # Each group alone is sound but not all of them together (not seen so far).
    raise TraceError(
        path,
        f"row groups {chunk[0]}-{chunk[-1]}",
        "expected readable Parquet data (the groups read one by one are, together not)",
    )


def open_trace(path: str | os.PathLike) -> Trace:
    return Trace(path)
