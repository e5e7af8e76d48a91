"""Probe p6 (security review 2026-12-02, finding 13): malformed Avro is a clean dead letter
(held up: pinned); a record over ``caller.max_request_event_bytes`` is refused before decoding
(``too_large``); maps past 64 entries and strings past 8192 characters are ``invalid``."""

from __future__ import annotations

from typing import Any

import pytest

from agents.provider_caller.caller import Caller
from providers.response import ProviderReply
from schemas.codec import Codecs
from schemas.errors import DecodeError
from schemas.models import DeadLetterEvent, RequestEvent
from streams.settings import CallerSettings
from streams.stage.records import SourceRecord

CODECS = Codecs()
HEADER = CODECS.request._header


def zz(n: int) -> bytes:
    """Zigzag varint, as Avro writes longs."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def s(text: bytes) -> bytes:
    return zz(len(text)) + text


PREFIX = s(b"rid") + s(b"") + s(b"t") + s(b"p") + s(b"o")
# body null, content_type null, headers {}, priority 5, deadline null, created 1,
# reply_to null, trace {}, attempt 1, fallback_of null, fallback_reason null, prefetch false
TAIL = zz(0) + zz(0) + zz(0) + zz(5) + zz(0) + zz(1) + zz(0) + zz(0) + zz(1) + zz(0) + zz(0)
TAIL += b"\x00"  # a boolean is one byte


def with_params(n: int) -> bytes:
    params = b"".join(s(b"k%d" % i) + s(b"") for i in range(n))
    return HEADER + PREFIX + zz(n) + params + zz(0) + TAIL


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "undecodable"),
        (b"hello world", "undecodable"),
        (HEADER + zz(2**62), "undecodable"),  # a string length with no data
        (HEADER + PREFIX + zz(2**62), "undecodable"),  # a map count with no data
        (HEADER + b"\xff" * 1000, "undecodable"),  # a varint that never ends
        (with_params(65), "invalid"),
        (with_params(90_000), "invalid"),
    ],
)
def test_malformed_or_oversized_events_are_clean_decode_errors(raw, reason):
    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(raw)
    assert caught.value.reason == reason


def test_64_params_are_fine():
    assert len(CODECS.request.decode(with_params(64)).params) == 64


@pytest.mark.parametrize(
    "fields",
    [
        {"trace": {f"k{i}": "v" for i in range(65)}},
        {"headers": {f"h{i}": "v" for i in range(65)}},
        {"trace": {"traceparent": "x" * 8193}},
        {"params": {"k" * 8193: "v"}},
        {"content_type": "x" * 8193},
    ],
)
def test_map_and_string_caps_are_invalid_at_decode(fields: dict[str, Any]):
    base = RequestEvent(provider="p", operation="o").model_dump()
    raw = CODECS.request.encode_unchecked({**base, **fields})
    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(raw)
    assert caught.value.reason == "invalid"


class NoGateway:
    provider_names = frozenset({"p"})

    def build(self, request: RequestEvent) -> Any:
        raise AssertionError("never built")

    async def call(self, request: RequestEvent, prepared: Any) -> ProviderReply:
        raise AssertionError("never called")


class CountingDecoder:
    def __init__(self) -> None:
        self.decoded = 0

    def decode(self, raw: bytes) -> RequestEvent:
        self.decoded += 1
        return CODECS.request.decode(raw)


async def test_a_record_over_the_event_cap_is_a_too_large_letter_without_decoding():
    cap = CallerSettings().max_request_event_bytes
    assert cap == 1_000_000
    decoder = CountingDecoder()
    caller = Caller(NoGateway(), decoder, max_event_bytes=cap)  # type: ignore[arg-type]
    # The probe's 300,000 one-entry map blocks, grown past the cap.
    raw = HEADER + PREFIX + b"".join(zz(1) + s(b"") + s(b"") for _ in range(340_000)) + zz(0)
    assert len(raw) > cap
    letter = (await caller.handle(SourceRecord("req", 0, 5, raw))).event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage, decoder.decoded) == ("too_large", "decode", 0)
