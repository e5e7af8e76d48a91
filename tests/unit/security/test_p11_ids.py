"""Probe p11 (security review 2026-12-02, findings 10, 11, 14): identifiers with control
characters are refused at decode (``invalid``), so they reach no header, log line or terminal;
body caps (the provider's and ``caller.max_request_bytes``) refuse before anything is sent."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.http import ClientConfig, ProviderClient
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent
from streams.metrics import Metrics
from streams.stage.records import SourceRecord

CODECS = Codecs()
FORGED = "r2\n2026-12-02 00:00:00,000 CRITICAL security: admin login ok\x01"


async def handled(url: str, raw: bytes, **config: Any) -> DeadLetterEvent | Any:
    spec = ProviderSpec.model_validate({
        "name": "acme", "base_url": url, "idempotency_header": "Idempotency-Key",
        "max_request_bytes": 1000,
        "operations": {"post": {"method": "POST", "path": "/x", "body": {}}},
    })  # fmt: skip
    client = ProviderClient(ClientConfig(**config))
    gateway = HttpGateway({"acme": Provider(spec)}, client, Metrics.create(CollectorRegistry()))
    try:
        return (await Caller(gateway, CODECS.request).handle(SourceRecord("req", 0, 0, raw))).event
    finally:
        await gateway.close()


def unchecked(**fields: Any) -> bytes:
    """Bytes any publisher could write, past the model's checks (as the probe's events were)."""
    base = RequestEvent(request_id="r1", provider="acme", operation="post").model_dump()
    return CODECS.request.encode_unchecked({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"request_id": "r1\r\nX-Injected: yes"}, "request_id"),
        ({"idempotency_key": "k\r\nX-Injected: yes"}, "idempotency_key"),
        ({"request_id": FORGED}, "request_id"),
        ({"request_id": "with space"}, "request_id"),
        ({"operation": "\x1b[2J\x1b]0;pwned\x07ok"}, "operation"),
        ({"tenant": "a/b"}, "tenant"),
        ({"tenant": "*"}, "tenant"),
        ({"provider": "acme\x1b[31m"}, "provider"),
    ],
)
async def test_control_characters_in_identifiers_are_invalid_at_decode(
    recorder_factory, caplog, fields, field
):
    recorder = await recorder_factory()
    with caplog.at_level(logging.INFO):
        letter = await handled(recorder.url, unchecked(**fields))
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage, letter.original) == ("invalid", "decode", None)
    assert field in letter.error_message
    assert recorder.heads == []
    assert not [line for line in caplog.text.splitlines() if line.startswith("2026-12-02")]
    assert not any(c in letter.error_message for c in "\r\n\x1b\x07")


@pytest.mark.parametrize(
    "request_id",
    ["3f2b9c1e-8d4a-4b6e-9f0a-1c2d3e4f5a6b", "3f2b9c1e8d4a4b6e", "req-42", "a:b@c/d+e=f"],
)
def test_ordinary_ids_stay_valid(request_id):
    event = RequestEvent(
        request_id=request_id, idempotency_key=request_id, provider="p", operation="o"
    )
    assert CODECS.request.decode(CODECS.request.encode(event)) == event


async def test_a_body_over_the_providers_cap_is_body_too_large(recorder_factory):
    recorder = await recorder_factory()
    raw = CODECS.request.encode(RequestEvent(provider="acme", operation="post", body=b"x" * 1001))
    letter = await handled(recorder.url, raw)
    assert (letter.reason, letter.stage) == ("body_too_large", "admission")
    assert "1001 bytes over 1000" in letter.error_message and recorder.heads == []


async def test_caller_max_request_bytes_is_a_ceiling_over_the_providers(recorder_factory):
    recorder = await recorder_factory()
    raw = CODECS.request.encode(RequestEvent(provider="acme", operation="post", body=b"x" * 600))
    letter = await handled(recorder.url, raw, max_request_bytes=500)
    assert (letter.reason, letter.stage) == ("body_too_large", "admission")
    assert "600 bytes over 500" in letter.error_message and recorder.heads == []
    ok = await handled(recorder.url, raw, max_request_bytes=5000)  # the provider's 1000 still holds
    assert ok.status == "ok"
