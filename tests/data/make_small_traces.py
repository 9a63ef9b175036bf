"""Writes the small fixtures the reader fuzz tests truncate and mutate (tests/data/README.md).

Run from the repository root: ``.venv/bin/python tests/data/make_small_traces.py``. The
output is deterministic; it is committed so the tests never depend on this script's run.
"""

import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from balloonreplay.traces.formats import get_format
from balloonreplay.traces.formats.drmemtrace import RECORD
from balloonreplay.traces.io import write_trace

HERE = Path(__file__).resolve().parent
THREADS = ("drmemtrace.threadsig.2765542.2328", "drmemtrace.threadsig.2765543.2117")
HEAD_RECORDS = 120


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    from conftest import shared_data_dir

    sample = shared_data_dir() / "drmemtrace.threadsig.x86_64"
    lackey = get_format("lackey")
    table = pa.Table.from_batches(
        list(lackey.read(HERE / "touch_pages.lackey", lackey.make_options({})))
    )
    # Two VMs, so multi-VM code paths are fuzzed too: the second half of the accesses
    # becomes VM 1 (time order within each VM is kept).
    vm = np.zeros(table.num_rows, dtype=np.uint16)
    vm[table.num_rows // 2 :] = 1
    table = table.set_column(0, "vm", pa.array(vm))
    content = np.arange(table.num_rows, dtype=np.uint64) % 5  # some zero pages, some shared
    table = table.set_column(4, "content", pa.array(content))
    batches = table.to_batches()
    write_trace(batches, HERE / "touch_pages.parquet")
    get_format("csv").write(batches, HERE / "touch_pages.csv")
    get_format("oracle-general").write(batches, HERE / "touch_pages.oracleGeneral.bin")

    out_dir = HERE / "threadsig_head"
    out_dir.mkdir(exist_ok=True)
    for name in THREADS:
        with zipfile.ZipFile(sample / f"{name}.trace.zip") as archive:
            head = archive.open("chunk.0000").read(HEAD_RECORDS * RECORD.itemsize)
        target = out_dir / f"{name}.trace.zip"
        info = zipfile.ZipInfo("chunk.0000", date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr(info, head)


if __name__ == "__main__":
    main()
