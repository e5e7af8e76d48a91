"""Caller with the response cache: hits spend nothing, concurrent misses make one call, 304s
refresh, stale entries answer within their windows (issue 23). L1 only, a scripted gateway."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from agents.cache.policy import make_cache
from agents.cache.response_cache import ResponseCache
from agents.cache.tiers import CacheTiers
from agents.provider_caller.caller import Caller
from agents.provider_caller.prefetch_budget import PrefetchBudget
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from providers.auth.request import PreparedRequest
from providers.declaration import CacheSpec, OperationSpec, ParamSpec
from providers.errors import ProviderError, ProviderUnavailable
from providers.response import ProviderReply
from schemas.models import RequestEvent, ResultEvent, ResultStatus
from streams.metrics import Metrics
from streams.settings import QuotaRule
from streams.stage.records import Outcome, Settled, SourceRecord
from tests.unit.agents.provider_caller.test_caller import JsonDecoder

T0 = 1_700_000_000.0
_ITEM = {"item_id": ParamSpec(pattern="[a-z0-9]+")}
OPERATIONS = {
    ("fake", "get_item"): OperationSpec(
        path="/items/{item_id}",
        path_params=_ITEM,
        cache=CacheSpec(ttl_s=10, stale_while_revalidate_s=5, stale_if_error_s=100),
    ),
    ("fake", "strict"): OperationSpec(
        path="/items/{item_id}", path_params=_ITEM, cache=CacheSpec(ttl_s=10)
    ),
    ("fake", "lasting"): OperationSpec(
        path="/items/{item_id}", path_params=_ITEM, cache=CacheSpec(ttl_s=10, stale_if_error_s=100)
    ),
    ("fake", "echo"): OperationSpec(method="POST", path="/echo"),
}
OK = ProviderReply(
    200, b'{"v":1}', {"content-type": "application/json", "etag": '"v1"'}, provider="fake"
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


class Gateway:
    """Answers from a script; ``hold`` keeps every call waiting until set."""

    provider_names = frozenset({"fake"})

    def __init__(self, *answers: ProviderReply | ProviderError) -> None:
        self.answers = list(answers)
        self.sent: list[PreparedRequest] = []
        self.hold = asyncio.Event()
        self.hold.set()

    def build(self, request: RequestEvent) -> PreparedRequest:
        return PreparedRequest("GET", f"http://fake.test/{request.params.get('item_id', '')}")

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        self.sent.append(prepared)
        await self.hold.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ProviderError):
            raise answer
        return answer


def build(gateway: Gateway, clock: Clock, **kwargs: object) -> Caller:
    metrics = Metrics.create(CollectorRegistry())
    tiers = CacheTiers(make_cache("s3fifo", 1 << 20), None, metrics, l2_max_bytes=0)
    cache = ResponseCache(OPERATIONS, tiers, metrics, max_entry_bytes=1 << 16, clock=clock)
    return Caller(gateway, JsonDecoder(), clock_ms=clock.ms, cache=cache, **kwargs)  # type: ignore[arg-type]


def record(operation: str = "get_item", item: str = "a", **fields: object) -> SourceRecord:
    request = RequestEvent(
        provider="fake",
        operation=operation,
        params={"item_id": item} if operation != "echo" else {},
        **fields,  # type: ignore[arg-type]
    )
    return SourceRecord("requests", 0, 1, request.model_dump_json().encode())


def result_of(outcome: object) -> ResultEvent:
    assert isinstance(outcome, Outcome), outcome
    assert isinstance(outcome.event, ResultEvent), outcome.event
    return outcome.event


async def test_a_fresh_entry_answers_without_a_call() -> None:
    clock, gateway = Clock(), Gateway(OK)
    caller = build(gateway, clock)
    first = result_of(await caller.handle(record()))
    clock.now += 3
    second = result_of(await caller.handle(record()))
    assert first.status == ResultStatus.OK
    assert (second.status, second.cache_tier, second.cache_age_ms) == ("cached", "l1", 3000)
    assert second.body == OK.body and second.request_id != first.request_id
    assert len(gateway.sent) == 1


async def test_operations_without_cache_call_every_time() -> None:
    clock, gateway = Clock(), Gateway(OK)
    caller = build(gateway, clock)
    for _ in range(3):
        assert result_of(await caller.handle(record("echo"))).status == ResultStatus.OK
    assert len(gateway.sent) == 3


async def test_tenants_do_not_share_private_entries() -> None:
    clock, gateway = Clock(), Gateway(OK)
    caller = build(gateway, clock)
    await caller.handle(record(tenant="alice"))
    bob = result_of(await caller.handle(record(tenant="bob")))
    alice = result_of(await caller.handle(record(tenant="alice")))
    assert (bob.status, alice.status) == ("ok", "cached")
    assert len(gateway.sent) == 2


async def test_two_hundred_concurrent_misses_make_one_call() -> None:
    clock, gateway = Clock(), Gateway(OK)
    gateway.hold.clear()
    caller = build(gateway, clock)
    records = [record() for _ in range(200)]
    tasks = [asyncio.create_task(caller.handle(r)) for r in records]
    await asyncio.sleep(0.01)
    assert len(gateway.sent) == 1
    gateway.hold.set()
    results = [result_of(o) for o in await asyncio.gather(*tasks)]
    assert Counter((r.status, r.cache_tier) for r in results) == {
        ("ok", None): 1,
        ("cached", "coalesced"): 199,
    }
    assert len({r.request_id for r in results}) == 200
    assert {r.body for r in results} == {OK.body}


async def test_waiters_share_the_failure_and_each_decide_their_own_outcome() -> None:
    clock, gateway = Clock(), Gateway(ProviderUnavailable("down", http_status=503))
    gateway.hold.clear()
    caller = build(gateway, clock)
    tasks = [asyncio.create_task(caller.handle(record())) for _ in range(5)]
    await asyncio.sleep(0.01)
    gateway.hold.set()
    results = [result_of(o) for o in await asyncio.gather(*tasks)]
    assert {r.status for r in results} == {"failed"}
    assert len({r.request_id for r in results}) == 5
    assert len(gateway.sent) == 1


async def test_a_304_refreshes_the_expired_entry() -> None:
    clock = Clock()
    gateway = Gateway(OK, ProviderReply(304, b"", {"etag": '"v1"'}, provider="fake"))
    caller = build(gateway, clock)
    await caller.handle(record("strict"))
    clock.now += 11  # past ttl_s, no stale window
    refreshed = result_of(await caller.handle(record("strict")))
    assert gateway.sent[1].headers.get("If-None-Match") == '"v1"'
    assert (refreshed.status, refreshed.cache_tier) == ("cached", "revalidated")
    assert refreshed.body == OK.body and refreshed.http_status == 200
    clock.now += 5
    assert result_of(await caller.handle(record("strict"))).cache_tier == "l1"  # fresh again
    assert len(gateway.sent) == 2


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once() -> None:
    clock = Clock()
    new = ProviderReply(200, b'{"v":2}', {"etag": '"v2"'}, provider="fake")
    gateway = Gateway(OK, new)
    caller = build(gateway, clock)
    await caller.handle(record())
    clock.now += 12  # within the 5 s stale-while-revalidate window after ttl_s = 10
    stale = [result_of(await caller.handle(record())) for _ in range(3)]
    assert {r.status for r in stale} == {"stale"} and {r.body for r in stale} == {OK.body}
    await asyncio.sleep(0.01)  # the background refresh
    assert len(gateway.sent) == 2  # one refresh for the three
    fresh = result_of(await caller.handle(record()))
    assert (fresh.status, fresh.body) == ("cached", b'{"v":2}')


async def test_stale_if_error_answers_for_a_failing_provider() -> None:
    clock = Clock()
    gateway = Gateway(OK, ProviderUnavailable("down", http_status=503))
    caller = build(gateway, clock)
    await caller.handle(record("lasting"))
    clock.now += 50  # expired, within stale_if_error_s
    answered = result_of(await caller.handle(record("lasting")))
    assert (answered.status, answered.body) == ("stale", OK.body)
    assert answered.reason == "provider_unavailable" or answered.reason
    clock.now += 100  # past it: the failure is the outcome
    assert result_of(await caller.handle(record("lasting"))).status == "failed"


async def test_no_store_answers_are_passed_on_not_kept() -> None:
    clock = Clock()
    gateway = Gateway(ProviderReply(200, b"x", {"cache-control": "no-store"}, provider="fake"))
    caller = build(gateway, clock)
    for _ in range(2):
        assert result_of(await caller.handle(record())).status == "ok"
    assert len(gateway.sent) == 2


async def test_a_hit_takes_no_token() -> None:
    clock, gateway = Clock(), Gateway(OK)
    limiter, metrics = _limiter()
    caller = build(gateway, clock, limiter=limiter)
    await caller.handle(record())
    hits = [result_of(await caller.handle(record())) for _ in range(5)]
    assert {h.status for h in hits} == {"cached"}
    assert len(gateway.sent) == 1
    admitted = metrics.registry.get_sample_value(
        "callstream_limiter_wait_seconds_count", {"provider": "fake"}
    )
    assert admitted == 1  # only the call went through the limiter


@pytest.mark.parametrize(("count_hits", "cached"), [(False, 5), (True, 2)])
async def test_hits_count_toward_the_quota_only_if_told(count_hits: bool, cached: int) -> None:
    clock, gateway = Clock(), Gateway(OK)
    quota = QuotaRule(tenant="t1", provider="fake", per_minute=3)
    limiter, _ = _limiter(quota)
    caller = build(gateway, clock, limiter=limiter, cache_hits_count_toward_quota=count_hits)
    await caller.handle(record(tenant="t1"))
    hits = [result_of(await caller.handle(record(tenant="t1"))) for _ in range(5)]
    statuses = Counter(str(h.status) for h in hits)
    assert statuses["cached"] == cached
    assert statuses["rejected"] == 5 - cached
    assert {h.reason for h in hits if h.status == "rejected"} <= {"quota_exceeded"}


def _limiter(*quotas: QuotaRule) -> tuple[Limiter, Metrics]:
    """A limiter on the real clock (a bucket taken over starts empty: the first call waits for
    its first token, a few ms at this rate)."""
    limits = {"fake": ProviderLimit(rate_per_s=500, burst=1)}
    book = LimitBook(limits, quotas, jitter_s=0.0)
    metrics = Metrics.create(CollectorRegistry())
    limiter = Limiter(book, MemoryQuotaStore(), metrics, clock=time.time)
    limiter.assign([0])
    return limiter, metrics


def test_decoder_is_json() -> None:  # the shared stand-in reads what record() writes
    assert JsonDecoder().decode(json.dumps({"provider": "p", "operation": "o"}).encode())


class Accesses:
    """An AccessLog stand-in: what the cache told the predictive cache."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str, bytes | None]] = []

    def record(self, key: bytes, kind: str, **fields: object) -> None:
        request = fields.get("request")
        self.seen.append((key, str(kind), request if isinstance(request, bytes) else None))


def prefetching(
    gateway: Gateway, clock: Clock, budget: PrefetchBudget | None = None, **kwargs: object
) -> tuple[Caller, Accesses, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    tiers = CacheTiers(make_cache("s3fifo", 1 << 20), None, metrics, l2_max_bytes=0)
    accesses = Accesses()
    cache = ResponseCache(
        OPERATIONS,
        tiers,
        metrics,
        max_entry_bytes=1 << 16,
        clock=clock,
        access=accesses,  # type: ignore[arg-type]
    )
    if budget is None:  # ten prefetches in hand (the key is "fake": no limiter, no shards)
        budget = PrefetchBudget(1.0, 0.0, clock=clock)
        for _ in range(10):
            budget.called("fake")
    caller = Caller(
        gateway,
        JsonDecoder(),
        clock_ms=clock.ms,
        cache=cache,
        prefetch_budget=budget,
        **kwargs,  # type: ignore[arg-type]
    )
    return caller, accesses, metrics


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_prefetch_refreshes_the_entry_and_publishes_nothing() -> None:
    clock = Clock()
    new = ProviderReply(200, b'{"v":2}', {"etag": '"v2"'}, provider="fake")
    gateway = Gateway(OK, new)
    caller, accesses, metrics = prefetching(gateway, clock)
    first = record()
    await caller.handle(first)
    clock.now += 9  # shortly before ttl_s = 10 runs out
    settled = await caller.handle(record(prefetch=True, priority=0))
    assert settled == Settled("refreshed")
    assert gateway.sent[1].headers.get("If-None-Match") == '"v1"'  # conditional
    clock.now += 5  # past the first copy's expiry: the refreshed one answers
    hit = result_of(await caller.handle(record()))
    assert (hit.status, hit.body) == ("cached", b'{"v":2}')
    kinds = [kind for _, kind, _ in accesses.seen]
    assert kinds == ["fill", "prefetch", "hit"]
    assert accesses.seen[0][2] == first.value  # the fill carries the request's own bytes
    assert counted(metrics, "callstream_prefetch_calls_total", provider="fake", result="refreshed")
    assert counted(metrics, "callstream_prefetch_used_total", provider="fake") == 1


async def test_a_prefetch_never_read_is_wasted() -> None:
    clock = Clock()
    caller, _, metrics = prefetching(Gateway(OK), clock)
    await caller.handle(record())
    await caller.handle(record(prefetch=True, priority=0))
    await caller.handle(record(prefetch=True, priority=0))  # refreshed again, unread
    assert counted(metrics, "callstream_prefetch_wasted_total", provider="fake") == 1


async def test_a_prefetch_takes_only_a_spare_token() -> None:
    clock = Clock()
    gateway = Gateway(OK)
    limiter, _ = _limiter()
    caller, _, metrics = prefetching(gateway, clock, limiter=limiter)
    await caller.handle(record())  # spends the burst of 1
    settled = await caller.handle(record(prefetch=True, priority=0))
    assert settled == Settled("quota")
    assert len(gateway.sent) == 1
    skipped = counted(metrics, "callstream_prefetch_skipped_total", provider="fake", reason="quota")
    assert skipped == 1


async def test_a_prefetch_within_its_budget_only() -> None:
    clock = Clock()
    gateway = Gateway(OK)
    budget = PrefetchBudget(0.0, 0.0, clock=clock)  # nothing to spend
    caller, _, _ = prefetching(gateway, clock, budget)
    await caller.handle(record())
    assert await caller.handle(record(prefetch=True, priority=0)) == Settled("budget")
    assert len(gateway.sent) == 1


async def test_requests_wait_for_a_prefetch_in_flight_and_a_second_prefetch_is_skipped() -> None:
    clock = Clock()
    gateway = Gateway(OK)
    caller, _, _ = prefetching(gateway, clock)
    gateway.hold.clear()
    prefetch = asyncio.create_task(caller.handle(record(prefetch=True, priority=0)))
    await asyncio.sleep(0.01)
    assert await caller.handle(record(prefetch=True, priority=0)) == Settled("in_flight")
    waiting = asyncio.create_task(caller.handle(record()))
    await asyncio.sleep(0.01)
    gateway.hold.set()
    assert await prefetch == Settled("refreshed")
    assert result_of(await waiting).cache_tier == "coalesced"
    assert len(gateway.sent) == 1


async def test_an_expired_prefetch_ends_quietly() -> None:
    clock = Clock()
    caller, _, _ = prefetching(Gateway(OK), clock)
    expired = record(prefetch=True, priority=0, deadline_at_ms=clock.ms() - 1)
    assert await caller.handle(expired) == Settled("expired")


async def test_a_revalidation_is_told_as_a_fill_not_as_a_read() -> None:
    clock = Clock()
    gateway = Gateway(OK, ProviderReply(304, b"", {"etag": '"v1"'}, provider="fake"))
    caller, accesses, _ = prefetching(gateway, clock)
    await caller.handle(record("strict"))
    clock.now += 11  # expired, no stale window: the next request revalidates
    assert result_of(await caller.handle(record("strict"))).cache_tier == "revalidated"
    assert [kind for _, kind, _ in accesses.seen] == ["fill", "fill"]
