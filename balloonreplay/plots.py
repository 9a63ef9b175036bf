"""Seaborn figures. They read tables (from Parquet), never engine state."""

from __future__ import annotations

import os

import pandas as pd

from balloonreplay.traces.io import atomic_path

THEME = {"style": "whitegrid", "context": "paper", "palette": "colorblind"}


def _theme():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(**THEME)
    return sns


def save_figure(fig, out_path: str | os.PathLike) -> None:
    suffix = os.path.splitext(os.fspath(out_path))[1] or ".png"
    with atomic_path(out_path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix.lstrip("."), bbox_inches="tight", dpi=150)


def plot_miss_ratio_curves(curves: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Miss ratio versus memory size, one line per VM."""
    sns = _theme()
    import matplotlib.pyplot as plt

    data = curves.assign(VM=curves.vm.astype(str))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=data, x="size_pages", y="miss_ratio", hue="VM", ax=ax, drawstyle="steps-post")
    ax.set_xlabel("guest memory (4 KiB pages)")
    ax.set_ylabel("LRU miss ratio")
    ax.set_ylim(0, 1.02)
    ax.set_title("Exact LRU miss-ratio curves")
    save_figure(fig, out_path)
    plt.close(fig)
