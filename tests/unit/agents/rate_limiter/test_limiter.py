"""Limiter: per-partition buckets, quotas and waiting rooms that follow the assignment.

The clock is a fake one the tests step by hand. The limiter's release loop sleeps in real time
for the clock's remaining wait, so every limit here is fast (100/s, a 10 ms interval) and no
test sleeps more than a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterable

import pytest
from prometheus_client import CollectorRegistry

from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import (
    DEFAULT_CAPS,
    Admission,
    Decision,
    Limiter,
    MemoryQuotaStore,
    WaitCaps,
)
from agents.rate_limiter.quota import Window
from schemas.models import RequestEvent
from streams.metrics import Metrics
from streams.settings import QuotaRule

START = 1_700_000_015.0  # 15 s into a UTC minute
INTERVAL_S = 0.01  # 100/s
BURST = 3
LIMITS = {"acme": ProviderLimit(rate_per_s=1 / INTERVAL_S, burst=BURST)}
SETTLE_S = 0.02  # long enough for the release loop to act on the clock at least once


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


LimiterFactory = Callable[..., Limiter]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create(CollectorRegistry())


@pytest.fixture
async def limiter_factory(clock: FakeClock, metrics: Metrics) -> AsyncIterator[LimiterFactory]:
    """Limiters over the fake clock with partition 0 assigned; closed at the end of the test."""
    made: list[Limiter] = []

    def make(
        quotas: Iterable[QuotaRule] = (),
        partitions: Iterable[int] = (0,),
        caps: WaitCaps = DEFAULT_CAPS,
        store: MemoryQuotaStore | None = None,
    ) -> Limiter:
        book = LimitBook(LIMITS, quotas, jitter_s=0.0)
        store = store if store is not None else MemoryQuotaStore()
        limiter = Limiter(book, store, metrics, clock=clock, caps=caps)
        limiter.assign(partitions)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()
    await asyncio.sleep(0)  # let the cancelled release loops end


@pytest.fixture
async def limiter(limiter_factory: LimiterFactory) -> Limiter:
    return limiter_factory()


def request(
    request_id: str = "r1",
    *,
    tenant: str = "t0",
    priority: int = 5,
    deadline_at: float | None = None,
) -> RequestEvent:
    deadline_ms = None if deadline_at is None else math.floor(deadline_at * 1000)
    return RequestEvent(
        provider="acme",
        operation="get_item",
        request_id=request_id,
        tenant=tenant,
        priority=priority,
        deadline_at_ms=deadline_ms,
    )


async def admitting(
    limiter: Limiter, event: RequestEvent, partition: int = 0
) -> asyncio.Task[Decision]:
    """Start admitting ``event`` and return once it reads the clock and waits (or is done)."""
    task = asyncio.create_task(limiter.admit(event, partition))
    await asyncio.sleep(0)
    return task


async def still_waiting(task: asyncio.Task[Decision]) -> bool:
    await asyncio.sleep(SETTLE_S)
    return not task.done()


async def fill(limiter: Limiter, clock: FakeClock) -> None:
    """Get past the empty start of a fresh partition: afterwards the bucket is full."""
    warmup = await admitting(limiter, request("warmup"))
    clock.advance(1.0)
    assert (await asyncio.wait_for(warmup, 1)).admission is Admission.GO
    clock.advance(1.0)


def refusals(metrics: Metrics, reason: str) -> float | None:
    labels = {"provider": "acme", "reason": reason}
    return metrics.registry.get_sample_value("callstream_limiter_refusals_total", labels)


async def test_admit_gives_go_at_once_while_the_bucket_has_tokens(
    limiter: Limiter, clock: FakeClock
) -> None:
    await fill(limiter, clock)
    for n in range(BURST):
        decision = await asyncio.wait_for(limiter.admit(request(f"r{n}"), 0), 0.5)
        assert decision.admission is Admission.GO
        assert decision.waited_s == 0.0
        assert decision.limit_key == limiter.limit_key(request())


async def test_a_request_over_the_rate_waits_until_a_token_is_due(
    limiter: Limiter, clock: FakeClock
) -> None:
    await fill(limiter, clock)
    for n in range(BURST):
        await asyncio.wait_for(limiter.admit(request(f"r{n}"), 0), 0.5)

    over = await admitting(limiter, request("over"))
    assert await still_waiting(over)
    clock.advance(INTERVAL_S)
    decision = await asyncio.wait_for(over, 1)
    assert decision.admission is Admission.GO
    assert decision.waited_s == pytest.approx(INTERVAL_S)


async def test_the_first_request_after_assignment_waits_for_the_bucket_to_refill(
    limiter: Limiter, clock: FakeClock
) -> None:
    first = await admitting(limiter, request())
    assert await still_waiting(first)
    clock.advance(INTERVAL_S)
    assert (await asyncio.wait_for(first, 1)).admission is Admission.GO


async def test_a_reassigned_partition_starts_with_an_empty_bucket(
    limiter: Limiter, clock: FakeClock
) -> None:
    await fill(limiter, clock)
    limiter.revoke([0])
    limiter.assign([0])
    first = await admitting(limiter, request())
    # The old owner's full bucket is not trusted: tokens may have been spent unrecorded.
    assert await still_waiting(first)
    clock.advance(INTERVAL_S)
    assert (await asyncio.wait_for(first, 1)).admission is Admission.GO


async def test_waiting_requests_are_released_in_priority_order(
    limiter: Limiter, clock: FakeClock
) -> None:
    released: list[str] = []
    progress = asyncio.Event()

    def note(name: str) -> Callable[[object], None]:
        def done(_: object) -> None:
            released.append(name)
            progress.set()

        return done

    for name, priority in (("low", 1), ("high", 9), ("mid", 5)):
        task = await admitting(limiter, request(name, priority=priority))
        task.add_done_callback(note(name))
    await asyncio.sleep(SETTLE_S)
    assert released == []

    for step in range(1, 4):  # one token per step: exactly one more request goes
        progress.clear()
        clock.advance(INTERVAL_S)
        await asyncio.wait_for(progress.wait(), 1)
        await asyncio.sleep(SETTLE_S)
        assert len(released) == step
    assert released == ["high", "mid", "low"]


async def test_tenants_waiting_on_one_key_take_turns_whatever_the_order_they_came_in(
    limiter: Limiter, clock: FakeClock
) -> None:
    released: list[str] = []
    progress = asyncio.Event()

    def note(tenant: str) -> Callable[[object], None]:
        def done(_: object) -> None:
            released.append(tenant)
            progress.set()

        return done

    # Tenant "flood" queues six first, then "trickle" two: fair share interleaves them.
    for i, tenant in enumerate(["flood"] * 6 + ["trickle"] * 2):
        task = await admitting(limiter, request(f"r{i}", tenant=tenant))
        task.add_done_callback(note(tenant))
    await asyncio.sleep(SETTLE_S)
    assert released == []

    for step in range(1, 5):  # one token per step
        progress.clear()
        clock.advance(INTERVAL_S)
        await asyncio.wait_for(progress.wait(), 1)
        await asyncio.sleep(SETTLE_S)
        assert len(released) == step
    assert released.count("trickle") == 2  # not after all six of the flood


async def test_a_waiting_request_whose_deadline_passes_is_expired(
    limiter: Limiter, clock: FakeClock, metrics: Metrics
) -> None:
    late = await admitting(limiter, request(deadline_at=clock.now + 0.005))
    assert await still_waiting(late)
    clock.advance(0.006)  # past the deadline, before the first token
    decision = await asyncio.wait_for(late, 1)
    assert (decision.admission, decision.reason) == (Admission.EXPIRED, "deadline_passed")
    assert refusals(metrics, "deadline_passed") == 1


async def test_a_request_over_its_quota_is_rejected_with_the_time_to_the_reset(
    limiter_factory: LimiterFactory, clock: FakeClock, metrics: Metrics
) -> None:
    limiter = limiter_factory([QuotaRule(tenant="t1", provider="acme", per_minute=1)])
    await fill(limiter, clock)
    first = await asyncio.wait_for(limiter.admit(request("a", tenant="t1"), 0), 0.5)
    assert first.admission is Admission.GO

    second = await asyncio.wait_for(limiter.admit(request("b", tenant="t1"), 0), 0.5)
    reset_at = Window.MINUTE.start(clock.now) + 60
    assert (second.admission, second.reason) == (Admission.REJECTED, "quota_exceeded")
    assert second.retry_after_s == pytest.approx(reset_at - clock.now)
    assert refusals(metrics, "quota_exceeded") == 1

    # The rejection spent no token: the other tenant still has the rest of the burst.
    for n in range(BURST - 1):
        other = await asyncio.wait_for(limiter.admit(request(f"o{n}"), 0), 0.5)
        assert (other.admission, other.waited_s) == (Admission.GO, 0.0)

    clock.now = reset_at
    again = await asyncio.wait_for(limiter.admit(request("c", tenant="t1"), 0), 0.5)
    assert again.admission is Admission.GO


async def test_a_queued_quota_is_delayed_until_the_window_resets_then_goes(
    limiter_factory: LimiterFactory, clock: FakeClock, metrics: Metrics
) -> None:
    rule = QuotaRule(tenant="t1", provider="acme", per_second=1, on_exceed="queue")
    limiter = limiter_factory([rule])
    await fill(limiter, clock)
    clock.now = math.floor(clock.now) + 0.99  # 10 ms before the second's window resets
    first = await asyncio.wait_for(limiter.admit(request("a", tenant="t1"), 0), 0.5)
    assert first.admission is Admission.GO

    # Decided at once: the caller keeps it in the timer table, not in the waiting room.
    queued = await asyncio.wait_for(limiter.admit(request("b", tenant="t1"), 0), 0.5)
    assert (queued.admission, queued.reason) == (Admission.DELAYED, "quota_queued")
    assert queued.retry_after_s == pytest.approx(0.01, abs=1e-6)
    assert refusals(metrics, "quota_queued") == 1
    assert limiter._partitions[0].waiting() == {}  # nothing in the waiting room

    clock.advance(0.02)  # its delay is due: admitted again from the start
    again = await asyncio.wait_for(limiter.admit(request("b", tenant="t1"), 0), 0.5)
    assert again.admission is Admission.GO


async def test_a_queued_quota_request_whose_deadline_comes_before_the_reset_expires(
    limiter_factory: LimiterFactory, clock: FakeClock, metrics: Metrics
) -> None:
    rule = QuotaRule(tenant="t1", provider="acme", per_second=1, on_exceed="queue")
    limiter = limiter_factory([rule])
    await fill(limiter, clock)
    clock.now = math.floor(clock.now) + 0.99
    await asyncio.wait_for(limiter.admit(request("a", tenant="t1"), 0), 0.5)

    late = request("b", tenant="t1", deadline_at=clock.now + 0.005)
    decision = await asyncio.wait_for(limiter.admit(late, 0), 0.5)
    assert (decision.admission, decision.reason) == (Admission.EXPIRED, "deadline_passed")
    assert refusals(metrics, "deadline_passed") == 1


async def test_a_queued_quota_resetting_after_the_default_maximum_wait_expires_at_once(
    limiter_factory: LimiterFactory, clock: FakeClock, metrics: Metrics
) -> None:
    rule = QuotaRule(tenant="t1", provider="acme", per_minute=1, on_exceed="queue")
    limiter = limiter_factory([rule], caps=WaitCaps(default_max_wait_s=10.0))
    await fill(limiter, clock)
    assert (await limiter.admit(request("a", tenant="t1"), 0)).admission is Admission.GO

    # The window resets 45 s later: past the 10 s a request without a deadline may wait.
    decision = await asyncio.wait_for(limiter.admit(request("b", tenant="t1"), 0), 0.5)
    assert (decision.admission, decision.reason) == (Admission.EXPIRED, "max_wait_exceeded")
    assert refusals(metrics, "max_wait_exceeded") == 1


async def test_requests_delayed_for_a_quota_reset_hold_no_waiting_room_place(
    limiter_factory: LimiterFactory, clock: FakeClock
) -> None:
    rule = QuotaRule(tenant="t1", provider="acme", per_second=1, on_exceed="queue")
    limiter = limiter_factory([rule], caps=WaitCaps(per_key=100, per_tenant=2))
    await fill(limiter, clock)
    clock.now = math.floor(clock.now) + 0.5
    assert (await limiter.admit(request("a", tenant="t1"), 0)).admission is Admission.GO
    decisions = [
        await asyncio.wait_for(limiter.admit(request(f"q{n}", tenant="t1"), 0), 0.5)
        for n in range(5)
    ]
    assert {d.admission for d in decisions} == {Admission.DELAYED}  # never queue_full
    assert limiter._partitions[0].waiting() == {}  # nothing in the waiting room
