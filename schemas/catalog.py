"""The event schemas on disk, current and released, each parsed and fingerprinted once."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

AVRO_DIR: Final = Path(__file__).parent / "avro"
RELEASED_DIR: Final = AVRO_DIR / "released"
# The top-level events; each is one self-contained file ``avro/<name>.avsc``.
# ``delayed_request`` is no topic's value: it is the timer table's (agents/retry), versioned alike.
# ``access_batch`` is the access topic's, between the workers and the predictive cache.
EVENT_NAMES: Final = (
    "request_event",
    "result_event",
    "dead_letter_event",
    "delayed_request",
    "access_batch",
)

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one event schema, ready for fastavro.

    Attributes:
        name: the event name, e.g. ``"request_event"``.
        version: ``"current"`` or the released label, e.g. ``"v1"``.
        schema: the JSON document as written in the .avsc file.
        parsed: the same schema parsed by fastavro (parse once, reuse on every call).
        fingerprint: CRC-64-AVRO of the Parsing Canonical Form, as the 8 little-endian bytes
            that follow the single-object magic.
    """

    name: str
    version: str
    schema: dict[str, Any] = field(repr=False)
    parsed: dict[str, Any] = field(repr=False)
    fingerprint: bytes

    @property
    def canonical_form(self) -> str:
        return str(to_parsing_canonical_form(self.schema))


def load_schema(path: Path, *, name: str, version: str) -> SchemaVersion:
    """Read, parse and fingerprint one .avsc file.

    Args:
        path: the .avsc file.
        name: the event name to record.
        version: the version label to record.

    Returns:
        The parsed schema version.
    """
    schema = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_record_schema(schema)
    # fastavro renders CRC-64-AVRO as the hex of its little-endian bytes, the header's order.
    digest = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    return SchemaVersion(name, version, schema, parsed, digest)


def parse_record_schema(schema: Any) -> dict[str, Any]:
    """Parse a top-level record schema with fastavro; ValueError if it is not a record."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError("an event schema must be a top-level Avro record")
    # A fresh named-types table per parse: the current and released versions all define
    # io.callstream.v1.RequestEvent, and they must not see each other's definitions.
    parsed = parse_schema(schema, named_schemas={})
    if not isinstance(parsed, dict):  # pragma: no cover - a record parses to a dict
        raise ValueError("fastavro did not parse the record to a mapping")
    return parsed


@functools.cache
def current_schema(name: str) -> SchemaVersion:
    """The schema this code writes for event ``name``; a KeyError for an unknown name."""
    if name not in EVENT_NAMES:
        raise KeyError(f"unknown event schema {name!r}; known: {', '.join(EVENT_NAMES)}")
    return load_schema(AVRO_DIR / f"{name}.avsc", name=name, version="current")


@functools.cache
def released_schemas(name: str) -> tuple[SchemaVersion, ...]:
    """Every released version of event ``name``, oldest first."""
    current_schema(name)  # the same unknown-name check
    numbered = [
        (int(match.group(1)), path)
        for path in (RELEASED_DIR / name).glob("v*.avsc")
        if (match := _VERSION_FILE.match(path.name))
    ]
    return tuple(
        load_schema(path, name=name, version=f"v{number}") for number, path in sorted(numbered)
    )
