"""Each study figure on a small synthetic summary or metrics table: non-empty PNG and PDF."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from balloonreplay import plots
from balloonreplay.metrics import ALL_COLUMNS, metrics_frame
from balloonreplay.summary import consolidation, display_name

POLICIES = ["static", "host-swap", "esx", "mom", "my-policy"]


def synthetic_summary() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for policy in POLICIES:
        for n in (1, 2, 3, 4, 6):
            refused = policy == "static" and n > 2
            rows.append(
                {
                    "experiment": "exp",
                    "workload": "w",
                    "policy": policy,
                    "policy_name": policy,
                    "policy_display": display_name(policy),
                    "point": f"w-n{n}",
                    "sweep": "vms",
                    "n_vms": n,
                    "status": "refused" if refused else "ok",
                    "page_size_bytes": 4096,
                    "host_mem_bytes": 2 * 2**30,
                    "configured_mem_bytes": n * 2**30,
                    "overcommit_ratio": n / 2,
                    "guest_faults": int(rng.integers(1000, 5000)) * n,
                    "guest_swap_bytes": int(rng.integers(0, 2**30)) * n,
                    "host_swap_bytes": 0 if policy == "static" else int(rng.integers(0, 2**30)) * n,
                    "silent_swap_writes": int(rng.integers(0, 100)),
                    "stale_swap_reads": int(rng.integers(0, 100)),
                    "false_swap_reads": int(rng.integers(0, 100)),
                    "shared_pages_end": 5000 * n,
                    "zero_shared_pages_end": 2000 * n,
                    "bytes_saved_by_sharing": 4000 * n * 4096,
                    "sharing_saved_exact": False,
                    "slo_slowdown": 1.1,
                    "within_slo": (not refused) and n <= {"esx": 4, "mom": 3}.get(policy, 2),
                }
            )
    return pd.DataFrame(rows)


def synthetic_metrics(n_vms=3, epochs=10) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = {c: rng.integers(0, 3000, size=n_vms * epochs) for c in ALL_COLUMNS}
    rows["vm"] = np.tile(np.arange(n_vms), epochs)
    rows["epoch"] = np.repeat(np.arange(epochs), n_vms)
    rows["t_ns"] = (rows["epoch"] + 1) * 1_000_000_000
    rows["zero_shared_pages"] = rows["shared_pages"] // 3
    return metrics_frame(rows)


def synthetic_balloon_table(summary) -> pd.DataFrame:
    """Rows as balloon_equivalence_table returns them, from the summary's esx/mom rows."""
    full = 2**30
    rows = []
    for label, source in (("balloon", "esx"), ("configured", "mom")):
        for row in summary[summary.policy == source].itertuples():
            taken = row.n_vms * 2**26
            rows.append(
                {
                    "policy": label,
                    "configured_bytes": full if label == "balloon" else full - taken,
                    "taken_bytes": taken,
                    "full_bytes": full,
                    "faults_per_kaccess": row.guest_faults / 1000,
                    "settled_epochs": 10.0,
                    "balloon_limit_percent": 65.0 if label == "balloon" else None,
                }
            )
    return pd.DataFrame(rows)


def figures(summary, tmp_path):
    ratios = consolidation(summary)
    balloon = synthetic_balloon_table(summary)
    at_point = summary[summary.n_vms == 2]
    return {
        "swap_traffic": lambda out: plots.plot_swap_traffic(summary, out),
        "consolidation": lambda out: plots.plot_consolidation(ratios, out),
        "timeline": lambda out: plots.plot_timeline(synthetic_metrics(), 20000, out, "esx"),
        "sharing": lambda out: plots.plot_sharing(summary[summary.policy == "esx"], out),
        "balloon_equivalence": lambda out: plots.plot_balloon_equivalence(
            balloon, "balloon", "configured", out
        ),
        "double_paging": lambda out: plots.plot_double_paging(at_point, out),
    }


@pytest.mark.parametrize(
    "name",
    [
        "swap_traffic",
        "consolidation",
        "timeline",
        "sharing",
        "balloon_equivalence",
        "double_paging",
    ],
)
@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_figure_is_a_non_empty_image(tmp_path, name, suffix):
    out = tmp_path / f"{name}{suffix}"
    figures(synthetic_summary(), tmp_path)[name](out)
    data = out.read_bytes()
    assert len(data) > 2000
    assert data.startswith(b"\x89PNG" if suffix == ".png" else b"%PDF")


@pytest.mark.parametrize(
    "name", ["swap_traffic", "consolidation", "sharing", "double_paging", "balloon_equivalence"]
)
def test_figure_without_data_is_an_explicit_placeholder(tmp_path, name):
    empty = synthetic_summary().iloc[:0]
    out = tmp_path / f"{name}.png"
    figures(empty, tmp_path)[name](out)
    assert out.stat().st_size > 0


def test_policy_colours_are_stable_across_figures():
    a = plots.policy_palette(["VMware ESX", "oVirt MOM"])
    b = plots.policy_palette(["oVirt MOM", "VMware ESX", "host swapping only", "zzz"])
    assert a["VMware ESX"] == b["VMware ESX"] and a["oVirt MOM"] == b["oVirt MOM"]
    assert len(set(b.values())) == 4


def balloon_metrics(balloon, target, faults, accesses=100) -> pd.DataFrame:
    """One VM's per-epoch metrics with the given balloon gauges and fault counts."""
    epochs = len(balloon)
    rows = {c: np.zeros(epochs, dtype=np.int64) for c in ALL_COLUMNS}
    rows["epoch"] = np.arange(epochs)
    rows["t_ns"] = (np.arange(epochs) + 1) * 1_000_000_000
    rows["accesses"] = np.full(epochs, accesses)
    rows["balloon_pages"] = np.asarray(balloon)
    rows["balloon_target_pages"] = np.asarray(target)
    rows["guest_faults"] = np.asarray(faults)
    return metrics_frame(rows)


def test_settled_faults_skip_the_warm_up_pass_and_the_inflation():
    # Two passes of 4 epochs. The balloon reaches its target (30) at the end of epoch 5,
    # after the second pass began at epoch 4: only epochs 6 and 7 count.
    metrics = balloon_metrics(
        balloon=[0, 10, 20, 20, 25, 30, 30, 30],
        target=[30, 30, 30, 30, 30, 30, 30, 30],
        faults=[50, 40, 30, 30, 20, 10, 3, 4],
    )
    window = plots.settled_faults(metrics, repeat=2)
    assert window == {"guest_faults": 7.0, "accesses": 200.0, "balloon_pages": 30.0, "epochs": 2.0}
    # Without a balloon only the warm-up is skipped.
    flat = balloon_metrics([0] * 8, [0] * 8, [50, 40, 30, 30, 20, 10, 3, 4])
    assert plots.settled_faults(flat, repeat=2)["guest_faults"] == 20 + 10 + 3 + 4
    assert plots.settled_faults(flat, repeat=1)["guest_faults"] == sum(
        [50, 40, 30, 30, 20, 10, 3, 4]
    )


@pytest.mark.parametrize("page_size, label", [(4096, "4 KiB"), (8192, "8 KiB"), (2**21, "2 MiB")])
def test_miss_ratio_curves_are_drawn_in_the_trace_pages(tmp_path, monkeypatch, page_size, label):
    import pandas as pd

    drawn = {}
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, out: drawn.update(x=fig.axes[0].get_xlabel())
    )
    curves = pd.DataFrame(
        {
            "vm": [0, 0, 0],
            "size_pages": [0, 1, 2],
            "misses": [4, 2, 1],
            "miss_ratio": [1, 0.5, 0.25],
        }
    )
    plots.plot_miss_ratio_curves(curves, tmp_path / "c.png", page_size)
    assert drawn["x"] == f"guest memory ({label} pages)"


def test_double_paging_without_any_event_draws_a_zero_axis_with_a_note(tmp_path, monkeypatch):
    """All counts 0 (a host that never swapped): symlog had drawn a degenerate axis up to
    0.055 events; the figure shows 0..1 and says why its bars are empty."""
    drawn = {}

    def capture(fig, out):
        ax = fig.axes[0]
        drawn.update(ylim=ax.get_ylim(), texts=[t.get_text() for t in ax.texts])

    monkeypatch.setattr(plots, "save_figure", capture)
    summary = synthetic_summary()
    at_point = summary[summary.n_vms == 2].assign(
        silent_swap_writes=0, stale_swap_reads=0, false_swap_reads=0
    )
    plots.plot_double_paging(at_point, tmp_path / "d.png")
    assert drawn["ylim"] == (0, 1)
    assert any("no double paging" in text for text in drawn["texts"])


def test_the_double_paging_figure_draws_the_experiment_the_config_check_checked(
    tmp_path, monkeypatch
):
    """Without figures.overcommit and figures.double_paging, the double-paging figure draws
    figures.double_paging_vms of the overcommit experiment. The config check took the
    first VM-count sweep on a fixed host by name, the figures the first experiment of the
    consolidation table, which also holds a one-point sweep whose host grows with its
    VMs ('a-grows' here): the figure drew an empty frame at a count the check had
    accepted. Both now follow experiments.overcommit_experiment."""
    from balloonreplay import experiments as X
    from balloonreplay.config_check import _check_double_paging_vms

    summary = synthetic_summary()
    fixed = summary[summary.n_vms.isin([2, 4])].assign(experiment="b-fixed")
    grows = summary[summary.n_vms == 2].assign(experiment="a-grows", host_mem_bytes=2 * 2**30)
    summary = pd.concat([grows, fixed], ignore_index=True)
    ratios = consolidation(summary)
    assert ratios.experiment.iloc[0] == "a-grows"  # what the figures used to take
    summary.to_parquet(tmp_path / "summary.parquet")
    ratios.to_parquet(tmp_path / "consolidation.parquet")
    experiments = {
        "a-grows": {"workloads": ["w"], "policies": POLICIES, "sweep": {"vms": [2]}},
        "b-fixed": {
            "workloads": ["w"],
            "policies": POLICIES,
            "host_mem": "2GiB",
            "sweep": {"vms": [2, 4]},
        },
    }
    figures = {"double_paging_vms": 4}
    _check_double_paging_vms(figures, experiments)  # 4 is a count of b-fixed, not a-grows
    assert X.overcommit_experiment(figures, experiments) == "b-fixed"

    drawn = {}

    def capture(data, out):
        drawn["double_paging"] = data

    monkeypatch.setattr(plots, "plot_double_paging", capture)
    roles = X.figure_roles(figures, experiments)  # as the workflow's figures rule passes them
    plots.study_figures(
        tmp_path / "summary.parquet",
        tmp_path / "consolidation.parquet",
        None,
        roles,
        tmp_path / "figures",
        suffixes=(".png",),
    )
    data = drawn["double_paging"]
    assert set(data.experiment) == {"b-fixed"} and set(data.n_vms) == {4}
    assert len(data) == len(POLICIES)


def two_workload_summary() -> pd.DataFrame:
    """The synthetic sweep for two workloads whose policies fit differently: on 'w2' every
    policy fits one VM fewer than on 'w' (static: 2 and 1)."""
    one = synthetic_summary()
    two = one.assign(
        workload="w2",
        point=one.point.str.replace("w-", "w2-"),
        silent_swap_writes=one.silent_swap_writes + 1000,
    )
    two["within_slo"] = [
        row.within_slo and row.n_vms < {"esx": 4, "mom": 3}.get(row.policy, 2)
        for row in two.itertuples()
    ]
    return pd.concat([one, two], ignore_index=True)


def bars_by_label(ax) -> dict[str, list[float]]:
    """{tick label: bar widths} of a horizontal categorical bar plot (its figure drawn)."""
    ax.figure.canvas.draw()
    labels = {
        round(float(t)): label.get_text()
        for t, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    }
    out = {}
    for patch in ax.patches:
        centre = patch.get_y() + patch.get_height() / 2
        out.setdefault(labels[round(centre)], []).append(patch.get_width())
    return out


def test_consolidation_draws_each_workload_of_the_sweep(tmp_path, monkeypatch):
    """Two workloads: one bar per policy had averaged their ratios, and the count labels
    of the second workload's rows were drawn below the axes."""
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: drawn.update(fig=fig))
    ratios = consolidation(two_workload_summary())
    plots.plot_consolidation(ratios, tmp_path / "c.png")
    axes = drawn["fig"].axes
    assert len(axes) == 2
    for ax, workload in zip(axes, ["w", "w2"], strict=True):
        expected = ratios[ratios.workload == workload]
        assert workload in ax.get_title()
        bars = bars_by_label(ax)
        assert bars == {
            row.policy_display: [row.consolidation_ratio] for row in expected.itertuples()
        }
        low, high = sorted(ax.get_ylim())
        assert len(ax.texts) == len(expected)
        assert all(low <= text.get_position()[1] <= high for text in ax.texts)


def test_double_paging_draws_each_workload_at_its_point(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: drawn.update(fig=fig))
    summary = two_workload_summary()
    at_point = summary[summary.n_vms == 2]
    plots.plot_double_paging(at_point, tmp_path / "d.png")
    axes = drawn["fig"].axes
    assert len(axes) == 2
    for ax, workload in zip(axes, ["w", "w2"], strict=True):
        rows = at_point[(at_point.workload == workload) & (at_point.status == "ok")]
        # One bar container per event, silent swap writes first; 'w2' has 1000 more.
        heights = [bar.get_height() for bar in ax.containers[0]]
        assert sorted(heights) == sorted(rows.silent_swap_writes.astype(float))


def test_the_double_paging_experiment_is_drawn_at_each_workloads_most_overcommitted_point(
    tmp_path, monkeypatch
):
    """Workload 'w2' has VMs half the size of 'w''s: the experiment's most overcommitted
    point was only 'w''s, and 'w2' was left out of the figure."""
    summary = two_workload_summary()
    summary["overcommit_ratio"] = summary.overcommit_ratio.where(
        summary.workload == "w", summary.overcommit_ratio / 2
    )
    summary.to_parquet(tmp_path / "summary.parquet")
    consolidation(summary).to_parquet(tmp_path / "consolidation.parquet")
    drawn = {}
    monkeypatch.setattr(plots, "plot_double_paging", lambda data, out: drawn.update(data=data))
    plots.study_figures(
        tmp_path / "summary.parquet",
        tmp_path / "consolidation.parquet",
        None,
        {"overcommit": "exp", "double_paging": "exp"},
        tmp_path / "figures",
        suffixes=(".png",),
    )
    data = drawn["data"]
    assert set(data.workload) == {"w", "w2"} and set(data.n_vms) == {6}


@pytest.mark.parametrize("series", ["policy", "workload"])
def test_sharing_draws_each_policy_and_workload_of_its_experiment(tmp_path, monkeypatch, series):
    """Two policies (or workloads) of the sharing experiment: their bars at one VM count
    were drawn over each other in one panel, and their 'saved' lines joined into one."""
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: drawn.update(fig=fig))
    summary = two_workload_summary()
    if series == "policy":
        data = summary[(summary.workload == "w") & summary.policy.isin(["esx", "mom"])].copy()
        data.loc[data.policy == "mom", "shared_pages_end"] *= 2
        names = ["VMware ESX", "oVirt MOM"]
    else:
        data = summary[summary.policy == "esx"].copy()
        data.loc[data.workload == "w2", "shared_pages_end"] *= 2
        names = ["w", "w2"]
    plots.plot_sharing(data, tmp_path / "s.png")
    axes = [ax for ax in drawn["fig"].axes if ax.axison]
    assert [ax.get_title() for ax in axes] == names
    column = "policy_display" if series == "policy" else "workload"
    for ax, name in zip(axes, names, strict=True):
        rows = data[data[column] == name].sort_values("n_vms")
        zero, other = ax.containers  # zero pages, other shared pages on top
        tops = [a.get_height() + b.get_height() for a, b in zip(zero, other, strict=True)]
        assert tops == pytest.approx(list(rows.shared_pages_end * 4096 / 2**20))
        (saved,) = ax.lines
        assert list(saved.get_ydata()) == pytest.approx(list(rows.bytes_saved_by_sharing / 2**20))


PAGE_16K = 16384


def write_16k_run(path, metrics, **run) -> None:
    """A metrics file of a trace of 16 KiB pages, its metadata as run_point writes it (the
    page size is the trace's, under trace.metadata; the engine's config has none)."""
    from balloonreplay.metrics import write_metrics

    meta = {
        "config": {"host_pages": 20000, "config_pages": [1000] * metrics.vm.nunique()},
        "trace": {"metadata": {"page_size_bytes": PAGE_16K}},
        "run": {"status": "ok", "n_vms": int(metrics.vm.nunique()), **run},
    }
    write_metrics(metrics, path, meta)


def test_the_timeline_draws_the_trace_pages(tmp_path, monkeypatch):
    """A balloon of 83 pages of 16 KiB is 1.30 MiB; in 4 KiB pages it showed as 0.32."""
    metrics = synthetic_metrics(n_vms=1, epochs=3).assign(
        balloon_pages=83, host_swapped_pages=10, shared_pages=0, zero_shared_pages=0
    )
    write_16k_run(tmp_path / "run.parquet", metrics, policy="esx", workload="w")
    summary = synthetic_summary()
    summary.to_parquet(tmp_path / "summary.parquet")
    consolidation(summary).to_parquet(tmp_path / "consolidation.parquet")
    drawn = {}

    def capture(fig, out):
        if "timeline" in os.fspath(out):
            drawn.update({ax.get_ylabel(): ax.lines[0].get_ydata() for ax in fig.axes[1:3]})

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.study_figures(
        tmp_path / "summary.parquet",
        tmp_path / "consolidation.parquet",
        tmp_path / "run.parquet",
        {},
        tmp_path / "figures",
        suffixes=(".png",),
    )
    assert max(drawn["balloon size (MiB)"]) == pytest.approx(83 * PAGE_16K / 2**20)
    assert max(drawn["host-swapped (MiB)"]) == pytest.approx(10 * PAGE_16K / 2**20)


def test_balloon_equivalence_counts_the_trace_pages(tmp_path):
    metrics = balloon_metrics(balloon=[83] * 4, target=[83] * 4, faults=[1, 2, 3, 4])
    write_16k_run(tmp_path / "run.parquet", metrics, policy="balloon", config_pages=[1000])
    (row,) = plots.balloon_equivalence_table([tmp_path / "run.parquet"]).itertuples()
    assert row.balloon_bytes == 83 * PAGE_16K
    assert row.configured_bytes == 1000 * PAGE_16K
