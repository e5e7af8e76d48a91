"""Probe p9 (security review 2026-12-02, findings 2, 3, 5 and 6): fairness and backpressure.

The probe's five scenarios, on the same pieces it used: the stage loop, the real ``Caller``
and ``Limiter``, with a fake consumer (two partitions), a fake gateway and a recording
producer. What the review measured on the old main is quoted with each test.

- 2: a flood for a slow provider pauses its own partition; the other partition's requests
  are still read and called (old: no call for ``victim/fast`` after 6 s).
- 6: requests for an undeclared operation are refused before they spend a token (old: the
  valid request behind 10 of them was called at 5.51 s).
- 5 (priority): with a tenant table, a tenant's priority is capped (old: the victim's two
  earlier requests ran after all 10 of the noisy tenant's priority-9 ones).
- 5 (rotation): with a tenant table, made-up names share the ``default`` quota (old: 20 of 20
  rotating names went through a ``*`` rule of 3 a minute).
- 2 (the review's fix): past its cap a tenant's flood is refused ``queue_full`` at once while
  another tenant still waits its turn; a request with no deadline waits at most
  ``limiter.default_max_wait_s`` (old: no cap, and no deadline meant waiting for ever).
- 3: requests over a queueing quota wait in the timer table and hold no pending place (old:
  1 call in 3 s, 20 pending, no victim call).

Without a tenant table, tenant and priority are what the publisher writes: README,
"Tenants" ("a publisher can name another tenant, rotate names past a "*" quota, or mark
everything 9").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.provider_caller.tenancy import TenantGate, TenantTable
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore, WaitCaps
from providers.auth.request import PreparedRequest
from providers.errors import UnknownOperation
from providers.response import ProviderReply
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.metrics import Metrics
from streams.settings import QuotaRule, TenantSettings
from streams.stage.delays import DelayLine
from streams.stage.loop import StageLoop
from streams.stage.no_return import PointOfNoReturn
from streams.stage.publisher import OutcomePublisher
from tests.unit.streams.stage.fakes import TP0, TP1, FakeConsumer, FakeSender, Limits, wait_until
from tests.unit.streams.stage.test_delays import MemoryTable

CODECS = Codecs()
NOW_MS = 1_700_000_000_000


class Gateway:
    """Builds like ``Provider.build_request`` (refuses an undeclared operation, no I/O) and
    answers every call at once, noting when and for whom."""

    provider_names = frozenset({"slow", "fast"})

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.calls: list[tuple[float, str, str]] = []
        self.built = 0

    def build(self, request: RequestEvent) -> PreparedRequest:
        self.built += 1
        if request.operation != "op":
            raise UnknownOperation(f"{request.provider} has no operation {request.operation!r}")
        return PreparedRequest("GET", f"http://{request.provider}.test/op")

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        self.calls.append((time.monotonic() - self.started, request.tenant, request.provider))
        return ProviderReply(200, b"{}")

    def tenants_called(self, provider: str | None = None) -> list[str]:
        return [tenant for _, tenant, name in self.calls if provider in (None, name)]


class Consumer(FakeConsumer):
    def feed_events(self, tp: TopicPartition, events: Sequence[RequestEvent]) -> None:
        """One batch holding ``events`` as the records a publisher wrote."""
        batch = [
            ConsumerRecord(
                topic=tp.topic, partition=tp.partition, offset=offset, timestamp=NOW_MS,
                timestamp_type=0, key=None, value=CODECS.request.encode(event), checksum=None,
                serialized_key_size=0, serialized_value_size=0, headers=(),
            )
            for offset, event in enumerate(events)
        ]  # fmt: skip
        self._batches.append(({tp: batch}, None))
        self._fed.set()


@dataclass
class Worker:
    loop: StageLoop
    consumer: Consumer
    gateway: Gateway
    sender: FakeSender
    limiter: Limiter
    runner: asyncio.Task[None] | None = None
    outcomes: list[ResultEvent | DeadLetterEvent] = field(default_factory=list)

    def decoded(self) -> list[ResultEvent | DeadLetterEvent]:
        out: list[ResultEvent | DeadLetterEvent] = []
        for topic, value, _ in self.sender.sent:
            assert value is not None
            codec = CODECS.dead_letter if topic == "dlq" else CODECS.result
            out.append(codec.decode(value))
        return out


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await worker.loop.stop()
        if worker.runner is not None:
            worker.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.runner
        worker.limiter.close()


async def start(
    workers: list[Worker],
    *,
    max_pending: int = 1000,
    slow_per_s: float = 2.0,
    quotas: Sequence[QuotaRule] = (),
    tenants: dict[str, TenantSettings] | None = None,
    partitions: Sequence[TopicPartition] = (TP0, TP1),
    caps: WaitCaps | None = None,
) -> Worker:
    """A worker as the composition root builds one, over fakes."""
    metrics = Metrics.create(CollectorRegistry())
    book = LimitBook(
        {"slow": ProviderLimit(slow_per_s, 2), "fast": ProviderLimit(1000.0, 1000)}, quotas
    )
    limiter = Limiter(book, MemoryQuotaStore(), metrics, caps=caps or WaitCaps())
    limiter.assign({tp.partition for tp in partitions})
    gateway = Gateway()
    no_return = PointOfNoReturn()
    caller = Caller(
        gateway,
        CODECS.request,
        limiter=limiter,
        no_return=no_return,
        tenancy=TenantGate(TenantTable(tenants), CODECS.request.encode) if tenants else None,
        delays=CODECS.delayed,
        encode_request=CODECS.request.encode,
        quota_jitter_ms=0,
    )
    sender = FakeSender()
    publisher = OutcomePublisher(
        sender, CODECS, metrics, results_topic="results", dead_letter_topic="dlq",
        known_providers=gateway.provider_names, retry_backoff_s=0.001,
    )  # fmt: skip
    consumer = Consumer(partitions)
    loop = StageLoop(
        consumer,
        caller,
        publisher,
        metrics,
        Limits(max_pending=max_pending, max_pending_per_partition=max_pending),
        no_return=no_return,
        commit_metadata=False,
        delays=DelayLine(MemoryTable()),
    )
    worker = Worker(loop, consumer, gateway, sender, limiter)
    workers.append(worker)
    await loop.on_assigned(set(partitions))
    worker.runner = asyncio.create_task(loop.run())
    return worker


def requests(count: int, tenant: str, provider: str, **fields: object) -> list[RequestEvent]:
    return [
        RequestEvent(tenant=tenant, provider=provider, operation="op", **fields)  # type: ignore[arg-type]
        for _ in range(count)
    ]


async def test_a_flood_for_a_slow_provider_does_not_stop_another_partition(
    workers: list[Worker],
) -> None:
    # Old main: "noisy/slow: 12 calls ... no call for victim/fast", 19 pending after 6 s.
    worker = await start(workers, max_pending=20)
    worker.consumer.feed_events(TP0, requests(40, "noisy", "slow"))
    worker.consumer.feed_events(TP1, requests(5, "victim", "fast"))

    await wait_until(lambda: len(worker.gateway.tenants_called("fast")) == 5, timeout_s=2)
    assert TP0 in worker.consumer.pauses, "the flood's partition pauses at its share"
    assert TP1 not in worker.consumer.pauses
    assert worker.loop.in_flight <= 20
    assert len(worker.gateway.tenants_called("slow")) <= 2, "the slow key keeps its rate"


async def test_requests_for_an_undeclared_operation_spend_no_token(workers: list[Worker]) -> None:
    # Old main: the valid request behind 10 `nope` ones was called at 5.51 s (2 tokens/s).
    worker = await start(workers, partitions=(TP0,))
    junk = [RequestEvent(tenant="noisy", provider="slow", operation="nope") for _ in range(10)]
    worker.consumer.feed_events(TP0, [*junk, *requests(1, "victim", "slow")])

    await wait_until(lambda: len(worker.gateway.calls) == 1, timeout_s=2)
    assert worker.gateway.calls[0][0] < 1.5, "no wait for the ten refused requests' tokens"
    await wait_until(lambda: len(worker.sender.sent) == 11)
    letters = [o for o in worker.decoded() if isinstance(o, DeadLetterEvent)]
    assert Counter((d.reason, d.stage) for d in letters) == {("unknown_operation", "admission"): 10}


async def test_a_tenant_table_caps_priority_so_earlier_requests_are_not_overtaken(
    workers: list[Worker],
) -> None:
    # Old main: the victim's 2 requests ran only after all 10 of noisy's priority-9 ones.
    tenants = {"noisy": TenantSettings(max_priority=5), "victim": TenantSettings()}
    worker = await start(workers, slow_per_s=20.0, tenants=tenants, partitions=(TP0,))
    noisy = requests(10, "noisy", "slow", priority=9)
    worker.consumer.feed_events(TP0, [*requests(2, "victim", "slow"), *noisy])

    await wait_until(lambda: len(worker.gateway.calls) == 12, timeout_s=3)
    order = worker.gateway.tenants_called()
    assert order[:3].count("victim") == 2, order
    results = [o for o in worker.decoded() if isinstance(o, ResultEvent)]
    assert {r.status for r in results} == {"ok"} and len(results) == 12


async def test_rotating_made_up_tenant_names_share_the_default_quota(workers: list[Worker]) -> None:
    # Old main: `noisy` got 3 ok and 17 rejected; noisy-0 ... noisy-19 got 20 of 20 ok.
    quota = [QuotaRule(tenant="*", provider="*", per_minute=3)]
    worker = await start(workers, quotas=quota, tenants={"shop-eu": TenantSettings()})
    # One partition: the one that owns the `fast` key, and so its quota counts.
    worker.consumer.feed_events(TP0, requests(20, "noisy", "fast"))
    worker.consumer.feed_events(
        TP0, [RequestEvent(tenant=f"noisy-{i}", provider="fast", operation="op") for i in range(20)]
    )

    await wait_until(lambda: len(worker.sender.sent) == 40, timeout_s=3)
    results = worker.decoded()
    assert all(isinstance(r, ResultEvent) for r in results)
    by_status = Counter((r.tenant, r.status, r.reason) for r in results)  # type: ignore[union-attr]
    assert by_status == {
        ("default", "ok", None): 3,
        ("default", "rejected", "quota_exceeded"): 37,
    }, "both floods are charged as `default`, whatever names they wrote"
    assert len(worker.gateway.calls) == 3


async def test_requests_over_a_queueing_quota_hold_no_pending_place(workers: list[Worker]) -> None:
    # Old main: "1 call in 3 s, 20 pending, 0 victim calls" (max_pending=20).
    quota = [QuotaRule(tenant="noisy", provider="*", per_minute=1, on_exceed="queue")]
    worker = await start(workers, max_pending=20, quotas=quota)
    worker.consumer.feed_events(TP0, requests(25, "noisy", "fast"))
    worker.consumer.feed_events(TP1, requests(5, "victim", "fast"))

    await wait_until(lambda: len(worker.gateway.tenants_called("fast")) == 6, timeout_s=2)
    assert Counter(worker.gateway.tenants_called()) == {"noisy": 1, "victim": 5}
    # The other 24 wait for the next window in the timer table, not in a pending place.
    await wait_until(
        lambda: worker.loop.in_flight == 0 and not worker.loop.paused_partitions, timeout_s=2
    )
    await worker.loop.commit()
    assert worker.consumer.committed_offset(TP0) == 25
    assert worker.consumer.committed_offset(TP1) == 5


async def test_past_its_cap_a_tenants_flood_is_refused_queue_full_and_others_still_wait(
    workers: list[Worker],
) -> None:
    caps = WaitCaps(per_key=100, per_tenant=3)
    worker = await start(workers, slow_per_s=20.0, caps=caps, partitions=(TP0,))
    worker.consumer.feed_events(
        TP0, [*requests(10, "noisy", "slow"), *requests(1, "victim", "slow")]
    )

    await wait_until(lambda: len(worker.sender.sent) == 11, timeout_s=3)
    by_tenant = Counter((r.tenant, r.status, r.reason) for r in worker.decoded())  # type: ignore[union-attr]
    assert by_tenant == {
        ("noisy", "ok", None): 3,
        ("noisy", "rejected", "queue_full"): 7,
        ("victim", "ok", None): 1,
    }


async def test_a_request_without_a_deadline_waits_at_most_the_default_maximum(
    workers: list[Worker],
) -> None:
    caps = WaitCaps(default_max_wait_s=0.3)
    worker = await start(workers, slow_per_s=0.5, caps=caps, partitions=(TP0,))
    worker.consumer.feed_events(TP0, requests(3, "noisy", "slow"))  # no deadline_at_ms

    await wait_until(lambda: len(worker.sender.sent) == 3, timeout_s=3)
    statuses = Counter((r.status, r.reason) for r in worker.decoded())  # type: ignore[union-attr]
    assert statuses == {("expired", "max_wait_exceeded"): 3}, (
        "the empty bucket's first token is 2 s away"
    )
    assert worker.gateway.calls == []
