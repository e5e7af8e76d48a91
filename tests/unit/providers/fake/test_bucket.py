"""The fake's strict token bucket: admission on arrival time, refill, Retry-After rounding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.fake.bucket import TokenBucket, whole_seconds


def test_starts_full_then_refuses_with_the_wait():
    bucket = TokenBucket(rate_per_s=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0


def test_refill_is_capped_at_burst():
    bucket = TokenBucket(rate_per_s=10, burst=2, now=0.0)
    bucket.take(0.0)
    assert bucket.seconds_until_full(100.0) == 0.0
    assert bucket.remaining() == 2


def test_cost_above_one():
    bucket = TokenBucket(rate_per_s=100, burst=1000, now=0.0)
    assert bucket.take(0.0, cost=900) == 0.0
    assert bucket.take(0.0, cost=200) == pytest.approx(1.0)


@pytest.mark.parametrize(("seconds", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (5.0, 5)])
def test_whole_seconds_rounds_up(seconds, header):
    assert whole_seconds(seconds) == header


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_never_admits_more_than_burst_plus_refill(rate, burst, gaps):
    bucket = TokenBucket(rate_per_s=rate, burst=burst, now=0.0)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        if bucket.take(now) == 0.0:
            admitted += 1
        assert 0.0 <= bucket.tokens <= burst
    assert admitted <= burst + rate * now + 1e-6
