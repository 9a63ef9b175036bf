"""Runs a tiny workflow through the SLURM executor plug-in on a real single-node SLURM.

scripts/slurm-local.sh brings SLURM up (installing it with apt-get when missing), the smoke
workflow in tests/data/slurm_smoke runs with profiles/slurm, and the test checks that every
job ran as a SLURM job: its output carries a SLURM job id that the plug-in submitted and
that `sacct` lists, completed, under the run's id. Then SLURM is brought down again.

Needs root on Debian (apt-get, system daemons). Where it cannot run it skips with the
reason, except under CI=true, where it fails with the reason instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
PROFILE = REPO / "profiles" / "slurm"
SMOKE = REPO / "tests" / "data" / "slurm_smoke" / "Snakefile"
PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "main")
ACCOUNT = os.environ.get("SLURM_LOCAL_ACCOUNT", "balloonreplay")
PARTS = ("a", "b", "c")

pytestmark = pytest.mark.slurm


def _cannot_run_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root: scripts/slurm-local.sh installs packages and starts system daemons"
    if not Path("/etc/debian_version").exists():
        return "needs Debian: scripts/slurm-local.sh installs SLURM with apt-get"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


def _script(action: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _running(pid: int) -> bool:
    """Whether PID is a live process (an exited one that waits to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def slurm():
    """SLURM up for the module; down afterwards unless it was already up before."""
    reason = _cannot_run_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the SLURM test must run under CI=true but cannot: {reason}")
        pytest.skip(reason)
    was_up = _script("status", timeout=60).returncode == 0
    started = time.monotonic()
    up = _script("up", timeout=1200)
    assert up.returncode == 0, f"slurm-local.sh up failed:\n{up.stdout}\n{up.stderr}"
    print(f"slurm-local.sh up: {time.monotonic() - started:.1f}s\n{up.stdout}")
    status = _script("status", timeout=60)
    assert status.returncode == 0, f"not all daemons run after up:\n{status.stdout}"
    ours = [int(pid) for pid in re.findall(r"\(pid (\d+), started by this script\)", status.stdout)]
    try:
        yield
    finally:
        if not was_up:
            down = _script("down", timeout=300)
            assert down.returncode == 0, (
                f"slurm-local.sh down failed:\n{down.stdout}\n{down.stderr}"
            )
            alive = [pid for pid in ours if _running(pid)]
            assert not alive, f"daemons started by slurm-local.sh still run after down: {alive}"


def _sacct_jobs(run_id: str) -> dict[str, tuple[str, str, str]]:
    """Job id -> (state, partition, account) of the run's jobs, from the accounting database."""
    start = f"{datetime.now() - timedelta(days=1):%Y-%m-%dT%H:%M}"
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            "--format=JobIDRaw,State,Partition,Account",
            f"--starttime={start}",
            "--endtime=now",
            f"--name={run_id}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, partition, account = line.split("|")
        jobs[job_id] = (state, partition, account)
    return jobs


def test_smoke_workflow_runs_as_slurm_jobs(slurm, tmp_path):
    env = dict(
        os.environ,
        BALLOONREPLAY_SLURM_PARTITION=PARTITION,
        BALLOONREPLAY_SLURM_ACCOUNT=ACCOUNT,
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SMOKE),
        "--workflow-profile",
        str(PROFILE),
        "--directory",
        str(tmp_path),
        "--slurm-keep-successful-logs",
    ]
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    log = run.stdout + run.stderr
    print(f"snakemake through SLURM: {time.monotonic() - started:.1f}s")
    assert run.returncode == 0, f"snakemake failed:\n{log[-6000:]}"

    run_ids = re.findall(r"SLURM run ID: (\S+)", log)
    assert len(run_ids) == 1, f"no SLURM run id in the log:\n{log[-3000:]}"
    run_id = run_ids[0]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    assert len(submitted) == len(PARTS), f"expected {len(PARTS)} sbatch jobs:\n{log[-3000:]}"

    # Each output was written inside a distinct SLURM job that the plug-in submitted.
    seen = set()
    for part in PARTS:
        fields = dict(
            line.split("=", 1) for line in (tmp_path / "out" / f"{part}.txt").read_text().split()
        )
        assert fields["part"] == part
        assert fields["host"] == socket.gethostname()
        assert fields["slurm_job_id"].isdigit(), f"{part}: no SLURM job id in {fields}"
        seen.add(fields["slurm_job_id"])
    assert seen == submitted

    # The accounting database has them, completed, on the partition and account asked for.
    # slurmdbd records a job's end asynchronously, so give it a little time.
    deadline = time.monotonic() + 60
    while True:
        jobs = _sacct_jobs(run_id)
        done = {j for j, (state, _, _) in jobs.items() if state == "COMPLETED"}
        if done >= submitted or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(jobs) == submitted, f"sacct --name {run_id} lists {jobs}, submitted {submitted}"
    for job_id, (state, partition, account) in jobs.items():
        assert (state, partition, account) == ("COMPLETED", PARTITION, ACCOUNT), job_id
