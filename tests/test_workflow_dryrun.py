"""`snakemake --dry-run` works before anything has run (checkpoints still pending): what
a user does first to see what a study will do."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from workflow_runs import REPO, TEST_CONFIG, snakemake


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


@pytest.mark.parametrize("with_figures", [True, False])
def test_a_configfile_given_replaces_the_default_config(tmp_path, with_figures):
    """A study directory holding config/config.yaml, as the repository root does: Snakemake
    deep-merged the given config into that default, so the .test study was refused (its
    figures.timeline kept the default's `workload: sqlite`) and a config without
    `figures:` planned the whole default study beside its own."""
    study = tmp_path / "study"
    (study / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", study / "config" / "config.yaml")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    if not with_figures:
        del config["figures"]
    configfile = tmp_path / "mine.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(study, configfile, "--dry-run", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    planned = set(re.findall(r"output: results/runs/([^/]+)/", result.stdout))
    assert planned == set(config["experiments"])
    traces = set(re.findall(r"output: traces/([^,\s]+)\.parquet", result.stdout))
    assert traces == set(config["workloads"])


def test_a_workload_named_like_a_vm_point_gets_its_own_baseline(tmp_path):
    """Workloads 'tiny' and 'tiny-n1' in an experiment without VM counts: the baseline
    point 'tiny-n1' was read as tiny with 1 VM and replayed traces/tiny.parquet."""
    spec = ".test/config/workloads/tiny.yaml"
    config = {
        "workloads": {
            "tiny": {"generate": {"spec": spec, "seed": 7}},
            "tiny-n1": {"generate": {"spec": spec, "seed": 8}},
        },
        "experiments": {
            "single": {
                "workloads": ["tiny", "tiny-n1"],
                "vm_mem": "2MiB",
                "policies": ["esx"],
                "epoch_ns": 100_000_000,
            }
        },
    }
    configfile = tmp_path / "named.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path / "study", configfile, "--dry-run", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    pairs = re.findall(
        r"input: traces/([^,]+)\.parquet.*\n\s+output: results/baselines/single/(\S+)\.parquet",
        result.stdout,
    )
    assert sorted((point, trace) for trace, point in pairs) == [
        ("tiny", "tiny"),
        ("tiny-n1", "tiny-n1"),
    ]
