"""Shared pieces of the engine tests: a random host policy, trace builders, comparisons."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, settings

from balloonreplay.policies import Decision, HostPolicy, Snapshot
from balloonreplay.traces.schema import make_batch

# The quantum of the property tests' replays: short, so tiny traces span many of them.
QUANTUM_NS = 1_000


def property_profile(name: str, examples_variable: str, default_examples: int) -> settings:
    """The settings of an engine property file: ``default_examples`` examples unless the
    environment variable says how many, no deadline (a replay compiles on first use).
    Built on the profile conftest.py loaded (ci: derandomized), so CI stays reproducible."""
    settings.register_profile(
        name,
        parent=settings(),
        max_examples=int(os.environ.get(examples_variable, str(default_examples))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    return settings.get_profile(name)


# Every built-in host policy, with its periods shortened to a few quanta so that it acts
# many times within a tiny trace.
BUILTIN_POLICY_SPECS = {
    "none": "none",
    "host-swap": "host-swap",
    "balloon": "balloon",
    "esx": "esx:sample_period_s=0.000002,realloc_period_s=0.000002",
    "mom": "mom:policy_interval_s=0.000002,monitor_interval_s=0.000001",
    "xen-selfballoon": "xen-selfballoon:selfballoon_interval_s=0.000001,floor=false",
    "hyperv": "hyperv:period_s=0.000001,minimum_pages=1",
    "mrc": "mrc:period_s=0.000001",
    # Blocks of one page, a batch of one and no watermark, so tiny guests report.
    "free-page-reporting": (
        "free-page-reporting:report_delay_s=0.000002,report_order=0,"
        "report_capacity_blocks=1,low_watermark_pages=0"
    ),
}


class RandomPolicy(HostPolicy):
    """Random balloon targets, host-swap permission, scan rates and swap targets, drawn
    from its own seeded generator, so two runs with equal snapshots get equal decisions.
    It also asserts the conservation laws visible in every snapshot."""

    name = "test-random"

    @dataclass
    class Params:
        seed: int = 0
        forbid_swap: float = 0.3  # probability an epoch forbids on-demand host swapping
        swap_targets: float = 0.2  # probability an epoch sets host swap targets
        scan_rates: float = 0.3
        unback_free: float = 0.3  # probability an epoch unbacks free frames (page reporting)
        sample: float = 0.3  # probability an epoch draws a new working-set sample

    def __init__(self, params=None):
        super().__init__(params)
        self.rng = np.random.default_rng(self.params.seed)
        self.snapshots: list[Snapshot] = []

    def _decision(self, s: Snapshot) -> Decision:
        check_snapshot(s)
        self.snapshots.append(s)
        n = s.num_vms
        if self.rng.random() < 0.2:
            targets = s.balloon_pages.copy()  # balloons stop where they are
        else:
            targets = self.rng.integers(0, s.config_pages, endpoint=False)
        decision = Decision(
            balloon_target_pages=targets,
            allow_host_swap=(
                bool(self.rng.random() >= self.params.forbid_swap)
                if self.rng.random() < 0.5
                else self.rng.random(n) >= self.params.forbid_swap  # per VM
            ),
        )
        if self.rng.random() < self.params.scan_rates:
            decision.scan_rate_pages_per_s = self.rng.integers(0, 2_000_000, n)
        if self.rng.random() < self.params.swap_targets:
            decision.host_swap_target_pages = self.rng.integers(0, s.config_pages + 1)
        if self.rng.random() < self.params.unback_free:
            decision.unback_free_pages = self.rng.integers(0, s.free_pages + 2)
        if self.rng.random() < self.params.sample:
            decision.sample_pages = self.rng.integers(0, 2 * s.config_pages + 1)
        return decision

    def start(self, snapshot: Snapshot) -> Decision:
        return self._decision(snapshot)

    def decide(self, snapshot: Snapshot) -> Decision:
        return self._decision(snapshot)


def check_snapshot(s: Snapshot) -> None:
    assert s.host_used_pages <= s.host_pages
    frames = s.free_pages + s.balloon_pages + s.resident_pages
    assert (frames == s.config_pages).all()
    assert (s.backed_pages + s.shared_pages + s.host_swapped_pages <= s.config_pages).all()
    assert (s.free_backed_pages <= s.free_pages).all()
    assert (s.sampled_touched_pages <= s.sampled_pages).all()


def assert_snapshots_equal(engine: list[Snapshot], reference: list[Snapshot]) -> None:
    """What the policy saw, field by field (the metrics do not show every field)."""
    assert len(engine) == len(reference)
    for i, (a, b) in enumerate(zip(engine, reference, strict=True)):
        for field in dataclasses.fields(Snapshot):
            x, y = getattr(a, field.name), getattr(b, field.name)
            assert np.array_equal(x, y), f"snapshot {i} ({a.epoch}): {field.name} {x} != {y}"


def check_metrics(frame: pd.DataFrame, config_pages: list[int]) -> None:
    """Conservation laws every metrics table must satisfy."""
    c = np.asarray(config_pages)[frame["vm"].to_numpy()]
    assert ((frame["free_pages"] + frame["balloon_pages"] + frame["resident_pages"]) == c).all()
    assert (frame["shared_pages"] >= frame["zero_shared_pages"]).all()
    assert (frame["guest_faults"] <= frame["accesses"]).all()
    per_vm = frame.groupby("vm").sum(numeric_only=True)
    # no page comes back from guest swap more often than it went out
    assert (per_vm["guest_swap_in"] <= per_vm["guest_swap_out"]).all()
    assert (per_vm["host_swap_in"] <= per_vm["host_swap_out"]).all()
    assert (per_vm["guest_faults"] <= per_vm["accesses"]).all()


def trace_table(vm, t_ns, page, write, content=None, file_backed=None, free=None) -> pa.Table:
    return pa.Table.from_batches([make_batch(vm, t_ns, page, write, content, file_backed, free)])


def assert_frames_equal(engine: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(engine.columns) == list(reference.columns)
    assert engine.shape == reference.shape, (engine.shape, reference.shape)
    diff = engine.to_numpy() != reference.to_numpy()
    if diff.any():
        row = int(np.argwhere(diff.any(axis=1))[0, 0])
        cols = [c for c, d in zip(engine.columns, diff[row], strict=True) if d]
        raise AssertionError(
            f"first difference at row {row} (vm {engine.vm[row]}, epoch {engine.epoch[row]}), "
            f"columns {cols}: engine {engine.loc[row, cols].to_dict()} "
            f"reference {reference.loc[row, cols].to_dict()}"
        )
