"""Tests of schema loading and fingerprints."""

from __future__ import annotations

import avro.schema
import pytest

from schemas.catalog import AVRO_DIR, EVENT_NAMES, current_schema, released_schemas

# CRC-64-AVRO written from the Avro specification's description, as an independent oracle.
_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _table()


def _rabin(data: bytes) -> bytes:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_fingerprint_is_crc64_avro_of_the_canonical_form(name):
    schema = current_schema(name)

    assert schema.fingerprint == _rabin(schema.canonical_form.encode())


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_fingerprint_agrees_with_apache_avro(name):
    schema = current_schema(name)
    apache = avro.schema.parse((AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8"))

    assert schema.fingerprint == apache.fingerprint()


def test_rabin_oracle_matches_a_known_value():
    # "int" -> 0x7275d51a3f395c8f, little-endian in the single-object header.
    assert _rabin(b'"int"').hex() == "8f5c393f1ad57572"


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_event_has_released_v1(name):
    versions = released_schemas(name)

    assert [v.version for v in versions][:1] == ["v1"]
    assert all(v.schema["namespace"] == "io.callstream.v1" for v in versions)


def test_schemas_are_loaded_once():
    assert current_schema("request_event") is current_schema("request_event")
    assert released_schemas("request_event") is released_schemas("request_event")


def test_unknown_event_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="unknown event schema 'nope'"):
        current_schema("nope")


# A released schema is frozen: data written with it is out there. Pinning the fingerprints
# catches an edit to a released file that changes its wire form (docs may still change).
# Releasing v2 of an event adds its line here.
RELEASED_FINGERPRINTS = {
    ("request_event", "v1"): "d1811c8e3c56a2aa",
    ("result_event", "v1"): "908aadf5be50b0e6",
    ("dead_letter_event", "v1"): "5fb3e75211099f0c",
    ("delayed_request", "v1"): "517054eb1cdf46cd",
    ("access_batch", "v1"): "20dd6f13a6fde07e",
}


def test_released_versions_never_change():
    found = {
        (name, v.version): v.fingerprint.hex()
        for name in EVENT_NAMES
        for v in released_schemas(name)
    }

    assert found == RELEASED_FINGERPRINTS
