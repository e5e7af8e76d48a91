"""Errors raised while turning bytes into events and back.

```
SchemaError
 ├─ DecodeError   bytes that are not a valid event (bad framing, unknown fingerprint, bad Avro,
 │                or a value the model rejects); ``reason`` is "undecodable" or "invalid"
 └─ EncodeError   a model that cannot be written with its schema (a bug, not bad input)
```
"""

from __future__ import annotations


class SchemaError(Exception):
    """Base class for wire-format errors."""


class DecodeError(SchemaError):
    """The bytes are not a valid event; ``reason`` is the dead-letter reason."""

    def __init__(self, message: str, *, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


class EncodeError(SchemaError):
    """An event could not be encoded with its schema."""
