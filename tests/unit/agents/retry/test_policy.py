"""Tests for the retry decision: table-driven cases and hypothesis invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.retry.policy import Failure, GiveUp, RetryAt, RetryPolicy, backoff_s, decide

NOW = 1_700_000_000.0
# No example database: nothing written into the work tree; no deadline: CI machines vary.
CHECK = settings(database=None, deadline=None, max_examples=300)

TIMEOUT = Failure("timeout", retriable=True, may_have_reached=True, retry_after_s=None)
REFUSED = Failure("connect_refused", retriable=True, may_have_reached=False, retry_after_s=None)
THROTTLED = Failure("rate_limited", retriable=True, may_have_reached=False, retry_after_s=2.5)
BAD_REQUEST = Failure("bad_request", retriable=False, may_have_reached=True, retry_after_s=None)

draws = st.floats(0.0, 1.0, exclude_max=True)
policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 10),
    base_delay_s=st.floats(0.001, 2.0),
    max_delay_s=st.floats(2.0, 60.0),
    time_budget_s=st.floats(0.01, 300.0),
)
retry_afters = st.none() | st.floats(0.0, 200.0) | st.sampled_from([-1.0, math.nan, math.inf])
failures = st.builds(
    Failure,
    reason=st.sampled_from(["timeout", "unavailable", "rate_limited", "bad_request"]),
    retriable=st.booleans(),
    may_have_reached=st.booleans(),
    retry_after_s=retry_afters,
)


def retry(failure: Failure = TIMEOUT, **overrides: object) -> RetryAt | GiveUp:
    args: dict[str, object] = {
        "attempt": 1,
        "first_attempt_at_s": NOW,
        "now_s": NOW + 0.1,
        "deadline_s": None,
        "policy": RetryPolicy(),
        "safe_to_retry": True,
        "draw": 0.5,
    }
    args.update(overrides)
    return decide(failure, **args)  # type: ignore[arg-type]


def reference_ceiling(attempt: int, policy: RetryPolicy) -> float:
    """min(cap, base * 2**(n-1)) computed the slow exact way, with overflow read as infinity."""
    try:
        grown = math.ldexp(policy.base_delay_s, attempt - 1)
    except OverflowError:
        grown = math.inf
    return min(policy.max_delay_s, grown)


# ---- policy validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"base_delay_s": 0.0},
        {"base_delay_s": -0.1},
        {"base_delay_s": math.nan},
        {"max_delay_s": 0.0},
        {"max_delay_s": math.inf},
        {"base_delay_s": 5.0, "max_delay_s": 1.0},
        {"time_budget_s": 0.0},
        {"time_budget_s": -1.0},
        {"time_budget_s": math.inf},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)


def test_policy_defaults_are_valid():
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay_s, policy.max_delay_s) == (7, 0.2, 30.0)
    assert policy.time_budget_s == 120.0


# ---- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        (1, 0.5, 0.1),  # 0.5 * 0.2
        (2, 0.5, 0.2),
        (3, 0.5, 0.4),
        (8, 0.5, 12.8),  # 0.2 * 2**7 = 25.6, under the cap
        (9, 0.5, 15.0),  # 51.2 capped at 30
        (10_000, 0.5, 15.0),
        (1, 0.0, 0.0),
    ],
)
def test_backoff_examples(attempt, draw, expected):
    assert backoff_s(attempt, RetryPolicy(), draw) == pytest.approx(expected)


def test_backoff_survives_huge_attempts_and_extreme_policies():
    extreme = RetryPolicy(base_delay_s=5e-324, max_delay_s=1.7e308)
    assert backoff_s(10**9, extreme, 0.5) == 0.85e308
    assert backoff_s(2000, extreme, 0.5) == pytest.approx(math.ldexp(5e-324, 1999) / 2)
    assert backoff_s(10**18, RetryPolicy(), 0.999) == pytest.approx(29.97)


@pytest.mark.parametrize(
    ("attempt", "draw"), [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1), (1, math.nan)]
)
def test_backoff_rejects_bad_arguments(attempt, draw):
    with pytest.raises(ValueError, match="must"):
        backoff_s(attempt, RetryPolicy(), draw)


@CHECK
@given(
    st.integers(1, 5000),
    st.floats(5e-324, 1e6),
    st.floats(1e-3, 1.7e308),
    draws,
)
def test_backoff_stays_within_full_jitter_bounds(attempt, base, cap, draw):
    policy = RetryPolicy(base_delay_s=min(base, cap), max_delay_s=max(base, cap))
    delay = backoff_s(attempt, policy, draw)
    ceiling = reference_ceiling(attempt, policy)
    assert 0.0 <= delay <= ceiling
    assert delay == draw * ceiling  # exactly the full-jitter formula


# ---- decide: examples -----------------------------------------------------------------------


def test_permanent_failure_is_never_retried():
    assert retry(BAD_REQUEST) == GiveUp("permanent", "bad_request is not retriable")
    # Permanence is reported first, even when the call was also unsafe to repeat.
    assert retry(BAD_REQUEST, safe_to_retry=False) == GiveUp(
        "permanent", "bad_request is not retriable"
    )


def test_unsafe_call_that_may_have_reached_is_not_retried():
    decision = retry(TIMEOUT, safe_to_retry=False)
    assert isinstance(decision, GiveUp)
    assert decision.reason == "unsafe_to_retry"
    assert "timeout" in decision.detail


@pytest.mark.parametrize("failure", [REFUSED, THROTTLED])
def test_unsafe_call_that_surely_did_not_reach_is_retried(failure):
    assert isinstance(retry(failure, safe_to_retry=False), RetryAt)


def test_safe_call_is_retried_after_a_timeout():
    assert retry(TIMEOUT, draw=0.5) == RetryAt(0.1)


def test_retry_after_is_honoured():
    assert retry(THROTTLED, draw=0.5) == RetryAt(2.5)  # backoff 0.1 < the provider's 2.5


def test_backoff_wins_over_a_shorter_retry_after():
    failure = THROTTLED._replace(retry_after_s=0.01)
    assert retry(failure, attempt=5, draw=0.5) == RetryAt(1.6)  # 0.5 * 0.2 * 2**4


@pytest.mark.parametrize("bogus", [-5.0, math.nan])
def test_bogus_retry_after_is_ignored(bogus):
    assert retry(THROTTLED._replace(retry_after_s=bogus), draw=0.5) == RetryAt(0.1)


def test_infinite_retry_after_exhausts_the_time_budget():
    decision = retry(THROTTLED._replace(retry_after_s=math.inf))
    assert isinstance(decision, GiveUp)
    assert decision.reason == "retries_exhausted"
    assert "time_budget_s" in decision.detail


@pytest.mark.parametrize(("attempt", "max_attempts"), [(6, 6), (7, 6), (1, 1)])
def test_attempts_exhausted(attempt, max_attempts):
    decision = retry(attempt=attempt, policy=RetryPolicy(max_attempts=max_attempts))
    expected = f"{attempt} attempts made (max_attempts {max_attempts})"
    assert decision == GiveUp("retries_exhausted", expected)


def test_last_allowed_retry_still_goes():
    assert isinstance(retry(attempt=5, policy=RetryPolicy(max_attempts=6)), RetryAt)


def test_time_budget_stops_a_late_retry():
    late = retry(THROTTLED, now_s=NOW + 119.0)  # 119 + 2.5 > 120
    assert isinstance(late, GiveUp)
    assert late.reason == "retries_exhausted"
    assert "time_budget_s 120.0" in late.detail
    assert retry(THROTTLED, now_s=NOW + 117.5) == RetryAt(2.5)  # lands exactly on the budget


def test_deadline_stops_a_retry_landing_on_or_after_it():
    on_deadline = retry(THROTTLED, deadline_s=NOW + 0.1 + 2.5)
    assert isinstance(on_deadline, GiveUp)
    assert on_deadline.reason == "retries_exhausted"
    assert "deadline" in on_deadline.detail
    assert retry(THROTTLED, deadline_s=NOW + 0.1 + 2.6) == RetryAt(2.5)


# ---- decide: invariants ---------------------------------------------------------------------


@CHECK
@given(
    failure=failures,
    policy=policies,
    attempt=st.integers(1, 12),
    elapsed=st.floats(0.0, 400.0),
    deadline_in=st.none() | st.floats(-10.0, 400.0),
    safe=st.booleans(),
    draw=draws,
)
def test_every_retry_respects_the_rules(failure, policy, attempt, elapsed, deadline_in, safe, draw):
    now = NOW + elapsed
    deadline = None if deadline_in is None else now + deadline_in
    decision = decide(
        failure,
        attempt=attempt,
        first_attempt_at_s=NOW,
        now_s=now,
        deadline_s=deadline,
        policy=policy,
        safe_to_retry=safe,
        draw=draw,
    )
    if isinstance(decision, GiveUp):
        assert decision.detail
        if not failure.retriable:
            assert decision.reason == "permanent"
        elif failure.may_have_reached and not safe:
            assert decision.reason == "unsafe_to_retry"
        else:
            assert decision.reason == "retries_exhausted"
        return
    assert failure.retriable
    assert safe or not failure.may_have_reached
    assert attempt < policy.max_attempts
    assert decision.delay_s >= backoff_s(attempt, policy, draw) >= 0.0
    wait = failure.retry_after_s
    if wait is not None and not math.isnan(wait):
        assert decision.delay_s >= wait  # Retry-After is never shortened
    assert now + decision.delay_s <= NOW + policy.time_budget_s
    assert deadline is None or now + decision.delay_s < deadline


@CHECK
@given(policies, draws, st.integers(1, 12))
def test_a_retriable_failure_with_room_left_is_retried(policy, draw, attempt):
    # Converse of the rules: nothing refuses a retry that breaks none of them.
    decision = retry(
        REFUSED, attempt=attempt, now_s=NOW, policy=policy, safe_to_retry=False, draw=draw
    )
    fits = attempt < policy.max_attempts and backoff_s(attempt, policy, draw) <= (
        policy.time_budget_s
    )
    assert isinstance(decision, RetryAt) == fits
