"""The `balloonreplay replay` command, the public API and the metrics file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import balloonreplay
from balloonreplay.cli import main
from balloonreplay.errors import ConfigError, TraceError
from balloonreplay.metrics import METRIC_COLUMNS, read_metrics_metadata
from balloonreplay.policies import make_policy, parse_policy_spec
from balloonreplay.replay import JSON_KEYS, parse_duration_ns
from balloonreplay.traces.io import write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch


@pytest.fixture
def trace_path(tmp_path):
    rng = np.random.default_rng(1)
    n = 5_000
    vm = np.arange(n) % 2
    batch = make_batch(vm, np.arange(n) * 1_000, rng.integers(0, 64, n), rng.random(n) < 0.3)
    meta = TraceMetadata(
        source="test", seed=1, config_pages=[32, 32], dense=True, pages_per_vm=[64, 64]
    )
    path = tmp_path / "trace.parquet"
    write_trace([batch], path, meta)
    return path


def test_cli_json_summary_and_metrics_file(tmp_path, trace_path):
    out = tmp_path / "metrics.parquet"
    result = CliRunner().invoke(
        main,
        [
            "replay",
            str(trace_path),
            "--host-mem",
            "48p",
            "--guest-policy",
            "clock",
            "--policy",
            "none",
            "-o",
            str(out),
            "--json",
            "--epoch",
            "1ms",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for key in JSON_KEYS:
        assert key in summary
    assert summary["accesses"] == 5_000
    assert summary["host_swap_out"] > 0  # 64 pages of guest memory on 48 host pages
    table = pq.read_table(out)
    assert tuple(table.column_names[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    meta = read_metrics_metadata(out)
    assert meta["config"]["host_pages"] == 48
    assert meta["config"]["config_pages"] == [32, 32]  # from the trace's metadata
    assert meta["config"]["seed"] == 3
    assert meta["config"]["guest_policy"] == "clock"
    assert meta["policy"]["name"] == "none"
    assert meta["trace"]["rows"] == 5_000 and "footer_sha256" in meta["trace"]


def test_cli_summary_line_and_errors(tmp_path, trace_path):
    result = CliRunner().invoke(main, ["replay", str(trace_path), "--vm-mem", "16p,16p"])
    assert result.exit_code == 0, result.output
    assert "accesses of 2 VMs" in result.output
    result = CliRunner().invoke(main, ["replay", str(trace_path), "--policy", "nosuch"])
    assert result.exit_code == 1
    assert "unknown host policy 'nosuch'" in result.output
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "missing.parquet")])
    assert result.exit_code == 1


def test_sparse_trace_is_refused(tmp_path):
    path = tmp_path / "sparse.parquet"
    write_trace([make_batch(0, [0], [123456], [False])], path, TraceMetadata(config_pages=[4]))
    with pytest.raises(TraceError, match="dense"):
        balloonreplay.replay(path)


def test_api_is_exported_lazily_and_callable():
    import balloonreplay.replay as module

    assert callable(balloonreplay.replay)
    assert callable(module)


def test_policy_spec_overlays_parameters():
    assert parse_policy_spec("esx:tax=0.5, period=30") == ("esx", {"tax": "0.5", "period": "30"})
    assert make_policy("none").name == "none"
    with pytest.raises(ConfigError):
        make_policy("none:tax=1")


def test_durations():
    assert parse_duration_ns("1s") == 10**9
    assert parse_duration_ns("500ms") == 5 * 10**8
    assert parse_duration_ns("100us") == 10**5
    assert parse_duration_ns("250") == 250
    with pytest.raises(ConfigError):
        parse_duration_ns("soon")


@pytest.mark.parametrize("flags, shown", [([], True), (["-q"], False), (["--json"], False)])
def test_replay_shows_a_progress_bar_labelled_replay_in_accesses(
    trace_path, monkeypatch, flags, shown
):
    """The bar a terminal shows (tqdm hides it itself when stderr is no terminal): labelled
    `replay`, counting the trace's accesses; none with --quiet or --json, whose output a
    script reads."""
    import tqdm

    bars = []

    class Recorder(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(kwargs)
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    result = CliRunner().invoke(main, ["replay", str(trace_path), "--host-mem", "48p", *flags])
    assert result.exit_code == 0, result.output
    if shown:
        assert [(bar["desc"], bar["unit"], bar["total"]) for bar in bars] == [
            ("replay", "acc", 5_000)
        ]
    else:
        assert bars == []
