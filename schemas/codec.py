"""Event codecs: pydantic model <-> framed Avro bytes, with schema resolution for old versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final, Generic, TypeVar, get_args

from fastavro import schemaless_reader, schemaless_writer
from pydantic import BaseModel, ValidationError

from schemas.catalog import (
    SchemaVersion,
    current_schema,
    parse_record_schema,
    released_schemas,
)
from schemas.errors import DecodeError, EncodeError
from schemas.framing import Framing, SingleObjectFraming
from schemas.models import (
    AccessBatch,
    DeadLetterEvent,
    DelayedRequest,
    RequestEvent,
    ResultEvent,
)

T = TypeVar("T", bound=BaseModel)

_MAX_DETAIL_CHARS: Final = 240
_MAX_INPUT_CHARS: Final = 60
_MAX_FIELD_ERRORS: Final = 3


@dataclass(frozen=True, slots=True)
class _Reader:
    """How to read bodies written with one writer schema."""

    version: str
    writer: dict[str, Any]
    # The current schema when the writer differs from it (fastavro resolves); None when they
    # are the same, which skips resolution on the hot path.
    reader: dict[str, Any] | None


class EventCodec(Generic[T]):
    """Encodes one event model to framed Avro bytes and decodes them back.

    Decoding accepts bodies written with the current schema or any released version (resolved
    to the current one), and with any schema the framing can look up (a registry).
    """

    __slots__ = ("_flat", "_framing", "_header", "_label", "_model", "_readers", "_schema")

    def __init__(
        self,
        model: type[T],
        schema: SchemaVersion,
        *,
        released: Sequence[SchemaVersion] = (),
        framing: Framing | None = None,
    ) -> None:
        """Build a codec; all schema parsing happens here, none per message.

        Args:
            model: the pydantic model decoded values are validated into.
            schema: the schema ``encode`` writes.
            released: older versions ``decode`` must still read.
            framing: the message header; Avro single-object encoding by default.
        """
        self._model = model
        self._schema = schema
        self._framing: Framing = framing or SingleObjectFraming()
        self._label = model.__name__
        self._flat = _is_flat(model)
        self._header = self._framing.header_for(schema)
        self._readers: dict[bytes, _Reader] = {
            self._framing.key_for(old): _Reader(old.version, old.parsed, schema.parsed)
            for old in released
        }
        # Last, so that a released version identical on the wire to the current schema (same
        # fingerprint: only docs or defaults changed) is read without resolution.
        self._readers[self._framing.key_for(schema)] = _Reader("current", schema.parsed, None)

    @classmethod
    def for_event(cls, model: type[T], name: str, framing: Framing | None = None) -> EventCodec[T]:
        """The codec for event ``name`` (see ``catalog.EVENT_NAMES``) and all its releases."""
        return cls(model, current_schema(name), released=released_schemas(name), framing=framing)

    @property
    def model(self) -> type[T]:
        return self._model

    @property
    def schema(self) -> SchemaVersion:
        return self._schema

    def encode(self, event: T) -> bytes:
        """Frame and Avro-encode ``event`` with the current schema.

        Raises:
            EncodeError: the value does not fit the schema (e.g. a long beyond 64 bits, a
                lone surrogate in a string), or ``event`` is not this codec's model.
        """
        if not isinstance(event, self._model):
            raise EncodeError(f"{self._label} codec cannot encode {type(event).__name__}")
        # A model without nested models already holds the record fastavro wants in __dict__
        # (field name -> value); only nested models need model_dump's copy into plain dicts.
        return self.encode_unchecked(event.__dict__ if self._flat else event.model_dump())

    def encode_unchecked(self, datum: Mapping[str, Any]) -> bytes:
        """Frame and Avro-encode a plain record, skipping the model's validation.

        For tests and tools that must produce what the model rejects (``priority=42``); the
        value must still fit the Avro schema.

        Raises:
            EncodeError: the value does not fit the schema.
        """
        buf = BytesIO()
        buf.write(self._header)
        try:
            # Tuple notation, ("branch name", value) picking a union branch, is off: we never
            # use it, it halves the writer's speed, and with it on a tuple value ("null", x)
            # in a union with null would silently be written as null.
            schemaless_writer(buf, self._schema.parsed, datum, disable_tuple_notation=True)
        except Exception as exc:  # fastavro raises ValueError, OverflowError, UnicodeError...
            raise EncodeError(f"cannot encode {self._label}: {_one_line(exc)}") from exc
        return buf.getvalue()

    def decode(self, raw: bytes) -> T:
        """Read one framed event and validate it into the model.

        Raises:
            DecodeError: ``reason="undecodable"`` for bad framing, an unknown schema, a
                truncated or malformed body; ``reason="invalid"`` when the Avro reads but the
                model rejects a value (the message names the field).
        """
        reader, start = self._reader_for(raw)
        buf = BytesIO(raw)
        buf.seek(start)  # BytesIO shares the bytes; seeking avoids copying the body
        try:
            datum = schemaless_reader(buf, reader.writer, reader.reader)
        except EOFError as exc:
            raise self._undecodable(
                f"Avro body ends early ({reader.version} schema): truncated, or written with "
                "another schema"
            ) from exc
        except Exception as exc:  # bad input must become a dead letter, whatever fastavro raises
            raise self._undecodable(f"{_one_line(exc)} ({reader.version} schema)") from exc
        if trailing := len(raw) - buf.tell():
            raise self._undecodable(
                f"{trailing} bytes after the Avro body ({reader.version} schema)"
            )
        try:
            return self._model.model_validate(datum)
        except ValidationError as exc:
            detail = _describe(exc)
            raise DecodeError(f"invalid {self._label}: {detail}", reason="invalid") from None

    def _reader_for(self, raw: bytes) -> tuple[_Reader, int]:
        """The reader for the schema named in the header, and where the body starts."""
        if not raw:
            raise self._undecodable("empty message (a tombstone?)")
        try:
            key, start = self._framing.split(raw)
        except DecodeError as exc:
            raise self._undecodable(str(exc)) from None
        except Exception as exc:  # not bytes at all
            raise self._undecodable(f"not a byte string: {type(raw).__name__}") from exc
        reader = self._readers.get(key)
        return (reader or self._resolve(key)), start

    def _resolve(self, key: bytes) -> _Reader:
        """Parse and remember the writer schema the framing finds for an unknown key.

        A lookup that fails for another reason than "no such schema" (a registry outage)
        propagates: the message may be fine, so it must not become a dead letter.
        """
        writer = self._framing.lookup(key)
        if writer is None:
            raise self._undecodable(
                f"unknown writer schema {key.hex()}: neither the current nor a released "
                f"{self._label} schema"
            )
        try:
            parsed = parse_record_schema(writer)
        except Exception as exc:  # fastavro's SchemaParseException and friends
            raise self._undecodable(f"writer schema {key.hex()}: {_one_line(exc)}") from exc
        reader = _Reader(key.hex(), parsed, self._schema.parsed)
        self._readers[key] = reader
        return reader

    def _undecodable(self, detail: str) -> DecodeError:
        return DecodeError(f"undecodable {self._label}: {detail}", reason="undecodable")

    def __repr__(self) -> str:
        return f"EventCodec({self._label}, {self._schema.fingerprint.hex()}, {self._framing!r})"


class Codecs:
    """One codec per top-level event, sharing one framing; cheap to build (schemas are cached)."""

    __slots__ = ("access", "dead_letter", "delayed", "request", "result")

    def __init__(self, framing: Framing | None = None) -> None:
        """Build the event codecs.

        Args:
            framing: the message header; Avro single-object encoding by default.
        """
        framing = framing or SingleObjectFraming()
        self.request = EventCodec.for_event(RequestEvent, "request_event", framing)
        self.result = EventCodec.for_event(ResultEvent, "result_event", framing)
        self.dead_letter = EventCodec.for_event(DeadLetterEvent, "dead_letter_event", framing)
        self.delayed = EventCodec.for_event(DelayedRequest, "delayed_request", framing)
        self.access = EventCodec.for_event(AccessBatch, "access_batch", framing)

    def __repr__(self) -> str:
        return f"Codecs({self.request!r}, {self.result!r}, {self.dead_letter!r})"

    def encode_result(self, event: ResultEvent) -> bytes:
        """A result's bytes (``Codecs`` is the outcome publisher's encoder as it is)."""
        return self.result.encode(event)

    def encode_dead_letter(self, event: DeadLetterEvent) -> bytes:
        return self.dead_letter.encode(event)


def _is_flat(model: type[BaseModel]) -> bool:
    """True when no field of ``model`` holds a pydantic model, even inside a container."""
    return not any(_holds_model(field.annotation) for field in model.model_fields.values())


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


def _describe(exc: ValidationError) -> str:
    """One line naming each rejected field, e.g. ``priority: Input should be ... (got 42)``."""
    errors = exc.errors(include_url=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']} "
        f"(got {_short(repr(err['input']), _MAX_INPUT_CHARS)})"
        for err in errors[:_MAX_FIELD_ERRORS]
    ]
    if len(errors) > _MAX_FIELD_ERRORS:
        parts.append(f"and {len(errors) - _MAX_FIELD_ERRORS} more")
    return "; ".join(parts)


def _one_line(exc: BaseException) -> str:
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
    # Dead-letter reasons and log lines must stay one line and bounded, whatever the input.
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
