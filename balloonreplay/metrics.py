"""The metrics schema (one row per VM per epoch) and writing it to Parquet.

The first columns are exactly those issue 3 promises, in that order; more follow. The
file's key-value metadata (key ``balloonreplay.replay``) records every parameter of the
run, the policy with its parameters, the trace's identity and the run summary, so a
result can always be traced back to what produced it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from balloonreplay.errors import BalloonreplayError
from balloonreplay.traces.io import atomic_path, looked_for

METRIC_COLUMNS = (
    "vm",
    "epoch",
    "t_ns",
    "accesses",
    "guest_faults",
    "guest_swap_in",
    "guest_swap_out",
    "disk_reads",
    "zero_fills",
    "host_swap_in",
    "host_swap_out",
    "balloon_pages",
    "resident_pages",
    "backed_pages",
    "shared_pages",
    "zero_shared_pages",
    "cow_breaks",
    "silent_swap_writes",
    "stale_swap_reads",
    "false_swap_reads",
    "blocked_ns",
    "stall_ns",
)
EXTRA_COLUMNS = (
    "disk_writes",  # write-backs of dirty file-backed victims
    "scanned_pages",  # frames the sharing scanner visited
    "balloon_inflated",
    "balloon_deflated",
    "balloon_target_pages",
    "free_pages",  # guest free frames
    "host_swapped_pages",
    "touched_pages",  # distinct frames accessed in the epoch (access bits)
    "guest_frees",  # free events of the trace (pages the guest freed)
    "reported_free_pages",  # free frames the host unbacked (free page reporting)
    "free_backed_pages",  # guest free frames still backed or shared
    # Host-wide gauges, repeated on every VM's row of the epoch: machine pages in use
    # (backed + distinct shared contents + overhead) and distinct shared contents, so
    # free host memory and the memory saved by sharing are exact.
    "host_used_pages",
    "shared_contents",
)
ALL_COLUMNS = METRIC_COLUMNS + EXTRA_COLUMNS
METADATA_KEY = "balloonreplay.replay"

# Totals reported in the summary (sums over VMs and epochs).
GAUGE_COLUMNS = (
    "balloon_pages",
    "resident_pages",
    "backed_pages",
    "shared_pages",
    "zero_shared_pages",
    "balloon_target_pages",
    "free_pages",
    "host_swapped_pages",
    "touched_pages",
    "free_backed_pages",
    "host_used_pages",
    "shared_contents",
)
TOTAL_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in ("vm", "epoch", "t_ns", *GAUGE_COLUMNS))


def metrics_frame(rows: list[dict[str, Any]] | dict[str, np.ndarray]) -> pd.DataFrame:
    """A metrics table with the schema's columns, in order, all int64."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in ALL_COLUMNS})
    return frame.loc[:, list(ALL_COLUMNS)].astype(np.int64).reset_index(drop=True)


def totals(frame: pd.DataFrame) -> dict[str, int]:
    return {c: int(frame[c].sum()) for c in TOTAL_COLUMNS}


def write_metrics(frame: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Write the table atomically, with the run's parameters in the file metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    kv = dict(table.schema.metadata or {})
    kv[METADATA_KEY.encode()] = json.dumps(metadata, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(kv)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_metrics_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The run's parameters from a metrics file; a file that is missing, not Parquet or
    not written by a replay (a trace, say) is a BalloonreplayError naming it."""
    try:
        kv = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise BalloonreplayError(f"{os.fspath(path)}: file not found{looked_for(path)}") from None
    except (pa.ArrowException, OSError) as exc:
        raise BalloonreplayError(
            f"{os.fspath(path)}: expected a metrics file (Parquet), could not read it: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    raw = kv.get(METADATA_KEY.encode())
    if raw is None:
        raise BalloonreplayError(
            f"{os.fspath(path)}: expected a metrics file written by a replay (its metadata "
            f"key {METADATA_KEY!r} is missing)"
        )
    return json.loads(raw)
