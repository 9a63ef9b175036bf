"""No data lost: every replay checks the conservation laws on its final state, records
``invariants_ok`` in its metrics' metadata and the summary, and a broken law is an error
(no metrics file), never a row."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from engine_helpers import trace_table

import balloonreplay
from balloonreplay.engine import checks
from balloonreplay.engine import state as S
from balloonreplay.engine.checks import InvariantError, check_end_of_run
from balloonreplay.errors import BalloonreplayError
from balloonreplay.metrics import METADATA_KEY, read_metrics_metadata
from balloonreplay.summary import summarize_runs


def pressured_trace(seed: int = 0, n: int = 3000, vms: int = 3, pages: int = 40):
    """Several VMs over more pages than their memory, with writes and shared contents, so
    the guest swaps, the host swaps and pages are shared and broken."""
    rng = np.random.default_rng(seed)
    vm = np.sort(rng.integers(0, vms, n))  # sorted by VM: times rise within each VM
    order = np.argsort(rng.random(n), kind="stable")
    vm = vm[order]
    t_ns = np.arange(n, dtype=np.int64) * 1000
    page = rng.integers(0, pages, n)
    write = rng.random(n) < 0.4
    content = np.where(page % 4 == 0, 0, page % 7 + 1).astype(np.uint64)
    return trace_table(vm, t_ns, page, write, content)


REPLAY = dict(vms="16p", host="30p", policy="esx", epoch_ns=200_000, quantum_ns=20_000)


def final_state(monkeypatch, **options):
    """Replay and keep the engine's final state and metrics arrays (the check's inputs)."""
    captured = {}
    real = checks.check_end_of_run

    def capture(state, metrics=None):
        real(state, metrics)
        captured["state"] = state._replace(**{k: v.copy() for k, v in state._asdict().items()})
        captured["metrics"] = {k: np.array(v) for k, v in metrics.items()}

    monkeypatch.setattr(checks, "check_end_of_run", capture)
    result = balloonreplay.replay(pressured_trace(), **REPLAY, **options)
    monkeypatch.setattr(checks, "check_end_of_run", real)
    return result, captured["state"], captured["metrics"]


@pytest.mark.parametrize("sharing", [True, False])
def test_replay_records_invariants_ok(tmp_path, sharing):
    out = tmp_path / "m.parquet"
    result = balloonreplay.replay(pressured_trace(), **REPLAY, sharing=sharing, output=out)
    s = result.summary
    # The run did the work the laws constrain: swapping in the guest and on the host.
    assert s["guest_swap_out"] > 0 and s["host_swap_out"] > 0
    if sharing:
        assert s["cow_breaks"] > 0
    assert s["invariants_ok"] is True
    meta = read_metrics_metadata(out)
    assert meta["invariants_ok"] is True and meta["summary"]["invariants_ok"] is True
    summary = summarize_runs([out])
    assert summary["invariants_ok"].tolist() == [True]


def test_final_state_satisfies_every_law(monkeypatch):
    _, state, metrics = final_state(monkeypatch, sharing=True)
    assert state.G[S.G_TRACK] == 1
    check_end_of_run(state, metrics)  # does not raise
    assert checks.check_invariants(state.F, state.FC, state.P, state.PC, state.VS, state.G) == 0


def _resident_frame(state):
    return int(np.flatnonzero(state.F[:, S.F_PAGE] != S.NIL)[0])


def _last_resident_frame(state):
    """A resident frame of the last VM."""
    f = int(np.flatnonzero(state.F[:, S.F_PAGE] != S.NIL)[-1])
    assert state.F[f, S.F_VM] == state.VS.shape[0] - 1
    return f


def _swapped_page(state):
    where = (state.P[:, S.P_FLAGS] & S.PF_WHERE_MASK) >> S.PF_WHERE_SHIFT
    return int(np.flatnonzero(where == S.IN_SWAP)[0])


def _frame_tag_not_passed_on(state):
    """A frame keeps this epoch's access tag (a page that left it was accessed) while the
    page it holds has none: the page's next hit would count the frame as touched again."""
    f = _resident_frame(state)
    pg = state.F[f, S.F_PAGE]
    tag = int(state.G[S.G_ACCESS_TAG])
    state.F[f, S.F_ACCESS] = (state.F[f, S.F_ACCESS] & S.FA_SAMPLE_TOUCHED) | (
        tag << S.FA_TAG_SHIFT
    )
    state.P[pg, S.P_FLAGS] &= S.PF_LOW_MASK


def _unlink_second(state):
    """VM 0's list head links past the second page, which still thinks it is listed."""
    head = state.VS[0, S.V_AH]
    second = state.P[head, S.P_NEXT]
    state.P[head, S.P_NEXT] = state.P[second, S.P_NEXT]


def _close_list_into_ring(state):
    """VM 0's list tail and head link to each other: every page has a predecessor and a
    successor that link back (the check before this one, which read both links of every
    page, passed it), so only the count of tails (none) finds it."""
    head, tail = state.VS[0, S.V_AH], state.VS[0, S.V_AT]
    state.P[head, S.P_PREV] = tail
    state.P[tail, S.P_NEXT] = head


def _tail_links_on(state):
    """VM 0's list tail names a successor (the head, which does not link back): seen
    from each page's predecessor nothing is wrong, so only the count of tails finds it."""
    state.P[state.VS[0, S.V_AT], S.P_NEXT] = state.VS[0, S.V_AH]


# Each corruption breaks one law the way a bug would; the check must name that law.
CORRUPTIONS = {
    "free count off by one": (
        lambda s: s.VS.__setitem__((0, S.V_FREE_N), s.VS[0, S.V_FREE_N] + 1),
        S.ERR_FRAMES,
    ),
    "frame lost from its page": (
        lambda s: s.F.__setitem__((_resident_frame(s), S.F_PAGE), S.NIL),
        S.ERR_FRAMES,
    ),
    "page points at the wrong frame": (
        lambda s: s.P.__setitem__(
            (s.F[_resident_frame(s), S.F_PAGE], S.P_FRAME), _resident_frame(s) + 1
        ),
        S.ERR_LINK,
    ),
    "page's mirror misses its frame's host state": (
        lambda s: s.P.__setitem__(
            (s.F[_resident_frame(s), S.F_PAGE], S.P_FLAGS),
            s.P[s.F[_resident_frame(s), S.F_PAGE], S.P_FLAGS] ^ S.PF_HOST_SWAPPED,
        ),
        S.ERR_LINK,
    ),
    "frame's access tag not passed on to its page": (
        lambda s: _frame_tag_not_passed_on(s),
        S.ERR_LINK,
    ),
    "guest list shorter than its count": (
        lambda s: s.VS.__setitem__((0, S.V_AN), s.VS[0, S.V_AN] + 1),
        S.ERR_LINK,
    ),
    "guest list skips a page": (
        lambda s: _unlink_second(s),
        S.ERR_LINK,
    ),
    "guest list closed into a ring": (
        lambda s: _close_list_into_ring(s),
        S.ERR_LINK,
    ),
    "guest list's tail links on": (
        lambda s: _tail_links_on(s),
        S.ERR_LINK,
    ),
    "host above host_pages": (
        lambda s: s.G.__setitem__(S.G_HOST_USED, s.G[S.G_HOST_PAGES] + 1),
        S.ERR_HOST,
    ),
    "backed gauge off": (
        lambda s: s.VS.__setitem__((1, S.V_BACKED), s.VS[1, S.V_BACKED] + 1),
        S.ERR_HOST,
    ),
    "frame swapped in more often than out": (
        lambda s: s.FC.__setitem__((0, S.FC_HINS), s.FC[0, S.FC_HOUTS] + 1),
        S.ERR_SWAP,
    ),
    "page swapped in more often than out": (
        lambda s: s.PC.__setitem__((0, S.PC_SWAP_INS), s.PC[0, S.PC_SWAP_OUTS] + 1),
        S.ERR_SWAP,
    ),
    "frame's content differs from its page's": (
        lambda s: s.FC.__setitem__(
            (_resident_frame(s), S.FC_CONTENT), s.FC[_resident_frame(s), S.FC_CONTENT] + 1
        ),
        S.ERR_CONTENT,
    ),
    # check_end_of_run checks the last VMs' frame contents in its second thread
    "last VM's frame's content differs from its page's": (
        lambda s: s.FC.__setitem__(
            (_last_resident_frame(s), S.FC_CONTENT),
            s.FC[_last_resident_frame(s), S.FC_CONTENT] + 1,
        ),
        S.ERR_CONTENT,
    ),
    "saved copy differs from the last write": (
        lambda s: s.PC.__setitem__((_swapped_page(s), S.PC_SCONTENT), 987654321),
        S.ERR_CONTENT,
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_state_raises(monkeypatch, name):
    _, state, metrics = final_state(monkeypatch, sharing=True)
    corrupt, code = CORRUPTIONS[name]
    corrupt(state)
    with pytest.raises(InvariantError, match="invariant violated at the end of the run") as err:
        check_end_of_run(state, metrics)
    assert err.value.code == code, S.ERROR_MESSAGES[err.value.code]


def test_a_law_only_the_pages_side_sees_is_checked_without_tracking(monkeypatch):
    """check_pages runs in a second thread; without tracking (no check_invariants) only it
    sees a page outside memory that still names a frame, whose own page links back."""
    _, state, metrics = final_state(monkeypatch, sharing=False)
    assert state.G[S.G_TRACK] == 0
    state.P[_swapped_page(state), S.P_FRAME] = _resident_frame(state)
    with pytest.raises(InvariantError) as err:
        check_end_of_run(state, metrics)
    assert err.value.code == S.ERR_LINK


def test_a_page_on_a_frame_that_holds_another_is_found_by_the_count(monkeypatch):
    """check_pages does not read a resident page's frame row: that the frame holds the
    page follows from check_frames' laws (each frame's page names it back) and from
    counting, per VM, the pages that name a frame. A page moved onto a frame that holds
    another page, its own frame freed with the gauges to match, breaks no law seen from
    the frames; the count must find it."""
    _, state, metrics = final_state(monkeypatch, sharing=False)
    f = _resident_frame(state)
    v = int(state.F[f, S.F_VM])
    pg = int(state.F[f, S.F_PAGE])
    mine = (state.F[:, S.F_PAGE] != S.NIL) & (state.F[:, S.F_VM] == v)
    other = int(np.flatnonzero(mine)[1])
    state.F[f, S.F_PAGE] = S.NIL
    state.FS[state.VS[v, S.V_FBASE] + state.VS[v, S.V_FREE_N]] = f
    state.VS[v, S.V_FREE_N] += 1
    state.VS[v, S.V_RESIDENT] -= 1
    state.P[pg, S.P_FRAME] = other
    seen = np.zeros(state.F.shape[0], dtype=np.int8)
    frames = (state.F, state.FC, state.P, state.VS, state.G, state.FS, state.BS, seen)
    assert checks.check_frames(*frames) == 0
    with pytest.raises(InvariantError) as err:
        check_end_of_run(state, metrics)
    assert err.value.code == S.ERR_LINK


@pytest.mark.parametrize("sharing", [True, False])
def test_an_error_in_the_check_thread_reaches_the_caller(monkeypatch, sharing):
    """The pages' side runs in a second thread; if it fails, the check must not pass."""
    _, state, metrics = final_state(monkeypatch, sharing=sharing)

    def broken(*args):
        raise RuntimeError("pages' side failed")

    name = "check_page_contents" if sharing else "check_pages"
    monkeypatch.setattr(checks, name, broken)
    with pytest.raises(RuntimeError, match="pages' side failed"):
        check_end_of_run(state, metrics)


def test_swap_balance_checked_from_metrics_without_tracking(monkeypatch):
    """Without sharing or debug checks the engine keeps no per-page swap counts; the
    balance is then checked per VM over the run, from the metrics."""
    _, state, metrics = final_state(monkeypatch, sharing=False)
    assert state.G[S.G_TRACK] == 0
    check_end_of_run(state, metrics)
    metrics["guest_swap_in"][metrics["vm"] == 2] += metrics["guest_swap_out"].sum() + 1
    with pytest.raises(InvariantError) as err:
        check_end_of_run(state, metrics)
    assert err.value.code == S.ERR_SWAP


def test_broken_run_writes_no_metrics(monkeypatch, tmp_path):
    real = checks.check_end_of_run

    def corrupt_then_check(state, metrics=None):
        state.VS[0, S.V_RESIDENT] -= 1  # a page vanished
        real(state, metrics)

    monkeypatch.setattr(checks, "check_end_of_run", corrupt_then_check)
    out = tmp_path / "m.parquet"
    with pytest.raises(InvariantError, match="do not add up to config_pages"):
        balloonreplay.replay(pressured_trace(), **REPLAY, output=out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_summary_refuses_a_run_recorded_as_broken(tmp_path):
    out = tmp_path / "m.parquet"
    balloonreplay.replay(pressured_trace(), **REPLAY, output=out)
    table = pq.read_table(out)
    kv = dict(table.schema.metadata)
    kv[METADATA_KEY.encode()] = kv[METADATA_KEY.encode()].replace(
        b'"invariants_ok": true', b'"invariants_ok": false'
    )
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.replace_schema_metadata(kv), broken)
    with pytest.raises(BalloonreplayError, match="broken.parquet: metadata key 'invariants_ok'"):
        summarize_runs([out, broken])
