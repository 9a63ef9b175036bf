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
