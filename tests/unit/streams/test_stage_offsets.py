"""OffsetTracker: commits never pass an unfinished record."""

from __future__ import annotations

import base64
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.stage.offsets import OffsetTracker


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
    # offset 0 still in flight: position stays at 0, with 1 and 2 reported as done above it
    assert tracker.to_commit() == {"p0": (0, [1, 2])}
    tracker.finish("p0", 0)
    assert tracker.to_commit() == {"p0": (3, [])}


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
        position = tracker.to_commit().get("p", (-1, []))[0]
        unfinished = [o for o in offsets if o not in finished]
        if unfinished:
            assert position <= min(unfinished)
        else:
            assert position == max(offsets) + 1


@given(
    st.integers(min_value=0, max_value=10**12),
    st.sets(st.integers(min_value=0, max_value=5000), max_size=400),
)
def test_done_offsets_round_trip_through_commit_metadata(position, relative):
    from streams.stage.offsets import decode_done, encode_done

    offsets = {position + r for r in relative}
    text = encode_done(position, offsets)
    assert len(text) <= 3800
    assert decode_done(position, text) == offsets


def test_foreign_or_broken_metadata_decodes_to_nothing():
    from streams.stage.offsets import decode_done

    assert decode_done(10, "") == set()
    assert decode_done(10, "someone else's") == set()
    assert decode_done(10, "cs1:!!!") == set()


def test_finished_offsets_above_the_gap_are_reported_with_the_position():
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.start("p", offset)
    for offset in (3, 4, 1):
        tracker.finish("p", offset)
    assert tracker.to_commit() == {"p": (0, [1, 3, 4])}
    tracker.finish("p", 0)
    assert tracker.to_commit() == {"p": (2, [3, 4])}


def _metadata(runs: list[tuple[int, int]]) -> str:
    """Commit metadata as any group member could write it: runs of (gap, length)."""
    from streams.stage.offsets import _PREFIX, _varints

    return _PREFIX + base64.b64encode(zlib.compress(_varints(runs), 9)).decode()


@pytest.mark.parametrize(
    "runs",
    [
        [(0, 10**8)],  # review finding 12: 24 characters, 10^8 offsets, 9 GB
        [(0, 2**62)],  # would never finish
        [(0, 60_000), (5, 60_000)],  # each run within the bound, not their total
    ],
)
def test_metadata_naming_more_offsets_than_the_bound_is_ignored_whole(runs, caplog):
    from streams.stage.offsets import MAX_DONE_OFFSETS, decode_done

    assert sum(length for _, length in runs) > MAX_DONE_OFFSETS
    started = time.perf_counter()
    assert decode_done(7, _metadata(runs)) == set()
    assert time.perf_counter() - started < 0.5
    assert "ignored" in caplog.text


def test_metadata_inflating_past_what_runs_take_is_ignored(caplog):
    from streams.stage.offsets import _PREFIX, decode_done

    bomb = _PREFIX + base64.b64encode(zlib.compress(bytes(2 << 20), 9)).decode()
    assert len(bomb) < 3800
    assert decode_done(0, bomb) == set()
    assert "inflates past" in caplog.text


def test_metadata_at_the_bound_still_decodes():
    from streams.stage.offsets import MAX_DONE_OFFSETS, decode_done

    assert decode_done(10, _metadata([(2, MAX_DONE_OFFSETS)])) == set(
        range(12, 12 + MAX_DONE_OFFSETS)
    )


def test_encode_keeps_the_lowest_offsets_within_the_bound():
    from streams.stage.offsets import MAX_DONE_OFFSETS, decode_done, encode_done

    offsets = range(100, 100 + 2 * MAX_DONE_OFFSETS, 2)  # none adjacent: one run each
    text = encode_done(100, [*offsets, 10**9])
    decoded = decode_done(100, text)
    assert decoded and len(decoded) <= MAX_DONE_OFFSETS
    assert decoded == set(sorted(decoded)) and min(decoded) == 100
    assert 10**9 not in decoded
