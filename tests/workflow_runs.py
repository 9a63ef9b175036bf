"""Shared by the resume and determinism tests: the `.test/` study run by Snakemake in a
temporary directory, once per session for each setting, and the tables it produces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from balloonreplay.metrics import read_metrics_metadata

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"

# Wall-clock measurements, which differ between equal runs: the replay's duration (a
# summary column and a key of each run's recorded summary). Nothing else may differ.
WALL_CLOCK_COLUMNS = ("replay_seconds",)


def snakemake_argv(
    workdir: Path, cores: int, *args: str, configfile: Path = TEST_CONFIG
) -> list[str]:
    """The README's command (`snakemake --cores N`, the default profile applies) on a
    config (the `.test/` one unless told), run in `workdir`."""
    # `args` first: after --configfile (which takes several files) a target would be
    # read as one more config file.
    return [
        str(SNAKEMAKE),
        *args,
        "--cores",
        str(cores),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
    ]


def snakemake(
    workdir: Path, configfile: Path, *args: str, cores: int = 2, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run Snakemake on `configfile` in `workdir`, capturing its output."""
    return subprocess.run(
        snakemake_argv(workdir, cores, *args, configfile=configfile),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_study(workdir: Path, cores: int) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_argv(workdir, cores), cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def share_recordings(source: Path, workdir: Path) -> None:
    """Give `workdir` the real-program recordings (``capture`` workloads) of the study in
    `source`. A recording is a measurement, not a seeded computation: the program's
    addresses and access counts vary with its environment (here, the working directory),
    so two recordings differ. Determinism is a property of everything downstream of the
    inputs; every generated and ingested trace is still made afresh in each study."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for name, workload in config["workloads"].items():
        if "capture" in workload:
            (workdir / "traces").mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / "traces" / f"{name}.parquet", workdir / "traces")


_STUDIES: dict[int, Path] = {}


def uninterrupted_study(tmp_path_factory, cores: int) -> Path:
    """The study run once, start to end, with `cores` cores (shared by every test). The
    first one records the real programs; later ones reuse its recordings."""
    if cores not in _STUDIES:
        workdir = tmp_path_factory.mktemp(f"study-cores{cores}")
        if _STUDIES:
            share_recordings(next(iter(_STUDIES.values())), workdir)
        run_study(workdir, cores)
        _STUDIES[cores] = workdir
    return _STUDIES[cores]


def run_files(root: Path) -> list[Path]:
    """Every replay's metrics file (runs and SLO baselines), relative to root."""
    results = root / "results"
    return sorted(
        p.relative_to(root)
        for sub in ("runs", "baselines")
        for p in (results / sub).rglob("*.parquet")
    )


def _recorded(path: Path) -> dict:
    """A run's metadata, less what legitimately differs: wall-clock time and the absolute
    path of the trace (each study runs in its own directory)."""
    meta = read_metrics_metadata(path)
    for key in WALL_CLOCK_COLUMNS:
        meta.get("summary", {}).pop(key, None)
    meta.get("trace", {}).pop("path", None)
    return meta


def assert_same_results(a: Path, b: Path) -> None:
    """Every run's metrics table and metadata, the summary and the consolidation table of
    study `a` equal those of study `b`, row for row and value for value."""
    files = run_files(a)
    assert files, f"no runs under {a}"
    assert files == run_files(b)
    for rel in files:
        left, right = pq.read_table(a / rel), pq.read_table(b / rel)
        pd.testing.assert_frame_equal(left.to_pandas(), right.to_pandas(), obj=str(rel))
        assert _recorded(a / rel) == _recorded(b / rel), rel
    for name in ("summary", "consolidation"):
        left = pd.read_parquet(a / "results" / f"{name}.parquet")
        right = pd.read_parquet(b / "results" / f"{name}.parquet")
        wall = [c for c in WALL_CLOCK_COLUMNS if c in left.columns]
        pd.testing.assert_frame_equal(left.drop(columns=wall), right.drop(columns=wall), obj=name)
