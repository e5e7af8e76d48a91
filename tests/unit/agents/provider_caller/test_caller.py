"""Caller: every record becomes exactly one outcome, decided by what happened."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from providers.auth.request import PreparedRequest
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import (
    NotAllowed,
    NotFound,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    UnknownOperation,
)
from providers.http import ProviderClient
from providers.response import ProviderReply, RateLimitInfo
from schemas.errors import DecodeError
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.metrics import Metrics
from streams.stage.records import SourceRecord

NOW_MS = 1_700_000_000_000


class JsonDecoder:
    """Stands in for the Avro codec: JSON, with the same DecodeError contract."""

    def decode(self, raw: bytes) -> RequestEvent:
        try:
            return RequestEvent.model_validate(json.loads(raw))
        except ValueError as exc:
            raise DecodeError(str(exc), reason="undecodable") from None


class ScriptedGateway:
    provider_names = frozenset({"fake"})

    def __init__(
        self, answer: ProviderReply | BaseException, refusal: ProviderError | None = None
    ) -> None:
        self.answer = answer
        self.refusal = refusal  # what build() raises
        self.built: list[RequestEvent] = []
        self.calls: list[RequestEvent] = []

    def build(self, request: RequestEvent) -> PreparedRequest:
        self.built.append(request)
        if self.refusal is not None:
            raise self.refusal
        return PreparedRequest("GET", f"http://fake.test/{request.operation}")

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        assert prepared.url == f"http://fake.test/{request.operation}", "built before, sent as is"
        self.calls.append(request)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def record(**fields: object) -> SourceRecord:
    request = RequestEvent(
        provider="fake", operation="get_item", request_id="r1", created_at_ms=NOW_MS - 5, **fields
    )  # type: ignore[arg-type]
    return SourceRecord("requests", 3, 42, request.model_dump_json().encode())


def caller_for(gateway: ScriptedGateway, **kwargs: object) -> Caller:
    return Caller(gateway, JsonDecoder(), clock_ms=lambda: NOW_MS, **kwargs)  # type: ignore[arg-type]


async def test_success_becomes_ok_result_with_the_reply():
    gateway = ScriptedGateway(
        ProviderReply(200, b"{}", {"content-type": "application/json"}, latency_s=0.05, cost=0.01)
    )
    outcome = await caller_for(gateway).handle(record())
    event = outcome.event
    assert isinstance(event, ResultEvent)
    assert (event.status, event.http_status, event.body, event.cost) == ("ok", 200, b"{}", 0.01)
    assert event.latency_ms == pytest.approx(50)
    assert event.request_id == "r1" and event.attempts == 1


async def test_garbage_becomes_dead_letter_with_raw_bytes():
    gateway = ScriptedGateway(ProviderReply(200, b""))
    source = SourceRecord("requests", 0, 7, b"\x00garbage")
    outcome = await caller_for(gateway).handle(source)
    letter = outcome.event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage, letter.original_raw) == (
        "undecodable",
        "decode",
        b"\x00garbage",
    )
    assert (letter.source_partition, letter.source_offset) == (0, 7)
    assert gateway.calls == []


async def test_passed_deadline_is_expired_and_never_called():
    gateway = ScriptedGateway(ProviderReply(200, b""))
    outcome = await caller_for(gateway).handle(record(deadline_at_ms=NOW_MS - 1))
    assert isinstance(outcome.event, ResultEvent)
    assert outcome.event.status == "expired"
    assert gateway.calls == []


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (ProviderTimeout("slow"), "failed", "timeout"),
        (RateLimited("429", retry_after_s=2.0), "failed", "rate_limited"),
    ],
)
async def test_retriable_errors_become_failed_results(
    error: ProviderError, status: str, reason: str
):
    outcome = await caller_for(ScriptedGateway(error)).handle(record())
    assert isinstance(outcome.event, ResultEvent)
    assert (outcome.event.status, outcome.event.reason) == (status, reason)


async def test_permanent_error_becomes_dead_letter_with_attempt_history():
    outcome = await caller_for(ScriptedGateway(NotFound("gone", http_status=404))).handle(record())
    letter = outcome.event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage, letter.retriable) == ("not_found", "caller", False)
    assert letter.original is not None and letter.original.request_id == "r1"
    assert [a.http_status for a in letter.attempts] == [404]


async def test_reply_to_outside_the_allow_list_is_not_allowed():
    gateway = ScriptedGateway(ProviderReply(200, b""))
    outcome = await caller_for(gateway, reply_topics=["ok.results"]).handle(
        record(reply_to="someone.elses.topic")
    )
    assert isinstance(outcome.event, DeadLetterEvent)
    assert outcome.event.reason == "not_allowed"
    assert gateway.calls == []


async def test_unknown_provider_is_refused_before_any_call():
    gateway = ScriptedGateway(ProviderReply(200, b""))
    request = RequestEvent(provider="nope", operation="x")
    outcome = await caller_for(gateway).handle(
        SourceRecord("requests", 0, 1, request.model_dump_json().encode())
    )
    assert isinstance(outcome.event, DeadLetterEvent)
    assert (outcome.event.reason, outcome.event.stage) == ("unknown_provider", "admission")
    assert gateway.calls == []


async def test_bug_in_our_code_still_ends_as_a_dead_letter():
    outcome = await caller_for(ScriptedGateway(ZeroDivisionError("bug"))).handle(record())
    assert isinstance(outcome.event, DeadLetterEvent)
    assert (outcome.event.reason, outcome.event.error_type) == (
        "internal_error",
        "ZeroDivisionError",
    )


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def tokens_after_reply(rate_limits: dict[str, RateLimitInfo], *, later_s: float) -> float:
    """Tokens left for the key ``later_s`` after one call whose reply carried ``rate_limits``."""
    clock = FakeClock(NOW_MS / 1000)
    book = LimitBook({"fake": ProviderLimit(rate_per_s=100, burst=3)}, jitter_s=0.0)
    metrics = Metrics.create(CollectorRegistry())
    limiter = Limiter(book, MemoryQuotaStore(), metrics, clock=clock)
    limiter.assign([3])
    try:
        caller = caller_for(ScriptedGateway(ProviderReply(200, b"", rate_limits=rate_limits)),
                            limiter=limiter)  # fmt: skip
        handled = asyncio.create_task(caller.handle(record()))
        await asyncio.sleep(0)
        clock.now += 1.0  # a fresh partition starts empty: let it fill
        await asyncio.wait_for(handled, 1)
        clock.now += later_s
        limiter.update_gauges()
    finally:
        limiter.close()
    key = limiter.limit_key(RequestEvent(provider="fake", operation="get_item"))
    value = metrics.registry.get_sample_value(
        "callstream_limiter_tokens_available", {"limit_key": key}
    )
    assert value is not None
    return value


async def test_a_reply_saying_nothing_remains_holds_the_key_back():
    exhausted = {"requests": RateLimitInfo(limit=10, remaining=0, reset_after_s=5.0)}
    # Our bucket still had 2 tokens; the provider's word empties it, to refill at our rate.
    assert await tokens_after_reply(exhausted, later_s=0.0) == pytest.approx(0, abs=1e-3)
    assert await tokens_after_reply(exhausted, later_s=0.01) == pytest.approx(1, abs=1e-3)
    one_left = {"requests": RateLimitInfo(limit=10, remaining=1, reset_after_s=5.0)}
    assert await tokens_after_reply(one_left, later_s=0.0) == pytest.approx(1, abs=1e-3)
    # Without the provider's word, our own bucket has its 2 tokens.
    assert await tokens_after_reply({}, later_s=0.0) == pytest.approx(2, abs=1e-3)


class CountingLimiter:
    """Records whether anything asked for admission (a token, quota, a waiting-room place)."""

    def __init__(self) -> None:
        self.admitted: list[RequestEvent] = []

    def limit_key(self, request: RequestEvent) -> str:
        return request.provider

    async def admit(self, request: RequestEvent, partition: int, key: str) -> object:
        self.admitted.append(request)
        raise AssertionError("an invalid request must never reach admission")


@pytest.mark.parametrize(
    "refusal",
    [
        UnknownOperation("fake has no operation 'nope'"),
        NotAllowed("get_item: undeclared parameters: evil"),
    ],
)
async def test_an_invalid_request_is_refused_before_admission(refusal: ProviderError):
    gateway = ScriptedGateway(ProviderReply(200, b""), refusal=refusal)
    limiter = CountingLimiter()
    outcome = await caller_for(gateway, limiter=limiter).handle(record())
    letter = outcome.event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage) == (refusal.reason, "admission")
    assert limiter.admitted == [] and gateway.calls == []


async def test_a_valid_request_is_built_once_and_sent_as_built():
    gateway = ScriptedGateway(ProviderReply(200, b"{}"))
    outcome = await caller_for(gateway).handle(record())
    assert outcome.status == "ok"
    assert len(gateway.built) == 1 and len(gateway.calls) == 1


async def test_a_record_over_the_event_cap_is_refused_before_decoding():
    class NeverDecoder:
        def decode(self, raw: bytes) -> RequestEvent:
            raise AssertionError("a record over the cap must not be decoded")

    gateway = ScriptedGateway(ProviderReply(200, b""))
    caller = Caller(gateway, NeverDecoder(), clock_ms=lambda: NOW_MS, max_event_bytes=100)
    source = SourceRecord("requests", 1, 9, b"x" * 101)
    letter = (await caller.handle(source)).event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage, letter.error_type) == (
        "too_large",
        "decode",
        "EventTooLarge",
    )
    assert letter.original_raw == source.value and letter.original is None
    assert "101 bytes over 100" in letter.error_message


async def test_a_record_at_the_event_cap_is_decoded():
    gateway = ScriptedGateway(ProviderReply(200, b""))
    source = record()
    caller = caller_for(gateway, max_event_bytes=len(source.value))
    assert (await caller.handle(source)).status == "ok"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"operation": "nope"}, "unknown_operation"),
        ({"operation": "get_item", "params": {"item_id": "1", "evil": "x"}}, "not_allowed"),
    ],
)
async def test_the_real_gateway_refuses_before_the_limiter_spends_a_token(
    fields: dict[str, object], reason: str, monkeypatch: pytest.MonkeyPatch
):
    spec = ProviderSpec.model_validate({
        "name": "fake", "base_url": "http://127.0.0.1:9",
        "operations": {"get_item": {"path": "/items/{item_id}"}},
    })  # fmt: skip
    metrics = Metrics.create(CollectorRegistry())
    gateway = HttpGateway(
        {"fake": Provider(spec, signer=NoAuthSigner())}, ProviderClient(), metrics
    )
    limiter = Limiter(LimitBook({"fake": ProviderLimit(1, 1)}), MemoryQuotaStore(), metrics)
    limiter.assign([0])
    admitted: list[RequestEvent] = []
    monkeypatch.setattr(limiter, "admit", lambda request, *args: admitted.append(request))
    request = RequestEvent(provider="fake", **fields)  # type: ignore[arg-type]
    try:
        caller = Caller(gateway, JsonDecoder(), limiter=limiter)
        outcome = await caller.handle(
            SourceRecord("requests", 0, 1, request.model_dump_json().encode())
        )
    finally:
        limiter.close()
        await gateway.close()
    assert isinstance(outcome.event, DeadLetterEvent)
    assert (outcome.event.reason, outcome.event.stage) == (reason, "admission")
    assert admitted == []
