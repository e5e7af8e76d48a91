"""OffsetTracker: commits never pass an unfinished record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.offsets import OffsetTracker


def test_nothing_finished_commits_nothing():
    tracker = OffsetTracker()
    tracker.start("p0", 0)
    assert tracker.to_commit() == {}


def test_out_of_order_finish_waits_for_the_gap():
    tracker = OffsetTracker()
    for offset in range(3):
        tracker.start("p0", offset)
    tracker.finish("p0", 2)
    tracker.finish("p0", 1)
    assert tracker.to_commit() == {"p0": 0}  # offset 0 still in flight: position stays at 0
    tracker.finish("p0", 0)
    assert tracker.to_commit() == {"p0": 3}


def test_mark_committed_suppresses_repeats_and_release_forgets():
    tracker = OffsetTracker()
    tracker.start("p0", 5)
    tracker.finish("p0", 5)
    tracker.mark_committed(tracker.to_commit())
    assert tracker.to_commit() == {}
    tracker.release("p0")
    tracker.finish("p0", 6)  # a late finish after release is ignored
    assert tracker.to_commit() == {}
    assert tracker.total_in_flight() == 0


@given(
    st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=60, unique=True),
    st.randoms(use_true_random=False),
)
def test_committed_position_never_skips_an_unfinished_offset(offsets, rnd):
    offsets.sort()
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.start("p", offset)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    for offset in order:
        tracker.finish("p", offset)
        finished.add(offset)
        position = tracker.to_commit().get("p", -1)
        unfinished = [o for o in offsets if o not in finished]
        if unfinished:
            assert position <= min(unfinished)
        else:
            assert position == max(offsets) + 1
