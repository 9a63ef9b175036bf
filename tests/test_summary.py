"""The summary table and the consolidation-ratio search, on synthetic metrics (no engine)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from balloonreplay.metrics import ALL_COLUMNS, metrics_frame, write_metrics
from balloonreplay.summary import (
    consolidation,
    consolidation_point,
    display_name,
    next_points,
    pages_saved_by_sharing,
    read_run,
    run_row,
    summarize_runs,
    summarize_study,
)

PAGE = 4096


def synthetic_metrics(n_vms: int, epochs: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = {c: rng.integers(0, 1000, size=n_vms * epochs) for c in ALL_COLUMNS}
    rows["vm"] = np.tile(np.arange(n_vms), epochs)
    rows["epoch"] = np.repeat(np.arange(epochs), n_vms)
    rows["t_ns"] = rows["epoch"] * 1_000_000
    rows["zero_shared_pages"] = np.minimum(rows["zero_shared_pages"], rows["shared_pages"])
    return metrics_frame(rows)


def write_run(
    path,
    *,
    n_vms=2,
    epochs=3,
    seed=0,
    slowdowns=None,
    point=None,
    policy="esx",
    status="ok",
    host_pages=1000,
    vm_pages=400,
    experiment="exp",
    sweep="vms",
    **run,
):
    metrics = synthetic_metrics(n_vms, epochs, seed) if status == "ok" else metrics_frame([])
    point = point or f"w-n{n_vms}"
    meta = {
        "config": {"config_pages": [vm_pages] * n_vms, "host_pages": host_pages},
        "policy": {"name": policy, "params": {}},
        "trace": {"metadata": {"page_size_bytes": PAGE}},
        "summary": {"slowdown": slowdowns or [1.0] * n_vms, "replay_seconds": 0.5},
        "run": {
            "experiment": experiment,
            "workload": "w",
            "policy": policy,
            "policy_name": policy,
            "point": point,
            "baseline_point": f"w-n{n_vms}",
            "sweep": sweep,
            "n_vms": n_vms,
            "status": status,
            "slo_slowdown": 1.1,
            "config_pages": [vm_pages] * n_vms,
            "host_pages": host_pages,
            **run,
        },
    }
    write_metrics(metrics, path, meta)
    return metrics


def test_byte_totals_match_the_metrics(tmp_path):
    path = tmp_path / "run.parquet"
    metrics = write_run(path, n_vms=3, epochs=4, seed=1)
    row = run_row(*read_run(path))
    assert row["guest_swap_read_bytes"] == metrics.guest_swap_in.sum() * PAGE
    assert row["guest_swap_write_bytes"] == metrics.guest_swap_out.sum() * PAGE
    assert row["host_swap_read_bytes"] == metrics.host_swap_in.sum() * PAGE
    assert row["host_swap_write_bytes"] == metrics.host_swap_out.sum() * PAGE
    assert (
        row["host_swap_bytes"] == (metrics.host_swap_in.sum() + metrics.host_swap_out.sum()) * PAGE
    )
    for column in ("accesses", "guest_faults", "silent_swap_writes", "cow_breaks", "blocked_ns"):
        assert row[column] == metrics[column].sum()
    assert row["blocked_s"] == pytest.approx(metrics.blocked_ns.sum() / 1e9)
    last = metrics[metrics.epoch == 3]
    assert row["balloon_pages_end"] == last.balloon_pages.sum()
    assert row["balloon_pages_peak"] == metrics.groupby("epoch").balloon_pages.sum().max()
    assert row["overcommit_ratio"] == pytest.approx(3 * 400 / 1000)
    assert row["policy_display"] == "VMware ESX"


def test_slowdowns_relative_to_the_dedicated_baseline(tmp_path):
    write_run(tmp_path / "base.parquet", slowdowns=[1.5, 1.0], policy="none", sweep="baseline")
    write_run(tmp_path / "run.parquet", slowdowns=[1.65, 1.05])
    base = run_row(*read_run(tmp_path / "base.parquet"))
    row = run_row(*read_run(tmp_path / "run.parquet"), baseline=base)
    assert row["max_slowdown"] == pytest.approx(1.65)
    assert row["mean_slowdown"] == pytest.approx(1.35)
    assert row["relative_slowdowns"] == pytest.approx([1.1, 1.05])
    assert row["within_slo"]  # 1.1 is within an SLO of 1.10
    alone = run_row(*read_run(tmp_path / "run.parquet"))
    assert not alone["within_slo"]  # absolute 1.65 is not


def test_refused_run_is_outside_the_slo(tmp_path):
    write_run(tmp_path / "r.parquet", status="refused", policy="static", n_vms=3)
    row = run_row(*read_run(tmp_path / "r.parquet"))
    assert row["status"] == "refused" and not row["within_slo"]
    assert math.isnan(row["max_slowdown"]) and row["accesses"] == 0
    assert row["overcommit_ratio"] == pytest.approx(1.2)


def test_sharing_savings_exact_with_the_host_gauge_else_a_lower_bound():
    frame = pd.DataFrame(
        {"epoch": [0, 0], "vm": [0, 1], "shared_pages": [10, 6], "zero_shared_pages": [4, 0]}
    )
    # Lower bound: VM0 saves 3 zero pages + 3 of its 6 others; VM1 saves 3 of 6.
    assert pages_saved_by_sharing(frame) == (9, False)
    assert pages_saved_by_sharing(frame.assign(shared_contents=5)) == (11, True)


def within_below(boundary: int):
    return lambda n: n <= boundary


@pytest.mark.parametrize("boundary", [0, 1, 3, 7, 8, 37, 63])
@pytest.mark.parametrize("max_points", [1, 2, 4, 100])
def test_refinement_pins_the_boundary_to_one_vm(boundary, max_points):
    is_within = within_below(boundary)
    within = {n: is_within(n) for n in (2, 8, 16, 64)}
    rounds = 0
    while new := next_points(within, max_points):
        assert not set(new) & set(within)
        within.update({n: is_within(n) for n in new})
        rounds += 1
        assert rounds < 20
    assert consolidation_point(within) == (boundary, True)


def test_boundary_above_the_grid_is_a_lower_bound():
    within = {2: True, 4: True, 8: True}
    assert consolidation_point(within) == (8, False)
    assert next_points(within) == []


def test_first_failure_ends_the_search():
    # A noisy pass above a failure does not count (more VMs never make a host faster).
    assert consolidation_point({2: True, 4: False, 8: True}) == (2, False)
    assert next_points({2: True, 4: False, 8: True}) == [3]
    assert next_points({2: True, 4: True, 8: False}, max_points=2) == [5, 7]


def test_summary_and_consolidation_from_files(tmp_path):
    """static on a 1000-page host with 400-page VMs: 2 fit, 3 are refused."""
    runs, baselines = [], []
    for n in (1, 2, 3, 4):
        base = tmp_path / f"base-{n}.parquet"
        write_run(base, n_vms=n, policy="none", sweep="baseline", seed=n)
        baselines.append(base)
        status = "ok" if n * 400 <= 1000 else "refused"
        static = tmp_path / f"static-{n}.parquet"
        write_run(static, n_vms=n, policy="static", status=status, seed=n)
        # ESX slows down from 4 VMs on (relative to the baseline's 1.0).
        esx = tmp_path / f"esx-{n}.parquet"
        write_run(esx, n_vms=n, slowdowns=[1.0] * (n - 1) + [1.0 if n < 4 else 1.3], seed=n)
        runs += [static, esx]
    summary = summarize_runs(runs, baselines)
    assert len(summary) == 8
    assert set(summary.status) == {"ok", "refused"}
    ratios = consolidation(summary).set_index("policy")
    assert ratios.loc["static", "consolidation_ratio"] == 1000 // 400
    assert ratios.loc["static", "overcommit_ratio"] == pytest.approx(0.8)
    assert ratios.loc["esx", "consolidation_ratio"] == 3
    assert ratios.loc["esx", "overcommit_ratio"] == pytest.approx(1.2)
    assert ratios.boundary_known.all()
    per_run = summary.groupby("policy").consolidation_ratio.first()
    assert per_run["static"] == 2 and per_run["esx"] == 3


def slo_study(tmp_path) -> list:
    """1 to 3 VMs under esx, slowed 1.0, 1.15 and 1.3 against their baselines (each run
    records the SLO 1.10): the runs and baselines' paths."""
    paths = []
    for n, slowdown in ((1, 1.0), (2, 1.15), (3, 1.3)):
        base = tmp_path / f"base-{n}.parquet"
        write_run(base, n_vms=n, policy="none", sweep="baseline", seed=n)
        run = tmp_path / f"esx-{n}.parquet"
        write_run(run, n_vms=n, slowdowns=[slowdown] * n, seed=n)
        paths += [run, base]
    return paths


def test_the_slo_is_applied_by_the_summary(tmp_path):
    """The workflow's slo.slowdown is given to the summary, not recorded by each replay;
    a run's recorded SLO (older files) is used only for experiments not given."""
    paths = slo_study(tmp_path)
    recorded = summarize_study(paths)  # runs recorded SLO 1.1
    assert len(recorded) == 3 and recorded.within_slo.tolist() == [True, False, False]
    assert consolidation(recorded).consolidation_ratio.tolist() == [1]
    looser = summarize_study(paths, {"exp": 1.2})
    assert looser.within_slo.tolist() == [True, True, False]
    assert looser.slo_slowdown.tolist() == [1.2] * 3
    ratios = consolidation(looser)
    assert ratios.consolidation_ratio.tolist() == [2] and ratios.slo_slowdown.tolist() == [1.2]
    assert summarize_study(paths, {"other": 1.2}).within_slo.tolist() == [True, False, False]


def test_summarize_command_takes_the_slo(tmp_path):
    # The workflow gives the summary each experiment's SLO; by hand it is --slo.
    from click.testing import CliRunner

    from balloonreplay.cli import main

    paths = [str(path) for path in slo_study(tmp_path)]
    out = tmp_path / "summary.parquet"
    for slo, within in (([], [True, False, False]), (["--slo", "1.2"], [True, True, False])):
        result = CliRunner().invoke(main, ["summarize", *paths, "-o", str(out), *slo])
        assert result.exit_code == 0, result.output
        assert pd.read_parquet(out).within_slo.tolist() == within
    named = ["--slo", "exp=1.2", "--slo", "1.05"]  # one experiment's wins over every one's
    assert CliRunner().invoke(main, ["summarize", *paths, "-o", str(out), *named]).exit_code == 0
    assert pd.read_parquet(out).slo_slowdown.tolist() == [1.2] * 3
    for bad, message in (("0.9", "at least 1"), ("other=1.2", "no run of experiment 'other'")):
        result = CliRunner().invoke(main, ["summarize", *paths, "-o", str(out), "--slo", bad])
        assert result.exit_code == 2 and message in result.output


def test_no_consolidation_ratio_where_the_host_grows_with_the_vms(tmp_path):
    runs = []
    for n in (1, 2, 3):
        path = tmp_path / f"none-{n}.parquet"
        write_run(path, n_vms=n, policy="none", host_pages=400 * n, seed=n)
        runs.append(path)
    summary = summarize_runs(runs)
    assert consolidation(summary).empty
    assert summary.consolidation_ratio.isna().all()


def test_summarize_command_matches_baselines_and_reads_run_lists(tmp_path):
    from click.testing import CliRunner

    from balloonreplay.cli import main

    base = tmp_path / "base.parquet"
    write_run(base, slowdowns=[2.0, 2.0], policy="none", sweep="baseline")
    run = tmp_path / "run.parquet"
    write_run(run, slowdowns=[2.1, 2.0])
    listing = tmp_path / "runs.txt"
    listing.write_text(f"{base}\n")
    out, ratios = tmp_path / "summary.parquet", tmp_path / "consolidation.parquet"
    result = CliRunner().invoke(
        main,
        ["summarize", str(run), "--runs-from", str(listing), "-o", str(out)]
        + ["--consolidation", str(ratios)],
    )
    assert result.exit_code == 0, result.output
    summary = pd.read_parquet(out)
    assert len(summary) == 1  # the baseline serves the run; it is not a row
    assert summary.max_relative_slowdown.iloc[0] == pytest.approx(1.05)
    assert pd.read_parquet(ratios).consolidation_ratio.tolist() == [2]
    empty = CliRunner().invoke(main, ["summarize", "-o", str(out)])
    assert empty.exit_code != 0 and "no metrics files" in empty.output


def test_display_name_is_the_policy_run_with_its_label():
    assert display_name("esx") == display_name("esx", "esx") == "VMware ESX"
    assert display_name("esx-notax", "esx") == "VMware ESX (esx-notax)"
    # A label naming another policy: drawn as the policy it runs ('VMware ESX' before).
    assert display_name("esx", "none") == "no policy (esx)"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("esx:tax=0.5", "VMware ESX (tax=0.5)"),
        ("esx: tax=0.5 ,sample_pages=50", "VMware ESX (tax=0.5, sample_pages=50)"),
        ("my-policy:k=1", "my-policy (k=1)"),
        ("esx:", "VMware ESX"),
    ],
)
def test_a_policy_given_as_text_with_parameters_is_shown_by_its_name_and_parameters(text, shown):
    # Its label and name are the text itself (experiments.policy_entries).
    assert display_name(text, text) == display_name(text) == shown


def test_a_run_of_no_policy_on_the_vms_own_memory_serves_as_their_baseline(tmp_path):
    """Without host_mem the workflow replays no separate baseline beside policy none
    (experiments.baseline_runs): that run is the baseline of its VM set."""
    twin, esx = tmp_path / "none.parquet", tmp_path / "esx.parquet"
    write_run(twin, slowdowns=[2.0, 1.5], policy="none", host_mem=None, policy_params={})
    write_run(esx, slowdowns=[2.2, 1.5], policy="esx", host_mem=None)
    summary = summarize_runs([twin, esx]).set_index("policy")
    assert summary.loc["esx", "max_relative_slowdown"] == pytest.approx(1.1)
    assert list(summary.loc["none", "relative_slowdowns"]) == [1.0, 1.0]
    # A baseline file, where there is one, is still the one used.
    base = tmp_path / "base.parquet"
    write_run(base, slowdowns=[1.1, 1.5], policy="none", sweep="baseline")
    summary = summarize_runs([twin, esx], [base]).set_index("policy")
    assert summary.loc["esx", "max_relative_slowdown"] == pytest.approx(2.0)


def test_an_experiment_without_baselines_judges_the_absolute_slowdown(tmp_path):
    """slo: {baseline: none}: a run of no policy on the VMs' own memory is not made the
    baseline of its VM set (it was, so it judged itself 1.0 and within any SLO, and the
    other policies against it)."""
    twin, esx = tmp_path / "none.parquet", tmp_path / "esx.parquet"
    write_run(twin, slowdowns=[2.0, 1.5], policy="none", host_mem=None, policy_params={})
    write_run(esx, slowdowns=[2.2, 1.5], policy="esx", host_mem=None)
    for summary in (
        summarize_runs([twin, esx], absolute=["exp"]),
        summarize_study([twin, esx], absolute=["exp"]),
    ):
        summary = summary.set_index("policy")
        assert summary.max_relative_slowdown.to_dict() == {"esx": 2.2, "none": 2.0}
        assert not summary.within_slo.any()
    # Another experiment's setting leaves this one compared with its baseline.
    other = summarize_runs([twin, esx], absolute=["other"]).set_index("policy")
    assert other.loc["esx", "max_relative_slowdown"] == pytest.approx(1.1)
    # The command line says it with --absolute, and refuses an experiment it has no run of.
    from click.testing import CliRunner

    from balloonreplay.cli import main

    out = tmp_path / "s.parquet"
    paths = [str(twin), str(esx)]
    for args, esx_relative in (((), 1.1), (("--absolute", "exp"), 2.2)):
        result = CliRunner().invoke(main, ["summarize", *paths, "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        table = pd.read_parquet(out).set_index("policy")
        assert table.loc["esx", "max_relative_slowdown"] == pytest.approx(esx_relative)
    result = CliRunner().invoke(main, ["summarize", *paths, "-o", str(out), "--absolute", "x"])
    assert result.exit_code == 2 and "no run of experiment 'x' (the runs': exp)" in result.output
