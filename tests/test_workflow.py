"""The Snakemake workflow: the tiny CI config end to end, and config validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from workflow_runs import snakemake, uninterrupted_study

from balloonreplay.config_check import check_config
from balloonreplay.errors import BalloonreplayError
from balloonreplay.metrics import METRIC_COLUMNS, read_metrics_metadata
from balloonreplay.plots import STUDY_FIGURES
from balloonreplay.traces.generators.workload import GENERATOR_SOURCE
from balloonreplay.traces.io import open_trace
from balloonreplay.units import parse_size_pages

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def test_tiny_config_runs_end_to_end(tmp_path_factory):
    # The study the resume and determinism tests compare against: run once per session.
    tmp_path = uninterrupted_study(tmp_path_factory, cores=2)
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
        settings = workload.get("generate") or workload.get("ingest") or workload["capture"]
        assert trace.metadata.lru_filter_pages == settings.get("lru_filter_pages")
        if "capture" in workload:
            assert trace.metadata.source == "memtrace"
            assert not (tmp_path / "traces" / f".capture-{name}").exists()  # scratch removed
    # The filtered trace is a reduction of the unfiltered one.
    full = open_trace(tmp_path / "traces" / "tiny.parquet").num_rows
    assert open_trace(tmp_path / "traces" / "tiny-filtered.parquet").num_rows < full
    check_study_outputs(tmp_path, config)
    # The study as a Snakemake report: every figure with its caption.
    report = snakemake(tmp_path, TEST_CONFIG, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # Nothing left to do on a second run.
    again = snakemake(tmp_path, TEST_CONFIG, "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_another_slo_reruns_no_replay(tmp_path_factory, tmp_path):
    # The SLO is a threshold applied after the replays (the summary and the search's
    # rounds): trying another must not rerun the study's replays.
    study = uninterrupted_study(tmp_path_factory, cores=2)
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["experiments"]["default"]["slo"] = {"slowdown": 1.2}
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    plan = snakemake(study, path, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "rule summarize:" in plan.stdout and "checkpoint refine_sweep:" in plan.stdout
    assert "rule replay:" not in plan.stdout and "rule replay_baseline:" not in plan.stdout


def test_a_config_with_its_keys_reordered_reruns_nothing(tmp_path_factory, tmp_path):
    # Snakemake compares params as text; yaml.safe_dump sorts every mapping's keys.
    study = uninterrupted_study(tmp_path_factory, cores=2)
    path = tmp_path / "sorted.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(TEST_CONFIG.read_text()), sort_keys=True))
    plan = snakemake(study, path, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:]


# Columns of results/summary.parquet and results/consolidation.parquet that users and the
# figures rely on (balloonreplay/summary.py documents them).
SUMMARY_COLUMNS = {
    "experiment",
    "workload",
    "policy",
    "policy_display",
    "point",
    "n_vms",
    "status",
    "overcommit_ratio",
    "host_mem_bytes",
    "configured_mem_bytes",
    "accesses",
    "guest_faults",
    "guest_swap_read_bytes",
    "guest_swap_write_bytes",
    "host_swap_read_bytes",
    "host_swap_write_bytes",
    "silent_swap_writes",
    "stale_swap_reads",
    "false_swap_reads",
    "mean_slowdown",
    "max_slowdown",
    "max_relative_slowdown",
    "blocked_s",
    "pages_saved_by_sharing",
    "within_slo",
    "consolidation_ratio",
}
CONSOLIDATION_COLUMNS = {
    "experiment",
    "workload",
    "policy",
    "consolidation_ratio",
    "overcommit_ratio",
    "boundary_known",
    "slo_slowdown",
}


def check_study_outputs(root: Path, config: dict) -> None:
    """Runs, summary, consolidation ratios and figures of a finished study."""
    runs = sorted((root / "results" / "runs").rglob("*.parquet"))
    assert runs
    for path in runs:
        schema = pq.read_schema(path)
        assert tuple(schema.names[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS, path
        run = read_metrics_metadata(path)["run"]
        experiment, policy, point = path.relative_to(root / "results" / "runs").parts
        assert (run["experiment"], run["policy"], run["point"]) == (
            experiment,
            policy,
            point.removesuffix(".parquet"),
        )
        stem = point.removesuffix(".parquet")
        assert (root / "logs" / "runs" / experiment / policy / f"{stem}.log").exists()
        assert (
            root / "logs" / "benchmarks" / "runs" / experiment / policy / f"{stem}.tsv"
        ).exists()
    summary = pd.read_parquet(root / "results" / "summary.parquet")
    assert SUMMARY_COLUMNS <= set(summary.columns)
    assert len(summary) == len(runs)
    # slo: {baseline: none} judges every run by its absolute slowdown, also a run of no
    # policy on the VMs' own memory (which had served as its own baseline: 1.0).
    absolute = [
        name
        for name, experiment in config["experiments"].items()
        if experiment.get("slo", {}).get("baseline") == "none"
    ]
    judged = summary[summary.experiment.isin(absolute) & (summary.status == "ok")]
    assert len(judged) and set(judged.policy) >= {"none"}
    pd.testing.assert_series_equal(
        judged.max_relative_slowdown, judged.max_slowdown, check_names=False
    )
    ratios = pd.read_parquet(root / "results" / "consolidation.parquet")
    assert CONSOLIDATION_COLUMNS <= set(ratios.columns)
    # static never overcommits: its ratio is host memory / VM memory, rounded down, and
    # the search pinned every policy's boundary to one VM.
    default = config["experiments"]["default"]
    ratios = ratios[ratios.experiment == "default"].set_index("policy")
    expected = parse_size_pages(default["host_mem"]) // parse_size_pages(default["vm_mem"])
    assert ratios.loc["static", "consolidation_ratio"] == expected
    assert ratios.boundary_known.all(), ratios
    assert set(ratios.index) == set(default["policies"])
    for name in STUDY_FIGURES:
        png = (root / "results" / "figures" / f"{name}.png").read_bytes()
        pdf = (root / "results" / "figures" / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert pdf.startswith(b"%PDF") and len(pdf) > 2000, name


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
        (lambda c: c["experiments"]["default"]["sweep"].update(host_mem=["1GiB"]), "sweep"),
        (lambda c: c["experiments"]["default"].update(host_mem="lots"), "host_mem"),
        (lambda c: c["experiments"]["default"]["policies"].append("static"), "labels"),
        (lambda c: c["figures"].update(sharing="nope"), "figures.sharing"),
        (lambda c: c["figures"]["timeline"].update(policy="mom"), "figures.timeline.policy"),
    ],
)
def test_invalid_config_fails_naming_the_key(mutate, named):
    # The checks Snakefile runs at load (common.smk calls check_config); that the error
    # reaches the user of `snakemake` is shown by the next test and test_config_rejection.
    config = yaml.safe_load(TEST_CONFIG.read_text())
    mutate(config)
    with pytest.raises(BalloonreplayError) as error:
        check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO)
    assert named in str(error.value)


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


def test_a_per_vm_list_its_trace_does_not_fit_fails_the_replay_in_one_line(tmp_path):
    """The load cannot count a CSV source's VMs; the replay job refuses the run in one
    line naming the config key (it was the policy's traceback, naming policy.shares)."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config = {
        "workloads": {"tiny-csv": config["workloads"]["tiny-csv"]},
        "experiments": {
            "pv": {
                "workloads": ["tiny-csv"],
                "policies": [{"name": "esx", "params": {"shares": [1000, 2000, 3000]}}],
                "epoch_ns": 100_000_000,
            }
        },
    }
    path = tmp_path / "pv.yaml"
    path.write_text(yaml.safe_dump(config))
    target = "results/runs/pv/esx/tiny-csv.parquet"
    result = snakemake(tmp_path, path, target)
    assert result.returncode != 0
    assert not (tmp_path / target).exists()
    log = (tmp_path / "logs" / "runs" / "pv" / "esx" / "tiny-csv.log").read_text()
    assert log.splitlines() == [
        "error: config: experiments.pv.policies[0].params.shares: 3 values (one per VM), "
        "but workload 'tiny-csv' runs its trace's 1 VM (the experiment sets no vms); give "
        "one value for every VM, or set vms"
    ]
