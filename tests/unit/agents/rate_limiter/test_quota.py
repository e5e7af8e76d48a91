"""Tests for fixed-window quotas: UTC boundaries, refusals, and hypothesis invariants."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.rate_limiter.quota import (
    QuotaDecision,
    QuotaPolicy,
    QuotaState,
    Verdict,
    Window,
    WindowCount,
    check_and_count,
)

CHECK = settings(database=None, deadline=None, max_examples=200)
# 2024-05-01 23:59:58.5 UTC: a second, a minute and a day all end 1.5 s later.
BEFORE_MIDNIGHT = datetime(2024, 5, 1, 23, 59, 58, 500_000, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2024, 5, 2, tzinfo=UTC).timestamp()


def run(
    policy: QuotaPolicy, times: list[float], state: QuotaState | None = None
) -> tuple[QuotaState, list[QuotaDecision]]:
    state = state or QuotaState()
    decisions: list[QuotaDecision] = []
    for t in times:
        state, decision = check_and_count(state, now=t, policy=policy)
        decisions.append(decision)
    return state, decisions


@pytest.mark.parametrize(
    ("when", "window", "start"),
    [
        (BEFORE_MIDNIGHT, Window.SECOND, MIDNIGHT - 2),
        (BEFORE_MIDNIGHT, Window.MINUTE, MIDNIGHT - 60),
        (BEFORE_MIDNIGHT, Window.DAY, MIDNIGHT - 86_400),
        (MIDNIGHT, Window.DAY, MIDNIGHT),
    ],
)
def test_windows_align_to_utc(when, window, start):
    assert window.start(when) == start


@pytest.mark.parametrize(
    ("policy", "times", "verdicts"),
    [
        (QuotaPolicy(per_second=2), [0.0, 0.1, 0.2, 1.0], "AARA"),
        (QuotaPolicy(per_minute=2), [0.0, 30.0, 59.9, 60.0], "AARA"),
        (QuotaPolicy(per_day=1), [0.0, 86_399.9, 86_400.0], "ARA"),
        (QuotaPolicy(per_second=1, on_exceed="queue"), [0.0, 0.5], "AQ"),
        (QuotaPolicy(per_second=0), [0.0], "R"),
        (QuotaPolicy(), [0.0] * 50, "A" * 50),
    ],
)
def test_verdicts(policy, times, verdicts):
    _, decisions = run(policy, [MIDNIGHT + t for t in times])
    assert "".join(d.verdict.name[0] for d in decisions) == verdicts


def test_refusal_names_the_longest_exceeded_window():
    policy = QuotaPolicy(per_second=1, per_minute=1, per_day=5)
    _, (_, refused) = run(policy, [BEFORE_MIDNIGHT, BEFORE_MIDNIGHT])
    assert refused == QuotaDecision(Verdict.REJECT, Window.MINUTE, MIDNIGHT)
    assert refused.retry_after_s(BEFORE_MIDNIGHT) == pytest.approx(1.5)
    assert not refused.allowed


def test_a_call_above_the_limit_never_fits():
    state, decision = check_and_count(QuotaState(), now=0.0, policy=QuotaPolicy(per_day=2), cost=3)
    assert decision.resets_at == math.inf
    assert state == QuotaState()


def test_refusal_returns_the_same_state_object():
    state, _ = run(QuotaPolicy(per_second=1), [MIDNIGHT])
    again, decision = check_and_count(state, now=MIDNIGHT, policy=QuotaPolicy(per_second=1))
    assert again is state
    assert not decision.allowed


def test_a_clock_stepping_back_does_not_reset_counts():
    policy = QuotaPolicy(per_minute=1)
    state, _ = run(policy, [MIDNIGHT + 60])
    _, decision = check_and_count(state, now=MIDNIGHT + 59, policy=policy)
    assert decision.verdict is Verdict.REJECT


def test_allowed_decision():
    _, (decision,) = run(QuotaPolicy(per_second=1), [MIDNIGHT])
    assert decision.allowed
    assert decision.retry_after_s(MIDNIGHT) == 0.0


@pytest.mark.parametrize(
    "kwargs", [{"per_second": -1}, {"per_day": -5}, {"on_exceed": "drop"}]
)  # fmt: skip
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must"):
        QuotaPolicy(**kwargs)


def test_cost_must_be_positive():
    with pytest.raises(ValueError, match="cost"):
        check_and_count(QuotaState(), now=0.0, policy=QuotaPolicy(), cost=0)


def test_round_trip_and_repr():
    state, _ = run(QuotaPolicy(), [MIDNIGHT, MIDNIGHT + 0.5])
    data = state.to_bytes()
    assert len(data) == 49
    assert QuotaState.from_bytes(data) == state
    day = int(MIDNIGHT)
    assert repr(state) == f"QuotaState(second=2@{day} minute=2@{day} day=2@{day})"


@pytest.mark.parametrize("data", [b"", b"\x02" + bytes(48), bytes(50)])
def test_from_bytes_rejects_garbage(data):
    with pytest.raises(ValueError, match="v1 QuotaState"):
        QuotaState.from_bytes(data)


# ---- invariants -----------------------------------------------------------------------------

limits = st.none() | st.integers(0, 6)
policies = st.builds(QuotaPolicy, per_second=limits, per_minute=limits, per_day=limits)
# Gaps from simultaneous to over a day, so every boundary gets crossed.
gaps = st.lists(st.sampled_from([0.0, 0.3, 1.0, 59.5, 86_400.0]) | st.floats(0.0, 7_200.0))


@CHECK
@given(policies, gaps)
def test_never_more_than_the_limit_per_window(policy, plan):
    now, state, allowed = MIDNIGHT, QuotaState(), []
    for gap in plan:
        now += gap
        state, decision = check_and_count(state, now=now, policy=policy)
        if decision.allowed:
            allowed.append(now)
        else:
            assert decision.window is not None
            assert decision.resets_at is not None
            assert decision.resets_at > now
            assert decision.resets_at == math.inf or decision.resets_at % decision.window == 0
    for window, limit in policy.limits():
        if limit is not None:
            per_window = Counter(window.start(t) for t in allowed)
            assert max(per_window.values(), default=0) <= limit


@CHECK
@given(st.sampled_from(list(Window)), st.integers(1, 5), gaps)
def test_a_refused_call_fits_at_the_reset(window, limit, plan):
    """With one window limited, the refusal's reset instant always admits the call."""
    policy = QuotaPolicy(**{f"per_{window.name.lower()}": limit})
    now, state = MIDNIGHT, QuotaState()
    for gap in plan:
        now += gap
        state, decision = check_and_count(state, now=now, policy=policy)
        if not decision.allowed:
            assert decision.resets_at is not None
            _, retried = check_and_count(state, now=decision.resets_at, policy=policy)
            assert retried.allowed


counts = st.builds(WindowCount, st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1))


@CHECK
@given(st.builds(QuotaState, counts, counts, counts))
def test_any_state_round_trips(state):
    assert QuotaState.from_bytes(state.to_bytes()) == state
