"""Tests for the GCRA bucket: table-driven cases and hypothesis invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.rate_limiter.bucket import (
    Bucket,
    LimitPolicy,
    available,
    fresh_after_handover,
    observe_provider_headers,
    peek,
    shard,
    take,
)

from .conformance import TOLERANCE_S, strict_provider_accepts, worst_window_excess

NOW = 1_700_000_000.0
# No example database: nothing written into the work tree; no deadline: CI machines vary.
CHECK = settings(database=None, deadline=None, max_examples=200)

policies = st.builds(
    LimitPolicy,
    rate_per_s=st.floats(0.1, 1000.0),
    burst=st.integers(1, 20),
    jitter_s=st.sampled_from([0.0, 0.001, 0.05, 0.3]) | st.floats(0.0, 1.0),
)
# (seconds since the previous attempt, cost): bursts of simultaneous calls and idle gaps.
steps = st.lists(
    st.tuples(st.sampled_from([0.0]) | st.floats(0.0, 3.0), st.integers(1, 3)), max_size=60
)


def exact(rate: float, burst: int) -> LimitPolicy:
    return LimitPolicy(rate, burst, jitter_s=0.0)


# ---- policy and safety margin ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "jitter", "effective", "interval"),
    [
        (10, 10, 0.0, 10, 0.1),
        (10, 10, 0.05, 9, 0.1),  # 0.5 token of jitter costs one token of burst
        (10, 10, 0.3, 7, 0.1),  # 3.0000000000000004 rounds to 3, not 4
        (10, 2, 0.25, 1, 0.175),  # margin eats the burst: burst 1, interval (T + J) / B
        (1, 1, 0.05, 1, 1.05),
        (100, 5, 0.05, 1, 0.012),
    ],
)
def test_policy_margin(rate, burst, jitter, effective, interval):
    policy = LimitPolicy(rate, burst, jitter)
    assert policy.effective_burst == effective
    assert policy.interval_s == pytest.approx(interval)
    assert policy.safety_margin == burst - effective


@pytest.mark.parametrize(
    ("rate", "burst", "jitter"),
    [(0, 1, 0), (-1, 1, 0), (math.inf, 1, 0), (math.nan, 1, 0), (1, 0, 0), (1, 1, -0.1)],
)
def test_policy_rejects_nonsense(rate, burst, jitter):
    with pytest.raises(ValueError, match="must"):
        LimitPolicy(rate, burst, jitter)


# ---- take, peek, available ------------------------------------------------------------------


def test_take_reserves_consecutive_slots():
    policy, b, waits = exact(10, 3), Bucket(), []
    for _ in range(6):
        b, wait = take(b, now=NOW, policy=policy)
        waits.append(wait)
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3], abs=1e-6)


@pytest.mark.parametrize(
    ("cost", "max_wait_s", "reserved", "wait"),
    [
        (1, 0.0, True, 0.0),
        (4, 0.0, False, 0.1),  # 3 tokens, needs 4: would wait, so nothing reserved
        (4, 0.11, True, 0.1),
        (6, math.inf, False, math.inf),  # above the burst: can never conform
    ],
)
def test_take_max_wait(cost, max_wait_s, reserved, wait):
    start = Bucket(NOW + 0.2)  # 3 of 5 tokens left at NOW
    b, got = take(start, now=NOW, policy=exact(10, 5), cost=cost, max_wait_s=max_wait_s)
    assert got == pytest.approx(wait, abs=1e-6)
    assert (b != start) is reserved


def test_take_rejects_zero_cost():
    with pytest.raises(ValueError, match="cost"):
        take(Bucket(), now=NOW, policy=exact(1, 1), cost=0)


@pytest.mark.parametrize(
    ("full_at", "now", "tokens"),
    [(-math.inf, NOW, 4), (NOW, NOW, 4), (NOW + 0.1, NOW, 3), (NOW + 0.1, NOW + 0.05, 3.5)],
)
def test_available(full_at, now, tokens):
    got = available(Bucket(full_at), now=now, policy=exact(10, 4))
    assert got == pytest.approx(tokens, abs=1e-5)


def test_peek_reserves_nothing():
    b = Bucket(NOW + 1.0)
    assert peek(b, now=NOW, policy=exact(10, 4)) == pytest.approx(0.7, abs=1e-6)
    assert b == Bucket(NOW + 1.0)


# ---- handover and provider headers ----------------------------------------------------------


def test_fresh_after_handover_is_empty():
    policy = exact(10, 5)
    b = fresh_after_handover(now=NOW, policy=policy)
    assert available(b, now=NOW, policy=policy) == 0
    assert peek(b, now=NOW, policy=policy) == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(("restored_at", "wins"), [(NOW + 9.0, True), (NOW - 9.0, False)])
def test_fresh_after_handover_keeps_stricter_restored(restored_at, wins):
    restored = Bucket(restored_at)
    b = fresh_after_handover(now=NOW, policy=exact(1, 5), restored=restored)
    assert (b is restored) is wins


@pytest.mark.parametrize(
    ("remaining", "reset_s", "in_flight", "jitter", "expected_wait"),
    [
        (2, None, 0, 0.0, 0.0),  # 2 left: 3rd call waits one interval (checked below)
        (0, None, 0, 0.0, 0.1),
        (0, 30.0, 0, 0.0, 30.0),  # fixed window exhausted: nothing before the reset
        (3, None, 3, 0.0, 0.1),  # our 3 calls in flight will still count
        (1, None, 0, 0.05, 0.1),  # 1 left minus a margin of 1: nothing now
        (10, None, 0, 0.0, 0.0),  # more than we think we have: unchanged
    ],
)
def test_observe_provider_headers(remaining, reset_s, in_flight, jitter, expected_wait):
    policy = LimitPolicy(10, 10, jitter)
    b = observe_provider_headers(
        Bucket(NOW), remaining=remaining, reset_s=reset_s, now=NOW, policy=policy,
        in_flight=in_flight,
    )  # fmt: skip
    assert peek(b, now=NOW, policy=policy) == pytest.approx(expected_wait, abs=1e-6)


def test_observe_provider_headers_paces_a_long_window():
    # 5 calls left for 10 s at a local 10/s: at most 5 before the reset, not 100.
    policy, b = exact(10, 10), Bucket(NOW)
    b = observe_provider_headers(b, remaining=5, reset_s=10.0, now=NOW, policy=policy)
    sent = 0
    for i in range(1000):
        b, wait = take(b, now=NOW + i * 0.01, policy=policy, max_wait_s=0.0)
        sent += wait == 0.0 and NOW + i * 0.01 < NOW + 10.0
    assert sent <= 5


def test_observe_never_raises_the_estimate():
    b = Bucket(NOW + 5.0)
    got = observe_provider_headers(b, remaining=10, reset_s=0.0, now=NOW, policy=exact(1, 10))
    assert got is b


# ---- sharding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "n", "shard_rate", "shard_burst"),
    [(10, 10, 1, 10, 10), (10, 10, 3, 10 / 3, 3), (100, 7, 7, 100 / 7, 1), (0.3, 4, 2, 0.15, 2)],
)
def test_shard(rate, burst, n, shard_rate, shard_burst):
    part = shard(LimitPolicy(rate, burst), n)
    assert part.rate_per_s == pytest.approx(shard_rate)
    assert part.burst == shard_burst
    assert part.rate_per_s * n <= rate


@pytest.mark.parametrize("n", [0, 11])
def test_shard_rejects_impossible_split(n):
    with pytest.raises(ValueError, match="shards"):
        shard(LimitPolicy(10, 10), n)


# ---- serialisation and repr -----------------------------------------------------------------


@pytest.mark.parametrize("full_at", [-math.inf, 0.0, NOW + 0.123456])
def test_round_trip(full_at):
    data = Bucket(full_at).to_bytes()
    assert len(data) == 9
    assert Bucket.from_bytes(data) == Bucket(full_at)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01" + b"\x00" * 7, b"\x02" + Bucket(NOW).to_bytes()[1:], b"\x01\x7f\xf8" + b"\0" * 6],
)
def test_from_bytes_rejects_garbage(data):
    with pytest.raises(ValueError, match=r"v1 Bucket|NaN"):
        Bucket.from_bytes(data)


def test_repr_shows_state():
    assert repr(Bucket(12.5)) == "Bucket(full_at=12.500000)"


# ---- invariants -----------------------------------------------------------------------------


def reserve_all(
    policy: LimitPolicy, start: Bucket, plan: list[tuple[float, int]]
) -> tuple[Bucket, list[tuple[float, int]]]:
    """Take with reservations at each step; return (bucket, [(release time, cost)])."""
    b, now = start, NOW
    released: list[tuple[float, int]] = []
    for dt, cost in plan:
        now += dt
        b, wait = take(b, now=now, policy=policy, cost=cost)
        if wait < math.inf:
            released.append((now + wait, cost))
    return b, released


@CHECK
@given(policies, steps)
def test_tokens_stay_within_burst(policy, plan):
    b, now = Bucket(), NOW
    for dt, cost in plan:
        now += dt
        b, _ = take(b, now=now, policy=policy, cost=cost, max_wait_s=0.0)
        assert 0.0 <= available(b, now=now, policy=policy) <= policy.effective_burst
        assert policy.effective_burst <= policy.burst


@CHECK
@given(policies, steps)
def test_reservations_respect_every_window(policy, plan):
    _, released = reserve_all(policy, Bucket(), plan)
    eff = {"burst": policy.effective_burst, "rate_per_s": 1 / policy.interval_s}
    assert worst_window_excess(released, **eff) <= 1e-9
    assert worst_window_excess(released, burst=policy.burst, rate_per_s=policy.rate_per_s) <= 1e-9
    assert strict_provider_accepts(released, **eff)


@CHECK
@given(policies, steps, st.data())
def test_jitter_never_causes_a_provider_violation(policy, plan, data):
    """Sends admitted now, arriving up to jitter_s later, pass a strict provider."""
    b, now, arrivals = Bucket(), NOW, []
    for dt, cost in plan:
        now += dt
        b, wait = take(b, now=now, policy=policy, cost=cost, max_wait_s=0.0)
        if wait == 0.0:
            arrivals.append((now + data.draw(st.floats(0.0, policy.jitter_s)), cost))
    assert strict_provider_accepts(arrivals, burst=policy.burst, rate_per_s=policy.rate_per_s)


@CHECK
@given(policies, steps)
def test_nothing_admitted_before_one_interval_after_handover(policy, plan):
    start = fresh_after_handover(now=NOW, policy=policy)
    _, released = reserve_all(policy, start, plan)
    assert all(t >= NOW + 1 / policy.rate_per_s - TOLERANCE_S for t, _ in released)


@CHECK
@given(policies, st.integers(1, 8), st.lists(st.tuples(st.floats(0, 2), st.integers(0, 7))))
def test_shards_together_stay_within_the_original(policy, n, plan):
    n = min(n, policy.burst)
    part, buckets, now, arrivals = shard(policy, n), [Bucket()] * n, NOW, []
    for dt, which in plan:
        now += dt
        i = which % n
        buckets[i], wait = take(buckets[i], now=now, policy=part, max_wait_s=0.0)
        if wait == 0.0:
            arrivals.append((now + policy.jitter_s * (which % 2), 1))
    assert part.rate_per_s * n <= policy.rate_per_s
    assert part.burst * n <= policy.burst
    assert strict_provider_accepts(arrivals, burst=policy.burst, rate_per_s=policy.rate_per_s)


@CHECK
@given(
    policies,
    st.floats(-5.0, 5.0),
    st.integers(-3, 30),
    st.none() | st.floats(0.0, 100.0),
    st.integers(0, 5),
)
def test_headers_only_ever_lower_the_estimate(policy, offset, remaining, reset_s, in_flight):
    b = Bucket(NOW + offset)
    got = observe_provider_headers(
        b, remaining=remaining, reset_s=reset_s, now=NOW, policy=policy, in_flight=in_flight
    )
    assert got.full_at >= b.full_at
    assert available(got, now=NOW, policy=policy) <= available(b, now=NOW, policy=policy)
    # Epoch-scale floats hold full_at to ~0.24 us, a few thousandths of a token at 1000/s.
    ceiling = max(0, remaining - policy.safety_margin) + 1e-3
    assert available(got, now=NOW, policy=policy) <= ceiling


@CHECK
@given(st.floats(allow_nan=False))
def test_any_state_round_trips(full_at):
    assert Bucket.from_bytes(Bucket(full_at).to_bytes()) == Bucket(full_at)


def test_observe_without_margin_leaves_the_providers_remaining_calls_usable():
    policy = LimitPolicy(100, 10, 0.05)  # a margin of 5 tokens
    kept = observe_provider_headers(Bucket(NOW), remaining=4, now=NOW, policy=policy)
    free = observe_provider_headers(
        Bucket(NOW), remaining=4, now=NOW, policy=policy, keep_margin=False, in_flight=1
    )
    assert available(kept, now=NOW, policy=policy) == 0
    assert available(free, now=NOW, policy=policy) == pytest.approx(3)
