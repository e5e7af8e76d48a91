"""`CallstreamClient.call`: the result, a dead letter's reason, or a timeout; never a hang."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.errors import CallError, CallTimeout, RequestDeadLettered
from streams.sdk import CallstreamClient
from streams.settings import Settings

CODECS = Codecs()


class FakeReader:
    """A topic that yields ``values`` once the request is published, then waits forever."""

    def __init__(self, values: list[bytes]) -> None:
        self._values = values

    async def values(self, *, follow: bool, idle_timeout_s: float) -> AsyncIterator[bytes]:
        for value in self._values:
            yield value
        await asyncio.Event().wait()

    async def results(self, *, follow: bool, idle_timeout_s: float, codecs: Codecs) -> Any:
        async for raw in self.values(follow=follow, idle_timeout_s=idle_timeout_s):
            yield codecs.result.decode(raw)


def client_with(results: list[bytes], letters: list[bytes]) -> CallstreamClient:
    settings = Settings()
    client = CallstreamClient(settings, ensure_topics=False)
    published: list[RequestEvent] = []

    @contextlib.asynccontextmanager
    async def reader(topic: str, *, from_beginning: bool) -> AsyncIterator[FakeReader]:
        assert not from_beginning, "positioned at the end before publishing"
        yield FakeReader(results if topic == settings.topics.results else letters)

    async def publish(request: RequestEvent) -> str:
        published.append(request)
        return request.request_id

    client.reader = reader  # type: ignore[assignment,method-assign]
    client.publish = publish  # type: ignore[method-assign]
    return client


REQUEST = RequestEvent(provider="fake", operation="get_item", params={"item_id": "1"})


def result_for(request_id: str) -> bytes:
    return CODECS.result.encode(
        ResultEvent(
            request_id=request_id,
            tenant="default",
            provider="fake",
            operation="get_item",
            status=ResultStatus.OK,
            http_status=200,
        )
    )


def letter_for(request: RequestEvent) -> bytes:
    return CODECS.dead_letter.encode(
        DeadLetterEvent(
            request_id=request.request_id,
            original_raw=CODECS.request.encode(request),
            original=request,
            source_topic="requests",
            source_partition=0,
            source_offset=3,
            reason="not_found",
            error_type="NotFound",
            error_message="no such item",
            first_failure_at_ms=1,
            last_failure_at_ms=1,
            stage="caller",
        )
    )


async def test_call_returns_the_result_of_its_request_only() -> None:
    client = client_with([result_for("someone-else"), result_for(REQUEST.request_id)], [])
    result = await client.call(REQUEST, timeout=5)
    assert (result.request_id, result.status) == (REQUEST.request_id, ResultStatus.OK)


async def test_call_raises_the_dead_letters_reason() -> None:
    client = client_with([], [b"garbage", letter_for(REQUEST)])
    with pytest.raises(RequestDeadLettered) as caught:
        await client.call(REQUEST, timeout=5)
    assert caught.value.reason == "not_found"
    assert caught.value.letter.error_message == "no such item"
    assert isinstance(caught.value, CallError)


async def test_call_times_out_when_nothing_comes() -> None:
    client = client_with([result_for("someone-else")], [])
    with pytest.raises(CallTimeout, match=f"no outcome for request {REQUEST.request_id}"):
        await client.call(REQUEST, timeout=0.2)
