"""The limiter with adaptive rates: a 429 slows the key for every request, the learned rate is
kept in the quota table for the next owner, and it is exported."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from agents.rate_limiter.adaptive import Mode, RateControl, RateState
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import CONTROL_PERIOD_S, Limiter, MemoryQuotaStore
from agents.rate_limiter.rates import rate_key
from providers.response import RateLimitInfo
from schemas.models import RequestEvent
from streams.metrics import Metrics

LIMITS = {"acme": ProviderLimit(rate_per_s=100.0, burst=10)}
CUBIC = RateControl(Mode.CUBIC, 1.0, decrease=0.9, recovery_s=8.0)

Make = Callable[..., Limiter]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[Limiter] = []

    def build(
        store: MemoryQuotaStore | None = None,
        control: RateControl = CUBIC,
        metrics: Metrics | None = None,
        hold_over_s: float = 1.0,
    ) -> Limiter:
        book = LimitBook(LIMITS, jitter_s=0.0, adaptive=control)
        limiter = Limiter(
            book,
            store if store is not None else MemoryQuotaStore(),
            metrics or Metrics.create(CollectorRegistry()),
            clock=time.time,  # the first token comes one interval (10 ms) after assignment
            hold_retry_after_over_s=hold_over_s,
        )
        limiter.assign([0])
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        limiter.close()
    await asyncio.sleep(0)


def event(request_id: str = "r1") -> RequestEvent:
    return RequestEvent(provider="acme", operation="get", request_id=request_id)


def rate(limiter: Limiter, partition: int = 0) -> float:
    limiter.update_gauges()
    metrics: Metrics = limiter._metrics
    return metrics.limiter_rate.labels("acme")._value.get()  # type: ignore[no-any-return]


async def test_a_429_cuts_the_key_once_for_the_calls_already_in_flight(make: Make) -> None:
    limiter = make()
    await limiter.admit(event(), 0)
    limiter.observe_rate_limited(event(), 0, None, sent_at=time.time() - 0.1)
    assert rate(limiter) == pytest.approx(90.0)
    limiter.observe_rate_limited(
        event("r2"), 0, None, sent_at=time.time() - 0.05
    )  # sent before the cut
    assert rate(limiter) == pytest.approx(90.0)
    assert limiter._metrics.limiter_throttled.labels("acme")._value.get() == 2
    assert limiter._metrics.limiter_rate_cuts.labels("acme")._value.get() == 1


async def test_off_holds_the_key_for_retry_after_and_learns_nothing(make: Make) -> None:
    limiter = make(control=RateControl(Mode.OFF, 1.0))
    await limiter.admit(event(), 0)
    limiter.observe_rate_limited(event(), 0, 5.0, sent_at=time.time() - 0.1)
    limiter.update_gauges()
    assert limiter._partitions[0].rates.states() == {}
    wait = limiter._partitions[0]._gate.try_take("acme", 1, time.time() + 4.0)
    assert wait > 0  # still held 4 s later


async def test_a_short_retry_after_does_not_hold_the_key(make: Make) -> None:
    limiter = make(hold_over_s=1.0)
    await limiter.admit(event(), 0)
    limiter.observe_rate_limited(event(), 0, 1.0, sent_at=time.time() - 0.1)
    gate = limiter._partitions[0]._gate
    assert gate.try_take("acme", 1, time.time() + 0.2) == 0.0  # the next token is an interval away


async def test_a_long_retry_after_holds_the_key(make: Make) -> None:
    limiter = make(hold_over_s=1.0)
    await limiter.admit(event(), 0)
    limiter.observe_rate_limited(event(), 0, 30.0, sent_at=time.time() - 0.1)
    assert limiter._partitions[0]._gate.try_take("acme", 1, time.time() + 20.0) > 0


async def test_learned_rates_are_written_and_read_back_by_the_next_owner(make: Make) -> None:
    store = MemoryQuotaStore()
    first = make(store)
    await first.admit(event(), 0)
    first.observe_rate_limited(event(), 0, None, sent_at=time.time() - 0.1)
    control = asyncio.create_task(first.control_forever())
    await asyncio.sleep(CONTROL_PERIOD_S * 1.5)
    control.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await control
    raw = store.get(0, rate_key("acme"))
    assert raw is not None
    written = RateState.from_bytes(raw).rate_per_s
    assert 90.0 <= written < 92.0  # cut to 90, then probing (the first admission waited)
    first.revoke([0])
    second = make(store)
    await second.admit(event("r2"), 0)
    assert rate(second) == pytest.approx(written)


async def test_headers_with_a_window_set_the_ceiling(make: Make) -> None:
    limiter = make()
    await limiter.admit(event(), 0)
    info = RateLimitInfo(limit=3000, remaining=2999, reset_after_s=59.0, window_s=60.0)
    limiter.observe(event(), 0, {"requests": info})
    assert rate(limiter) == pytest.approx(50.0)
