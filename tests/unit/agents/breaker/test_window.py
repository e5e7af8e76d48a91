"""Tests for the breaker's sliding windows: examples, a list model, and encoding round trips."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.breaker.window import (
    MAX_SIZE,
    Bucket,
    Counts,
    CountWindow,
    InvalidBreakerState,
    TimeWindow,
    Window,
    WindowKind,
    add,
    counts,
    empty,
    for_kind,
    pack,
    unpack,
)

T0 = 1_700_000_000.0  # epoch seconds, on a second boundary
CHECK = settings(database=None, deadline=None, max_examples=200)

# (seconds since the previous call, failed, slow): bursts within a second and idle gaps.
calls = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.3, 1.0]) | st.floats(0.0, 15.0), st.booleans(), st.booleans()
    ),
    max_size=80,
)
sizes = st.integers(1, 12)


def fill(kind: WindowKind, size: int, steps: list[tuple[float, bool, bool]]) -> Window:
    window, now = empty(kind), T0
    for dt, failed, slow in steps:
        now += dt
        window = add(window, failed=failed, slow=slow, now=now, size=size)
    return window


def model(
    steps: list[tuple[float, bool, bool]], keep: Callable[[float, float], bool]
) -> tuple[Counts, float]:
    """The calls a window should hold, counted from the plain list: `keep(t, now)` decides."""
    times, now = [], T0
    for dt, _, _ in steps:
        now += dt
        times.append(now)
    held = [s for s, t in zip(steps, times, strict=True) if keep(t, now)]
    return Counts(len(held), sum(f for _, f, _ in held), sum(s for _, _, s in held)), now


# ---- Counts -------------------------------------------------------------------------------------


def test_rates_of_an_empty_window_are_zero():
    assert (Counts().failure_rate, Counts().slow_rate) == (0.0, 0.0)


def test_rates_are_shares_of_the_calls():
    assert (Counts(8, 2, 6).failure_rate, Counts(8, 2, 6).slow_rate) == (0.25, 0.75)


# ---- count window -------------------------------------------------------------------------------


def test_a_count_window_keeps_the_last_size_calls():
    window = fill("count", 3, [(0.0, True, False), (0.0, True, True), (0.0, False, True)])
    assert counts(window, now=T0, size=3) == Counts(3, 2, 2)
    window = add(window, failed=False, slow=False, now=T0, size=3)  # the first call falls off
    assert counts(window, now=T0, size=3) == Counts(3, 1, 2)
    assert isinstance(window, CountWindow)
    assert window.calls == 3 and window.failure_bits == 0b100


def test_a_count_window_ignores_the_clock():
    window = fill("count", 5, [(0.0, True, False)] * 2)
    assert counts(window, now=T0 + 86_400.0, size=5) == Counts(2, 2, 0)


def test_a_count_window_read_under_a_smaller_size_keeps_the_newest_calls():
    window = fill("count", 10, [(0.0, True, True)] * 4 + [(0.0, False, False)] * 2)
    assert counts(window, now=T0, size=3) == Counts(3, 1, 1)
    assert counts(add(window, failed=True, slow=False, now=T0, size=3), now=T0, size=3) == Counts(
        3, 1, 0
    )


@CHECK
@given(calls, sizes)
def test_a_count_window_matches_the_list_of_its_last_calls(steps, size):
    window = fill("count", size, steps)
    expected, now = model(steps[-size:], lambda t, now: True)
    assert counts(window, now=now, size=size) == expected
    assert isinstance(window, CountWindow)
    assert window.failure_bits >> size == 0 and window.slow_bits >> size == 0


# ---- time window --------------------------------------------------------------------------------


def test_a_time_window_forgets_a_call_once_its_second_leaves_the_window():
    window = fill("time", 10, [(0.5, True, False)])  # at T0 + 0.5
    assert counts(window, now=T0 + 9.999, size=10) == Counts(1, 1, 0)
    assert counts(window, now=T0 + 10.0, size=10) == Counts()  # 9.5 s later: its second is out


def test_a_time_window_groups_calls_by_second():
    window = fill("time", 10, [(0.1, True, False), (0.5, False, True), (0.6, False, False)])
    assert isinstance(window, TimeWindow)
    assert window.buckets == (
        Bucket(int(T0), Counts(2, 1, 1)),
        Bucket(int(T0) + 1, Counts(1, 0, 0)),
    )


def test_a_clock_stepping_back_adds_to_the_newest_second():
    window = fill("time", 10, [(5.0, True, False)])
    window = add(window, failed=False, slow=False, now=T0 + 1.0, size=10)
    assert isinstance(window, TimeWindow)
    assert window.buckets == (Bucket(int(T0) + 5, Counts(2, 1, 0)),)
    assert counts(window, now=T0 + 1.0, size=10) == Counts(2, 1, 0)


def test_adding_drops_expired_buckets_and_their_totals():
    window = fill("time", 3, [(0.0, True, True), (1.0, True, False), (5.0, False, False)])
    assert isinstance(window, TimeWindow)
    assert window.buckets == (Bucket(int(T0) + 6, Counts(1, 0, 0)),)
    assert window.total == Counts(1, 0, 0)


@CHECK
@given(calls, sizes)
def test_a_time_window_matches_the_list_of_calls_of_its_last_seconds(steps, size):
    def keep(t: float, now: float) -> bool:
        return bool(math.floor(now) - math.floor(t) < size)

    window = fill("time", size, steps)
    expected, now = model(steps, keep)
    assert counts(window, now=now, size=size) == expected
    assert isinstance(window, TimeWindow)
    assert len(window.buckets) <= size  # memory O(size), whatever the traffic


@CHECK
@given(st.floats(0.0, 1e6), sizes, st.floats(0.0, 30.0))
def test_a_time_window_counts_a_call_for_size_minus_one_to_size_seconds(offset, size, later):
    t = T0 + offset
    window = add(empty("time"), failed=True, slow=False, now=t, size=size)
    held = counts(window, now=t + later, size=size).calls
    assert held == int(math.floor(t + later) - math.floor(t) < size)  # whole seconds apart
    if later <= size - 1.01:  # (a margin for float rounding of t + later)
        assert held == 1
    assert counts(window, now=t + size, size=size).calls == 0


# ---- kinds and encoding -------------------------------------------------------------------------


def test_a_window_of_the_other_kind_starts_afresh():
    window = fill("count", 5, [(0.0, True, False)])
    assert for_kind(window, "count") is window
    assert for_kind(window, "time") == TimeWindow()
    assert for_kind(TimeWindow(), "count") == CountWindow()


@CHECK
@given(st.sampled_from(["count", "time"]), calls, sizes)
def test_pack_round_trips_every_window(kind, steps, size):
    window = fill(kind, size, steps)
    assert unpack(pack(window)) == window


def test_a_default_count_window_packs_small():
    window = fill("count", 100, [(0.0, True, False)] * 100)
    assert len(pack(window)) == 3 + 2 * 13


def _time_bytes(*rows: tuple[int, int, int, int]) -> bytes:
    return struct.pack(">BH", 1, len(rows)) + b"".join(struct.pack(">qIII", *r) for r in rows)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x07\x00\x00",  # unknown kind
        struct.pack(">BH", 0, 3) + b"\x08\x00",  # failure bit beyond the 3 calls held
        struct.pack(">BH", 0, 3) + b"\x01",  # bits cut short
        struct.pack(">BH", 0, MAX_SIZE["count"] + 1) + bytes(2 * 1252),
        _time_bytes((5, 1, 0, 0), (5, 1, 0, 0)),  # seconds not ascending
        _time_bytes((5, 0, 0, 0)),  # an empty bucket
        _time_bytes((5, 1, 2, 0)),  # more failures than calls
        _time_bytes((5, 1, 0, 2)),  # more slow calls than calls
        _time_bytes((5, 1, 0, 0))[:-1],  # truncated
        _time_bytes((5, 1, 0, 0)) + b"\x00",  # trailing bytes
    ],
)
def test_unpack_refuses_what_pack_cannot_write(raw):
    with pytest.raises(InvalidBreakerState, match="window"):
        unpack(raw)
    assert issubclass(InvalidBreakerState, ValueError)
