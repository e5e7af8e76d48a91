"""Probe p1 (security review 2026-12-02): host escape through event fields, size caps on values.

Path and query values stay one percent-encoded segment (held up: pinned); the URL-ish check
refuses the forms WHATWG parsers read as another host (finding 15); a parameter or header value
over its cap is ``bad_request`` and nothing is sent (finding 14); a header value with a control
character is ``not_allowed`` at build (finding 10).
"""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import ProviderError
from providers.http import ClientConfig, ProviderClient
from schemas.models import RequestEvent
from tests.unit.security.conftest import Recorder

SECRET = "SECRET_TOKEN_123"


def acme(url: str) -> Provider:
    return Provider(ProviderSpec.model_validate({
        "name": "acme", "base_url": f"{url}/api",
        "auth": {"type": "bearer", "token": f"literal:{SECRET}"},
        "operations": {
            "get": {"path": "/v2/widgets/{widget_id}", "query_params": {"q": {}, "url": {}},
                    "allowed_headers": ["X-Custom", "x-request-id", "accept"]},
        },
        "headers": {"Accept": "application/json"},
    }))  # fmt: skip


async def outcome(
    recorder: Recorder, params: dict[str, str], headers: dict[str, str] | None = None, **config: Any
) -> tuple[str, list[str]]:
    """What the call became ("HTTP 200" or the error's reason), and the request lines sent."""
    event = RequestEvent(provider="acme", operation="get", params=params, headers=headers or {})
    before = len(recorder.heads)
    async with ProviderClient(ClientConfig(**config)) as client:
        try:
            reply = await client.call(acme(recorder.url), event)
            result = f"HTTP {reply.status}"
        except ProviderError as exc:
            result = exc.reason
    return result, [head.split("\r\n")[0] for head in recorder.heads[before:]]


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("../../admin", "/api/v2/widgets/..%2F..%2Fadmin"),
        ("%2e%2e", "/api/v2/widgets/%252e%252e"),
        ("@evil.example", "/api/v2/widgets/%40evil.example"),
        ("a?x=1#frag", "/api/v2/widgets/a%3Fx%3D1%23frag"),
        ("a\r\nHost: evil", "/api/v2/widgets/a%0D%0AHost%3A%20evil"),
    ],
)
async def test_a_path_value_stays_one_encoded_segment(recorder_factory, value, target):
    recorder = await recorder_factory()
    assert await outcome(recorder, {"widget_id": value}) == ("HTTP 200", [f"GET {target} HTTP/1.1"])


@pytest.mark.parametrize(
    "value",
    [
        "http://evil.example/",
        "//evil.example/",
        # Finding 15: forms WHATWG parsers (browsers, Node.js) read as http(s)://evil.example.
        "http:/evil.example/",
        "https:evil.example/",
        "https:\\evil.example/",
        "\x01//evil.example/",
        "/\t/evil.example/",
        "h\ttp://evil.example/",
        " \x0chttp://evil.example/",
        "HTTPS:evil.example",
    ],
)
async def test_a_url_naming_another_host_is_not_allowed_and_not_sent(recorder_factory, value):
    recorder = await recorder_factory()
    assert await outcome(recorder, {"widget_id": "1", "url": value}) == ("not_allowed", [])


@pytest.mark.parametrize("value", ["10:30", "a:b", "mailto:x", "tenant/with/slashes"])
async def test_ordinary_values_with_colons_or_slashes_still_pass(recorder_factory, value):
    recorder = await recorder_factory()
    result, sent = await outcome(recorder, {"widget_id": "1", "q": value})
    assert result == "HTTP 200" and len(sent) == 1


async def test_a_path_value_over_max_param_chars_is_bad_request_and_not_sent(recorder_factory):
    recorder = await recorder_factory()
    assert await outcome(recorder, {"widget_id": "A" * 8192}) == ("bad_request", [])
    assert await outcome(recorder, {"widget_id": "1", "q": "B" * 2049}) == ("bad_request", [])
    result, _ = await outcome(recorder, {"widget_id": "A" * 2048})
    assert result == "HTTP 200"
    with pytest.raises(ValueError, match="at most 8192"):  # the probe's 100 KB: the model's cap
        RequestEvent(provider="acme", operation="get", params={"widget_id": "A" * 100_000})


async def test_a_header_value_over_its_cap_is_bad_request_and_not_sent(recorder_factory):
    recorder = await recorder_factory()
    headers = {"X-Custom": "B" * 2000}
    assert await outcome(recorder, {"widget_id": "1"}, headers, max_header_value_chars=1000) == (
        "bad_request",
        [],
    )
    with pytest.raises(ValueError, match="at most 8192"):  # the model's own cap
        RequestEvent(provider="acme", operation="get", headers={"X-Custom": "B" * 20_000})


@pytest.mark.parametrize("value", ["a\r\nX-Injected: yes", "a\nb", "a\x01\x7fb", "a\x00b"])
async def test_a_control_character_in_a_header_is_not_allowed(recorder_factory, value):
    recorder = await recorder_factory()
    assert await outcome(recorder, {"widget_id": "1"}, {"X-Custom": value}) == ("not_allowed", [])


async def test_pipeline_headers_win_over_an_events_case_variants(recorder_factory):
    recorder = await recorder_factory()
    event = RequestEvent(
        request_id="real-id", provider="acme", operation="get", params={"widget_id": "1"},
        headers={"X-REQUEST-ID": "forged-id", "ACCEPT": "text/evil"},
    )  # fmt: skip
    async with ProviderClient() as client:
        await client.call(acme(recorder.url), event)
    lines = [line.lower() for line in recorder.heads[0].split("\r\n")]
    assert "x-request-id: real-id" in lines and "accept: application/json" in lines
    assert not any("forged-id" in line or "text/evil" in line for line in lines)
