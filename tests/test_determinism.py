"""Determinism: the same config and seeds give identical metrics and summary tables, row
for row and value for value, across two runs and across `--cores 1` and `--cores 2`
(only the wall-clock column `replay_seconds` may differ: workflow_runs.WALL_CLOCK_COLUMNS).
The studies share one recording of each real program (workflow_runs.share_recordings):
a recording is a measurement of the machine, not a function of the config and seeds.
The killed-and-resumed run of test_resume.py is a third run compared the same way."""

from __future__ import annotations

from workflow_runs import assert_same_results, uninterrupted_study


def test_same_config_same_results_on_one_and_two_cores(tmp_path_factory):
    two = uninterrupted_study(tmp_path_factory, cores=2)
    one = uninterrupted_study(tmp_path_factory, cores=1)
    assert two != one
    assert_same_results(two, one)
