"""Per-job cluster resources derived from the trace's size (workflow/rules/common.smk).

The workflow computes `mem_mb`, `runtime` and `cpus_per_task` of a replay from the trace's
metadata (accesses, distinct pages per VM) and the run (VM count, configured memory), and
the `runtime` of an ingest from the source file's size. These tests restate the formula
the README documents, write traces whose metadata claim a given size, and read the values
back from `snakemake --dry-run`, which prints every job's resources. No SLURM needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_runs import snakemake

from balloonreplay.traces.io import write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch

REPO = Path(__file__).resolve().parents[1]
PAGE_BYTES = 4096

# The documented formula (README, "Running the study on a SLURM cluster"), restated.
FLOOR_MB = 1000
BYTES_PER_ACCESS = 128
BYTES_PER_PAGE = 64
BYTES_PER_FRAME = 320
ACCESSES_PER_MIN = 60_000_000
FLOOR_MIN = 10
SECOND_CPU_ACCESSES = 10_000_000
INGEST_BYTES_PER_MIN = 600_000_000


def expected_replay(accesses: int, pages: int, frames: int) -> dict[str, int]:
    state = accesses * BYTES_PER_ACCESS + pages * BYTES_PER_PAGE + frames * BYTES_PER_FRAME
    return {
        "mem_mb": FLOOR_MB + -(-state // 1_000_000),
        "runtime": max(FLOOR_MIN, -(-accesses // ACCESSES_PER_MIN)),
        "cpus_per_task": 2 if accesses >= SECOND_CPU_ACCESSES else 1,
    }


def claimed_trace(path: Path, accesses: int, pages_per_vm: list[int]) -> None:
    """A trace of a few rows whose metadata claim `accesses` and `pages_per_vm`: the
    resource functions read the metadata only."""
    k = len(pages_per_vm)
    batch = make_batch(
        vm=np.arange(k), t_ns=np.zeros(k), page=np.zeros(k), write=np.zeros(k, dtype=bool)
    )
    metadata = TraceMetadata(
        source="test",
        config_pages=[1 << 16] * k,
        dense=True,
        pages_per_vm=pages_per_vm,
        accesses=accesses,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trace([batch], path, metadata)


def dry_run_resources(workdir: Path, config: dict, *targets: str) -> dict[str, dict[str, str]]:
    """Each planned job's output (first line) -> its resources, from a dry run."""
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    run = snakemake(workdir, configfile, *targets, "--dry-run", cores=1, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    jobs = {}
    for block in re.split(r"\n\s*\n", run.stdout + run.stderr):
        output = re.search(r"^\s+output: (\S+?),?$", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if output and resources:
            jobs[output.group(1)] = dict(
                item.split("=", 1) for item in resources.group(1).split(", ")
            )
    return jobs


@pytest.fixture
def study(tmp_path):
    """A study with a big replay (8 clones of a 2-VM trace on 256 MiB VMs), a replay of a
    trace that does not exist yet, and the ingest of a 10 GB source (a sparse file)."""
    source = tmp_path / "huge.csv"
    with source.open("wb") as fh:
        fh.truncate(10_000_000_000)
    csv = str(REPO / "config" / "data" / "cloudphysics-5k.csv")
    config = {
        "workloads": {
            "big": {"ingest": {"path": csv, "format": "csv", "vm_mem": ["64MiB", "64MiB"]}},
            "small": {"ingest": {"path": csv, "format": "csv", "vm_mem": ["16MiB"]}},
            "huge": {"ingest": {"path": str(source), "format": "csv", "vm_mem": ["1GiB"]}},
        },
        "experiments": {
            "big": {
                "workloads": ["big"],
                "vms": 8,
                "vm_mem": "256MiB",
                "host_mem": "1GiB",
                "policies": ["none"],
                "slo": {"baseline": "none"},
            },
            "small": {"workloads": ["small"], "policies": ["none"], "slo": {"baseline": "none"}},
            "huge": {"workloads": ["huge"], "policies": ["none"], "slo": {"baseline": "none"}},
        },
    }
    # Written after the (older) sources, so the dry run does not plan to re-ingest them.
    claimed_trace(tmp_path / "traces" / "big.parquet", 200_000_000, [3_000_000, 1_000_000])
    claimed_trace(tmp_path / "traces" / "small.parquet", 5_000, [700])
    return tmp_path, config


def test_replay_and_ingest_resources_follow_the_trace_size(study):
    workdir, config = study
    jobs = dry_run_resources(
        workdir,
        config,
        "results/runs/big/none/big-n8.parquet",
        "results/runs/small/none/small.parquet",
        "results/runs/huge/none/huge.parquet",
    )

    # 8 VMs cloned from 2: 4 copies of each VM's accesses and pages.
    big = jobs["results/runs/big/none/big-n8.parquet"]
    want = expected_replay(
        accesses=4 * 200_000_000,
        pages=4 * (3_000_000 + 1_000_000),
        frames=8 * (256 << 20) // PAGE_BYTES,
    )
    assert {k: int(big[k]) for k in want} == want
    assert want == {"mem_mb": 104592, "runtime": 14, "cpus_per_task": 2}  # the README example

    # A tiny trace gets the floors: one CPU, ten minutes, and the floor plus its state; the
    # experiment gives no vm_mem, so the frames are the trace's configured memory.
    small = jobs["results/runs/small/none/small.parquet"]
    want = expected_replay(accesses=5_000, pages=700, frames=1 << 16)
    assert {k: int(small[k]) for k in want} == want
    assert (want["runtime"], want["cpus_per_task"]) == (FLOOR_MIN, 1)

    # The trace is not there yet: Snakemake says so until the ingest has run.
    huge = jobs["results/runs/huge/none/huge.parquet"]
    assert {huge[k] for k in ("mem_mb", "runtime", "cpus_per_task")} == {"<TBD>"}
    ingest = jobs["traces/huge.parquet"]
    assert int(ingest["runtime"]) == -(-10_000_000_000 // INGEST_BYTES_PER_MIN) > FLOOR_MIN
    assert int(ingest["mem_mb"]) == 2000
