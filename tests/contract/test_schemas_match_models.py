"""Contract: each .avsc record and its pydantic model agree field by field."""

from __future__ import annotations

import enum
import types
from typing import Any, Union, cast, get_args, get_origin

import pytest
from annotated_types import Ge, Le
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from schemas.catalog import current_schema
from schemas.models import (
    AttemptRecord,
    DeadLetterEvent,
    DelayedRequest,
    RequestEvent,
    ResultEvent,
)

INT32 = (-(2**31), 2**31 - 1)
# Factories whose value is a constant: the schema default must be that constant. Any other
# factory (a UUID, the clock) has no constant to write, so the schema field has no default.
CONSTANT_FACTORIES: dict[Any, Any] = {dict: {}, list: []}


def _records() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    """Every record of the wire contract with its model, nested records included."""
    dead_letter = current_schema("dead_letter_event").schema
    fields = {f["name"]: f["type"] for f in dead_letter["fields"]}
    delayed = current_schema("delayed_request").schema
    delayed_fields = {f["name"]: f["type"] for f in delayed["fields"]}
    return [
        (RequestEvent, current_schema("request_event").schema),
        (ResultEvent, current_schema("result_event").schema),
        (DeadLetterEvent, dead_letter),
        (RequestEvent, fields["original"][1]),
        (AttemptRecord, fields["attempts"]["items"]),
        (DelayedRequest, delayed),
        (RequestEvent, delayed_fields["request"]),
        (AttemptRecord, delayed_fields["attempts"]["items"]),
    ]


def mismatches(model: type[BaseModel], record: dict[str, Any]) -> list[str]:
    """Every way ``record`` (an Avro record schema) disagrees with ``model``."""
    problems = []
    if record["name"] != model.__name__:
        problems.append(f"record {record['name']} mirrors model {model.__name__}")
    avro_fields = {f["name"]: f for f in record["fields"]}
    for name in model.model_fields.keys() - avro_fields.keys():
        problems.append(f"{model.__name__}.{name}: in the model, missing from the schema")
    for name in avro_fields.keys() - model.model_fields.keys():
        problems.append(f"{model.__name__}.{name}: in the schema, missing from the model")
    for name in model.model_fields.keys() & avro_fields.keys():
        field, avro_field = model.model_fields[name], avro_fields[name]
        where = f"{model.__name__}.{name}"
        problems += _type_mismatches(where, field.annotation, field, avro_field["type"])
        problems += _default_mismatches(where, field, avro_field)
    return problems


def _type_mismatches(where: str, annotation: Any, field: FieldInfo, avro: Any) -> list[str]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or not isinstance(avro, list) or avro[:1] != ["null"] or len(avro) != 2:
            return [f"{where}: optional {annotation} must be ['null', T], got {avro}"]
        return _type_mismatches(where, inner[0], field, avro[1])
    if isinstance(avro, list):
        return [f"{where}: the schema is nullable, the model is not ({annotation})"]
    if origin is dict:
        if args[0] is not str or not isinstance(avro, dict) or avro.get("type") != "map":
            return [f"{where}: {annotation} must be an Avro map, got {avro}"]
        return _type_mismatches(f"{where}[]", args[1], FieldInfo(), avro["values"])
    if origin is list:
        if not isinstance(avro, dict) or avro.get("type") != "array":
            return [f"{where}: {annotation} must be an Avro array, got {avro}"]
        return _type_mismatches(f"{where}[]", args[0], FieldInfo(), avro["items"])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(avro, dict) or avro.get("type") != "record":
            return [f"{where}: model {annotation.__name__} must be an Avro record, got {avro}"]
        return mismatches(annotation, avro)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        symbols = [member.value for member in annotation]
        if not isinstance(avro, dict) or avro.get("symbols") != symbols:
            return [f"{where}: enum {annotation.__name__} must have symbols {symbols}"]
        if avro.get("default") not in symbols:
            return [f"{where}: enum {annotation.__name__} needs a default symbol"]
        return []
    allowed = _primitive(annotation, field)
    if avro not in allowed:
        return [f"{where}: {annotation.__name__} must be one of {sorted(allowed)}, got {avro}"]
    return []


def _primitive(annotation: Any, field: FieldInfo) -> set[str]:
    if annotation is int:
        # An Avro int is 32 bits; a model int with no such bounds needs a long.
        lows = [cast(int, m.ge) for m in field.metadata if isinstance(m, Ge)]
        highs = [cast(int, m.le) for m in field.metadata if isinstance(m, Le)]
        bounded = bool(lows and highs) and INT32[0] <= max(lows) <= min(highs) <= INT32[1]
        return {"int", "long"} if bounded else {"long"}
    return {bool: {"boolean"}, str: {"string"}, bytes: {"bytes"}, float: {"double"}}.get(
        annotation, set()
    )


def _default_mismatches(where: str, field: FieldInfo, avro_field: dict[str, Any]) -> list[str]:
    has_default = "default" in avro_field
    if field.is_required():
        return [f"{where}: the schema has a default, the model requires it"] if has_default else []
    if field.default_factory is not None:
        if field.default_factory not in CONSTANT_FACTORIES:
            return [f"{where}: a computed default cannot be an Avro default"] if has_default else []
        expected = CONSTANT_FACTORIES[field.default_factory]
    else:
        expected = _avro_default(field.default)
    if not has_default:
        return [f"{where}: the model defaults to {expected!r}, the schema has no default"]
    actual = avro_field["default"]
    # 0 == False in Python, but not in a schema: compare booleans by kind too.
    if actual != expected or isinstance(actual, bool) != isinstance(expected, bool):
        return [f"{where}: schema default {actual!r}, model default {expected!r}"]
    return []


def _avro_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("latin-1")  # Avro JSON writes bytes defaults as code points 0-255
    return value


@pytest.mark.parametrize(
    ("model", "record"),
    _records(),
    ids=[
        "request",
        "result",
        "dead_letter",
        "dead_letter.original",
        "dead_letter.attempts",
        "delayed",
        "delayed.request",
        "delayed.attempts",
    ],
)
def test_schema_matches_model(model, record):
    assert mismatches(model, record) == []


def test_the_embedded_request_is_the_request_event_schema():
    dead_letter = current_schema("dead_letter_event").schema
    original = next(f for f in dead_letter["fields"] if f["name"] == "original")["type"][1]

    assert to_parsing_canonical_form(original) == current_schema("request_event").canonical_form


class _WithNewField(RequestEvent):
    region: str = "eu"


class _WithNewOptional(ResultEvent):
    shard: int | None = None


class _Renamed(ResultEvent):
    latency_ms: int = 0


@pytest.mark.parametrize(
    ("model", "name", "expected"),
    [
        (_WithNewField, "request_event", "_WithNewField.region: in the model, missing from"),
        (_WithNewOptional, "result_event", "_WithNewOptional.shard: in the model, missing from"),
        (_Renamed, "result_event", "_Renamed.latency_ms: int must be one of ['long'], got double"),
    ],
    ids=["new-field", "new-optional-field", "changed-type"],
)
def test_a_model_change_without_the_schema_change_is_caught(model, name, expected):
    problems = mismatches(model, current_schema(name).schema)

    assert any(p.startswith(expected) for p in problems), problems


def test_default_drift_is_caught():
    class Drifted(RequestEvent):
        priority: int = Field(default=4, ge=0, le=9)

    problems = mismatches(Drifted, current_schema("request_event").schema)

    assert "Drifted.priority: schema default 5, model default 4" in problems
