"""Tests of the framing seam: single-object headers and Confluent registry framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.catalog import (
    EVENT_NAMES,
    SchemaVersion,
    current_schema,
    load_schema,
    released_schemas,
)
from schemas.codec import Codecs, EventCodec
from schemas.errors import DecodeError
from schemas.framing import ConfluentFraming, SingleObjectFraming
from schemas.models import RequestEvent
from schemas.tools.bench import sample_request


class MemorySchemaIds:
    """A registry held in a dict: id -> schema, and the id of each fingerprint."""

    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.ids: dict[bytes, int] = {}

    def register(self, schema: SchemaVersion, schema_id: int) -> None:
        self.schemas[schema_id] = schema.schema
        self.ids[schema.fingerprint] = schema_id

    def id_for(self, schema: SchemaVersion) -> int:
        return self.ids[schema.fingerprint]

    def schema_for(self, schema_id: int) -> dict[str, Any] | None:
        return self.schemas.get(schema_id)


@pytest.fixture
def registry() -> MemorySchemaIds:
    ids = MemorySchemaIds()
    for schema_id, name in enumerate(EVENT_NAMES, start=7):
        ids.register(current_schema(name), schema_id)
    # Released versions that differ from the current one (a codec reads them too).
    released = [old for name in EVENT_NAMES for old in released_schemas(name)]
    for schema_id, old in enumerate(released, start=100):
        if old.fingerprint not in ids.ids:
            ids.register(old, schema_id)
    return ids


def test_single_object_split_returns_the_fingerprint_and_body_offset():
    schema = current_schema("request_event")
    framing = SingleObjectFraming()

    assert framing.split(framing.header_for(schema) + b"body") == (schema.fingerprint, 10)


def test_confluent_framing_round_trips_with_magic_zero_and_the_id(registry):
    codec = EventCodec.for_event(RequestEvent, "request_event", ConfluentFraming(registry))
    event = sample_request()

    raw = codec.encode(event)

    assert raw[:5] == b"\x00\x00\x00\x00\x07"
    assert codec.decode(raw) == event


def test_confluent_framing_reads_a_writer_schema_only_the_registry_knows(registry, tmp_path):
    old_schema = json.loads(json.dumps(current_schema("request_event").schema))
    old_schema["fields"] = [f for f in old_schema["fields"] if f["name"] != "trace"]
    path = tmp_path / "old.avsc"
    path.write_text(json.dumps(old_schema), encoding="utf-8")
    old = load_schema(path, name="request_event", version="old")
    registry.register(old, 3)
    writer = EventCodec(RequestEvent, old, framing=ConfluentFraming(registry))
    reader = Codecs(ConfluentFraming(registry)).request
    event = sample_request()

    decoded = reader.decode(writer.encode(event))

    assert decoded == event.model_copy(update={"trace": {}})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xc3\x01" + b"\x00" * 10, "not Confluent framing: starts with c3"),
        (b"\x00\x00\x07", "truncated Confluent header: 3 of 5 bytes"),
        (b"\x00\x00\x00\x00\x63\x00", "unknown writer schema 00000063"),
    ],
    ids=["bad-magic", "short-header", "unknown-id"],
)
def test_confluent_framing_errors_are_undecodable(registry, raw, fragment):
    codec = Codecs(ConfluentFraming(registry)).request

    with pytest.raises(DecodeError, match=fragment) as caught:
        codec.decode(raw)

    assert caught.value.reason == "undecodable"


def test_a_registry_schema_that_does_not_parse_is_undecodable(registry):
    registry.schemas[4] = {"type": "record", "name": "X", "fields": [{"name": "a"}]}

    with pytest.raises(DecodeError, match="writer schema 00000004") as caught:
        Codecs(ConfluentFraming(registry)).request.decode(b"\x00\x00\x00\x00\x04\x00")

    assert caught.value.reason == "undecodable"


def test_a_registry_outage_is_not_a_decode_error():
    class DownRegistry(MemorySchemaIds):
        def schema_for(self, schema_id: int) -> dict[str, Any] | None:
            raise ConnectionError("registry unreachable")

    down = DownRegistry()
    down.register(current_schema("request_event"), 7)
    for number, old in enumerate(released_schemas("request_event"), start=100):
        down.register(old, number)  # the codec reads released versions too
    codec = EventCodec.for_event(RequestEvent, "request_event", ConfluentFraming(down))

    # The message may be fine: it must be retried, not dead-lettered.
    with pytest.raises(ConnectionError):
        codec.decode(b"\x00\x00\x00\x00\x05\x00")
