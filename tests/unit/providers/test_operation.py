"""build_request: path/query encoding, the SSRF guards, header allow-list, bodies."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import Provider
from providers.errors import BadRequest, BodyTooLarge, NotAllowed, UnknownOperation
from schemas.models import RequestEvent

BASE = "https://api.acme.test/v1"


def event(operation: str = "get_item", **fields: Any) -> RequestEvent:
    fields.setdefault("params", {"owner": "o", "item": "i"})
    return RequestEvent(provider="acme", operation=operation, request_id="rid-1", **fields)


@pytest.mark.parametrize(
    ("params", "url"),
    [
        ({"owner": "o", "item": "i"}, f"{BASE}/items/o/i?per_page=50"),
        ({"owner": "a b", "item": "x", "page": "2"}, f"{BASE}/items/a%20b/x?page=2&per_page=50"),
        ({"owner": "o", "item": "i", "per_page": "5"}, f"{BASE}/items/o/i?per_page=5"),
        # Each of these would change the path, the query or the host if interpolated raw.
        ({"owner": "../../admin", "item": "i"}, f"{BASE}/items/..%2F..%2Fadmin/i?per_page=50"),
        ({"owner": "o", "item": "i?admin=1#x"}, f"{BASE}/items/o/i%3Fadmin%3D1%23x?per_page=50"),
        ({"owner": "a/b", "item": "%2e%2e"}, f"{BASE}/items/a%2Fb/%252e%252e?per_page=50"),
        ({"owner": "user@evil.test", "item": "i"}, f"{BASE}/items/user%40evil.test/i?per_page=50"),
        ({"owner": "o", "item": "i", "page": "1&admin=true"},
         f"{BASE}/items/o/i?page=1%26admin%3Dtrue&per_page=50"),
        ({"owner": "o", "item": "i", "q": "red shoes"},
         f"{BASE}/items/o/i?per_page=50&q=red%20shoes"),
    ],
)  # fmt: skip
def test_urls_are_encoded_and_stay_under_the_base(
    provider: Provider, params: dict[str, str], url: str
) -> None:
    request = provider.build_request(event(params=params))
    assert request.url == url
    assert request.url.startswith(BASE + "/items/")


@pytest.mark.parametrize(
    ("operation", "params", "error"),
    [
        ("get_item", {"owner": "..", "item": "i"}, NotAllowed),
        ("get_item", {"owner": ".", "item": "i"}, NotAllowed),
        ("get_item", {"owner": "", "item": "i"}, NotAllowed),
        ("get_item", {"owner": "https://evil.test/x", "item": "i"}, NotAllowed),
        ("get_item", {"owner": "//evil.test", "item": "i"}, NotAllowed),
        ("get_item", {"owner": "\\\\evil.test", "item": "i"}, NotAllowed),
        ("get_item", {"owner": "o", "item": "i", "page": "http://169.254.169.254/"}, NotAllowed),
        ("get_item", {"owner": "o", "item": "i", "admin": "1"}, NotAllowed),
        ("get_item", {"owner": "o"}, BadRequest),
        ("get_item", {"owner": "o", "item": "i", "q": "DROP TABLE"}, BadRequest),
        ("search", {}, BadRequest),
        ("nope", {}, UnknownOperation),
    ],
)
def test_unsafe_or_invalid_params_are_refused(
    provider: Provider, operation: str, params: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        provider.build_request(event(operation, params=params))
    assert info.value.reason == error.reason  # type: ignore[attr-defined]


def test_a_url_to_the_providers_own_host_is_allowed(provider: Provider) -> None:
    params = {"owner": "o", "item": "i", "page": "https://api.acme.test/v1/items?page=2"}
    assert "page=https%3A%2F%2Fapi.acme.test" in provider.build_request(event(params=params)).url


def test_allow_urls_lets_a_declared_param_carry_any_url(provider: Provider) -> None:
    request = provider.build_request(
        event("register_hook", params={"target": "https://hooks.example/x"})
    )
    assert request.url == f"{BASE}/hooks?target=https%3A%2F%2Fhooks.example%2Fx"


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Authorization": "Bearer stolen"}, NotAllowed),
        ({"Host": "evil.test"}, NotAllowed),
        ({"X-Forwarded-Host": "evil.test"}, NotAllowed),
        ({"If-None-Match": 'W/"1"\r\nX-Injected: 1'}, NotAllowed),
    ],
)
def test_headers_off_the_allow_list_are_refused(
    provider: Provider, headers: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        provider.build_request(event(headers=headers))


def test_allowed_headers_are_matched_case_insensitively(provider: Provider) -> None:
    request = provider.build_request(event(headers={"if-none-match": '"abc"'}))
    assert request.headers["If-None-Match"] == '"abc"'


def test_request_id_header_and_static_headers(provider_factory: Any) -> None:
    provider = provider_factory(headers={"Accept": "application/json"})
    headers = provider.build_request(event()).headers
    assert headers["X-Request-Id"] == "rid-1"
    assert headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in headers  # GET is idempotent: no key


def test_post_carries_the_idempotency_key(provider: Provider) -> None:
    request = provider.build_request(
        event("create_item", params={}, body=b"{}", idempotency_key="k-1")
    )
    assert request.method == "POST"
    assert request.headers["Idempotency-Key"] == "k-1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b"{}"


def test_idempotency_key_defaults_to_the_request_id(provider: Provider) -> None:
    request = provider.build_request(event("create_item", params={}, body=b"{}"))
    assert request.headers["Idempotency-Key"] == "rid-1"


@pytest.mark.parametrize(
    ("operation", "fields", "error"),
    [
        ("get_item", {"body": b"x"}, NotAllowed),
        ("create_item", {"params": {}}, BadRequest),
        ("create_item", {"params": {}, "body": b"x", "content_type": "text/xml"}, NotAllowed),
        ("create_item", {"params": {}, "body": b"x" * 2049}, BodyTooLarge),
    ],
)
def test_bodies(
    provider_factory: Any, operation: str, fields: dict[str, Any], error: type[Exception]
) -> None:
    provider = provider_factory(max_request_bytes=2048)
    with pytest.raises(error):
        provider.build_request(event(operation, **fields))


def test_content_type_parameters_are_kept(provider: Provider) -> None:
    request = provider.build_request(
        event("create_item", params={}, body=b"{}", content_type="application/json; charset=utf-8")
    )
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
