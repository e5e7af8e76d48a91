"""Message framings: the header that names the writer schema in front of an Avro body."""

from __future__ import annotations

from typing import Any, Final, Protocol

from schemas.catalog import SchemaVersion
from schemas.errors import DecodeError

# Avro single-object encoding: https://avro.apache.org/docs/1.12.0/specification/#single-object-encoding
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
_SINGLE_OBJECT_HEADER_LEN: Final = 10
# Confluent wire format: magic 0, then the 4-byte big-endian schema id of the registry.
CONFLUENT_MAGIC: Final = b"\x00"
_CONFLUENT_HEADER_LEN: Final = 5


class Framing(Protocol):
    """How a message names its writer schema; the codec maps that name to a parsed schema."""

    def header_for(self, schema: SchemaVersion) -> bytes:
        """The header to put before a body written with ``schema``."""
        ...

    def key_for(self, schema: SchemaVersion) -> bytes:
        """The key ``split`` returns for messages written with ``schema``."""
        ...

    def split(self, raw: bytes) -> tuple[bytes, int]:
        """Return the writer-schema key and where the body starts; DecodeError if malformed."""
        ...

    def lookup(self, key: bytes) -> dict[str, Any] | None:
        """The writer schema for a key that is not a known version (a registry), else None."""
        ...


class SingleObjectFraming:
    """Avro single-object encoding: ``C3 01`` + CRC-64-AVRO fingerprint (LE) + body."""

    def header_for(self, schema: SchemaVersion) -> bytes:
        return SINGLE_OBJECT_MAGIC + schema.fingerprint

    def key_for(self, schema: SchemaVersion) -> bytes:
        return schema.fingerprint

    def split(self, raw: bytes) -> tuple[bytes, int]:
        if raw[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError(
                f"not Avro single-object encoding: starts with {raw[:2].hex() or 'nothing'}, "
                f"expected {SINGLE_OBJECT_MAGIC.hex()}"
            )
        if len(raw) < _SINGLE_OBJECT_HEADER_LEN:
            raise DecodeError(f"truncated single-object header: {len(raw)} of 10 bytes")
        return raw[2:_SINGLE_OBJECT_HEADER_LEN], _SINGLE_OBJECT_HEADER_LEN

    def lookup(self, key: bytes) -> dict[str, Any] | None:
        # Without a registry the schemas a process can read are the ones it ships.
        return None

    def __repr__(self) -> str:
        return "SingleObjectFraming()"


class SchemaIds(Protocol):
    """Schema ids of a Confluent-compatible registry; a registry client implements this."""

    def id_for(self, schema: SchemaVersion) -> int:
        """The id registered for ``schema`` under this event's subject."""
        ...

    def schema_for(self, schema_id: int) -> dict[str, Any] | None:
        """The schema registered under ``schema_id``, or None if the registry has none."""
        ...


class ConfluentFraming:
    """Confluent Schema Registry wire format: ``00`` + 4-byte big-endian schema id + body."""

    def __init__(self, ids: SchemaIds) -> None:
        self._ids = ids

    def header_for(self, schema: SchemaVersion) -> bytes:
        return CONFLUENT_MAGIC + self.key_for(schema)

    def key_for(self, schema: SchemaVersion) -> bytes:
        return self._ids.id_for(schema).to_bytes(4, "big")

    def split(self, raw: bytes) -> tuple[bytes, int]:
        if raw[:1] != CONFLUENT_MAGIC:
            raise DecodeError(
                f"not Confluent framing: starts with {raw[:1].hex() or 'nothing'}, expected 00"
            )
        if len(raw) < _CONFLUENT_HEADER_LEN:
            raise DecodeError(f"truncated Confluent header: {len(raw)} of 5 bytes")
        return raw[1:_CONFLUENT_HEADER_LEN], _CONFLUENT_HEADER_LEN

    def lookup(self, key: bytes) -> dict[str, Any] | None:
        return self._ids.schema_for(int.from_bytes(key, "big"))

    def __repr__(self) -> str:
        return f"ConfluentFraming({self._ids!r})"
