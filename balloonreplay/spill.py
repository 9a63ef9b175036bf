"""Rows a replay has read but cannot use yet, kept on disk so memory stays bounded.

The trace is read in time order, but each VM runs on its own clock: trace time plus the
stalls it has suffered. A VM that stalls more falls behind in host time, so the rows it
has not reached pile up while the others read on; with slowdowns that differ by 10%, a
tenth of a VM's trace would wait in memory. The replay driver (balloonreplay/replay.py,
``_Buffers``) keeps at most a fixed number of unconsumed rows per VM in memory and
appends the rest here, one file per VM, to be read back in order when the VM needs them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


class RowSpill:
    """A first-in first-out queue of rows per VM, on disk.

    ``columns`` maps column names to dtypes; rows are stored as one record per row in an
    append-only file per VM, and a VM's file is removed once it has been read to its end.
    Files live in a private temporary directory (under $TMPDIR), removed by ``close()``.
    """

    def __init__(self, num_vms: int, columns: dict[str, np.dtype]):
        self.record = np.dtype([(name, np.dtype(dtype)) for name, dtype in columns.items()])
        self.directory = Path(tempfile.mkdtemp(prefix="balloonreplay-spill-"))
        self.pending = np.zeros(num_vms, dtype=np.int64)  # rows on disk, not yet read back
        self._read = np.zeros(num_vms, dtype=np.int64)  # rows of the file already read
        self.spilled_rows = 0  # over the whole run, for reports

    def _path(self, vm: int) -> Path:
        return self.directory / f"vm{vm}.rows"

    def push(self, vm: int, columns: dict[str, np.ndarray]) -> None:
        """Append rows (equal-length columns, in order) behind the VM's pending ones."""
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        rows = np.empty(n, dtype=self.record)
        for name in self.record.names:
            rows[name] = columns[name]
        with open(self._path(vm), "ab") as fh:
            rows.tofile(fh)
        self.pending[vm] += n
        self.spilled_rows += n

    def pop(self, vm: int, max_rows: int) -> dict[str, np.ndarray]:
        """Up to ``max_rows`` of the VM's oldest pending rows, as contiguous columns."""
        n = int(min(max_rows, self.pending[vm]))
        path = self._path(vm)
        rows = np.fromfile(
            path, dtype=self.record, count=n, offset=int(self._read[vm]) * self.record.itemsize
        )
        if len(rows) != n:
            raise OSError(f"{path}: expected {n} spilled rows, read {len(rows)}")
        self.pending[vm] -= n
        self._read[vm] += n
        if self.pending[vm] == 0:
            path.unlink()  # drained: start the next spill of this VM from an empty file
            self._read[vm] = 0
        return {name: np.ascontiguousarray(rows[name]) for name in self.record.names}

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
