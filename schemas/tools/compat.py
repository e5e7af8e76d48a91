"""Schema evolution checks: can one schema read what another wrote, proven on sample records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final, Literal

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.catalog import EVENT_NAMES, current_schema, released_schemas

Direction = Literal["backward", "forward"]

_NAMED: Final = frozenset({"record", "error", "enum", "fixed"})
# Past this depth unions take their null branch, so a recursive type still has a finite sample.
_MAX_DEPTH: Final = 16


@dataclass(frozen=True, slots=True)
class CompatProblem:
    """One way a schema pair fails to resolve.

    ``backward``: the current schema cannot read data written with the released ``version``
    (consumers on this code would fail on old messages). ``forward``: the released version
    cannot read data written with the current schema (consumers not yet upgraded would fail).
    """

    event: str
    version: str
    direction: Direction
    detail: str

    def __str__(self) -> str:
        reader, writer = ("current", self.version)
        if self.direction == "forward":
            reader, writer = writer, reader
        return f"{self.event}: {reader} cannot read {writer} ({self.direction}): {self.detail}"


def read_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; empty when it can.

    Two independent checks: Apache avro's static reader/writer rules, and a round trip of
    sample records (every union branch and enum symbol) through fastavro's schema resolution,
    which is what the codec runs.

    Args:
        reader: the reading schema, as JSON.
        writer: the writing schema, as JSON.

    Returns:
        One line per problem found.
    """
    for role, schema in (("reader", reader), ("writer", writer)):
        try:
            parse_schema(schema, named_schemas={})
            avro.schema.parse(json.dumps(schema))  # the stricter of the two parsers
        except Exception as exc:  # SchemaParseException, or a KeyError on a malformed document
            return [f"the {role} schema is not valid Avro: {type(exc).__name__}: {exc}"]
    return _static_problems(reader, writer) + _round_trip_problems(reader, writer)


def check_released(
    name: str, *, current: dict[str, Any] | None = None, forward: bool = True
) -> list[CompatProblem]:
    """Check a current schema against every released version of event ``name``.

    Args:
        name: the event, one of ``catalog.EVENT_NAMES``.
        current: the candidate schema; the one in ``schemas/avro`` when None.
        forward: also check that each released version reads the current schema's data.

    Returns:
        The problems; an empty list means the current schema may ship.
    """
    candidate = current_schema(name).schema if current is None else current
    problems: list[CompatProblem] = []
    for old in released_schemas(name):
        problems += [
            CompatProblem(name, old.version, "backward", detail)
            for detail in read_problems(candidate, old.schema)
        ]
        if forward:
            problems += [
                CompatProblem(name, old.version, "forward", detail)
                for detail in read_problems(old.schema, candidate)
            ]
    return problems


def check_all(*, forward: bool = True) -> list[CompatProblem]:
    """``check_released`` for every event."""
    return [p for name in EVENT_NAMES for p in check_released(name, forward=forward)]


def sample_data(schema: Any) -> list[Any]:
    """Records for ``schema`` that together take every union branch and enum symbol.

    Sample ``i`` takes branch ``i mod n`` of every union and symbol ``i mod n`` of every enum,
    so as many samples as the widest union or enum cover each alternative at least once.
    """
    return [_sample(schema, i, {}, "", 0) for i in range(max(_width(schema), 2))]


def _static_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro 1.12
    result = checker.get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [
        f"avro rules: {'; '.join(sorted(map(str, result.messages)))} "
        f"at {', '.join(sorted(map(str, result.locations)))}"
    ]


def _round_trip_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    parsed_writer = parse_schema(writer, named_schemas={})
    parsed_reader = parse_schema(reader, named_schemas={})
    first_sample: dict[str, int] = {}  # one line per distinct failure, not per sample
    for i, datum in enumerate(sample_data(writer)):
        buf = BytesIO()
        try:
            schemaless_writer(buf, parsed_writer, datum)
            buf.seek(0)
            schemaless_reader(buf, parsed_writer, parsed_reader)
        except Exception as exc:  # any failure to resolve is the finding itself
            first_sample.setdefault(f"{type(exc).__name__}: {exc}", i)
    return [f"sample {i} does not resolve: {error}" for error, i in first_sample.items()]


def _sample(schema: Any, variant: int, named: dict[str, Any], namespace: str, depth: int) -> Any:
    if isinstance(schema, list):
        if depth > _MAX_DEPTH and "null" in schema:
            return None
        return _sample(schema[variant % len(schema)], variant, named, namespace, depth + 1)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema](variant)
        return _sample(named[_fullname(schema, namespace)], variant, named, namespace, depth + 1)
    kind = schema["type"]
    if kind in _NAMED:
        namespace = schema.get("namespace", namespace)
        named[_fullname(schema["name"], namespace)] = schema
    if kind in ("record", "error"):
        return {
            f["name"]: _sample(f["type"], variant, named, namespace, depth + 1)
            for f in schema["fields"]
        }
    if kind == "enum":
        return schema["symbols"][variant % len(schema["symbols"])]
    if kind == "fixed":
        return bytes([variant % 256]) * schema["size"]
    if kind == "array":
        items = schema["items"]
        return [_sample(items, variant + n, named, namespace, depth + 1) for n in range(2)]
    if kind == "map":
        values = schema["values"]
        return {
            f"k{n}": _sample(values, variant + n, named, namespace, depth + 1) for n in range(2)
        }
    return _sample(kind, variant, named, namespace, depth + 1)  # {"type": "long", ...}


def _width(schema: Any) -> int:
    """The number of alternatives of the widest union or enum in ``schema``."""
    if isinstance(schema, list):
        return max([len(schema)] + [_width(s) for s in schema])
    if isinstance(schema, str):
        return 1  # primitives and references; a named type is measured where it is defined
    kind = schema["type"]
    if kind in ("record", "error"):
        return max([1] + [_width(f["type"]) for f in schema["fields"]])
    if kind == "enum":
        return len(schema["symbols"])
    if kind in ("array", "map"):
        return _width(schema["items" if kind == "array" else "values"])
    return 1


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


_PRIMITIVES: Final[dict[str, Any]] = {
    "null": lambda v: None,
    "boolean": lambda v: v % 2 == 0,
    "int": lambda v: v - 1,
    "long": lambda v: (v - 1) * 1_000_003,
    "float": lambda v: v + 0.5,
    "double": lambda v: v + 0.25,
    "bytes": lambda v: b"b%d" % v,
    "string": lambda v: f"s{v}",
}
