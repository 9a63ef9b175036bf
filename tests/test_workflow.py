"""The Snakemake workflow: the tiny CI config end to end, and config validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from balloonreplay.traces.generators.workload import GENERATOR_SOURCE
from balloonreplay.traces.io import open_trace

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(SNAKEMAKE),
            "--cores",
            "2",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(configfile),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tiny_config_runs_end_to_end(tmp_path):
    result = snakemake(tmp_path, TEST_CONFIG)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for name, workload in config["workloads"].items():
        trace = open_trace(tmp_path / "traces" / f"{name}.parquet")
        table = trace.read_table()
        assert table.num_rows == trace.metadata.accesses > 0
        assert trace.metadata.dense
        assert (tmp_path / "logs" / "traces" / f"{name}.log").exists()
        if "generate" in workload:
            assert trace.metadata.source == GENERATOR_SOURCE
            assert trace.metadata.seed == workload["generate"]["seed"]
        settings = workload.get("generate") or workload["ingest"]
        assert trace.metadata.lru_filter_pages == settings.get("lru_filter_pages")
    # The filtered trace is a reduction of the unfiltered one.
    full = open_trace(tmp_path / "traces" / "tiny.parquet").num_rows
    assert open_trace(tmp_path / "traces" / "tiny-filtered.parquet").num_rows < full
    # Nothing left to do on a second run.
    again = snakemake(tmp_path, TEST_CONFIG, "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def _bad_config(tmp_path: Path, mutate) -> Path:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c["workloads"]["tiny-csv"]["ingest"].update(vm_mem=["-16MiB"]), "vm_mem"),
        (lambda c: c["workloads"]["tiny"]["generate"].update(seed=-1), "seed"),
        (lambda c: c["workloads"]["tiny"].update(colour="blue"), "colour"),
        (lambda c: c.update(hosts={}), "hosts"),
        (lambda c: c["experiments"]["default"]["workloads"].append("nope"), "nope"),
    ],
)
def test_invalid_config_fails_naming_the_key(tmp_path, mutate, named):
    result = snakemake(tmp_path, _bad_config(tmp_path, mutate), "--dry-run")
    assert result.returncode != 0
    assert named in result.stderr + result.stdout


def test_bad_workload_spec_fails_at_load_naming_the_key(tmp_path):
    spec = yaml.safe_load((REPO / ".test" / "config" / "workloads" / "tiny.yaml").read_text())
    spec["vm_types"]["db"]["memory"] = "-1GiB"
    spec_path = tmp_path / "bad-spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    config = _bad_config(
        tmp_path, lambda c: c["workloads"]["tiny"]["generate"].update(spec=str(spec_path))
    )
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "workloads.tiny.generate.spec" in output
    assert "vm_types.db.memory" in output
