"""Directives from query parameters and headers, and clear errors for bad values."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from providers.fake.directives import (
    DirectiveError,
    Directives,
    read_cache_control,
    read_directives,
    read_prompt_tokens,
)


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/v1/items/1", {}, None),
        ("/v1/items/1?other=1", {}, None),
        ("/v1/items/1?fake_status=404", {}, Directives(status=404)),
        ("/v1/items/1?fake_status=timeout", {}, Directives(status="timeout")),
        ("/v1/items/1?fake_delay_ms=250", {}, Directives(delay_s=0.25)),
        (
            "/x?fake_status=503&fake_fail_first=2&fake_retry_after_s=3",
            {},
            Directives(status=503, fail_first=2, retry_after_s=3),
        ),
        (
            "/x",
            {"X-Fake-Status": "500", "X-Fake-Fail-First": "1"},
            Directives(status=500, fail_first=1),
        ),
        ("/x", {"X-Fake-Delay-Ms": "5"}, Directives(delay_s=0.005)),
        ("/x?fake_status=400", {"X-Fake-Status": "500"}, Directives(status=400)),
        (
            "/x?fake_cache_control=max-age%3D60,%20public",
            {},
            Directives(cache_control="max-age=60, public"),
        ),
    ],
)
def test_read(path, headers, expected):
    assert read_directives(make_mocked_request("GET", path, headers=headers)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/x?fake_status=abc",
        "/x?fake_status=700",
        "/x?fake_delay_ms=-1",
        "/x?fake_delay_ms=soon",
        "/x?fake_status=200&fake_fail_first=x",
        "/x?fake_cache_control=",
        "/x?fake_cache_control=Max-Age%3D1",
        "/x?fake_cache_control=no-cache%3D%22Set-Cookie%22",
        "/x?fake_cache_control=a%0D%0AX-Evil:%201",
        "/x?fake_cache_control=" + "a" * 101,
    ],
)
def test_bad_values(path):
    with pytest.raises(DirectiveError):
        read_directives(make_mocked_request("GET", path))


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/v1/chat/completions", {}, None),
        ("/v1/chat/completions?fake_prompt_tokens=1200", {}, 1200),
        ("/v1/chat/completions", {"X-Fake-Prompt-Tokens": "0"}, 0),
        ("/v1/chat/completions?fake_prompt_tokens=7", {"X-Fake-Prompt-Tokens": "9"}, 7),
    ],
)
def test_read_prompt_tokens(path, headers, expected):
    assert read_prompt_tokens(make_mocked_request("POST", path, headers=headers)) == expected


@pytest.mark.parametrize("value", ["many", "-1", "1.5", "1e9"])
def test_bad_prompt_tokens(value):
    request = make_mocked_request("POST", "/x", headers={"X-Fake-Prompt-Tokens": value})
    with pytest.raises(DirectiveError, match="fake_prompt_tokens"):
        read_prompt_tokens(request)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/items/1", None),
        ("/v1/items/1?fake_status=200", None),
        ("/v1/items/1?fake_cache_control=no-store", "no-store"),
        (
            "/v1/items/1?fake_cache_control=max-age=0,%20must-revalidate",
            "max-age=0, must-revalidate",
        ),
    ],
)
def test_read_cache_control(path, expected):
    assert read_cache_control(make_mocked_request("GET", path)) == expected


def test_bad_cache_control():
    with pytest.raises(DirectiveError, match="fake_cache_control"):
        read_cache_control(make_mocked_request("GET", "/x?fake_cache_control=%22x%22"))
