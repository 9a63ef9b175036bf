"""The pages' and frames' access tags (engine/pages.py): when the tags run out every
page's and frame's tag is cleared, so a tag that comes round again is not taken for an
access in this epoch."""

from __future__ import annotations

import numpy as np
from engine_helpers import trace_table
from pandas.testing import assert_frame_equal

import balloonreplay
from balloonreplay.engine import kernel
from balloonreplay.engine import state as S

EPOCH_NS = 100_000
OPTIONS = dict(vms="32p", epoch_ns=EPOCH_NS, quantum_ns=10_000)
# so each access lands in the epoch of its trace time
NO_STALLS = {"guest_swap_in_ns": 0, "guest_swap_out_ns": 0, "zero_fill_ns": 0}


def three_epochs():
    """Pages 0-9 in the first epoch, 10-19 in the second, 0-9 again in the third (so its
    end runs the sampling pass), and one access in a fourth."""
    page = np.concatenate([np.arange(10), np.arange(10, 20), np.arange(10), [20]])
    epoch = np.concatenate([np.repeat([0, 1, 2], 10), [3]])
    t_ns = epoch * EPOCH_NS + np.concatenate([np.tile(np.arange(10) * 1_000, 3), [0]])
    return trace_table(np.zeros(31, dtype=np.int64), t_ns, page, np.zeros(31, dtype=bool))


def replay_wrapping_after_first_epoch(monkeypatch, table, **options):
    """The replay's metrics with the tags jumped to the last one after the first epoch,
    so the end of the second epoch wraps round to tag 1, the first epoch's, again."""
    real = kernel.sampling_pass
    passes = []

    def jump_to_last_tag(F, FC, P, VS, G, sampled):
        real(F, FC, P, VS, G, sampled)
        passes.append(int(G[S.G_ACCESS_TAG]))
        if len(passes) == 1:
            G[S.G_ACCESS_TAG] = S.PF_TAG_LIMIT - 1

    monkeypatch.setattr(kernel, "sampling_pass", jump_to_last_tag)
    metrics = balloonreplay.replay(table, **options).metrics
    assert passes[:2] == [2, 1]  # the second pass wrapped round
    return metrics


def test_page_tags_wrap_without_changing_results(monkeypatch):
    table = three_epochs()
    baseline = balloonreplay.replay(table, **OPTIONS).metrics
    # Ten frames touched in each of the first three epochs.
    assert baseline["touched_pages"].tolist() == [10, 10, 10, 1]
    # The first epoch's pages carry tag 1: without clearing every page's tag at the
    # wrap, pages 0-9 would look accessed in the third epoch and not be counted.
    wrapped = replay_wrapping_after_first_epoch(monkeypatch, table, **OPTIONS)
    assert_frame_equal(wrapped, baseline)


def test_frame_tags_wrap_without_changing_results(monkeypatch):
    """Pages 0-19 through 10 frames in the first epoch (each frame's first page leaves it
    accessed, so the frame keeps tag 1), one access in the second, pages 0-9 into the
    same frames in the third and one access in a fourth. Without clearing the frames'
    tags at the wrap, the third epoch's pages would take tag 1 from their frames on
    entry and not be counted."""
    page = np.concatenate([np.arange(20), [20], np.arange(10), [21]])
    epoch = np.repeat([0, 1, 2, 3], [20, 1, 10, 1])
    within = np.concatenate([np.arange(20), [0], np.arange(10), [0]])
    table = trace_table(
        np.zeros(32, dtype=np.int64), epoch * EPOCH_NS + within * 1_000, page, np.ones(32, bool)
    )
    options = OPTIONS | dict(vms="10p", latencies=NO_STALLS)
    baseline = balloonreplay.replay(table, **options).metrics
    assert baseline["touched_pages"].tolist() == [10, 1, 10, 1]
    assert baseline["guest_swap_out"].tolist() == [10, 1, 10, 1]  # each fault evicts
    wrapped = replay_wrapping_after_first_epoch(monkeypatch, table, **options)
    assert_frame_equal(wrapped, baseline)
