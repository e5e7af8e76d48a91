"""Tests of the compatibility checker: today's schemas pass, breaking changes are caught."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.catalog import EVENT_NAMES, current_schema
from schemas.tools.compat import (
    CompatProblem,
    check_all,
    check_released,
    read_problems,
    sample_data,
)


def _current(name: str) -> dict[str, Any]:
    return copy.deepcopy(current_schema(name).schema)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_current_schema_reads_and_is_read_by_every_released_version(name):
    assert check_released(name) == []


def test_check_all_is_clean():
    assert check_all() == []


def test_a_new_field_without_default_breaks_backward_compatibility():
    candidate = _current("request_event")
    candidate["fields"].append({"name": "region", "type": "string"})

    problems = check_released("request_event", current=candidate)

    assert {p.direction for p in problems} == {"backward"}
    assert any("avro rules" in p.detail and "region" in p.detail for p in problems)
    assert any("No default value for field region" in p.detail for p in problems)
    assert str(problems[0]).startswith("request_event: current cannot read v1 (backward): ")


def test_a_new_field_with_default_is_compatible_both_ways():
    candidate = _current("request_event")
    candidate["fields"].append({"name": "region", "type": "string", "default": "eu"})

    assert check_released("request_event", current=candidate) == []


def test_removing_a_field_without_default_breaks_forward_compatibility():
    candidate = _current("request_event")
    candidate["fields"] = [f for f in candidate["fields"] if f["name"] != "provider"]

    problems = check_released("request_event", current=candidate)

    assert problems
    assert {p.direction for p in problems} == {"forward"}
    assert check_released("request_event", current=candidate, forward=False) == []


def test_a_changed_type_is_caught():
    candidate = _current("result_event")
    _field(candidate, "latency_ms").update(type="string", default="0")

    assert {p.direction for p in check_released("result_event", current=candidate)} == {
        "backward",
        "forward",
    }


def test_a_new_status_is_forward_compatible_thanks_to_the_enum_default():
    candidate = _current("result_event")
    _field(candidate, "status")["type"]["symbols"].append("partial")

    assert check_released("result_event", current=candidate) == []


def test_a_new_status_without_an_enum_default_breaks_old_readers():
    old = _current("result_event")
    del _field(old, "status")["type"]["default"]
    new = copy.deepcopy(old)
    _field(new, "status")["type"]["symbols"].append("partial")

    problems = read_problems(old, new)

    # Both checks catch it: the static rule and the sample that carries "partial".
    assert len(problems) == 2


def test_a_change_inside_an_embedded_type_is_caught():
    candidate = _current("dead_letter_event")
    original = _field(candidate, "original")["type"][1]
    _field(original, "priority").update(type="string", default="5")

    problems = check_released("dead_letter_event", current=candidate)

    assert problems
    assert all(isinstance(p, CompatProblem) for p in problems)


def test_samples_take_every_enum_symbol_and_union_branch():
    schema = current_schema("result_event").schema

    samples = sample_data(schema)

    statuses = {s["status"] for s in samples}
    assert statuses == set(_field(schema, "status")["type"]["symbols"])
    assert {type(s["body"]) for s in samples} == {type(None), bytes}


def test_an_invalid_candidate_schema_is_reported_not_raised():
    candidate = _current("request_event")
    _field(candidate, "priority")["type"] = "string"  # the default 5 no longer fits

    (problem,) = check_released("request_event", current=candidate, forward=False)

    assert "the reader schema is not valid Avro" in problem.detail


def test_samples_resolve_named_references_and_recursion():
    linked = {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [
            {"name": "value", "type": {"type": "fixed", "name": "Id", "size": 2}},
            {"name": "next", "type": ["null", "Node"], "default": None},
            {"name": "tags", "type": {"type": "array", "items": "t.Id"}},
        ],
    }

    samples = sample_data(linked)

    assert len(samples) == 2
    assert read_problems(linked, linked) == []
