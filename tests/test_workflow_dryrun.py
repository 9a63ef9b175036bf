"""`snakemake --dry-run` works before anything has run (checkpoints still pending): what
a user does first to see what a study will do."""

from __future__ import annotations

import pytest
from workflow_runs import REPO, snakemake


@pytest.mark.parametrize("configfile", [".test/config/config.yaml", "config/config.yaml"])
def test_dry_run_lists_the_jobs_without_running_them(tmp_path, configfile):
    result = snakemake(tmp_path, REPO / configfile, "--dry-run", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "rule replay:" in result.stdout and "This was a dry-run" in result.stdout
    assert not (tmp_path / "results").exists()


def test_the_paper_target_reruns_when_a_file_its_config_uses_changes(tmp_path):
    # The nested Snakemake, which would see the change, starts only if the paper job
    # runs: the files config/paper.yaml uses must be the job's inputs.
    result = snakemake(tmp_path, REPO / ".test/config/config.yaml", "paper", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    inputs = next(line for line in result.stdout.splitlines() if "input:" in line)
    for used in ("config/workloads/mixed.yaml", "config/capture/sqlite-paper.sql"):
        assert str(REPO / used) in inputs
