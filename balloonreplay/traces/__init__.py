"""The canonical trace: schema, Parquet I/O, format plug-ins, ingest and generators."""

from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata

__all__ = ["CANONICAL_SCHEMA", "TraceMetadata"]
