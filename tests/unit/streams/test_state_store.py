"""PartitionStore and plan_replay: the checkpoint only covers what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.state.recovery import ReplayPlan, plan_replay
from streams.state.store import CHECKPOINT_KEY, PartitionStore


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., PartitionStore]]:
    opened: list[PartitionStore] = []

    def open_store(name: str = "quotas-0") -> PartitionStore:
        store = PartitionStore(tmp_path / name)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: Callable[..., PartitionStore]) -> PartitionStore:
    return store_factory()


@pytest.fixture
def reopen():
    reopened: list[PartitionStore] = []

    def reopen_store(store: PartitionStore) -> PartitionStore:
        store.close()
        reopened.append(PartitionStore(store.path))
        return reopened[-1]

    yield reopen_store
    for store in reopened:
        store.close()


def test_new_store_has_no_checkpoint_and_no_values(store):
    assert store.checkpoint is None
    assert store.get(b"k") is None
    assert list(store.items()) == []


def test_settled_write_survives_reopen_with_its_offset(store, reopen):
    store.settle(store.stage(b"k", b"v"), 7)
    store = reopen(store)
    assert store.get(b"k") == b"v"
    assert store.checkpoint == 7
    assert list(store.items()) == [(b"k", b"v")]  # the checkpoint key is not data


def test_pending_write_is_visible_but_not_durable(store, reopen):
    store.settle(store.stage(b"k", b"old"), 0)
    store.stage(b"k", b"new")
    assert store.get(b"k") == b"new"  # read-your-writes before the broker answers
    store = reopen(store)
    assert store.get(b"k") == b"old"  # never acknowledged: not in the store
    assert store.checkpoint == 0


def test_discarded_write_reverts_and_freezes_the_checkpoint(store, reopen):
    store.settle(store.stage(b"k", b"old"), 0)
    store.discard(store.stage(b"k", b"lost"))
    assert store.get(b"k") == b"old"
    store.settle(store.stage(b"other", b"v"), 2)
    assert store.get(b"other") == b"v"
    assert store.checkpoint == 0  # the failed record may sit at offset 1: replay from there
    assert reopen(store).checkpoint == 0


def test_earlier_ack_keeps_a_later_pending_value_visible(store):
    first = store.stage(b"k", b"1")
    second = store.stage(b"k", b"2")
    store.settle(first, 0)
    assert store.get(b"k") == b"2"
    store.settle(second, 1)
    assert store.get(b"k") == b"2"
    assert store.checkpoint == 1


def test_stale_discard_does_not_drop_a_newer_pending_value(store):
    first = store.stage(b"k", b"1")
    store.stage(b"k", b"2")
    store.discard(first)
    assert store.get(b"k") == b"2"


def test_delete_is_pending_then_durable(store, reopen):
    store.settle(store.stage(b"k", b"v"), 0)
    tombstone = store.stage(b"k", None)
    assert store.get(b"k") is None
    store.settle(tombstone, 1)
    assert reopen(store).get(b"k") is None


def test_checkpoint_never_moves_back(store):
    store.settle(store.stage(b"a", b"1"), 5)
    store.settle(store.stage(b"b", b"1"), 3)
    assert store.checkpoint == 5
    assert store.get(b"b") == b"1"


def test_apply_writes_records_and_tombstones_with_the_last_offset(store):
    store.apply([(b"a", b"1"), (b"b", b"1")], 1)
    assert store.apply([(b"a", None), (b"c", b"3")], 9) == 2
    assert dict(store.items()) == {b"b": b"1", b"c": b"3"}
    assert store.checkpoint == 9


def test_reserved_key_is_refused_for_writes_and_skipped_in_replay(store, reopen):
    with pytest.raises(ValueError, match="reserved"):
        store.stage(CHECKPOINT_KEY, b"x")
    store.apply([(CHECKPOINT_KEY, b"\x00" * 8), (b"k", b"v")], 4)
    assert store.checkpoint == 4
    assert reopen(store).checkpoint == 4


def test_wipe_drops_data_checkpoint_and_freeze(store):
    store.settle(store.stage(b"k", b"v"), 3)
    store.discard(store.stage(b"k", b"x"))
    store.wipe()
    assert store.checkpoint is None
    assert list(store.items()) == []
    store.settle(store.stage(b"k", b"v2"), 0)
    assert store.checkpoint == 0  # no longer frozen


def test_close_is_idempotent(store):
    store.close()
    store.close()
    assert store.closed


@pytest.mark.parametrize(
    ("checkpoint", "log_start", "log_end", "start", "wipes"),
    [
        (None, 0, 0, 0, True),  # new store, empty log
        (None, 0, 50, 0, True),  # new store: full replay
        (49, 0, 50, 50, False),  # up to date: nothing to replay
        (19, 0, 50, 20, False),  # the tail only
        (50, 0, 50, 0, True),  # past the end: topic recreated
        (120, 0, 10, 0, True),
        (3, 10, 50, 10, True),  # records after the checkpoint were deleted
        (9, 10, 50, 10, False),  # the log starts right after the checkpoint
    ],
)
def test_plan_replay(checkpoint, log_start, log_end, start, wipes):
    plan = plan_replay(checkpoint, log_start=log_start, log_end=log_end)
    assert plan.start == start
    assert (plan.wipe_reason is not None) is wipes


@given(
    checkpoint=st.none() | st.integers(min_value=0, max_value=1000),
    log_start=st.integers(min_value=0, max_value=1000),
    length=st.integers(min_value=0, max_value=1000),
)
def test_plan_replay_stays_within_the_log_and_keeps_only_contiguous_stores(
    checkpoint, log_start, length
):
    log_end = log_start + length
    plan: ReplayPlan = plan_replay(checkpoint, log_start=log_start, log_end=log_end)
    assert log_start <= plan.start <= log_end
    contiguous = checkpoint is not None and log_start - 1 <= checkpoint < log_end
    assert (plan.wipe_reason is None) is contiguous
