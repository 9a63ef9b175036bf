"""The page rows' mirror of their frames (engine/pages.py): the access mirror is an epoch
tag, and when the tags run out every page's tag is cleared, so a page whose tag comes
round again is not taken for one accessed in this epoch."""

from __future__ import annotations

import numpy as np
from engine_helpers import trace_table
from pandas.testing import assert_frame_equal

import balloonreplay
from balloonreplay.engine import kernel
from balloonreplay.engine import state as S

EPOCH_NS = 100_000
OPTIONS = dict(vms="32p", epoch_ns=EPOCH_NS, quantum_ns=10_000)


def three_epochs():
    """Pages 0-9 in the first epoch, 10-19 in the second, 0-9 again in the third (so its
    end runs the sampling pass), and one access in a fourth."""
    page = np.concatenate([np.arange(10), np.arange(10, 20), np.arange(10), [20]])
    epoch = np.concatenate([np.repeat([0, 1, 2], 10), [3]])
    t_ns = epoch * EPOCH_NS + np.concatenate([np.tile(np.arange(10) * 1_000, 3), [0]])
    return trace_table(np.zeros(31, dtype=np.int64), t_ns, page, np.zeros(31, dtype=bool))


def test_access_tags_wrap_without_changing_results(monkeypatch):
    table = three_epochs()
    baseline = balloonreplay.replay(table, **OPTIONS).metrics
    # Ten frames touched in each of the first three epochs.
    assert baseline["touched_pages"].tolist() == [10, 10, 10, 1]

    # The first epoch's pages carry tag 1. Jump to the last tag after it, so the end of
    # the second epoch wraps round to tag 1 again: without clearing every page's tag,
    # pages 0-9 would look accessed in the third epoch and not be counted.
    real = kernel.sampling_pass
    passes = []

    def jump_to_last_tag(F, FC, P, VS, G, TS):
        real(F, FC, P, VS, G, TS)
        passes.append(int(G[S.G_ACCESS_TAG]))
        if len(passes) == 1:
            G[S.G_ACCESS_TAG] = S.PF_TAG_LIMIT - 1

    monkeypatch.setattr(kernel, "sampling_pass", jump_to_last_tag)
    wrapped = balloonreplay.replay(table, **OPTIONS).metrics
    assert passes[:2] == [2, 1]  # the second pass wrapped round
    assert_frame_equal(wrapped, baseline)
