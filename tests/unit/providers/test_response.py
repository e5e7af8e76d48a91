"""Header and JSON parsing behind classify."""

from __future__ import annotations

from typing import Any

import pytest

from providers.declaration import RateLimitHeaders
from providers.response import RateLimitReader, json_at, parse_duration, retry_after_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h2m3.5s", 3723.5),
     ("17", 17.0), ("0.5", 0.5), ("soon", None), ("1x", None), ("", None)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0", 0.0), ("-3", 0.0), ("2.5", 2.5), ("nan", None), ("soon", None),
     ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0), ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0)],
)  # fmt: skip
def test_retry_after(value: str, expected: float | None) -> None:
    assert retry_after_s({"retry-after": value}, now=40.0) == expected


@pytest.mark.parametrize(
    ("kind", "reset", "expected"),
    [("epoch_s", "1060", 60.0), ("epoch_s", "900", 0.0), ("delta_s", "30", 30.0),
     ("duration", "2m", 120.0), ("delta_s", "junk", None)],
)  # fmt: skip
def test_reset_kinds(kind: Any, reset: str, expected: float | None) -> None:
    names = {"core": RateLimitHeaders(limit="L", remaining="R", reset="T", reset_kind=kind)}
    info = RateLimitReader(names).read({"l": "10", "r": "3", "t": reset}, now=1000.0)["core"]
    assert (info.limit, info.remaining, info.reset_after_s) == (10, 3, expected)


def test_absent_dimensions_are_left_out() -> None:
    names = {"requests": RateLimitHeaders(remaining="r"), "tokens": RateLimitHeaders(remaining="t")}
    assert list(RateLimitReader(names).read({"r": "1"}, now=0.0)) == ["requests"]


@pytest.mark.parametrize(
    ("data", "path", "value"),
    [({"usage": {"total_tokens": 7}}, ("usage", "total_tokens"), 7),
     ({"choices": [{"n": 1}]}, ("choices", "0", "n"), 1),
     ({"choices": []}, ("choices", "0"), None),
     ("text", ("a",), None), (None, ("a",), None)],
)  # fmt: skip
def test_json_at(data: Any, path: tuple[str, ...], value: Any) -> None:
    assert json_at(data, path) == value
