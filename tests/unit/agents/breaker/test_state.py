"""Tests for the breaker's state machine: examples, a list model, and random concurrent runs."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.breaker.state import (
    BreakerPolicy,
    BreakerState,
    CallResult,
    InvalidBreakerState,
    Permit,
    PermitKind,
    after_handover,
    from_bytes,
    permit,
    record,
    snapshot,
    to_bytes,
    transition,
)
from agents.breaker.window import Counts, CountWindow, TimeWindow, counts

T0 = 1_700_000_000.0  # epoch seconds: breaker state moves between owners
CHECK = settings(database=None, deadline=None, max_examples=300)
OK, FAIL, IGNORED = CallResult.SUCCESS, CallResult.FAILURE, CallResult.IGNORED
FAST, SLOW = 0.1, 10.0  # against slow_call_threshold_s=5.0

results = st.sampled_from(list(CallResult))
durations = st.sampled_from([FAST, SLOW, 5.0])  # 5.0 is exactly the threshold: not slow
policies = st.builds(
    BreakerPolicy,
    window=st.sampled_from(["count", "time"]),
    window_size=st.integers(5, 12),
    minimum_calls=st.integers(1, 5),
    failure_rate_threshold=st.sampled_from([0.2, 0.5, 1.0]) | st.floats(0.01, 1.0),
    slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
    wait_in_open_s=st.sampled_from([5.0, 30.0]),
    half_open_calls=st.integers(1, 4),
)


def counting(**overrides: Any) -> BreakerPolicy:
    """A count window of 10 calls, all 10 needed: easy to follow by hand."""
    return BreakerPolicy(**{"window": "count", "window_size": 10, "minimum_calls": 10, **overrides})


def feed(
    state: BreakerState,
    outcomes: list[CallResult],
    *,
    policy: BreakerPolicy,
    now: float = T0,
    duration_s: float = FAST,
    probe: bool = False,
) -> BreakerState:
    for result in outcomes:
        state = record(state, result, duration_s=duration_s, now=now, policy=policy, probe=probe)
    return state


def opened(policy: BreakerPolicy, now: float = T0) -> BreakerState:
    state = feed(BreakerState(), [FAIL] * policy.minimum_calls, policy=policy, now=now)
    assert state.mode == "open" and state.opened_at == now
    return state


def probing(policy: BreakerPolicy, opened_at: float = T0) -> tuple[BreakerState, float]:
    """A breaker just half-open with every probe let through, and the time that happened."""
    state, now = opened(policy, opened_at), opened_at + policy.wait_in_open_s
    for _ in range(policy.half_open_calls):
        go, state = permit(state, now=now, policy=policy)
        assert go == Permit(PermitKind.PROBE)
    return state, now


# ---- policy -------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    p = BreakerPolicy()
    assert (p.window, p.window_size, p.minimum_calls, p.half_open_calls) == ("time", 10, 20, 3)
    assert (p.failure_rate_threshold, p.slow_call_rate_threshold) == (0.5, 1.0)
    assert (p.slow_call_threshold_s, p.wait_in_open_s) == (5.0, 30.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": "sliding"},
        {"window_size": 0},
        {"window_size": 3_601},
        {"window": "count", "window_size": 10_001, "minimum_calls": 1},
        {"minimum_calls": 0},
        {"window": "count", "window_size": 10, "minimum_calls": 11},  # could never open
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 1.5},
        {"failure_rate_threshold": math.nan},
        {"slow_call_rate_threshold": 0.0},
        {"slow_call_threshold_s": 0.0},
        {"slow_call_threshold_s": math.nan},
        {"wait_in_open_s": 0.0},
        {"wait_in_open_s": math.inf},
        {"half_open_calls": 0},
        {"half_open_calls": 1_001},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must"):
        BreakerPolicy(**kwargs)


@pytest.mark.parametrize(
    ("now", "duration_s"), [(math.nan, 0.1), (math.inf, 0.1), (T0, -0.1), (T0, math.nan)]
)
def test_record_rejects_a_broken_clock(now, duration_s):
    with pytest.raises(ValueError, match="must be"):
        record(BreakerState(), OK, duration_s=duration_s, now=now, policy=counting(), probe=False)
    with pytest.raises(ValueError, match="finite"):
        permit(BreakerState(), now=math.nan, policy=counting())


# ---- closed -------------------------------------------------------------------------------------


def test_closed_lets_every_call_through_without_changing_state():
    state = feed(BreakerState(), [FAIL] * 3, policy=counting())
    assert permit(state, now=T0, policy=counting()) == (Permit(PermitKind.CALL), state)


@pytest.mark.parametrize(
    ("outcomes", "mode"),
    [
        ([OK] * 5 + [FAIL] * 4, "closed"),  # 9 calls: below minimum_calls
        ([OK] * 5 + [FAIL] * 5, "open"),  # 5/10 reaches 0.5
        ([OK] * 6 + [FAIL] * 4, "closed"),  # 4/10
        ([FAIL] * 4 + [OK] * 6 + [FAIL] * 4, "closed"),  # the first failures fell off
        ([FAIL] * 9 + [OK], "open"),
    ],
)
def test_a_count_window_opens_at_the_threshold(outcomes, mode):
    assert feed(BreakerState(), outcomes, policy=counting()).mode == mode


@CHECK
@given(policies, st.data())
def test_never_opens_below_minimum_calls(policy, data):
    n = data.draw(st.integers(0, policy.minimum_calls - 1))
    outcomes = data.draw(st.lists(results, min_size=n, max_size=n))
    state = feed(BreakerState(), outcomes, policy=policy, duration_s=SLOW)
    assert state.mode == "closed"
    assert snapshot(state, now=T0, policy=policy)["calls"] == n - outcomes.count(IGNORED)


@CHECK
@given(
    policies,
    st.lists(st.tuples(st.sampled_from([0.0, 0.7]) | st.floats(0, 4), results, durations)),
)
def test_opens_exactly_when_a_rate_reaches_its_threshold(policy, steps):
    """Against a plain list of the calls the window should hold."""
    state, now, held = BreakerState(), T0, []
    for dt, result, duration in steps:
        now += dt
        state = record(state, result, duration_s=duration, now=now, policy=policy, probe=False)
        if result is not IGNORED:
            held.append((now, result is FAIL, duration > policy.slow_call_threshold_s))
        if policy.window == "count":
            held = held[-policy.window_size :]
        else:
            held = [c for c in held if math.floor(now) - math.floor(c[0]) < policy.window_size]
        if result is IGNORED:
            # Not counted, so no new evidence: the breaker decides only when a call counts,
            # even if calls aging out of the window meanwhile raised the rates (as resilience4j).
            assert state.mode == "closed"
            continue
        n = len(held)
        fail_rate = sum(f for _, f, _ in held) / n if n else 0.0
        slow_rate = sum(s for _, _, s in held) / n if n else 0.0
        trips = n >= policy.minimum_calls and (
            fail_rate >= policy.failure_rate_threshold
            or slow_rate >= policy.slow_call_rate_threshold
        )
        assert state.mode == ("open" if trips else "closed")
        if trips:
            assert state.opened_at == now
            return


def test_the_time_window_forgets_calls_older_than_its_size():
    policy = BreakerPolicy()  # 10 s, 20 calls
    state = feed(BreakerState(), [FAIL] * 19, policy=policy, now=T0)
    assert feed(state, [FAIL], policy=policy, now=T0 + 9.5).mode == "open"
    later = feed(state, [FAIL], policy=policy, now=T0 + 10.0)
    assert later.mode == "closed"
    assert snapshot(later, now=T0 + 10.0, policy=policy)["calls"] == 1


@CHECK
@given(st.lists(st.tuples(results, durations), max_size=40), st.data())
def test_ignored_results_never_count(steps, data):
    policy = counting(minimum_calls=5)
    plain = BreakerState()
    mixed = BreakerState()
    for result, duration in steps:
        plain = record(plain, result, duration_s=duration, now=T0, policy=policy, probe=False)
        mixed = record(mixed, result, duration_s=duration, now=T0, policy=policy, probe=False)
        if data.draw(st.booleans()):
            again = record(mixed, IGNORED, duration_s=SLOW, now=T0, policy=policy, probe=False)
            assert again is mixed
    assert mixed == plain


@pytest.mark.parametrize(
    ("threshold", "slow", "mode"),
    [
        (1.0, 10, "open"),
        (1.0, 9, "closed"),  # one fast call keeps it closed at 100 %
        (0.5, 5, "open"),
        (0.5, 4, "closed"),
    ],
)
def test_slow_calls_open_it_at_the_slow_rate_threshold(threshold, slow, mode):
    policy = counting(slow_call_rate_threshold=threshold)
    state = feed(BreakerState(), [OK] * (10 - slow), policy=policy, duration_s=FAST)
    state = feed(state, [OK] * slow, policy=policy, duration_s=SLOW)
    assert state.mode == mode


def test_a_call_of_exactly_the_slow_threshold_is_not_slow():
    state = feed(BreakerState(), [OK] * 10, policy=counting(), duration_s=5.0)
    assert state.mode == "closed"
    assert snapshot(state, now=T0, policy=counting())["slow_rate"] == 0.0


def test_a_window_of_another_kind_starts_afresh_under_a_new_policy():
    state = feed(BreakerState(), [FAIL] * 5, policy=counting())
    assert isinstance(state.window, CountWindow)
    state = feed(state, [FAIL], policy=BreakerPolicy(), now=T0)
    assert isinstance(state.window, TimeWindow)
    assert counts(state.window, now=T0, size=10) == Counts(1, 1, 0)


# ---- open and half-open -------------------------------------------------------------------------


@CHECK
@given(st.floats(-100.0, 29.999))
def test_open_refuses_everything_until_the_wait_has_passed(before):
    policy = counting()
    state = opened(policy)
    go, after = permit(state, now=T0 + before, policy=policy)
    assert go == Permit(PermitKind.REFUSE, T0 + 30.0)
    assert after is state


def test_after_the_wait_exactly_the_probes_pass_and_no_more_until_they_report():
    policy = counting(half_open_calls=3)
    state, now = probing(policy)
    assert state.mode == "half_open" and state.probes_in_flight == 3
    go, state = permit(state, now=now + 100.0, policy=policy)
    assert go == Permit(PermitKind.REFUSE, None)
    state = feed(state, [OK], policy=policy, now=now, probe=True)
    assert permit(state, now=now, policy=policy)[0].kind is PermitKind.REFUSE  # done + out = 3
    state = feed(state, [IGNORED], policy=policy, now=now, probe=True)  # frees its slot
    go, state = permit(state, now=now, policy=policy)
    assert go.kind is PermitKind.PROBE
    assert (state.probes_in_flight, state.probes_done) == (2, 1)


def test_all_probes_succeeding_close_it_with_an_empty_window():
    policy = counting()
    state, now = probing(policy)
    state = feed(state, [OK] * 3, policy=policy, now=now, probe=True)
    assert state == BreakerState("closed", CountWindow(), T0)
    assert permit(state, now=now, policy=policy)[0].kind is PermitKind.CALL


@pytest.mark.parametrize(
    ("threshold", "probes", "mode"),
    [
        (0.3, [FAIL], "open"),  # 1/3 reaches 0.3: the first failure reopens
        (0.5, [FAIL], "half_open"),  # 1/3 is under 0.5: tolerated ...
        (0.5, [FAIL, OK, OK], "closed"),  # ... and the round can still close
        (0.5, [OK, FAIL, FAIL], "open"),  # 2/3 cannot end under 0.5
    ],
)
def test_failed_probes_reopen_it_once_the_threshold_is_out_of_reach(threshold, probes, mode):
    policy = counting(failure_rate_threshold=threshold)
    state, now = probing(policy)
    state = feed(state, probes, policy=policy, now=now + 1.0, probe=True)
    assert state.mode == mode
    if mode == "open":
        assert state.opened_at == now + 1.0
        go, _ = permit(state, now=now + 1.0, policy=policy)
        assert go == Permit(PermitKind.REFUSE, now + 31.0)


def test_slow_probes_reopen_it_only_when_all_are_slow_at_the_default_threshold():
    policy = counting()
    state, now = probing(policy)
    state = feed(state, [OK] * 2, policy=policy, now=now, duration_s=SLOW, probe=True)
    assert state.mode == "half_open" and state.probes_slow == 2
    state = feed(state, [OK], policy=policy, now=now + 2.0, duration_s=SLOW, probe=True)
    assert (state.mode, state.opened_at) == ("open", now + 2.0)


def test_late_results_from_before_a_mode_change_are_ignored():
    policy = counting(failure_rate_threshold=0.3)
    state = opened(policy)
    assert feed(state, [FAIL, OK], policy=policy) is state  # closed-mode calls finishing late
    assert feed(state, [FAIL], policy=policy, probe=True) is state  # no round is running
    state, now = probing(policy)
    assert feed(state, [FAIL] * 5, policy=policy, now=now) is state
    reopened = feed(state, [FAIL], policy=policy, now=now, probe=True)
    # The two other probes of that round report after it reopened: dropped.
    assert feed(reopened, [OK, OK], policy=policy, now=now, probe=True) is reopened
    closed = BreakerState("closed", CountWindow(), T0)
    assert feed(closed, [FAIL], policy=policy, probe=True) is closed


# ---- handover and encoding ----------------------------------------------------------------------


@CHECK
@given(st.floats(0.0, 29.999))
def test_a_new_owner_keeps_an_open_breaker_refusing_until_its_wait_has_passed(later):
    policy = counting()
    decoded = after_handover(from_bytes(to_bytes(opened(policy))))
    assert permit(decoded, now=T0 + later, policy=policy)[0] == Permit(PermitKind.REFUSE, T0 + 30)
    assert permit(decoded, now=T0 + 30.0, policy=policy)[0].kind is PermitKind.PROBE


def test_a_new_owner_forgets_the_old_owners_probes_in_flight():
    policy = counting()
    state, now = probing(policy)
    state = feed(state, [OK], policy=policy, now=now, probe=True)
    moved = after_handover(from_bytes(to_bytes(state)))
    assert (moved.probes_in_flight, moved.probes_done) == (0, 1)
    # A probe reporting with none in flight here is a straggler: dropped, no negative count.
    assert feed(moved, [FAIL], policy=policy, now=now, probe=True) is moved
    assert feed(moved, [IGNORED], policy=policy, now=now, probe=True) is moved
    assert permit(moved, now=now, policy=policy)[0].kind is PermitKind.PROBE
    assert after_handover(BreakerState()) == BreakerState()


# (seconds since the previous step, action, result, duration, which call in flight finishes):
# failures weighted up, so runs open, probe, reopen and close.
ops = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5]) | st.floats(0.0, 40.0),
        st.sampled_from(["start", "finish"]),
        st.sampled_from([FAIL, FAIL, OK, IGNORED]),
        durations,
        st.integers(0, 50),
    ),
    min_size=10,
    max_size=150,
)


@CHECK
@given(policies, ops)
def test_every_reachable_state_round_trips_and_keeps_its_invariants(policy, steps):
    """Random concurrent calls: permits taken, results reported later and out of order."""
    state, now, out = BreakerState(), T0, []
    for dt, action, result, duration, pick in steps:
        now += dt
        before = state
        if action == "start":
            go, state = permit(state, now=now, policy=policy)
            if go.allowed:
                out.append(go.kind is PermitKind.PROBE)
                # OPEN never admits before its wait has passed.
                assert before.mode != "open" or now >= before.opened_at + policy.wait_in_open_s
        elif out:
            probe = out.pop(pick % len(out))
            state = record(state, result, duration_s=duration, now=now, policy=policy, probe=probe)
        assert from_bytes(to_bytes(state)) == state
        assert state.probes_in_flight + state.probes_done <= policy.half_open_calls
        assert max(state.probes_failed, state.probes_slow) <= state.probes_done
        assert state.mode == "half_open" or state.probes_in_flight + state.probes_done == 0
        assert transition(before, state) in (None, (before.mode, state.mode))


def _head(mode: int = 0, opened_at: float = T0, probes: tuple[int, ...] = (0, 0, 0, 0)) -> bytes:
    return struct.pack(">BBdHHHH", 1, mode, opened_at, *probes)


_EMPTY_TIME = b"\x01\x00\x00"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01",
        b"\x02" + _head()[1:] + _EMPTY_TIME,  # a future version
        _head(mode=3) + _EMPTY_TIME,
        _head(opened_at=math.nan) + _EMPTY_TIME,
        _head(opened_at=math.inf) + _EMPTY_TIME,  # would stay open forever
        _head(mode=1, probes=(1, 0, 0, 0)) + _EMPTY_TIME,  # probes outside half-open
        _head(mode=2, probes=(0, 1, 2, 0)) + _EMPTY_TIME,  # more failed probes than reported
        _head(),  # no window
        _head() + _EMPTY_TIME + b"\x00",
    ],
)
def test_invalid_bytes_raise_a_clear_value_error(raw):
    with pytest.raises(InvalidBreakerState, match=r"breaker state|window") as caught:
        from_bytes(raw)
    assert isinstance(caught.value, ValueError)


def test_the_encoding_is_compact():
    assert len(to_bytes(opened(counting()))) == 18 + 3
    state = feed(BreakerState(), [OK] * 19, policy=BreakerPolicy(), now=T0)
    assert len(to_bytes(state)) == 18 + 3 + 20  # one bucket: every call in one second


# ---- snapshot and transitions -------------------------------------------------------------------


def test_snapshot_in_each_mode():
    policy = counting()
    closed = feed(BreakerState(), [FAIL, OK, OK, OK], policy=policy, duration_s=SLOW)
    assert snapshot(closed, now=T0, policy=policy) == {
        "mode": "closed",
        "calls": 4,
        "failure_rate": 0.25,
        "slow_rate": 1.0,
        "probes_in_flight": 0,
        "seconds_until_half_open": None,
    }
    state = opened(policy)
    view = snapshot(state, now=T0 + 12.0, policy=policy)
    assert (view["mode"], view["calls"], view["seconds_until_half_open"]) == ("open", 0, 18.0)
    assert snapshot(state, now=T0 + 99.0, policy=policy)["seconds_until_half_open"] == 0.0
    state, now = probing(policy)
    state = feed(state, [FAIL], policy=policy, now=now, probe=True)
    view = snapshot(state, now=now, policy=policy)
    assert (view["mode"], view["calls"], view["failure_rate"]) == ("half_open", 1, 1.0)
    assert view["probes_in_flight"] == 2


def test_transition_names_a_mode_change_only():
    policy = counting()
    state = opened(policy)
    assert transition(BreakerState(), state) == ("closed", "open")
    _, half = permit(state, now=T0 + 30.0, policy=policy)
    assert transition(state, half) == ("open", "half_open")
    assert transition(half, half) is None
