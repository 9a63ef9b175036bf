"""Seaborn figures. They read tables (from Parquet), never engine state."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from balloonreplay.errors import OutputError
from balloonreplay.traces.io import atomic_path

THEME = {"style": "whitegrid", "context": "paper", "palette": "colorblind"}


def _theme():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(**THEME)
    return sns


def check_figure_path(out_path: str | os.PathLike) -> None:
    """Refuse, before any work, a figure name whose suffix matplotlib cannot write (no
    suffix means PNG, as save_figure writes it)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(os.fspath(out_path))[1].lstrip(".").lower() or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        names = ", ".join(f".{name}" for name in sorted(supported))
        raise OutputError(out_path, f"expected a figure file name ending in one of {names}")


def _page_size_text(page_size_bytes: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if page_size_bytes % size == 0:
            return f"{page_size_bytes // size} {unit}"
    return f"{page_size_bytes} B"


def save_figure(fig, out_path: str | os.PathLike) -> None:
    suffix = os.path.splitext(os.fspath(out_path))[1] or ".png"
    with atomic_path(out_path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix.lstrip("."), bbox_inches="tight", dpi=150)


def plot_miss_ratio_curves(
    curves: pd.DataFrame, out_path: str | os.PathLike, page_size_bytes: int = 4096
) -> None:
    """Miss ratio versus memory size, one line per VM (sizes in the trace's pages)."""
    sns = _theme()
    import matplotlib.pyplot as plt

    data = curves.assign(VM=curves.vm.astype(str))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=data, x="size_pages", y="miss_ratio", hue="VM", ax=ax, drawstyle="steps-post")
    ax.set_xlabel(f"guest memory ({_page_size_text(page_size_bytes)} pages)")
    ax.set_ylabel("LRU miss ratio")
    ax.set_ylim(0, 1.02)
    ax.set_title("Exact LRU miss-ratio curves")
    save_figure(fig, out_path)
    plt.close(fig)


# --------------------------------------------------------------------------- the study
# Units: memory in MiB or GiB (page counts times the trace's page size), time in seconds,
# traffic in GiB.
MIB = 2**20
GIB = 2**30
# ESX free-memory states (Waldspurger, OSDI 2002): high >= 6%, soft 4%, hard 2%, low 1%.
ESX_FREE_THRESHOLDS_PERCENT = {"high": 6.0, "soft": 4.0, "hard": 2.0, "low": 1.0}
DOUBLE_PAGING_EVENTS = {
    "silent_swap_writes": "silent swap writes",
    "stale_swap_reads": "stale swap reads",
    "false_swap_reads": "false swap reads",
}


def policy_palette(names) -> dict[str, tuple]:
    """One colour per policy display name, the same in every figure (known policies
    first, in a fixed order, so adding a policy never recolours the others)."""
    sns = _theme()
    from balloonreplay.summary import POLICY_DISPLAY_NAMES

    known = list(POLICY_DISPLAY_NAMES.values())
    ordered = [n for n in known if n in set(names)] + sorted(set(names) - set(known))
    colours = sns.color_palette("colorblind", n_colors=max(len(known) + 4, 10))
    extra = [n for n in ordered if n not in known]
    palette = {}
    for name in ordered:
        index = known.index(name) if name in known else len(known) + extra.index(name)
        palette[name] = colours[index % len(colours)]
    return palette


def _ok(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary.status == "ok"] if "status" in summary else summary


def _finish(fig, out_path) -> None:
    import matplotlib.pyplot as plt

    save_figure(fig, out_path)
    plt.close(fig)


def _no_data(out_path, title: str, why: str) -> None:
    """An explicit placeholder, so a study without the experiment still has every file."""
    _theme()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    _finish(fig, out_path)


def plot_swap_traffic(summary: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Figure 1: guest and host swap traffic versus overcommit ratio, one line per policy."""
    sns = _theme()
    data = _ok(summary)
    if data.empty:
        return _no_data(out_path, "Swap traffic", "no completed runs")
    long = data.melt(
        id_vars=["policy_display", "overcommit_ratio", "workload"],
        value_vars=["guest_swap_bytes", "host_swap_bytes"],
        var_name="kind",
        value_name="bytes",
    )
    # GiB for a real host, MiB for the scaled-down studies.
    unit, scale = ("GiB", GIB) if long.bytes.max() >= GIB else ("MiB", MIB)
    long["traffic"] = long.bytes / scale
    long["kind"] = long.kind.map(
        {"guest_swap_bytes": "guest swap (in guest)", "host_swap_bytes": "host swap (hypervisor)"}
    )
    palette = policy_palette(long.policy_display)
    grid = sns.relplot(
        data=long,
        x="overcommit_ratio",
        y="traffic",
        hue="policy_display",
        style="policy_display",
        col="kind",
        row="workload" if long.workload.nunique() > 1 else None,
        kind="line",
        markers=True,
        dashes=False,
        palette=palette,
        hue_order=list(palette),
        style_order=list(palette),
        height=3,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels(
        "overcommit ratio (Σ guest ÷ host memory)",
        f"swap traffic ({unit}, reads + writes)",
    )
    grid.set_titles("{col_name}" if long.workload.nunique() == 1 else "{row_name}: {col_name}")
    grid.legend.set_title("host policy")
    grid.figure.suptitle("Swap traffic as the host is overcommitted", y=1.03)
    _finish(grid.figure, out_path)


def _by_workload(data: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows of each workload, in name order: a figure draws one panel per workload,
    since averaging policies over workloads would mix VMs of different programs."""
    return [(str(name), rows) for name, rows in data.groupby("workload", sort=True)]


def plot_consolidation(ratios: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Figure 2: consolidation ratio per policy (most VMs per host within the SLO), one
    panel per workload."""
    sns = _theme()
    import matplotlib.pyplot as plt

    from balloonreplay.units import format_bytes

    if ratios.empty:
        return _no_data(out_path, "Consolidation ratio", "no VM-count sweep on a fixed host")
    slo = float(ratios.slo_slowdown.iloc[0])
    panels = _by_workload(ratios)
    palette = policy_palette(ratios.policy_display)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(6, 0.45 * len(ratios) + 1.5 + 0.5 * (len(panels) - 1)),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [len(rows) for _, rows in panels]},
    )
    for ax, (workload, rows) in zip(axes[:, 0], panels, strict=True):
        data = rows.sort_values("consolidation_ratio", ascending=False)
        # One bar per row, in the rows' order: the labels below go to bar i.
        order = list(data.policy_display)
        sns.barplot(
            data=data,
            y="policy_display",
            x="consolidation_ratio",
            hue="policy_display",
            order=order,
            hue_order=order,
            palette=palette,
            legend=False,
            ax=ax,
            orient="h",
        )
        for i, row in enumerate(data.itertuples()):
            # Unknown boundary: bracketed by the first failing count, or only bounded below.
            upper = getattr(row, "upper_bound", None)
            if row.boundary_known:
                count = f"{row.consolidation_ratio}"
            elif upper is not None and upper == upper:  # not NaN
                count = f"{row.consolidation_ratio}–{int(upper)}"
            else:
                count = f"≥ {row.consolidation_ratio}"
            ax.text(
                row.consolidation_ratio,
                i,
                f" {count} VMs ({row.overcommit_ratio:.2f}× overcommit)",
                va="center",
                fontsize=8,
            )
        ax.set_ylabel("host policy")
        ax.set_xlabel("")
        if len(panels) > 1:
            host = format_bytes(int(data.host_mem_bytes.iloc[0]))
            ax.set_title(f"{workload} VMs on a {host} host", fontsize=9)
    axes[-1, 0].set_xlabel("consolidation ratio (VMs per host)")
    axes[0, 0].set_xlim(0, ratios.consolidation_ratio.max() * 1.6 + 1)
    host = format_bytes(int(ratios.host_mem_bytes.iloc[0]))
    where = f"per {host} host" if len(panels) == 1 else "per host"
    fig.suptitle(
        f"VMs {where} with every VM's slowdown ≤ {slo:.2f}×\nits slowdown on a dedicated host (SLO)"
    )
    fig.tight_layout()
    _finish(fig, out_path)


def host_used_pages(metrics: pd.DataFrame) -> pd.Series:
    """Host machine pages in use per epoch: the engine's gauge when the metrics carry it,
    else private backed pages plus the shared pages not saved by sharing (the summary's
    lower bound on savings, so this is an upper bound on use)."""
    if "host_used_pages" in metrics:
        return metrics.groupby("epoch").host_used_pages.first()
    from balloonreplay.summary import pages_saved_by_sharing

    used = {}
    for epoch, rows in metrics.groupby("epoch"):
        saved, _ = pages_saved_by_sharing(rows)
        used[epoch] = int(rows.backed_pages.sum() + rows.shared_pages.sum() - saved)
    return pd.Series(used)


def plot_timeline(
    metrics: pd.DataFrame,
    host_pages: int,
    out_path: str | os.PathLike,
    title: str = "",
    page_size_bytes: int = 4096,
) -> None:
    """Figure 3: one run over time: host free memory with the ESX thresholds, balloon size
    per VM, host-swapped pages per VM, shared pages (zero and other)."""
    sns = _theme()
    import matplotlib.pyplot as plt

    if metrics.empty:
        return _no_data(out_path, "Timeline", "the run has no metrics")
    mib = page_size_bytes / MIB
    data = metrics.assign(
        time_s=metrics.t_ns / 1e9,
        VM=metrics.vm.astype(str),
        balloon_mib=metrics.balloon_pages * mib,
        swapped_mib=metrics.host_swapped_pages * mib,
    )
    times = data.groupby("epoch").time_s.first()
    free_percent = 100 * (host_pages - host_used_pages(metrics)) / host_pages
    fig, axes = plt.subplots(4, 1, figsize=(6.5, 8), sharex=True)
    ax = axes[0]
    ax.plot(times.values, free_percent.reindex(times.index).values, color="black")
    for (state, level), colour in zip(
        ESX_FREE_THRESHOLDS_PERCENT.items(), sns.color_palette("colorblind", 4), strict=True
    ):
        ax.axhline(level, ls="--", lw=0.8, color=colour, label=f"{state} ({level:g}%)")
    ax.set_ylabel("host free memory (%)")
    ax.legend(title="ESX state", fontsize=7, loc="upper right", ncols=2)
    sns.lineplot(
        data=data, x="time_s", y="balloon_mib", hue="VM", ax=axes[1], drawstyle="steps-post"
    )
    axes[1].set_ylabel("balloon size (MiB)")
    n_vms = data.VM.nunique()
    # Beside the panel, not over the lines.
    axes[1].legend(
        title="VM",
        ncols=1 + (n_vms - 1) // 12,
        fontsize=6,
        title_fontsize=7,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
    )
    sns.lineplot(
        data=data,
        x="time_s",
        y="swapped_mib",
        hue="VM",
        ax=axes[2],
        legend=False,
        drawstyle="steps-post",
    )
    axes[2].set_ylabel("host-swapped (MiB)")
    shared = data.groupby("epoch")[["shared_pages", "zero_shared_pages"]].sum()
    axes[3].stackplot(
        times.values,
        shared.zero_shared_pages.values * mib,
        (shared.shared_pages - shared.zero_shared_pages).values * mib,
        labels=["zero pages", "other shared pages"],
        colors=sns.color_palette("colorblind", 6)[4:6],
    )
    axes[3].set_ylabel("shared (MiB)")
    if shared.shared_pages.sum() == 0:
        # Content unknown (e.g. a memtrace capture) or sharing off: say so, not a blank axis.
        axes[3].set_ylim(0, 1)
        axes[3].text(
            0.5, 0.5, "no shared pages", ha="center", va="center", transform=axes[3].transAxes
        )
    else:
        axes[3].legend(fontsize=7, loc="upper left")
    axes[3].set_xlabel("host time (s)")
    fig.suptitle(title or "One run over time")
    fig.tight_layout()
    _finish(fig, out_path)


def plot_sharing(summary: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Figure 4 (the shape of Waldspurger's Fig. 4): memory shared and saved by page
    sharing versus the number of VMs booted from one image; one panel per workload and
    policy (their bars at one VM count would stack on each other)."""
    sns = _theme()
    import matplotlib.pyplot as plt

    data = _ok(summary).sort_values("n_vms")
    if data.empty:
        return _no_data(out_path, "Page sharing", "no sharing experiment")
    panels = [
        (workload, policy, rows)
        for (workload, policy), rows in data.groupby(["workload", "policy_display"], sort=True)
    ]
    columns = min(len(panels), 2)
    rows_of_panels = -(-len(panels) // columns)
    fig, axes = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(5.5 * columns, 3.5 * rows_of_panels),
        sharey=True,
        squeeze=False,
    )
    colours = sns.color_palette("colorblind", 6)
    exact = bool(data.sharing_saved_exact.all()) if "sharing_saved_exact" in data else True
    several_workloads = data.workload.nunique() > 1
    several_policies = data.policy_display.nunique() > 1
    for ax, (workload, policy, rows) in zip(axes.flat, panels, strict=False):
        mib = rows.page_size_bytes / MIB
        zero = rows.zero_shared_pages_end * mib
        other = (rows.shared_pages_end - rows.zero_shared_pages_end) * mib
        ax.bar(rows.n_vms, zero, color=colours[4], label="shared: zero pages")
        ax.bar(rows.n_vms, other, bottom=zero, color=colours[5], label="shared: other pages")
        ax.plot(
            rows.n_vms,
            rows.bytes_saved_by_sharing / MIB,
            "o-",
            color="black",
            label="saved" + ("" if exact else " (lower bound)"),
        )
        ax.set_xlabel("VMs booted from one image")
        if ax in axes[:, 0]:
            ax.set_ylabel("guest memory (MiB)")
        ax.set_xticks(sorted(rows.n_vms.unique()))
        if len(panels) > 1:
            shown = [str(workload)] * several_workloads + [str(policy)] * several_policies
            ax.set_title(", ".join(shown), fontsize=9)
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=8)
    if len(panels) == 1:
        axes[0, 0].set_title("Memory shared and saved by page sharing")
    else:
        fig.suptitle("Memory shared and saved by page sharing")
        fig.tight_layout()
    _finish(fig, out_path)


def settled_faults(metrics: pd.DataFrame, repeat: int = 1) -> dict[str, float]:
    """Guest faults of one run counted only where the balloon comparison is fair: from the
    trace's last pass on (the earlier passes are a warm-up: first touches, inflation) and
    from the epoch after the balloon last differed from its target (inflation forces
    guest reclaim that a VM configured small never does). Epochs are the unit, so the
    window starts within one epoch of those points. Returns the faults, the accesses in
    the window and the mean balloon size over it (pages, all VMs summed)."""
    per_epoch = metrics.groupby("epoch")[
        ["accesses", "guest_faults", "balloon_pages", "balloon_target_pages"]
    ].sum()
    accesses_before = per_epoch.accesses.cumsum() - per_epoch.accesses
    warm_up_accesses = per_epoch.accesses.sum() * (repeat - 1) / repeat
    after_warm_up = accesses_before >= warm_up_accesses
    # Gauges are taken at an epoch's end. The epoch after the last one that ended with
    # the balloon away from its target still moved the balloon; the window opens after it.
    unsettled = (per_epoch.balloon_pages != per_epoch.balloon_target_pages).to_numpy()
    first = int(np.flatnonzero(unsettled)[-1]) + 2 if unsettled.any() else 0
    after_settled = np.arange(len(per_epoch)) >= first
    window = per_epoch[after_warm_up.to_numpy() & after_settled]
    return {
        "guest_faults": float(window.guest_faults.sum()),
        "accesses": float(window.accesses.sum()),
        "balloon_pages": float(window.balloon_pages.mean()) if len(window) else float("nan"),
        "epochs": float(len(window)),
    }


def balloon_equivalence_table(run_paths) -> pd.DataFrame:
    """One row per balloon-equivalence run: policy label, the memory taken from the VM
    (its settled balloon, or M minus its configured memory), and its settled guest faults
    per 1,000 accesses (:func:`settled_faults`)."""
    from balloonreplay.metrics import read_metrics_metadata
    from balloonreplay.summary import run_page_size_bytes

    rows = []
    for path in run_paths:
        meta = read_metrics_metadata(path)
        run = meta.get("run", {})
        if run.get("status", "ok") != "ok":
            continue
        metrics = pd.read_parquet(path)
        if metrics.empty:
            continue
        page_bytes = run_page_size_bytes(meta)
        repeat = int((run.get("clone") or {}).get("repeat", 1))
        window = settled_faults(metrics, repeat)
        params = run.get("policy_params") or {}
        rows.append(
            {
                "policy": run.get("policy"),
                "configured_bytes": sum(run.get("config_pages") or []) * page_bytes,
                "balloon_bytes": window["balloon_pages"] * page_bytes,
                "faults_per_kaccess": 1000 * window["guest_faults"] / max(window["accesses"], 1),
                "settled_epochs": window["epochs"],
                "balloon_limit_percent": params.get("max_balloon_percent"),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    full = table.configured_bytes.max()
    # Memory taken away: the balloon where there is one; M minus the configured memory
    # for the VM configured small.
    table["taken_bytes"] = table.balloon_bytes.where(
        table.configured_bytes == full, full - table.configured_bytes
    )
    table["full_bytes"] = full
    return table


def plot_balloon_equivalence(
    table: pd.DataFrame, ballooned: str, configured: str, out_path: str | os.PathLike
) -> None:
    """Figure 5 (the shape of Waldspurger's Fig. 2): settled guest faults of a VM ballooned
    from M down to M−B versus a VM configured with M−B, over B (``table`` from
    :func:`balloon_equivalence_table`)."""
    sns = _theme()
    import matplotlib.pyplot as plt

    if table.empty or not {ballooned, configured} <= set(table.policy):
        return _no_data(out_path, "Balloon equivalence", "no balloon-equivalence runs")
    data = table[table.policy.isin([ballooned, configured])].copy()
    full_bytes = data.full_bytes.max()
    kinds = {
        ballooned: f"ballooned from {full_bytes / MIB:g} MiB",
        configured: "configured with M − B",
    }
    data["kind"] = data.policy.map(kinds)
    data["B (MiB)"] = data.taken_bytes / MIB
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sns.lineplot(
        data=data.sort_values("B (MiB)"),
        x="B (MiB)",
        y="faults_per_kaccess",
        hue="kind",
        style="kind",
        hue_order=list(kinds.values()),
        style_order=list(kinds.values()),
        markers=True,
        dashes=False,
        ax=ax,
    )
    limits = data.balloon_limit_percent.dropna()
    if len(limits):
        limit_mib = float(limits.iloc[0]) / 100 * full_bytes / MIB
        ax.axvline(limit_mib, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(
            f"balloon limit {float(limits.iloc[0]):g}% of M\n(ESX Mem.CtlMaxPercent)",
            (limit_mib, 0.95),
            xycoords=("data", "axes fraction"),
            ha="right",
            va="top",
            fontsize=7,
        )
    ax.set_xlabel("memory taken away B (MiB): settled balloon, or less configured memory")
    ax.set_ylabel("guest faults per 1,000 accesses\n(after warm-up and inflation)")
    ax.legend(title=None, fontsize=8)
    ax.set_title("Balloon equivalence: ballooned M − B behaves like configured M − B")
    _finish(fig, out_path)


def plot_double_paging(summary: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Figure 6: VSwapper's double-paging pathologies per policy, at one sweep point per
    workload (one panel each)."""
    sns = _theme()
    import matplotlib.pyplot as plt

    data = _ok(summary)
    if data.empty:
        return _no_data(out_path, "Double paging", "no completed runs")
    panels = _by_workload(data)
    order = list(policy_palette(data.policy_display))
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(6.5, 3.5 * len(panels)), sharex=True, squeeze=False
    )
    for ax, (workload, rows) in zip(axes[:, 0], panels, strict=True):
        long = rows.melt(
            id_vars=["policy_display"],
            value_vars=list(DOUBLE_PAGING_EVENTS),
            var_name="event",
            value_name="events",
        )
        long["event"] = long.event.map(DOUBLE_PAGING_EVENTS)
        sns.barplot(
            data=long,
            x="policy_display",
            y="events",
            hue="event",
            order=order,
            hue_order=list(DOUBLE_PAGING_EVENTS.values()),
            ax=ax,
            errorbar=None,
        )
        # Stale reads can outnumber the others a hundredfold: a log scale keeps all three
        # visible (symlog, so a zero count is a zero bar).
        ax.set_yscale("symlog", linthresh=1)
        if long.events.max() > 0:
            ax.set_ylim(bottom=0)
        else:
            # Every bar is 0 (no host swapping at this point): autoscaling would make a
            # degenerate axis up to 0.055 events; show 0..1 and say why the bars are empty.
            ax.set_ylim(0, 1)
            ax.text(
                0.5,
                0.5,
                "no double paging at this point",
                transform=ax.transAxes,
                ha="center",
                va="center",
            )
        ax.set_ylabel("events (count, all VMs; log scale)")
        ax.set_xlabel("host policy")
        ratio = rows.overcommit_ratio.max()
        if len(panels) == 1:
            ax.set_title(f"Double paging at {ratio:.2f}× overcommit")
        else:
            ax.set_title(f"{workload} VMs at {ratio:.2f}× overcommit", fontsize=9)
        if ax is axes[0, 0]:
            ax.legend(title=None, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.get_legend().remove()
    bottom = axes[-1, 0]
    bottom.tick_params(axis="x", rotation=30)
    for label in bottom.get_xticklabels():
        label.set_horizontalalignment("right")
    if len(panels) > 1:
        fig.suptitle("Double paging by host policy")
        fig.tight_layout()
    _finish(fig, out_path)


STUDY_FIGURES = (
    "swap_traffic",
    "consolidation",
    "timeline",
    "sharing",
    "balloon_equivalence",
    "double_paging",
)


def study_figures(
    summary_path: str | os.PathLike,
    consolidation_path: str | os.PathLike,
    timeline_path: str | os.PathLike | None,
    roles: dict,
    out_dir: str | os.PathLike,
    suffixes: tuple[str, ...] = (".png", ".pdf"),
    balloon_runs=(),
) -> list[str]:
    """Draw the six study figures from the summary tables; ``roles`` (config ``figures:``,
    as experiments.figure_roles resolves them: ``overcommit`` is given when the study has
    an overcommit experiment) names the experiment (and run) each figure draws; the
    figures of a role naming none are placeholders; ``balloon_runs``: the metrics files
    of the balloon-equivalence experiment (its figure counts faults per epoch). Returns
    the files written."""
    from balloonreplay.metrics import read_metrics_metadata
    from balloonreplay.summary import display_name, run_page_size_bytes

    summary = pd.read_parquet(summary_path)
    ratios = pd.read_parquet(consolidation_path)

    def rows(experiment: str | None) -> pd.DataFrame:
        if experiment is None or summary.empty:
            return summary.iloc[:0]
        return summary[summary.experiment == experiment]

    overcommit = roles.get("overcommit")  # resolved by experiments.figure_roles
    sweep = rows(overcommit)
    if roles.get("double_paging"):
        # Its own experiment: the most overcommitted point of each of its workloads.
        paging = _ok(rows(roles["double_paging"]))
        most = paging.groupby("workload").overcommit_ratio.transform("max")
        paging = paging[paging.overcommit_ratio == most]
    else:
        at_vms = roles.get("double_paging_vms") or (int(sweep.n_vms.max()) if len(sweep) else 0)
        paging = sweep[sweep.n_vms == at_vms]
    balloon = roles.get("balloon_equivalence") or {}
    balloon_table = balloon_equivalence_table(balloon_runs)
    draw = {
        "swap_traffic": lambda out: plot_swap_traffic(sweep, out),
        "consolidation": lambda out: plot_consolidation(
            ratios[ratios.experiment == overcommit], out
        ),
        "sharing": lambda out: plot_sharing(rows(roles.get("sharing")), out),
        "balloon_equivalence": lambda out: plot_balloon_equivalence(
            balloon_table,
            balloon.get("ballooned", "balloon"),
            balloon.get("configured", "configured"),
            out,
        ),
        "double_paging": lambda out: plot_double_paging(paging, out),
    }
    if timeline_path is not None:
        metrics = pd.read_parquet(timeline_path)
        meta = read_metrics_metadata(timeline_path)
        run = meta.get("run", {})
        host_pages = int(meta.get("config", {}).get("host_pages") or run.get("host_pages") or 1)
        title = (
            f"{display_name(run.get('policy', '?'), run.get('policy_name'))}: "
            f"{run.get('n_vms', '?')} VMs of {run.get('workload', '?')} on one host"
        )
        page_bytes = run_page_size_bytes(meta)
        draw["timeline"] = lambda out: plot_timeline(metrics, host_pages, out, title, page_bytes)
    else:
        draw["timeline"] = lambda out: _no_data(out, "Timeline", "no run chosen (figures.timeline)")
    written = []
    os.makedirs(out_dir, exist_ok=True)
    for name in STUDY_FIGURES:
        for suffix in suffixes:
            out = os.path.join(out_dir, name + suffix)
            draw[name](out)
            written.append(out)
    return written
