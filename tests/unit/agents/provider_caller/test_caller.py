"""Caller: every record becomes exactly one outcome, decided by what happened."""

from __future__ import annotations

import json

import pytest

from agents.provider_caller.caller import Caller, ProviderReply
from providers.errors import NotFound, ProviderError, ProviderTimeout, RateLimited
from schemas.errors import DecodeError
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
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

    def __init__(self, answer: ProviderReply | BaseException) -> None:
        self.answer = answer
        self.calls: list[RequestEvent] = []

    async def call(self, request: RequestEvent) -> ProviderReply:
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
        ProviderReply(200, b"{}", "application/json", latency_s=0.05, cost=0.01)
    )
    outcome = await caller_for(gateway).handle(record())
    event = outcome.event
    assert isinstance(event, ResultEvent)
    assert (event.status, event.http_status, event.body, event.cost) == ("ok", 200, b"{}", 0.01)
    assert event.latency_ms == pytest.approx(50)
    assert event.request_id == "r1" and event.attempts == 1


async def test_garbage_becomes_dead_letter_with_raw_bytes():
    gateway = ScriptedGateway(ProviderReply(200, b"", None))
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
    gateway = ScriptedGateway(ProviderReply(200, b"", None))
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
    gateway = ScriptedGateway(ProviderReply(200, b"", None))
    outcome = await caller_for(gateway, reply_topics=["ok.results"]).handle(
        record(reply_to="someone.elses.topic")
    )
    assert isinstance(outcome.event, DeadLetterEvent)
    assert outcome.event.reason == "not_allowed"
    assert gateway.calls == []


async def test_unknown_provider_is_refused_before_any_call():
    gateway = ScriptedGateway(ProviderReply(200, b"", None))
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
