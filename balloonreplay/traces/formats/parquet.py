"""The canonical format itself: Parquet with the columns of ``CANONICAL_SCHEMA``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import pyarrow as pa

from balloonreplay.traces.formats import ROW_COUNT, TraceFormat, option
from balloonreplay.traces.io import DEFAULT_BATCH_ROWS, open_trace, write_trace
from balloonreplay.traces.schema import TraceMetadata

PARQUET_MAGIC = b"PAR1"


@dataclasses.dataclass
class ParquetOptions:
    batch_rows: int = option(
        DEFAULT_BATCH_ROWS, "rows per record batch while streaming", bounds=ROW_COUNT
    )


class ParquetFormat(TraceFormat):
    name = "parquet"
    description = (
        "canonical trace: Parquet with columns vm, t_ns, page, write[, content, file_backed, free]"
    )
    Options = ParquetOptions

    def sniff(self, path: str | os.PathLike) -> bool:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            return fh.read(4) == PARQUET_MAGIC

    def read_metadata(self, path, options) -> TraceMetadata:
        meta = open_trace(path).metadata
        return meta if meta.source else meta.overlay(source=self.name)

    def count_accesses(self, path, options) -> int:
        return open_trace(path).num_rows

    def read(self, path, options: ParquetOptions) -> Iterator[pa.RecordBatch]:
        yield from open_trace(path).iter_batches(options.batch_rows)

    def write(self, batches: Iterable[pa.RecordBatch], path, options=None) -> None:
        write_trace(batches, path)
