"""The provider's units headers (``x-ratelimit-remaining-tokens``) lower the units bucket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.bucket import LimitPolicy, available
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from agents.rate_limiter.unit_limits import UnitLimits
from agents.rate_limiter.units import UnitsBucket, observe_headers, reserve, settle
from providers.declaration import ProviderSpec
from providers.response import ProviderReply, RateLimitInfo
from schemas.models import RequestEvent
from streams.metrics import Metrics

NOW = 1_700_000_000.0
CHECK = settings(database=None, deadline=None, max_examples=300)
# Float slack at epoch scale, in units of a bucket of up to 3,000 at 1-1,000/s.
SLACK = 1e-3


def exact(rate: float, burst: int) -> LimitPolicy:
    return LimitPolicy(rate, burst, jitter_s=0.0)


def units_left(state: UnitsBucket, policy: LimitPolicy, at: float = NOW) -> float:
    return available(state.bucket, now=at, policy=policy)


# ---- the pure rule --------------------------------------------------------------------------

POLICY = exact(100.0, 6_000)  # a minute's worth at 100/s


def test_fewer_units_remaining_than_the_bucket_holds_lower_it():
    full = UnitsBucket()
    seen = observe_headers(full, remaining=1_500, reset_s=None, now=NOW, policy=POLICY)
    assert units_left(seen, POLICY) == pytest.approx(1_500)


def test_more_units_remaining_than_the_bucket_holds_change_nothing():
    half = UnitsBucket(NOW + 30.0, 4.0)  # 3,000 left
    assert observe_headers(half, remaining=5_000, reset_s=None, now=NOW, policy=POLICY) is half
    assert observe_headers(half, remaining=3_000, reset_s=0.0, now=NOW, policy=POLICY) is half


def test_units_reserved_in_flight_are_subtracted():
    full = UnitsBucket()
    seen = observe_headers(
        full, remaining=1_500, reset_s=None, now=NOW, policy=POLICY, in_flight=1_200
    )
    assert units_left(seen, POLICY) == pytest.approx(300)
    # More in flight than remains: a debt, which their refunds will pay back.
    owed = observe_headers(full, remaining=500, reset_s=None, now=NOW, policy=POLICY, in_flight=800)
    assert owed.full_at == pytest.approx(NOW + (6_000 + 300) / 100)


def test_no_header_no_change():
    state = UnitsBucket(NOW + 10.0, 2.5)
    assert observe_headers(state, remaining=None, reset_s=None, now=NOW, policy=POLICY) is state


def test_the_reset_tells_when_the_units_are_back():
    """A provider that refills slower than declared: 3,000 remain, full again in 50 s (60/s),
    so ours (100/s) is full no sooner, and holds fewer now than it says."""
    seen = observe_headers(UnitsBucket(), remaining=3_000, reset_s=50.0, now=NOW, policy=POLICY)
    assert seen.full_at == pytest.approx(NOW + 50.0)
    assert units_left(seen, POLICY) == pytest.approx(1_000)
    assert units_left(seen, POLICY, NOW + 50.0) == pytest.approx(6_000)


def test_the_safety_margin_stays_below_the_providers_count_and_refunds_are_kept():
    policy = LimitPolicy(100.0, 6_000, jitter_s=0.05)  # 5 units of margin
    state = UnitsBucket(-float("inf"), 7.0)
    seen = observe_headers(state, remaining=1_000, reset_s=None, now=NOW, policy=policy)
    assert units_left(seen, policy) == pytest.approx(995)
    assert seen.refunded_s == 7.0


@CHECK
@given(
    st.floats(1.0, 1_000.0),
    st.integers(1, 3_000),
    st.floats(-100.0, 100.0),
    st.none() | st.floats(0.0, 4_000.0),
    st.none() | st.floats(0.0, 100.0),
    st.floats(0.0, 3_000.0),
)
def test_a_header_only_ever_lowers_the_bucket_to_at_most_what_remains(
    rate, burst, offset, remaining, reset_s, in_flight
):
    policy = exact(rate, burst)
    state = UnitsBucket(NOW + offset)
    seen = observe_headers(
        state, remaining=remaining, reset_s=reset_s, now=NOW, policy=policy, in_flight=in_flight
    )
    assert seen.full_at >= state.full_at
    assert units_left(seen, policy) <= units_left(state, policy)
    if remaining is not None:
        assert units_left(seen, policy) <= max(0.0, remaining - in_flight) + SLACK
    if reset_s is not None:
        assert seen.full_at >= NOW + reset_s
    if remaining is None and reset_s is None:
        assert seen is state


@CHECK
@given(
    st.floats(1.0, 1_000.0),
    st.integers(1, 3_000),
    st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.floats(0.0, 2.0)), max_size=8),
    st.floats(0.0, 1.0),
)
def test_the_refunds_of_calls_in_flight_never_lift_the_bucket_above_the_providers_count(
    rate, burst, calls, share
):
    """Calls reserve (estimate, a share of the burst), an answer reports what remains (none of
    them counted yet: the worst case), then each settles ``after`` capacities later having
    spent a share of its reservation. At any time the bucket holds at most what the provider
    will: what remained, less what they spent, plus its refill since."""
    policy = exact(rate, burst)
    state, held = UnitsBucket(), []
    for estimate, spent, after in calls:
        state, _, reservation = reserve(state, now=NOW, policy=policy, units=estimate * burst)
        if reservation is not None:
            held.append((reservation, reservation.units * spent, after * policy.capacity_s))
    remaining = share * burst
    in_flight = sum(r.units for r, _, _ in held)
    state = observe_headers(
        state, remaining=remaining, reset_s=None, now=NOW, policy=policy, in_flight=in_flight
    )
    spent_so_far = 0.0
    for reservation, actual, after in sorted(held, key=lambda h: h[2]):
        at = NOW + after
        state = settle(state, reservation, actual=actual, now=at, policy=policy)
        spent_so_far += actual
        provider = min(burst, max(0.0, remaining - spent_so_far) + rate * after)
        assert units_left(state, policy, at) <= provider + SLACK


# ---- per key: the limiter routes the dimension, the units limits count what is in flight -----

LLM = "llm"
UNITS_PER_S = 100.0  # a minute's worth: 6,000


def spec() -> ProviderSpec:
    return ProviderSpec.model_validate(
        {
            "name": LLM,
            "base_url": "https://llm.example",
            "rate_limit_style": "openai",
            "limits": {"rate_per_s": 100, "burst": 10,
                       "units": {"name": "tokens", "rate_per_s": UNITS_PER_S}},
            "operations": {
                "chat": {"method": "POST", "path": "/chat", "units_estimate": 400,
                         "units_from": "usage.total_tokens"},
                # Another model, with its own token limit (not declared): spends no units.
                "embed": {"method": "POST", "path": "/embeddings"},
            },
        }
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limiter(clock: Clock) -> AsyncIterator[Limiter]:
    metrics = Metrics.create(CollectorRegistry())
    units = UnitLimits({LLM: spec()}, lambda name: 1, metrics, clock=clock, jitter_s=0.0)
    book = LimitBook({LLM: ProviderLimit(rate_per_s=100.0, burst=10)}, jitter_s=0.0)
    made = Limiter(book, MemoryQuotaStore(), metrics, clock=clock, units=units)
    made.assign([0])
    yield made
    made.close()
    await asyncio.sleep(0)


def chat(request_id: str) -> RequestEvent:
    return RequestEvent(provider=LLM, operation="chat", request_id=request_id)


def answer(tokens: int) -> ProviderReply:
    return ProviderReply(200, b'{"usage": {"total_tokens": %d}}' % tokens)


def tokens(remaining: int | None, reset_after_s: float | None = None) -> RateLimitInfo:
    return RateLimitInfo(limit=6_000, remaining=remaining, reset_after_s=reset_after_s)


# Units and requests at epoch scale: a float's resolution there is a few microseconds.
def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-3)


def units_of(limiter: Limiter, clock: Clock) -> float:
    assert limiter.units is not None
    policy = limiter.units._policies[LLM]
    return units_left(limiter.units._buckets[0][LLM], policy, clock.now)


def requests_of(limiter: Limiter, clock: Clock) -> float:
    return limiter._partitions[0].tokens(clock.now).get(LLM, 10.0)


async def started(limiter: Limiter, clock: Clock, *ids: str) -> None:
    """Full buckets (a minute since their owner took them), then calls of ``ids`` reserved."""
    assert limiter.units is not None
    # Both buckets start (empty) with the first call that asks.
    limiter.take_spare(0, LLM)
    assert not await limiter.units.acquire(chat("first"), 0, LLM, deadline_at=clock.now)
    clock.now += 60.0
    for request_id in ids:
        assert await limiter.units.acquire(chat(request_id), 0, LLM, deadline_at=clock.now)


def observe(limiter: Limiter, limits: Mapping[str, RateLimitInfo]) -> None:
    limiter.observe(chat("answered"), 0, limits, in_flight=0, key=LLM)


async def test_the_units_dimension_lowers_the_units_bucket_not_the_request_one(limiter, clock):
    await started(limiter, clock, "a")
    assert limiter.units is not None
    limiter.units.settle(chat("a"), answer(300), reached=True)
    before = requests_of(limiter, clock)
    observe(limiter, {"tokens": tokens(2_000)})
    assert units_of(limiter, clock) == approx(2_000)
    assert requests_of(limiter, clock) == before  # tokens are no count of requests


async def test_more_units_remaining_never_raise_the_units_bucket(limiter, clock):
    await started(limiter, clock, "a")
    assert limiter.units is not None
    limiter.units.settle(chat("a"), answer(300), reached=True)
    observe(limiter, {"tokens": tokens(2_000)})
    observe(limiter, {"tokens": tokens(5_900)})
    assert units_of(limiter, clock) == approx(2_000)


async def test_units_reserved_by_calls_still_in_flight_are_subtracted(limiter, clock):
    await started(limiter, clock, "a", "b", "c")  # 400 each
    assert limiter.units is not None
    limiter.units.settle(chat("a"), answer(300), reached=True)  # the answered call
    observe(limiter, {"tokens": tokens(2_000)})
    assert units_of(limiter, clock) == approx(2_000 - 2 * 400)
    # b spends 100 of its 400: the 300 come back (its slot is still ahead).
    limiter.units.settle(chat("b"), answer(100), reached=True)
    assert units_of(limiter, clock) == approx(2_000 - 400 - 100)


async def test_no_units_header_changes_no_units_bucket(limiter, clock):
    await started(limiter, clock, "a")
    assert limiter.units is not None
    held = units_of(limiter, clock)
    observe(limiter, {"requests": RateLimitInfo(limit=10, remaining=2)})
    assert units_of(limiter, clock) == held
    assert requests_of(limiter, clock) == approx(2.0)  # the requests still count
    observe(limiter, {"tokens": RateLimitInfo(limit=6_000)})  # no remaining, no reset
    assert units_of(limiter, clock) == held
    observe(limiter, {})
    assert units_of(limiter, clock) == held


async def test_both_dimensions_go_each_to_its_bucket(limiter, clock):
    await started(limiter, clock, "a")
    assert limiter.units is not None
    limiter.units.settle(chat("a"), answer(300), reached=True)
    requests = RateLimitInfo(limit=10, remaining=3)
    observe(limiter, {"requests": requests, "tokens": tokens(3_000, reset_after_s=50.0)})
    assert requests_of(limiter, clock) == approx(3.0)
    # 3,000 remain but come back over 50 s (60/s): ours, refilling at 98/s (2% under the
    # declared 100/s), is full no sooner, so it holds 6,000 - 50 * 98 now.
    assert units_of(limiter, clock) == approx(6_000 - 50 * 98)
    clock.now += 50.0
    assert units_of(limiter, clock) == approx(6_000)


async def test_a_lowered_units_bucket_makes_the_next_call_wait(limiter, clock):
    await started(limiter, clock, "a")
    assert limiter.units is not None
    limiter.units.settle(chat("a"), answer(300), reached=True)
    observe(limiter, {"tokens": tokens(100)})  # another client spent the rest
    # b's estimate, learned from a's 300, is 750 (300 + 3 * 150): 650 more at 98/s, 6.6 s.
    assert not await limiter.units.acquire(chat("b"), 0, LLM, deadline_at=clock.now + 6.5)
    clock.now += 6.7
    assert await limiter.units.acquire(chat("b"), 0, LLM, deadline_at=clock.now)


async def test_an_operation_spending_no_units_reports_another_limit(limiter, clock):
    """OpenAI's headers are per model: an embeddings answer's tokens are not the chat's."""
    await started(limiter, clock, "a")
    assert limiter.units is not None
    held = units_of(limiter, clock)
    embedded = RequestEvent(provider=LLM, operation="embed", request_id="e")
    limiter.observe(embedded, 0, {"tokens": tokens(100)}, key=LLM)
    assert units_of(limiter, clock) == held
