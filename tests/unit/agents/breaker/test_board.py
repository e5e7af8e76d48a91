"""The board's fast path (tallied successes, closed permits) decides as the core call by call."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.breaker.board import BreakerBoard
from agents.breaker.state import (
    BreakerPolicy,
    BreakerState,
    CallResult,
    PermitKind,
    permit,
    record,
    snapshot,
)
from streams.metrics import Metrics

POLICIES = [
    BreakerPolicy(window="time", window_size=3, minimum_calls=4, wait_in_open_s=2.0),
    BreakerPolicy(window="count", window_size=6, minimum_calls=4, wait_in_open_s=2.0),
]

calls = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.7),  # time since the previous call
        st.sampled_from([CallResult.SUCCESS, CallResult.FAILURE, CallResult.IGNORED]),
        st.sampled_from([0.01, 9.0]),  # fast or slow (threshold 5 s)
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(calls=calls, policy_index=st.sampled_from([0, 1]))
def test_the_board_opens_and_closes_exactly_as_the_core_does(calls, policy_index) -> None:
    policy = POLICIES[policy_index]
    clock = [1_000.0]
    board = BreakerBoard(
        lambda _key: policy, Metrics.create(CollectorRegistry()), clock=lambda: clock[0]
    )
    state = BreakerState()
    for gap, result, duration in calls:
        clock[0] += gap
        granted = board.permit("p")
        expected, state = permit(state, now=clock[0], policy=policy)
        assert granted.kind is expected.kind
        if not granted.allowed:
            continue
        probe = granted.kind is PermitKind.PROBE
        board.record("p", result, duration, probe=probe)
        state = record(state, result, duration_s=duration, now=clock[0], policy=policy, probe=probe)
    seen = dict(board.snapshots())
    if calls:
        assert seen == {"p": dict(snapshot(state, now=clock[0], policy=policy))}
