"""Interrupted runs: SIGKILL `snakemake --cores 2` in the middle of the `.test/` study,
run the same command again, and the study completes with the results of an
uninterrupted run. Nothing a killed job wrote is ever taken as complete: every writer
renames a finished temporary file into place, and Snakemake reruns the jobs it had
marked incomplete (profiles/default: rerun-incomplete)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from workflow_runs import (
    REPO,
    assert_same_results,
    run_files,
    run_study,
    share_recordings,
    snakemake_argv,
    uninterrupted_study,
)


def started_unfinished_replays(root: Path) -> list[Path]:
    """Replay outputs whose job has started (its log exists: the job opens it first
    thing) but not produced its file."""
    out = []
    for sub in ("runs", "baselines"):
        for log in (root / "logs" / sub).rglob("*.log"):
            rel = log.relative_to(root / "logs" / sub).with_suffix(".parquet")
            output = root / "results" / sub / rel
            if not output.exists():
                out.append(output)
    return out


def test_killed_study_resumes_to_the_same_results(tmp_path_factory, tmp_path):
    reference = uninterrupted_study(tmp_path_factory, cores=2)
    total = len(run_files(reference))
    root = tmp_path / "study"
    root.mkdir()
    share_recordings(reference, root)
    log = (tmp_path / "killed.log").open("w")
    # Its own session, so the kill takes Snakemake and every job it started.
    study = subprocess.Popen(
        snakemake_argv(root, 2),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            assert study.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no replay was ever seen running"
            done = len(run_files(root)) if (root / "results").exists() else 0
            # Part-way (some replays done, most not) and a replay job in flight.
            if 0 < done < total // 2 and started_unfinished_replays(root):
                break
            time.sleep(0.05)
    finally:
        os.killpg(study.pid, signal.SIGKILL)
        study.wait()
        log.close()
    killed = started_unfinished_replays(root)
    assert killed, "the kill did not interrupt a replay"
    assert 0 < len(run_files(root)) < total
    # A killed writer leaves at most a hidden temporary file, never the output itself.
    assert not any(p.exists() for p in killed)

    run_study(root, 2)  # the same command again: it just resumes

    assert all(p.exists() for p in killed)
    assert_same_results(reference, root)
