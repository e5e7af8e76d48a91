"""Tests for the retry budget: examples and hypothesis bounds over random traffic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.retry.budget import (
    BudgetPolicy,
    BudgetState,
    RetryBudget,
    deposit,
    fresh,
    try_withdraw,
)

T0 = 1000.0  # a monotonic clock reading
# No example database: nothing written into the work tree; no deadline: CI machines vary.
CHECK = settings(database=None, deadline=None, max_examples=200)

policies = st.builds(
    BudgetPolicy,
    ratio=st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 3.0),
    min_per_s=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 20.0),
    window_s=st.floats(0.1, 60.0),
)
# (seconds since the previous operation, key, "call" or "retry"): bursts and idle gaps.
ops = st.lists(
    st.tuples(
        st.sampled_from([0.0]) | st.floats(0.0, 5.0),
        st.sampled_from(["acme/0", "acme/1"]),
        st.sampled_from(["call", "retry"]),
    ),
    max_size=300,
)


def no_floor(ratio: float = 0.5, window_s: float = 10.0) -> BudgetPolicy:
    return BudgetPolicy(ratio=ratio, min_per_s=0.0, window_s=window_s)


# ---- policy validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": -0.1},
        {"ratio": math.nan},
        {"ratio": math.inf},
        {"min_per_s": -1.0},
        {"min_per_s": math.inf},
        {"window_s": 0.0},
        {"window_s": -10.0},
        {"window_s": math.inf},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must"):
        BudgetPolicy(**kwargs)


def test_now_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        deposit(fresh(now=T0, policy=BudgetPolicy()), now=math.nan, policy=BudgetPolicy())


# ---- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_per_s", "window_s", "balance"),
    [(1.0, 10.0, 1.0), (0.05, 10.0, 0.5), (0.0, 10.0, 0.0)],
)
def test_a_new_key_starts_with_one_retry_at_most_the_floor_bank(min_per_s, window_s, balance):
    policy = BudgetPolicy(min_per_s=min_per_s, window_s=window_s)
    assert fresh(now=T0, policy=policy) == BudgetState(balance, T0)


def test_deposit_earns_ratio_per_first_call():
    state = BudgetState(0.0, T0)
    for _ in range(4):
        state = deposit(state, now=T0, policy=no_floor(ratio=0.5))
    assert state == BudgetState(2.0, T0)


def test_withdraw_needs_one_whole_retry():
    policy = no_floor()
    assert try_withdraw(BudgetState(0.99, T0), now=T0, policy=policy) == (
        False,
        BudgetState(0.99, T0),
    )
    assert try_withdraw(BudgetState(1.5, T0), now=T0, policy=policy) == (True, BudgetState(0.5, T0))


def test_deposits_decay_with_the_window_as_time_constant():
    allowed, state = try_withdraw(BudgetState(10.0, T0), now=T0 + 10.0, policy=no_floor())
    assert allowed
    assert state.balance == pytest.approx(10.0 / math.e - 1.0)
    assert state.updated_at == T0 + 10.0


def test_a_quiet_key_earns_retries_from_the_floor_up_to_its_cap():
    policy = BudgetPolicy(min_per_s=1.0, window_s=10.0)
    empty = BudgetState(0.0, T0)
    assert try_withdraw(empty, now=T0 + 0.5, policy=policy)[0] is False
    assert try_withdraw(empty, now=T0 + 1.5, policy=policy)[0] is True
    allowed, idle = try_withdraw(empty, now=T0 + 3600.0, policy=policy)
    assert allowed
    assert idle.balance == policy.floor_cap - 1.0 == 9.0  # an hour of quiet banks only 10


def test_the_floor_never_trims_what_deposits_earned():
    policy = BudgetPolicy(ratio=1.0, min_per_s=1.0, window_s=10.0)
    _, state = try_withdraw(BudgetState(50.0, T0), now=T0 + 1.0, policy=policy)
    assert state.balance == pytest.approx(50.0 * math.exp(-0.1) - 1.0)


def test_a_clock_stepping_back_counts_as_no_time():
    policy = BudgetPolicy(min_per_s=1.0)
    state = deposit(BudgetState(0.0, T0), now=T0 - 30.0, policy=policy)
    assert state == BudgetState(0.5, T0)  # no accrual, no decay, time not moved back


def test_a_burst_of_failures_gets_about_ratio_retries():
    budget = RetryBudget(BudgetPolicy(ratio=0.5, min_per_s=1.0))
    for _ in range(1000):
        budget.record_call("acme/0", T0)
    allowed = sum(budget.allow_retry("acme/0", T0) for _ in range(1000))
    assert allowed == 501  # 1000 * 0.5 plus the new key's one retry


def test_keys_have_separate_budgets():
    budget = RetryBudget(BudgetPolicy(ratio=0.5, min_per_s=0.0))
    for _ in range(4):
        budget.record_call("acme/0", T0)
    assert [budget.allow_retry("acme/0", T0) for _ in range(3)] == [True, True, False]
    assert budget.allow_retry("other/0", T0) is False  # no floor, no calls: nothing earned


def test_long_run_share_of_retries_approaches_the_ratio():
    policy = BudgetPolicy(ratio=0.5, min_per_s=1.0, window_s=10.0)
    budget = RetryBudget(policy)
    calls, retries, rate_per_s, seconds = 0, 0, 100, 600
    for i in range(rate_per_s * seconds):
        now = T0 + i / rate_per_s
        budget.record_call("acme/0", now)  # every call fails and wants a retry
        calls += 1
        retries += budget.allow_retry("acme/0", now)
    floor_share = (policy.min_per_s * seconds + 1.0) / calls
    assert 0.45 <= retries / calls <= policy.ratio + floor_share


# ---- invariants -----------------------------------------------------------------------------


@CHECK
@given(policies, ops)
def test_retries_never_exceed_ratio_of_calls_plus_floor(policy, plan):
    budget = RetryBudget(policy)
    now = T0
    first_seen: dict[str, float] = {}
    calls: dict[str, int] = {}
    retries: dict[str, int] = {}
    for gap, key, op in plan:
        now += gap
        first_seen.setdefault(key, now)
        if op == "call":
            budget.record_call(key, now)
            calls[key] = calls.get(key, 0) + 1
        elif budget.allow_retry(key, now):
            retries[key] = retries.get(key, 0) + 1
    initial = fresh(now=T0, policy=policy).balance
    for key, since in first_seen.items():
        bound = policy.ratio * calls.get(key, 0) + policy.min_per_s * (now - since) + initial
        assert retries.get(key, 0) <= bound + 1e-9 * (1 + len(plan))


@CHECK
@given(policies, ops)
def test_balance_stays_non_negative_and_time_only_moves_forward(policy, plan):
    state, now = fresh(now=T0, policy=policy), T0
    for gap, _, op in plan:
        now += gap
        previous = state
        if op == "call":
            state = deposit(state, now=now, policy=policy)
        else:
            _, state = try_withdraw(state, now=now, policy=policy)
        assert state.balance >= 0.0
        assert state.updated_at == max(previous.updated_at, now)
