"""Experiments expanded into runs, and N VMs made from a trace of K (no engine needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from balloonreplay import experiments as X
from balloonreplay.errors import ConfigError
from balloonreplay.traces.schema import CANONICAL_SCHEMA, TraceMetadata

EXPERIMENT = {
    "workloads": ["w"],
    "vm_mem": "4MiB",
    "host_mem": "12MiB",
    "sweep": {"vms": [2, 4]},
    "policies": ["static", {"name": "esx", "label": "esx-notax", "params": {"tax": 0.0}}],
    "clone": {"stagger_ns": 1000, "time_scale": 2},
    "sharing": True,
    "slo": {"slowdown": 1.2},
}


def two_vm_trace() -> tuple[pa.Table, TraceMetadata]:
    table = pa.table(
        {
            "vm": pa.array([0, 1, 0, 1], pa.uint16()),
            "t_ns": pa.array([0, 5, 10, 15], pa.uint64()),
            "page": pa.array([0, 0, 1, 2], pa.uint64()),
            "write": [True, False, False, True],
            "content": pa.array([0, None, 7, 9], pa.uint64()),
            "file_backed": [False, False, True, False],
            "free": [False, False, False, False],
        },
        schema=CANONICAL_SCHEMA,
    )
    meta = TraceMetadata(
        config_pages=[100, 200], pages_per_vm=[2, 3], dense=True, vm_names=["a", "b"]
    )
    return table, meta


def test_grid_runs_cover_policies_and_points():
    runs = X.grid_runs("exp", EXPERIMENT)
    assert [(r["policy"], r["point"]) for r in runs] == [
        ("static", "w-n2"),
        ("static", "w-n4"),
        ("esx-notax", "w-n2"),
        ("esx-notax", "w-n4"),
    ]
    esx = runs[2]
    assert esx["policy_name"] == "esx" and esx["policy_params"] == {"tax": 0.0}
    assert esx["host_mem"] == "12MiB" and esx["n_vms"] == 2 and esx["sweep"] == "vms"
    assert esx["sharing"] is True and X.slo_slowdown(EXPERIMENT) == 1.2
    assert X.refines(EXPERIMENT)
    baselines = X.baseline_runs("exp", EXPERIMENT, runs)
    assert [b["point"] for b in baselines] == ["w-n2", "w-n4"]
    assert all(b["policy_name"] == "none" and b["host_mem"] is None for b in baselines)
    assert esx["baseline_point"] == "w-n2"


def test_host_sweep_points_and_no_search():
    experiment = {"workloads": ["w"], "sweep": {"host_mem": ["1GiB", "1536MiB"]}, "vms": 3}
    runs = X.grid_runs("h", experiment)
    assert [r["point"] for r in runs] == ["w-n3-host1024MiB", "w-n3-host1536MiB"]
    assert not X.refines(experiment)
    # Sizes 4 KiB apart keep their own points (6 digits made both 'host1000MiB').
    assert X.host_point("w", None, "1000MiB") != X.host_point("w", None, "1024004KiB")
    with pytest.raises(ConfigError, match="no policy labelled"):
        X.make_run("h", experiment, "w", "esx")


def test_scaling_clones_vms_with_shifted_starts():
    table, meta = two_vm_trace()
    scaled, scaled_meta = X.scale_vms(table, meta, 5, stagger_ns=100, jitter_ns=10, seed=1)
    data = scaled.to_pydict()
    assert scaled.num_rows == 10
    assert scaled_meta.config_pages == [100, 200, 100, 200, 100]
    assert scaled_meta.pages_per_vm == [2, 3, 2, 3, 2]
    assert np.all(np.diff(data["t_ns"]) >= 0)  # ordered by time across VMs
    by_vm = {
        v: [t for t, u in zip(data["t_ns"], data["vm"], strict=True) if u == v] for v in range(5)
    }
    assert by_vm[0] == [0, 10] and by_vm[1] == [5, 15]  # copy 0 is not shifted
    assert 100 <= by_vm[2][0] < 110 and 200 <= by_vm[4][0] < 210  # copies 1 and 2 start later
    assert by_vm[2][1] - by_vm[2][0] == 10  # a copy keeps its own spacing
    # Copies keep content (same program, same image) and pages.
    assert [p for p, u in zip(data["page"], data["vm"], strict=True) if u == 3] == [0, 2]
    again, _ = X.scale_vms(table, meta, 5, stagger_ns=100, jitter_ns=10, seed=1)
    assert again.equals(scaled)  # seeded


def test_scaling_down_takes_the_first_vms_and_time_scale_stretches():
    table, meta = two_vm_trace()
    scaled, scaled_meta = X.scale_vms(table, meta, 1, time_scale=3)
    assert scaled.column("vm").to_pylist() == [0, 0]
    assert scaled.column("t_ns").to_pylist() == [0, 30]
    assert scaled_meta.config_pages == [100]
    same, same_meta = X.scale_vms(table, meta, None)
    assert same.equals(table) and same_meta == meta


def test_run_point_records_the_run_and_a_refusal(tmp_path):
    from balloonreplay.metrics import METRIC_COLUMNS, read_metrics_metadata
    from balloonreplay.summary import read_run, run_row
    from balloonreplay.traces.io import write_trace

    table, meta = two_vm_trace()
    trace = tmp_path / "t.parquet"
    write_trace(table.to_batches(), trace, meta)
    experiment = {"workloads": ["t"], "vm_mem": "4p", "host_mem": "10p", "sweep": {"vms": [2, 3]}}
    experiment["policies"] = ["static"]
    fits = X.make_run("e", experiment, "t", "static", n_vms=2)
    X.run_point(fits, trace, tmp_path / "fits.parquet")
    metrics, metadata = read_run(tmp_path / "fits.parquet")
    assert tuple(metrics.columns[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    assert metadata["run"]["point"] == "t-n2" and metadata["run"]["status"] == "ok"
    assert metrics.accesses.sum() == 4
    refused = X.make_run("e", experiment, "t", "static", n_vms=3)  # 12 pages > 10
    X.run_point(refused, trace, tmp_path / "refused.parquet")
    row = run_row(*read_run(tmp_path / "refused.parquet"))
    assert row["status"] == "refused" and not row["within_slo"]
    assert row["overcommit_ratio"] == pytest.approx(1.2)
    assert (
        "does not overcommit"
        in read_metrics_metadata(tmp_path / "refused.parquet")["run"]["message"]
    )


def test_repeat_runs_the_trace_again_in_the_same_vms():
    table, meta = two_vm_trace()  # times 0, 5, 10, 15: a span of 16 ns
    repeated, repeated_meta = X.scale_vms(table, meta, None, repeat=2)
    data = repeated.to_pydict()
    assert data["t_ns"] == [0, 5, 10, 15, 16, 21, 26, 31]
    assert data["vm"] == [0, 1, 0, 1] * 2 and data["page"] == [0, 0, 1, 2] * 2
    assert repeated_meta.accesses == 8 and repeated_meta.config_pages == [100, 200]
    # Cloned afterwards: every copy runs both passes.
    cloned, _ = X.scale_vms(table, meta, 4, stagger_ns=100, repeat=3)
    assert cloned.num_rows == 4 * 3 * 2 and np.all(np.diff(cloned.column("t_ns").to_numpy()) >= 0)
    with pytest.raises(ConfigError, match="clone.repeat"):
        X.scale_vms(table, meta, None, repeat=0)


# Why the double-paging experiment replays page-cache readers and not the sqlite capture:
# VSwapper's stale and false swap reads need a guest frame that is host-swapped while the
# guest puts a new page in it. The model's guests evict on demand and reuse the victim's
# frame at once, and they always write an anonymous victim back, which first swaps its
# frame in (a silent swap write). So anonymous memory alone can show silent writes only;
# a clean page-cache victim is dropped without a swap-in, leaving its frame host-swapped
# for the next disk read (stale) or zero-fill (false). Both engines agree on each case.
def _double_paging(file_backed: bool, engine: str) -> dict:
    import balloonreplay

    rng = np.random.default_rng(7)
    n = 1500
    vm = np.arange(n) % 2
    pages = rng.integers(0, 24, n)
    table = pa.table(
        {
            "vm": pa.array(vm, pa.uint16()),
            "t_ns": pa.array(np.arange(n) * 2_000, pa.uint64()),
            "page": pa.array(pages, pa.uint64()),
            # Page-cache pages are only read (clean); anonymous ones written half the time.
            "write": (rng.random(n) < 0.5) & (not file_backed),
            "content": pa.nulls(n, pa.uint64()),
            "file_backed": np.full(n, file_backed),
            "free": np.zeros(n, dtype=bool),
        },
        schema=CANONICAL_SCHEMA,
    )
    # Two VMs of 12 frames for 24 pages each (guest swapping) on 16 host pages (host
    # swapping at random).
    result = balloonreplay.replay(
        table, vms="12p", host="16p", policy="host-swap", engine=engine, epoch_ns=100_000
    )
    return {
        k: result.summary[k]
        for k in ("silent_swap_writes", "stale_swap_reads", "false_swap_reads", "host_swap_out")
    }


@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_double_paging_needs_clean_page_cache_victims(engine):
    anonymous = _double_paging(file_backed=False, engine=engine)
    assert anonymous["host_swap_out"] > 0 and anonymous["silent_swap_writes"] > 0
    assert anonymous["stale_swap_reads"] == 0 and anonymous["false_swap_reads"] == 0
    page_cache = _double_paging(file_backed=True, engine=engine)
    assert page_cache["host_swap_out"] > 0 and page_cache["stale_swap_reads"] > 0


def test_role_runs_are_the_grid_of_the_named_experiment():
    experiments = {"e": EXPERIMENT}
    runs = X.role_runs(experiments, {"experiment": "e", "ballooned": "static"})
    assert runs == X.grid_runs("e", EXPERIMENT) and len(runs) == 4
    assert X.role_runs(experiments, None) == [] and X.role_runs(experiments, {}) == []


def test_sharing_left_out_is_the_policys_default(tmp_path):
    """README: esx and mom share pages unless an experiment says `sharing: false`. The
    schema's defaults, which Snakemake fills in at load, must not turn a missing
    `sharing` into false (a user audit found ESX modelled without TPS)."""
    from pathlib import Path

    from snakemake.utils import validate

    from balloonreplay.metrics import read_metrics_metadata
    from balloonreplay.traces.io import write_trace

    schema = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    table, meta = two_vm_trace()
    trace = tmp_path / "t.parquet"
    write_trace(table.to_batches(), trace, meta)
    for given, expected in ((None, {"esx": True, "none": False}), (False, {"esx": False})):
        experiment = {"workloads": ["t"], "policies": list(expected)}
        if given is not None:
            experiment["sharing"] = given
        config = {"workloads": {"t": {"generate": {"spec": "t.yaml"}}}}
        config["experiments"] = {"e": experiment}
        validate(config, str(schema))  # fills in the schema's defaults, as Snakemake does
        for run in X.grid_runs("e", config["experiments"]["e"]):
            assert run["sharing"] is given
            out = tmp_path / f"{run['policy']}-{given}.parquet"
            X.run_point(run, trace, out)
            assert read_metrics_metadata(out)["config"]["sharing"] is expected[run["policy"]]


def test_runs_do_not_depend_on_the_slo():
    """A run is a replay job's params: another SLO (a threshold the summary applies) must
    not make Snakemake rerun every replay."""
    other = {**EXPERIMENT, "slo": {"slowdown": 1.5, "baseline": "none"}}
    runs = X.grid_runs("exp", EXPERIMENT)
    assert X.grid_runs("exp", other) == runs
    assert X.baseline_runs("exp", {**EXPERIMENT, "slo": {}}, runs) == X.baseline_runs(
        "exp", EXPERIMENT, runs
    )
    assert X.slo_slowdown(other) == 1.5 and X.slo_slowdown({}) == 1.1


def test_runs_do_not_depend_on_the_order_of_config_keys():
    """Snakemake compares a job's params as text: a config whose mappings list the same
    keys in another order (yaml.safe_dump sorts them) must not make every run stale."""

    def reverse(value):
        if isinstance(value, dict):
            return {key: reverse(value[key]) for key in reversed(list(value))}
        return [reverse(v) for v in value] if isinstance(value, list) else value

    experiment = {
        **EXPERIMENT,
        "latencies": {"disk_read_ns": 5, "guest_swap_in_ns": 7},
        "engine": {"scan_rate_pages_per_s": 10, "intra_vm_sharing_only": False},
        "policies": [{"name": "esx", "params": {"tax": 0.5, "shares": [1, 2]}}],
    }
    runs = X.grid_runs("exp", experiment)
    assert repr(X.grid_runs("exp", reverse(experiment))) == repr(runs)
    assert repr(X.baseline_runs("exp", reverse(experiment), runs)) == repr(
        X.baseline_runs("exp", experiment, runs)
    )


@pytest.mark.parametrize("sharing", [None, True, False])
def test_the_baseline_never_shares_pages_whatever_the_experiment_says(sharing):
    """A review found `sharing:` left out (esx's runs share by default) and written
    `true` (the same runs) giving different baselines, hence different relative
    slowdowns: the dedicated host's baseline shares nothing in either case."""
    experiment = {"workloads": ["w"], "vm_mem": "4MiB", "vms": 2, "policies": ["esx"]}
    if sharing is not None:
        experiment["sharing"] = sharing
    runs = X.grid_runs("e", experiment)
    (baseline,) = X.baseline_runs("e", experiment, runs)
    assert baseline["sharing"] is False


def test_a_run_of_no_policy_on_the_vms_own_memory_is_its_own_baseline():
    """Without host_mem, policy none replays exactly what the baseline would (the same VMs,
    no policy, host = their memory): it serves as the baseline instead of a second replay."""
    experiment = {"workloads": ["w"], "vm_mem": "4MiB", "sweep": {"vms": [1, 2]}}
    for policies in (["none", "esx"], [{"name": "none", "label": "plain"}, "esx"]):
        experiment["policies"] = policies
        runs = X.grid_runs("e", experiment)
        assert X.baseline_runs("e", experiment, runs) == []
        twins = [r for r in runs if r["policy_name"] == "none"]
        assert [r["point"] for r in twins] == [r["baseline_point"] for r in twins]
        # What the baseline would have been is what the twin replays.
        for twin in twins:
            baseline = X.baseline_run("e", experiment, "w", twin["n_vms"])
            replayed = ("policy", "sweep")  # its label and kind of point, not what it replays
            # (sharing left out is none's default, off: what the baseline says outright)
            assert twin["sharing"] is None and baseline["sharing"] is False
            replayed += ("sharing",)
            assert {k: v for k, v in twin.items() if k not in replayed} == {
                k: v for k, v in baseline.items() if k not in replayed
            }
    # Other runs still need a baseline: a host of its own size, a policy, a parameter.
    for other in (
        {"policies": ["none"], "host_mem": "6MiB"},
        {"policies": ["esx"]},
        {"policies": ["none"], "sharing": True},
        {"policies": [{"name": "none", "label": "c", "vm_mem_equals_host": True}]},
    ):
        varied = {**experiment, **other}
        runs = X.grid_runs("e", varied)
        assert [b["point"] for b in X.baseline_runs("e", varied, runs)] == ["w-n1", "w-n2"]


def test_host_points_are_named_by_the_size_as_configured_in_no_page_size():
    """A trace's page size decides how many pages a size is, and a point is named before
    its trace exists: 1000p was named 3.90625MiB (4 KiB pages), 7.8125 MiB of 8 KiB pages."""
    assert X.host_point("w", None, "1000p") == "w-host1000p"
    # A byte size by its exact bytes, not rounded down to 4 KiB pages.
    assert X.host_point("w", 2, "6000") == "w-n2-host0.0057220458984375MiB"
    assert X.host_point("w", 2, "6KiB") == "w-n2-host0.005859375MiB"
    # Sizes in whole 4 KiB pages keep the names they had.
    assert X.host_point("w", None, "3584KiB") == "w-host3.5MiB"
    assert X.host_point("w", None, "1GiB") == X.host_point("w", None, "1024MiB") == "w-host1024MiB"


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"vms": 2},
        {"sweep": {"vms": [1, 2]}, "host_mem": "8MiB"},
        {"sweep": {"host_mem": ["4MiB", "8MiB"]}},
        {"sweep": {"host_mem": ["4MiB"]}, "vms": 1},
    ],
)
def test_a_baseline_point_names_the_workload_and_vms_of_its_baseline(shape):
    """Workloads 'w' and 'w-n1': in an experiment without VM counts the baseline point
    'w-n1' (workload w-n1) was read as workload w with 1 VM, and replayed w's trace."""
    experiment = {"workloads": ["w", "w-n1"], "vm_mem": "2MiB", "policies": ["esx"], **shape}
    runs = X.grid_runs("exp", experiment)
    baselines = X.baseline_runs("exp", experiment, runs)
    assert {b["workload"] for b in baselines} == {"w", "w-n1"}
    for baseline in baselines:
        assert X.parse_baseline_point(experiment, baseline["point"]) == (
            baseline["workload"],
            baseline["n_vms"],
        )
    assert X.parse_baseline_point(experiment, "w-n7-n1") is None
