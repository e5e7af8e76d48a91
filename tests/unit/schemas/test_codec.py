"""Tests of EventCodec: round trips, framing errors, invalid values, old writer schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.catalog import SchemaVersion, current_schema, load_schema, released_schemas
from schemas.codec import Codecs, EventCodec
from schemas.errors import DecodeError, EncodeError
from schemas.models import AttemptRecord, DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from schemas.tools.bench import sample_dead_letter, sample_request, sample_result

CODECS = Codecs()
DEAD_LETTER_BYTES = CODECS.dead_letter.encode(sample_dead_letter())
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# The model's patterns (schemas/models.py): visible ASCII ids, key-safe names, operations.
IDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
NAMES = st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True)
OPERATIONS = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,127}", fullmatch=True)
STRING_MAPS = st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=5)

REQUESTS = st.builds(
    RequestEvent,
    request_id=IDS,
    idempotency_key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=256),
    tenant=NAMES,
    provider=NAMES,
    operation=OPERATIONS,
    params=STRING_MAPS,
    body=st.none() | st.binary(max_size=300),
    content_type=st.none() | st.text(max_size=40),
    headers=STRING_MAPS,
    priority=st.integers(min_value=0, max_value=9),
    deadline_at_ms=st.none() | INT64,
    created_at_ms=INT64,
    reply_to=st.none() | st.text(max_size=60),
    trace=STRING_MAPS,
    attempt=st.integers(min_value=1, max_value=2**63 - 1),
)


@given(REQUESTS)
@settings(database=None, deadline=None, max_examples=300)
def test_any_request_round_trips(request_event):
    assert CODECS.request.decode(CODECS.request.encode(request_event)) == request_event


@pytest.mark.parametrize(
    ("codec", "event"),
    [
        (CODECS.request, sample_request()),
        (CODECS.request, RequestEvent(provider="p", operation="o")),
        (CODECS.result, sample_result()),
        (CODECS.dead_letter, sample_dead_letter()),
        (
            CODECS.dead_letter,
            DeadLetterEvent(
                original_raw=b"\x00garbage",
                source_topic="t",
                source_partition=0,
                source_offset=0,
                reason="undecodable",
                error_type="DecodeError",
                error_message="bad magic",
                first_failure_at_ms=1,
                last_failure_at_ms=1,
                stage="decode",
            ),
        ),
    ],
    ids=["request", "minimal-request", "result", "dead-letter", "undecodable-dead-letter"],
)
def test_events_round_trip(codec, event):
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("status", list(ResultStatus))
def test_every_status_round_trips_as_the_enum(status):
    event = sample_result().model_copy(update={"status": status})

    decoded = CODECS.result.decode(CODECS.result.encode(event))

    assert decoded.status is status


def test_encoding_is_single_object_with_the_current_fingerprint():
    raw = CODECS.request.encode(sample_request())

    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == current_schema("request_event").fingerprint


def test_encode_unchecked_writes_what_the_model_would_reject():
    datum = {**sample_request().model_dump(), "priority": 42}

    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(CODECS.request.encode_unchecked(datum))

    assert caught.value.reason == "invalid"


def _request_bytes(**changes: object) -> bytes:
    return CODECS.request.encode_unchecked({**sample_request().model_dump(), **changes})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        ("c3 01 text", "not a byte string"),
        (b"\x00\x01garbage", "not Avro single-object encoding: starts with 0001"),
        (b"\xc3", "not Avro single-object encoding: starts with c3"),
        (b"\xc3\x01\x00\x00", "truncated single-object header: 4 of 10 bytes"),
        (b"\xc3\x01" + b"\xff" * 8 + b"\x02", "unknown writer schema ffffffffffffffff"),
        (CODECS.result.encode(sample_result()), "neither the current nor a released"),
        (_request_bytes()[:-3], "Avro body ends early (current schema)"),
        (_request_bytes() + b"\x00", "1 bytes after the Avro body"),
        (_request_bytes()[:10] + b"\x80" * 12, "current schema"),
    ],
    ids=[
        "empty",
        "none",
        "str",
        "bad-magic",
        "short-magic",
        "short-header",
        "unknown-fingerprint",
        "other-event",
        "truncated-body",
        "trailing-bytes",
        "bad-varint",
    ],
)
def test_bad_bytes_are_undecodable_with_a_one_line_reason(raw, fragment):
    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(raw)

    message = str(caught.value)
    assert caught.value.reason == "undecodable"
    assert message.startswith("undecodable RequestEvent: ")
    assert fragment in message
    assert "\n" not in message


def _decode_error(codec: EventCodec[Any], raw: bytes) -> DecodeError | None:
    """The DecodeError ``raw`` raises, or None when it decodes; anything else escapes."""
    try:
        codec.decode(raw)
    except DecodeError as exc:
        return exc
    return None


@given(st.binary(max_size=200))
@settings(database=None, deadline=None, max_examples=500)
def test_any_body_after_a_valid_header_decodes_or_is_a_decode_error(body):
    error = _decode_error(CODECS.request, _request_bytes()[:10] + body)

    assert error is None or "\n" not in str(error)


@given(st.data())
@settings(database=None, deadline=None, max_examples=300)
def test_a_corrupted_byte_decodes_or_is_a_decode_error(data):
    raw = bytearray(DEAD_LETTER_BYTES)
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))

    error = _decode_error(CODECS.dead_letter, bytes(raw))

    assert error is None or error.reason in ("undecodable", "invalid")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"priority": 42}, "priority: Input should be less than or equal to 9 (got 42)"),
        ({"provider": ""}, "provider: String should have at least 1 character (got '')"),
        ({"attempt": 0}, "attempt: Input should be greater than or equal to 1"),
        ({"tenant": "t" * 500}, "tenant: String should have at most 128 characters"),
    ],
    ids=["priority", "empty-provider", "attempt", "long-tenant"],
)
def test_avro_the_model_rejects_is_invalid_naming_the_field(changes, field):
    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(_request_bytes(**changes))

    message = str(caught.value)
    assert caught.value.reason == "invalid"
    assert message.startswith("invalid RequestEvent: ")
    assert field in message
    assert "\n" not in message
    assert len(message) < 300


def test_an_invalid_embedded_request_names_its_path():
    datum = sample_dead_letter().model_dump()
    datum["original"]["priority"] = 42

    with pytest.raises(DecodeError, match=r"original\.priority: ") as caught:
        CODECS.dead_letter.decode(CODECS.dead_letter.encode_unchecked(datum))

    assert caught.value.reason == "invalid"


def test_several_invalid_fields_stay_on_one_bounded_line():
    raw = _request_bytes(priority=42, provider="", operation="", tenant="", attempt=0)

    with pytest.raises(DecodeError) as caught:
        CODECS.request.decode(raw)

    assert str(caught.value).endswith("and 2 more")


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (RequestEvent(provider="p", operation="o", created_at_ms=2**64), "OverflowError"),
        # pydantic refuses lone surrogates; a model built without validation can hold one.
        (
            RequestEvent.model_construct(**{**sample_request().__dict__, "operation": "\ud800"}),
            "UnicodeEncodeError",
        ),
    ],
    ids=["long-overflow", "lone-surrogate"],
)
def test_values_the_schema_cannot_hold_raise_encode_error(event, fragment):
    with pytest.raises(EncodeError, match=f"cannot encode RequestEvent: {fragment}"):
        CODECS.request.encode(event)


def test_encoding_the_wrong_model_is_an_encode_error():
    with pytest.raises(EncodeError, match="RequestEvent codec cannot encode ResultEvent"):
        CODECS.request.encode(sample_result())  # type: ignore[arg-type]


def test_nested_models_are_encoded_through_model_dump():
    letter = sample_dead_letter().model_copy(
        update={"attempts": [AttemptRecord(attempt=1, started_at_ms=5, duration_ms=0.5)]}
    )

    assert CODECS.dead_letter.decode(CODECS.dead_letter.encode(letter)) == letter


def _old_request_schema(tmp_path: Path) -> SchemaVersion:
    """A test-local earlier version of RequestEvent: no ``trace``, no ``reply_to``."""
    schema = json.loads(json.dumps(current_schema("request_event").schema))
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("trace", "reply_to")]
    path = tmp_path / "v0.avsc"
    path.write_text(json.dumps(schema), encoding="utf-8")
    return load_schema(path, name="request_event", version="v0")


def test_data_written_with_a_released_version_is_resolved_to_the_current_schema(tmp_path):
    old = _old_request_schema(tmp_path)
    old_writer = EventCodec(RequestEvent, old)
    reader = EventCodec(RequestEvent, current_schema("request_event"), released=[old])
    event = sample_request()

    decoded = reader.decode(old_writer.encode(event))

    assert decoded == event.model_copy(update={"trace": {}, "reply_to": None})


def test_an_old_version_that_is_not_released_is_unknown(tmp_path):
    raw = EventCodec(RequestEvent, _old_request_schema(tmp_path)).encode(sample_request())

    with pytest.raises(DecodeError, match="unknown writer schema"):
        CODECS.request.decode(raw)


@pytest.mark.parametrize(
    ("name", "model", "event"),
    [
        ("request_event", RequestEvent, sample_request()),
        ("result_event", ResultEvent, sample_result()),
        ("dead_letter_event", DeadLetterEvent, sample_dead_letter()),
    ],
)
def test_the_default_codecs_read_every_released_version(name, model, event):
    codec = EventCodec.for_event(model, name)
    for version in released_schemas(name):
        raw = EventCodec(model, version).encode(event)

        assert codec.decode(raw) == event
