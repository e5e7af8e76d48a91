"""Probe p2 (security review 2026-12-02): what a provider's answer may make us do.

Costs count only finite, non-negative units (finding 19); JSON nested too deeply is
``invalid_response``, not an internal error (finding 10); Retry-After and reset headers are
clamped to ``limits.max_retry_after_s`` and the clamp is logged once (finding 7). Redirects
are never followed (held up: pinned).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import InvalidResponse, RateLimited
from providers.http import ProviderClient
from providers.response import ProviderReply
from schemas.models import RequestEvent
from tests.unit.security.conftest import http_response

TOKEN = "SECRET_TOKEN_123"


def acme(url: str, **fields: Any) -> Provider:
    data: dict[str, Any] = {
        "name": "acme", "base_url": url,
        "auth": {"type": "bearer", "token": f"literal:{TOKEN}"},
        "operations": {"get": {"path": "/x"},
                       "units": {"path": "/u", "cost": {"per_unit": {"usage.tokens": 1.0}}}},
        "timeout_s": 2,
    }  # fmt: skip
    data.update(fields)
    return Provider(ProviderSpec.model_validate(data))


async def call(url: str, operation: str = "get", **fields: Any) -> ProviderReply:
    async with ProviderClient() as client:
        return await client.call(
            acme(url, **fields), RequestEvent(provider="acme", operation=operation)
        )


@pytest.mark.parametrize("units", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-5", b"9" * 4000])
async def test_a_cost_that_is_not_finite_and_non_negative_counts_nothing(recorder_factory, units):
    body = b'{"usage": {"tokens": ' + units + b"}}"
    recorder = await recorder_factory(http_response("200 OK", body))
    assert (await call(recorder.url, "units")).cost == 0.0


async def test_a_finite_cost_counts(recorder_factory):
    recorder = await recorder_factory(http_response("200 OK", b'{"usage": {"tokens": 12}}'))
    assert (await call(recorder.url, "units")).cost == 12.0


@pytest.mark.parametrize(("status", "operation"), [("200 OK", "units"), ("400 Bad", "get")])
async def test_deeply_nested_json_is_an_invalid_response(recorder_factory, status, operation):
    deep = b"[" * 100_000 + b"]" * 100_000
    recorder = await recorder_factory(http_response(status, deep))
    fields = {"error_shape": {"message_field": "message"}}
    with pytest.raises(InvalidResponse, match="nested too deeply"):
        await call(recorder.url, operation, **fields)


async def test_a_huge_retry_after_is_clamped_and_logged_once(recorder_factory, caplog):
    answer = http_response("429 Too Many", headers="Retry-After: 999999999\r\n")
    recorder = await recorder_factory(answer)
    provider = acme(recorder.url, limits={"max_retry_after_s": 120})
    waits = []
    with caplog.at_level(logging.WARNING, logger="providers.response"):
        async with ProviderClient() as client:
            for _ in range(3):
                with pytest.raises(RateLimited) as caught:
                    await client.call(provider, RequestEvent(provider="acme", operation="get"))
                waits.append(caught.value.retry_after_s)
    assert waits == [120, 120, 120]
    clamps = [r for r in caplog.records if "clamped" in r.getMessage()]
    assert len(clamps) == 1 and "acme" in clamps[0].getMessage()


async def test_the_default_ceiling_is_an_hour(recorder_factory):
    recorder = await recorder_factory(
        http_response("429 Too Many", headers="Retry-After: 999999999\r\n")
    )
    with pytest.raises(RateLimited) as caught:
        await call(recorder.url)
    assert caught.value.retry_after_s == 3600


async def test_an_epoch_reset_declared_as_delta_is_clamped(recorder_factory):
    headers = "X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 1764633600\r\n"
    recorder = await recorder_factory(http_response("200 OK", headers=headers))
    declared = {"requests": {"remaining": "X-RateLimit-Remaining", "reset": "X-RateLimit-Reset"}}
    reply = await call(recorder.url, rate_limit_headers=declared)  # reset_kind: delta_s
    assert reply.rate_limit is not None and reply.rate_limit.reset_after_s == 3600


async def test_a_short_retry_after_passes_unchanged(recorder_factory):
    recorder = await recorder_factory(http_response("429 Too Many", headers="Retry-After: 7\r\n"))
    with pytest.raises(RateLimited) as caught:
        await call(recorder.url)
    assert caught.value.retry_after_s == 7


async def test_a_redirect_is_not_followed(recorder_factory):
    answer = http_response("302 Found", b"", "Location: http://169.254.169.254/latest/\r\n")
    recorder = await recorder_factory(answer)
    with pytest.raises(InvalidResponse, match="HTTP 302"):
        await call(recorder.url)
    assert len(recorder.heads) == 1
