"""Caller with retries: a retriable failure becomes a durable delay, taken up again until it
succeeds or the planner gives up; a queueing quota delays the same way."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from agents.retry.planner import RetryPlanner
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited
from providers.response import ProviderReply
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, DelayedRequest, RequestEvent, ResultEvent
from streams.metrics import Metrics
from streams.settings import QuotaRule, RetrySettings
from streams.stage.records import Delay, Outcome, SourceRecord

from .test_caller import NOW_MS, JsonDecoder, ScriptedGateway

CODECS = Codecs()
SPEC = ProviderSpec.model_validate({
    "name": "fake", "base_url": "http://127.0.0.1:9",
    "operations": {
        "get_item": {"path": "/items/{item_id}"},
        "create_item": {"method": "POST", "path": "/items"},
        "create_safely": {"method": "POST", "path": "/items", "idempotent": True},
        "get_twice": {"path": "/items/{item_id}", "max_attempts": 2},
    },
})  # fmt: skip
PROVIDERS = {"fake": Provider(SPEC, signer=NoAuthSigner())}


class SequenceGateway(ScriptedGateway):
    """Answers from a list, one per call; the last answer repeats."""

    def __init__(self, *answers: ProviderReply | BaseException) -> None:
        super().__init__(answers[0])
        self.answers = list(answers)

    async def call(self, request, prepared):  # type: ignore[no-untyped-def]
        self.answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return await super().call(request, prepared)


class Clock:
    def __init__(self) -> None:
        self.ms = NOW_MS

    def __call__(self) -> int:
        return self.ms


def ok() -> ProviderReply:
    return ProviderReply(status=200, body=b"{}", headers={}, latency_s=0.01)


def build(
    gateway: ScriptedGateway,
    clock: Clock,
    *,
    limiter: Limiter | None = None,
    **retry: object,
) -> tuple[Caller, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    planner = RetryPlanner(
        RetrySettings(**retry),  # type: ignore[arg-type]
        PROVIDERS,
        metrics,
        clock=lambda: clock.ms / 1000,
        draw=lambda: 0.5,
    )
    caller = Caller(
        gateway,
        JsonDecoder(),
        clock_ms=clock,
        retries=planner,
        delays=CODECS.delayed,
        encode_request=CODECS.request.encode,
        limiter=limiter,
    )
    return caller, metrics


def record(operation: str = "get_item", **fields: object) -> SourceRecord:
    params = {} if operation.startswith("create") else {"item_id": "1"}
    given: dict[str, object] = {"request_id": "r1", "created_at_ms": NOW_MS - 5, **fields}
    request = RequestEvent(
        provider="fake",
        operation=operation,
        params=params,
        **given,  # type: ignore[arg-type]
    )
    return SourceRecord("requests", 3, 42, request.model_dump_json().encode())


def delayed(outcome: object) -> DelayedRequest:
    assert isinstance(outcome, Delay), outcome
    return CODECS.delayed.decode(outcome.payload)


async def test_a_timeout_is_delayed_with_its_history_then_succeeds_on_resume() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderTimeout("slow"), ok())
    caller, metrics = build(gateway, clock)

    first = await caller.handle(record())
    assert isinstance(first, Delay)
    assert (first.key, first.kind) == (b"r1", "retry")
    assert first.due_ms == NOW_MS + 100, "half (draw 0.5) of base_delay_s 0.2 for attempt 1"
    waiting = delayed(first)
    assert waiting.request.attempt == 2
    assert [a.attempt for a in waiting.attempts] == [1]
    assert waiting.attempts[0].error_type == "ProviderTimeout"
    assert (waiting.source_topic, waiting.source_partition, waiting.source_offset) == (
        "requests", 3, 42,
    )  # fmt: skip

    clock.ms = first.due_ms + 7
    done = await caller.resume(3, first.payload)
    assert isinstance(done, Outcome) and isinstance(done.event, ResultEvent)
    assert (done.event.status, done.event.attempts) == ("ok", 2)
    assert [r.attempt for r in gateway.calls] == [1, 2], "the idempotency key rides along"
    sample = metrics.registry.get_sample_value
    assert sample("callstream_retries_total", {"provider": "fake", "reason": "timeout"}) == 1


async def test_retries_end_as_a_retry_dead_letter_with_every_attempt_and_delay() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderUnavailable("HTTP 503", http_status=503))
    caller, _ = build(gateway, clock, max_attempts=3)

    outcome: object = await caller.handle(record())
    for _ in range(2):
        assert isinstance(outcome, Delay)
        clock.ms = outcome.due_ms + 500  # the budget's floor earns a retry meanwhile
        outcome = await caller.resume(3, outcome.payload)
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    letter = outcome.event
    assert (letter.reason, letter.stage, letter.retriable) == ("retries_exhausted", "retry", True)
    assert [a.attempt for a in letter.attempts] == [1, 2, 3]
    assert [a.http_status for a in letter.attempts] == [503, 503, 503]
    assert letter.attempts[0].delay_ms == 0 and all(a.delay_ms >= 500 for a in letter.attempts[1:])
    assert "3 attempts" in letter.error_message or "max_attempts" in letter.error_message
    assert (letter.source_topic, letter.source_offset) == ("requests", 42)
    assert letter.original is not None and letter.original.attempt == 3
    assert CODECS.request.decode(letter.original_raw) == letter.original, "replayable"


async def test_an_operations_own_max_attempts_wins() -> None:
    clock = Clock()
    caller, _ = build(SequenceGateway(ProviderTimeout("slow")), clock, max_attempts=6)
    first = await caller.handle(record("get_twice"))
    clock.ms = delayed(first).delayed_at_ms + 1000
    assert isinstance(first, Delay)
    second = await caller.resume(3, first.payload)
    assert isinstance(second, Outcome) and second.event.reason == "retries_exhausted"  # type: ignore[union-attr]


async def test_a_retry_after_is_honoured() -> None:
    clock = Clock()
    caller, _ = build(SequenceGateway(RateLimited("slow down", retry_after_s=2.0)), clock)
    first = await caller.handle(record())
    assert isinstance(first, Delay) and first.due_ms == NOW_MS + 2000


@pytest.mark.parametrize(
    ("operation", "error", "retried"),
    [
        ("create_item", ProviderTimeout("slow"), False),  # may have reached: not again
        ("create_item", RateLimited("429"), True),  # refused before processing
        ("create_item", ProviderUnavailable.unreached("connection refused"), True),
        ("create_safely", ProviderTimeout("slow"), True),  # declared idempotent
    ],
)
async def test_a_call_that_is_not_idempotent_is_retried_only_while_it_cannot_have_reached(
    operation: str, error: ProviderError, retried: bool
) -> None:
    caller, metrics = build(SequenceGateway(error), Clock())
    outcome = await caller.handle(record(operation))
    if retried:
        assert isinstance(outcome, Delay)
    else:
        assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
        assert (outcome.event.reason, outcome.event.stage) == ("unsafe_to_retry", "retry")
        refused = metrics.registry.get_sample_value(
            "callstream_retries_refused_total", {"provider": "fake", "reason": "unsafe_to_retry"}
        )
        assert refused == 1


async def test_a_retry_past_the_deadline_is_not_scheduled() -> None:
    caller, _ = build(SequenceGateway(RateLimited("429", retry_after_s=30.0)), Clock())
    outcome = await caller.handle(record(deadline_at_ms=NOW_MS + 10_000))
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    assert outcome.event.reason == "retries_exhausted"
    assert "deadline" in outcome.event.error_message


async def test_with_no_retry_budget_a_due_retry_ends_unsent() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderTimeout("slow"))
    caller, metrics = build(gateway, clock, budget_ratio=0.0, budget_min_per_s=0.0)
    first = await caller.handle(record())
    assert isinstance(first, Delay), "planned: the budget is spent when a retry is sent"
    clock.ms = first.due_ms
    outcome = await caller.resume(3, first.payload)
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    letter = outcome.event
    assert (letter.reason, letter.stage) == ("retry_budget_exceeded", "retry")
    assert (letter.error_type, len(letter.attempts)) == ("ProviderTimeout", 1)
    assert len(gateway.calls) == 1, "never sent"
    refused = metrics.registry.get_sample_value(
        "callstream_retries_refused_total", {"provider": "fake", "reason": "retry_budget_exceeded"}
    )
    assert refused == 1


async def test_retries_over_the_budget_are_deferred_at_its_floor_rate_then_sent() -> None:
    clock = Clock()
    gateway = SequenceGateway(ProviderTimeout("slow"))
    caller, metrics = build(gateway, clock, budget_ratio=0.0, budget_min_per_s=2.0)
    firsts = [await caller.handle(record(request_id=f"r{n}")) for n in range(4)]
    assert all(isinstance(d, Delay) for d in firsts)
    gateway.answers = [ok()]
    clock.ms = max(d.due_ms for d in firsts)  # type: ignore[union-attr]
    # All due at once: the budget holds one retry (a new key's start) and 0.2 from the floor.
    outcomes = [await caller.resume(3, d.payload) for d in firsts]  # type: ignore[union-attr]
    sent = [o for o in outcomes if isinstance(o, Outcome)]
    deferred = [o for o in outcomes if isinstance(o, Delay)]
    assert len(sent) == 1 and len(deferred) == 3
    assert {d.kind for d in deferred} == {"retry_budget"}
    waits = sorted(d.due_ms - clock.ms for d in deferred)
    assert waits[0] >= 250 and waits[-1] <= 1500 * 3, "spread behind each other at 2/s"
    sample = metrics.registry.get_sample_value
    labels = {"provider": "fake", "reason": "retry_budget_deferred"}
    assert sample("callstream_retries_refused_total", labels) == 3

    clock.ms += 10_000  # the floor has earned them all
    again = [await caller.resume(3, d.payload) for d in deferred]
    assert all(isinstance(o, Outcome) and o.event.status == "ok" for o in again)  # type: ignore[union-attr]
    assert [r.attempt for r in gateway.calls].count(2) == 4, "each retried once, as attempt 2"


async def test_a_permanent_failure_is_never_retried() -> None:
    from providers.errors import NotFound

    caller, _ = build(SequenceGateway(NotFound("gone", http_status=404)), Clock())
    outcome = await caller.handle(record())
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    assert (outcome.event.reason, outcome.event.stage) == ("not_found", "caller")


async def test_an_unreadable_delay_becomes_a_dead_letter() -> None:
    caller, _ = build(SequenceGateway(ok()), Clock())
    outcome = await caller.resume(2, b"not a delay")
    assert isinstance(outcome, Outcome) and isinstance(outcome.event, DeadLetterEvent)
    assert (outcome.event.stage, outcome.event.original_raw) == ("retry", b"not a delay")


async def test_over_a_queueing_quota_a_request_waits_for_the_next_window_durably() -> None:
    clock = Clock()
    metrics = Metrics.create(CollectorRegistry())
    rule = QuotaRule(provider="fake", per_minute=1, on_exceed="queue")
    book = LimitBook({"fake": ProviderLimit(1000, 1000)}, [rule])
    limiter = Limiter(book, MemoryQuotaStore(), metrics, clock=lambda: clock.ms / 1000)
    limiter.assign([3])
    gateway = SequenceGateway(ok())
    caller, _ = build(gateway, clock, limiter=limiter)
    # A new owner's bucket starts empty and refills from its first use (another tenant's).
    warmup = asyncio.create_task(caller.handle(record(request_id="w", tenant="warm")))
    await asyncio.sleep(0.01)
    clock.ms += 5_000
    assert isinstance(await asyncio.wait_for(warmup, 1), Outcome)

    first = await caller.handle(record())
    assert isinstance(first, Outcome)
    second = await caller.handle(record(request_id="r2"))
    assert isinstance(second, Delay) and second.kind == "quota"
    window_end = (clock.ms // 60_000 + 1) * 60_000
    assert window_end <= second.due_ms <= window_end + 50
    assert delayed(second).request.attempt == 1 and delayed(second).attempts == []

    clock.ms = second.due_ms
    done = await caller.resume(3, second.payload)
    assert isinstance(done, Outcome) and done.event.status == "ok"  # type: ignore[union-attr]
    assert len(gateway.calls) == 3
    limiter.close()
