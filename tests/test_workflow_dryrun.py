"""`snakemake --dry-run` works before anything has run (checkpoints still pending): what
a user does first to see what a study will do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


@pytest.mark.parametrize("configfile", [".test/config/config.yaml", "config/config.yaml"])
def test_dry_run_lists_the_jobs_without_running_them(tmp_path, configfile):
    result = subprocess.run(
        [str(SNAKEMAKE), "--dry-run", "--cores", "2", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / configfile)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "rule replay:" in result.stdout and "This was a dry-run" in result.stdout
    assert not (tmp_path / "results").exists()
