"""Config values out of range are rejected at load, naming the offending key (issue 7).

Each case changes one value of the tiny CI config (.test/config/config.yaml) and calls the
checks the workflow runs at load (balloonreplay.config_check); two cases go through
`snakemake --dry-run` to show the error reaches the user before any job runs.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_runs import snakemake

from balloonreplay.config_check import check_config
from balloonreplay.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TEST_CONFIG = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def default_policy_index() -> int:
    return TEST_CONFIG["experiments"]["default"]["policies"].index("esx")


def set_value(path: str, value):
    """A mutation setting the value at a dotted path (``a.b[2].c``) of the config."""

    def mutate(config):
        parts = path.replace("[", ".[").split(".")
        node = config
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return mutate


ESX = default_policy_index()
REJECTED = [
    # memory sizes: zero or negative
    ("experiments.default.vm_mem", "0MiB", "experiments.default.vm_mem"),
    ("experiments.default.host_mem", "-1GiB", "experiments.default.host_mem"),
    ("experiments.balloon-eq.sweep.host_mem[1]", "0p", "experiments.balloon-eq.sweep.host_mem[1]"),
    ("workloads.tiny-csv.ingest.vm_mem[0]", "100B", "workloads.tiny-csv.ingest.vm_mem[0]"),
    ("workloads.tiny-sqlite.capture.vm_mem", "0KiB", "workloads.tiny-sqlite.capture.vm_mem"),
    # host policies: unknown names, unknown parameters, wrong types
    (f"experiments.default.policies[{ESX}]", "ballon", f"experiments.default.policies[{ESX}]"),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "ballon"},
        f"experiments.default.policies[{ESX}].name",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"taxx": 0.5}},
        f"experiments.default.policies[{ESX}].params.taxx",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"tax": "lots"}},
        f"experiments.default.policies[{ESX}].params.tax",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"tax": True}},
        f"experiments.default.policies[{ESX}].params.tax",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"sample_pages": 2.5}},
        f"experiments.default.policies[{ESX}].params.sample_pages",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"shares": [1000, "lots"]}},
        f"experiments.default.policies[{ESX}].params.shares",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"tax": [0.5]}},
        f"experiments.default.policies[{ESX}].params.tax",
    ),
    (f"experiments.default.policies[{ESX}]", "esx:tax=abc", f"experiments.default.policies[{ESX}]"),
    (f"experiments.default.policies[{ESX}]", "esx:tacks=1", f"experiments.default.policies[{ESX}]"),
    # the SLO, the guest policy, workloads and other experiment settings
    ("experiments.default.slo.slowdown", 0.9, "experiments.default.slo.slowdown"),
    (
        "experiments.balloon-eq.sweep.host_mem",
        ["1GiB", "1024MiB"],
        "experiments.balloon-eq.sweep.host_mem[1]",
    ),
    (
        "experiments.balloon-eq.sweep.host_mem",
        ["1000p", "4KiB", "1000P"],
        "experiments.balloon-eq.sweep.host_mem[2]",
    ),
    ("experiments.default.guest_policy", "lfu", "experiments.default.guest_policy"),
    ("experiments.default.workloads[0]", "tiny2", "experiments.default.workloads[0]"),
    ("experiments.default.hostmem", "1GiB", "experiments.default"),
    ("experiments.default.epoch_ns", 150_000, "experiments.default.epoch_ns"),
    ("experiments.default.epoch_ns", 0, "experiments.default.epoch_ns"),
    ("experiments.default.sweep.vms", [0, 3], "experiments.default.sweep.vms[0]"),
    # counts are whole numbers: JSON Schema's integer lets 3.0 through (a point 'tiny-n3.0')
    ("experiments.traces.vms", 3.0, "experiments.traces.vms"),
    ("experiments.default.sweep.vms", [1, 3.0], "experiments.default.sweep.vms[1]"),
    ("experiments.default.clone.repeat", 2.0, "experiments.default.clone.repeat"),
    ("experiments.default.seed", 3.0, "experiments.default.seed"),
    ("workloads.tiny.generate.seed", 7.0, "workloads.tiny.generate.seed"),
    ("figures.timeline.vms", 3.0, "figures.timeline.vms"),
    ("experiments.default.clone.time_scale", 0, "experiments.default.clone.time_scale"),
    (
        "experiments.default.refine.max_points_per_round",
        0,
        "experiments.default.refine.max_points_per_round",
    ),
    ("experiments.default.latencies", "nvme", "experiments.default.latencies"),
    ("experiments.default.latencies", {"swap_ns": 5}, "experiments.default.latencies.swap_ns"),
    (
        "experiments.default.latencies",
        {"zero_fill_ns": -1},
        "experiments.default.latencies.zero_fill_ns",
    ),
    # engine options
    ("experiments.sharing.engine.scan_rate", 10, "experiments.sharing.engine.scan_rate"),
    (
        "experiments.sharing.engine.intra_vm_sharing_only",
        "no",
        "experiments.sharing.engine.intra_vm_sharing_only",
    ),
    (
        "experiments.sharing.engine.host_selection",
        "lru",
        "experiments.sharing.engine.host_selection",
    ),
    (
        "experiments.sharing.engine.scan_rate_pages_per_s",
        -1,
        "experiments.sharing.engine.scan_rate_pages_per_s",
    ),
    # set on the experiment, where the run takes them from (under engine they were ignored)
    ("experiments.sharing.engine.sharing", False, "experiments.sharing.engine.sharing"),
    ("experiments.sharing.engine.seed", 5, "experiments.sharing.engine.seed"),
    ("experiments.sharing.engine.epoch_ns", 200_000_000, "experiments.sharing.engine.epoch_ns"),
    # one value per VM, for a different number of VMs than the runs have
    (
        f"experiments.default.policies[{ESX}]",
        {"name": "esx", "params": {"shares": [3000, 1000]}},
        f"experiments.default.policies[{ESX}].params.shares",
    ),
    (
        f"experiments.default.policies[{ESX}]",
        "esx:shares=3/1",
        f"experiments.default.policies[{ESX}]",
    ),
    # its label, a directory name: results/runs/x/esx:shares=3/1/...
    ("experiments.traces.policies[0]", "esx:shares=3/1", "experiments.traces.policies[0]"),
    (
        "experiments.sharing.engine.overhead_pages",
        [1, 2],
        "experiments.sharing.engine.overhead_pages",
    ),
    # workloads
    ("workloads.tiny.generate.seed", -1, "workloads.tiny.generate.seed"),
    (
        "workloads.tiny-filtered.generate.lru_filter_pages",
        0,
        "workloads.tiny-filtered.generate.lru_filter_pages",
    ),
    ("workloads.tiny-lackey.ingest.format", "lackeyy", "workloads.tiny-lackey.ingest.format"),
    (
        "workloads.tiny-lackey.ingest.options",
        {"instructionz": True},
        "workloads.tiny-lackey.ingest.options",
    ),
    (
        "workloads.tiny-lackey.ingest.options",
        {"page_size_bytes": "big"},
        "workloads.tiny-lackey.ingest.options",
    ),
    ("workloads.tiny-csv.ingest.path", "config/data/nope.csv", "workloads.tiny-csv.ingest.path"),
    ("workloads.tiny.colour", "blue", "workloads.tiny"),
    (
        "workloads.tiny-csv.ingest.options",
        {"page_size_bytes": 3000},
        "workloads.tiny-csv.ingest.options.page_size_bytes",
    ),
    (
        "workloads.tiny-sqlite.capture.program",
        "/usr/bin/sqlite4",
        "workloads.tiny-sqlite.capture.program",
    ),
    # run from a scratch directory: a relative path would not be found
    ("workloads.tiny-sqlite.capture.program", "sqlite3", "workloads.tiny-sqlite.capture.program"),
    (
        "workloads.tiny-sqlite.capture.program",
        "bin/sqlite3",
        "workloads.tiny-sqlite.capture.program",
    ),
    # figures
    ("figures.sharing", "nope", "figures.sharing"),
    ("figures.timeline.policy", "mom", "figures.timeline.policy"),
    ("figures.timeline.workload", "tiny-csv", "figures.timeline.workload"),
    ("figures.balloon_equivalence.ballooned", "esx", "figures.balloon_equivalence.ballooned"),
    # figures of the wrong kind of experiment (a placeholder or a meaningless figure)
    ("figures.double_paging", "defualt", "figures.double_paging"),
    ("figures.double_paging_vms", 3, "figures.double_paging_vms"),  # with double_paging
    ("figures.sharing", "traces", "figures.sharing"),
    ("figures.overcommit", "balloon-eq", "figures.overcommit"),
    (
        "figures.timeline",
        {"experiment": "balloon-eq", "policy": "balloon"},
        "figures.timeline.experiment",
    ),
    (
        "figures.timeline",
        {"experiment": "sharing", "policy": "none", "vms": 7},
        "figures.timeline.vms",
    ),
    (
        "figures.timeline",
        {"experiment": "traces", "policy": "none", "vms": 2},
        "figures.timeline.vms",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "key"), REJECTED, ids=[f"{p}={v}" for p, v, _ in REJECTED]
)
def test_rejected_at_load_naming_the_key(path, value, key):
    config = copy.deepcopy(TEST_CONFIG)
    set_value(path, value)(config)
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, REPO)
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(f"config: {key}: ")


@pytest.mark.parametrize(
    "name", [".test/config/config.yaml", "config/config.yaml", "config/paper.yaml"]
)
def test_the_shipped_configs_pass(name):
    check_config(yaml.safe_load((REPO / name).read_text()), SCHEMA, REPO)


def dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return snakemake(tmp_path, path, "--dry-run", cores=1, timeout=300)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (
            f"experiments.default.policies[{ESX}]",
            {"name": "esx", "params": {"tax": "lots"}},
            f"experiments.default.policies[{ESX}].params.tax",
        ),
        ("experiments.default.slo.slowdown", 0.9, "experiments.default.slo.slowdown"),
    ],
)
def test_snakemake_fails_at_load_naming_the_key(tmp_path, path, value, key):
    config = copy.deepcopy(TEST_CONFIG)
    set_value(path, value)(config)
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert f"config: {key}: " in result.stdout + result.stderr
    assert not (tmp_path / "traces").exists()  # nothing ran


@pytest.mark.parametrize("key", ["sharing", "seed", "epoch_ns"])
def test_engine_options_of_the_experiment_are_refused_naming_where_they_go(key):
    config = copy.deepcopy(TEST_CONFIG)
    config["experiments"]["sharing"]["engine"][key] = 1 if key != "sharing" else True
    with pytest.raises(ConfigError, match=rf"set it as experiments\.sharing\.{key}"):
        check_config(config, SCHEMA, REPO)


def test_one_value_per_vm_fits_every_run_or_is_refused_at_load():
    config = copy.deepcopy(TEST_CONFIG)
    experiment = config["experiments"]["sharing"]
    experiment["policies"] = [{"name": "esx", "params": {"shares": [3000, 1000]}}]
    experiment["engine"]["overhead_pages"] = [1, 2]
    experiment["sweep"] = {"vms": [2]}
    check_config(config, SCHEMA, REPO)  # not searched (no host_mem): every run has 2 VMs
    experiment["policies"] = ["esx:shares=3000/1000"]
    with pytest.raises(ConfigError, match="nested directories"):
        check_config(config, SCHEMA, REPO)  # its label would be two directories
    experiment["sweep"] = {"vms": [2, 3]}
    with pytest.raises(ConfigError, match="2 values .* runs 2, 3 VMs") as caught:
        check_config(config, SCHEMA, REPO)
    assert caught.value.key == "experiments.sharing.policies[0]"
    assert "parameter 'shares'" in str(caught.value)
    # A searched sweep (a fixed host) may run any count up to its largest.
    experiment["policies"] = [{"name": "esx", "params": {"shares": [3000, 1000]}}]
    experiment.update(host_mem="5MiB", vm_mem="2MiB", sweep={"vms": [2]})
    with pytest.raises(ConfigError, match="any count from 1 to 2"):
        check_config(config, SCHEMA, REPO)
    experiment["refine"] = {"enabled": False}
    check_config(config, SCHEMA, REPO)


def test_an_ingested_trace_without_configured_memory_needs_vm_mem_at_load():
    config = copy.deepcopy(TEST_CONFIG)
    del config["workloads"]["tiny-csv"]["ingest"]["vm_mem"]
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, REPO)
    assert caught.value.key == "experiments.traces.vm_mem"
    assert "workloads.tiny-csv.ingest.vm_mem" in str(caught.value)
    config["experiments"]["traces"]["vm_mem"] = "16MiB"
    check_config(config, SCHEMA, REPO)


def test_an_ingested_source_is_read_once_for_every_experiment_it_serves(tmp_path, monkeypatch):
    """Its recorded configured memory is looked up at every Snakemake start: once per
    source, not once per experiment replaying it."""
    from balloonreplay.traces.formats.parquet import ParquetFormat
    from balloonreplay.traces.io import write_trace
    from balloonreplay.traces.schema import TraceMetadata, make_batch

    source = tmp_path / "recorded.parquet"
    batch = make_batch([0, 0], [0, 1], [0, 1], [True, False])
    write_trace([batch], source, TraceMetadata(source="test", config_pages=[4]))
    config = copy.deepcopy(TEST_CONFIG)
    config["workloads"]["recorded"] = {"ingest": {"path": str(source), "format": "parquet"}}
    config["experiments"]["traces"]["workloads"].append("recorded")
    config["experiments"]["traces-again"] = {
        "workloads": ["recorded"],
        "policies": ["none", "esx"],
        "slo": {"baseline": "none"},
    }
    reads = []
    read_metadata = ParquetFormat.read_metadata

    def counted(self, path, options):
        reads.append(path)
        return read_metadata(self, path, options)

    monkeypatch.setattr(ParquetFormat, "read_metadata", counted)
    check_config(config, SCHEMA, REPO)
    assert reads == [str(source)]


def test_double_paging_vms_is_a_count_the_overcommit_experiment_runs():
    config = copy.deepcopy(TEST_CONFIG)
    del config["figures"]["double_paging"]
    for vms in (1, 3, 5):
        config["figures"]["double_paging_vms"] = vms
        check_config(config, SCHEMA, REPO)
    config["figures"]["double_paging_vms"] = 99
    with pytest.raises(ConfigError, match="99 is not a VM count of experiment 'default'"):
        check_config(config, SCHEMA, REPO)
    # The timeline may draw any count of a searched sweep: the workflow makes that run.
    config["figures"]["timeline"]["vms"] = 4
    config["figures"]["double_paging_vms"] = 5
    check_config(config, SCHEMA, REPO)


def test_a_recorded_capture_does_not_need_its_program(tmp_path):
    config = copy.deepcopy(TEST_CONFIG)
    config["workloads"]["tiny-sqlite"]["capture"]["program"] = "/usr/bin/sqlite4"
    with pytest.raises(ConfigError, match="not found or not executable"):
        check_config(config, SCHEMA, REPO, tmp_path)
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "tiny-sqlite.parquet").touch()  # recorded before
    check_config(config, SCHEMA, REPO, tmp_path)


BARE_SIZE_KEYS = [
    "experiments.default.host_mem",
    "experiments.default.vm_mem",
    "experiments.balloon-eq.sweep.host_mem[0]",
    "workloads.tiny-csv.ingest.vm_mem[0]",
    "workloads.tiny-sqlite.capture.vm_mem",
]


@pytest.mark.parametrize("path", BARE_SIZE_KEYS)
def test_a_bare_number_as_a_size_is_refused_saying_how_to_write_it(path):
    """A YAML 4096 is ambiguous (a workload spec reads it as pages, the command line's
    "4096" is bytes), so it is refused, and the message says how to write each."""
    config = copy.deepcopy(TEST_CONFIG)
    set_value(path, 4096)(config)
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, REPO)
    assert caught.value.key == path
    message = str(caught.value)
    assert "4096p for pages" in message and '"4096" in quotes for bytes' in message


@pytest.mark.parametrize(
    "path", ["workloads.tiny-csv.ingest.path", "workloads.tiny-sqlite.capture.stdin"]
)
def test_a_missing_file_of_the_config_names_the_path_it_was_looked_for_at(path):
    """Config paths are relative to the repository root, not the working directory."""
    config = copy.deepcopy(TEST_CONFIG)
    set_value(path, "config/data/nope.csv")(config)
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, REPO)
    assert caught.value.key == path
    assert str(caught.value).endswith(
        f"file not found: config/data/nope.csv (looked for {REPO / 'config/data/nope.csv'})"
    )


@pytest.mark.parametrize(
    "policies",
    [
        ["esx:tax=0.5", "esx: tax=0.5"],
        ["esx:tax=0.5,sample_pages=50", "esx:tax=0.5, sample_pages=50"],
        ["esx", "esx:"],
    ],
)
def test_two_policies_drawn_under_one_name_are_refused(policies):
    """Figures and tables tell policies apart by their display names."""
    config = copy.deepcopy(TEST_CONFIG)
    config["experiments"]["traces"]["policies"] = policies
    with pytest.raises(ConfigError, match="would be drawn as 'VMware ESX.*', as policies"):
        check_config(config, SCHEMA, REPO)


def test_host_sizes_equal_only_in_4_kib_pages_are_two_points():
    """1000 pages and 4000 KiB are the same host only on a trace of 4 KiB pages; they
    are two points, named apart (experiments.host_point), so the sweep may hold both."""
    config = copy.deepcopy(TEST_CONFIG)
    set_value("experiments.balloon-eq.sweep.host_mem", ["1000p", "4000KiB"])(config)
    check_config(config, SCHEMA, REPO)


def recorded_source(tmp_path: Path, n_vms: int) -> Path:
    """A canonical trace of n_vms VMs as an ingest source (its footer records them)."""
    from balloonreplay.traces.io import write_trace
    from balloonreplay.traces.schema import TraceMetadata, make_batch

    source = tmp_path / "recorded.parquet"
    vms = list(range(n_vms))
    batch = make_batch(vms, [0] * n_vms, [0] * n_vms, [True] * n_vms)
    write_trace([batch], source, TraceMetadata(source="test", config_pages=[4] * n_vms))
    return source


@pytest.mark.parametrize(
    ("workload", "n_vms"),
    [
        ("tiny", 3),  # generated: its spec's VMs
        ("tiny-sqlite", 1),  # captured: one program
        ("two-sizes", 2),  # ingested: one vm_mem per VM
        ("recorded", 2),  # ingested: its source's footer
    ],
)
def test_one_value_per_vm_of_the_trace_is_checked_at_load(tmp_path, workload, n_vms):
    """An experiment without vms runs each trace's own VMs: a per-VM list of another
    length passed the load and failed the replay job with a traceback."""
    config = copy.deepcopy(TEST_CONFIG)
    config["workloads"]["two-sizes"] = copy.deepcopy(config["workloads"]["tiny-csv"])
    config["workloads"]["two-sizes"]["ingest"]["vm_mem"] = ["16MiB", "8MiB"]
    config["workloads"]["recorded"] = {
        "ingest": {"path": str(recorded_source(tmp_path, 2)), "format": "parquet"}
    }
    experiment = {"workloads": [workload], "epoch_ns": 100_000_000}
    config["experiments"]["pv"] = experiment
    shares = [1000 * (i + 1) for i in range(n_vms)]
    experiment["policies"] = [{"name": "esx", "params": {"shares": shares}}]
    experiment["engine"] = {"overhead_pages": [1] * n_vms}
    check_config(config, SCHEMA, REPO)  # one value per VM of the trace
    for key, setting in (
        ("experiments.pv.policies[0].params.shares", experiment["policies"][0]["params"]),
        ("experiments.pv.engine.overhead_pages", experiment["engine"]),
    ):
        (name,) = setting
        setting[name] = setting[name] + [1]
        with pytest.raises(ConfigError) as caught:
            check_config(config, SCHEMA, REPO)
        assert caught.value.key == key
        assert f"workload {workload!r} runs its trace's {n_vms} VM" in str(caught.value)
        setting[name] = setting[name][:-1]


def test_one_value_per_vm_of_a_trace_only_its_data_tells_is_checked_at_replay(tmp_path):
    """A CSV source's VMs are in its data (a vm column, or none): the load cannot count
    them, the replay job does, naming the key as the load would."""
    from balloonreplay.config_check import check_run_vms
    from balloonreplay.experiments import baseline_run, grid_runs

    config = copy.deepcopy(TEST_CONFIG)
    experiment = {
        "workloads": ["tiny-csv"],
        "policies": ["none", {"name": "esx", "params": {"shares": [1000, 2000]}}],
        "epoch_ns": 100_000_000,
    }
    config["experiments"]["pv"] = experiment
    check_config(config, SCHEMA, REPO)  # passes: the count is not known yet
    trace = recorded_source(tmp_path, 1)  # as the ingest will write it: one VM
    none, esx = grid_runs("pv", experiment)
    with pytest.raises(ConfigError) as caught:
        check_run_vms(config["experiments"], esx, trace)
    assert caught.value.key == "experiments.pv.policies[1].params.shares"
    assert "2 values (one per VM), but workload 'tiny-csv' runs its trace's 1 VM" in str(
        caught.value
    )
    # Policy none and the baseline run no esx: nothing per VM to check for them.
    check_run_vms(config["experiments"], none, trace)
    check_run_vms(config["experiments"], baseline_run("pv", experiment, "tiny-csv", None), trace)
    check_run_vms(config["experiments"], esx, recorded_source(tmp_path, 2))
