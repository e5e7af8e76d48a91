"""Probe p5 (security review 2026-12-02, finding 10): odd inputs at the caller end as the
outcome they mean, never ``internal_error`` with a traceback in the log."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.http import ProviderClient
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent
from streams.metrics import Metrics
from streams.stage.records import SourceRecord
from tests.unit.security.conftest import OK, http_response

DEEP = b"[" * 100_000 + b"]" * 100_000
CODECS = Codecs()


def respond(head: bytes) -> bytes:
    return http_response("400 Bad", DEEP) if b"/deep" in head else OK


@pytest.mark.parametrize(
    ("event", "reason", "stage"),
    [
        (
            RequestEvent(
                provider="acme", operation="get", params={"id": "1"}, headers={"X-Custom": "a\x01b"}
            ),
            "not_allowed",
            "admission",
        ),
        (
            RequestEvent(
                provider="acme", operation="post", body=b"{}", content_type="application/json\x7f"
            ),
            "not_allowed",
            "admission",
        ),
        (RequestEvent(provider="acme", operation="deep"), "invalid_response", "caller"),
        (RequestEvent(provider="x" * 128, operation="get"), "unknown_provider", "admission"),
    ],
)
async def test_odd_inputs_become_their_own_reason_without_a_traceback(
    recorder_factory, caplog, event, reason, stage
):
    recorder = await recorder_factory(respond)
    spec = ProviderSpec.model_validate({
        "name": "acme", "base_url": recorder.url,
        "auth": {"type": "bearer", "token": "literal:SECRET_TOKEN_123"},
        "error_shape": {"message_field": "message"},
        "operations": {"get": {"path": "/x/{id}", "allowed_headers": ["X-Custom"]},
                       "post": {"method": "POST", "path": "/p", "body": {}},
                       "deep": {"path": "/deep"}},
    })  # fmt: skip
    gateway = HttpGateway(
        {"acme": Provider(spec)}, ProviderClient(), Metrics.create(CollectorRegistry())
    )
    caller = Caller(gateway, CODECS.request)
    with caplog.at_level(logging.DEBUG):
        try:
            outcome = await caller.handle(SourceRecord("req", 0, 1, CODECS.request.encode(event)))
        finally:
            await gateway.close()
    letter = outcome.event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage) == (reason, stage)
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"
    assert "SECRET_TOKEN_123" not in caplog.text
    if stage == "admission":
        assert recorder.heads == [], "refused before anything was sent"
