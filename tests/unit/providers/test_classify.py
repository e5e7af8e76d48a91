"""classify: HTTP statuses, provider error shapes, rate-limit headers and cost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.errors import (
    AuthFailed,
    BadRequest,
    BodyTooLarge,
    InvalidResponse,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from providers.registry import ProviderRegistry

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def catalog() -> dict[str, Provider]:
    registry = ProviderRegistry(use_entry_points=False)
    return {
        name: Provider(registry.spec(name), signer=NoAuthSigner())
        for name in ("github", "stripe", "openai", "slack", "open_meteo", "openweathermap")
    }


def classify(provider: Provider, status: int, headers: dict[str, str], body: Any = b"",
             operation: str | None = None) -> Any:  # fmt: skip
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    op = operation or next(iter(provider.spec.operations))
    return provider.classify(status, headers, raw, operation=op, now=NOW)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthFailed), (403, AuthFailed), (404, NotFound), (429, RateLimited),
        (500, ProviderUnavailable), (502, ProviderUnavailable), (503, ProviderUnavailable),
        (504, ProviderUnavailable), (400, BadRequest), (409, BadRequest), (422, BadRequest),
        (501, InvalidResponse), (302, InvalidResponse),
    ],
)  # fmt: skip
def test_status_mapping(provider: Provider, status: int, error: type[ProviderError]) -> None:
    with pytest.raises(error) as info:
        classify(provider, status, {}, operation="get_item")
    assert info.value.http_status == status
    assert info.value.retriable is error.retriable


def test_ok_and_not_modified(provider: Provider) -> None:
    assert classify(provider, 200, {}, b"{}", "get_item").status == 200
    assert classify(provider, 304, {}, b"", "get_item").status == 304


def test_response_over_the_cap(provider_factory: Any) -> None:
    provider = provider_factory(max_response_bytes=10)
    with pytest.raises(BodyTooLarge):
        classify(provider, 200, {}, b"x" * 11, "get_item")


def test_github_rate_limit_info_and_403_exhausted(catalog: dict[str, Provider]) -> None:
    github = catalog["github"]
    headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999",
               "X-RateLimit-Reset": str(int(NOW) + 1200), "Set-Cookie": "s=1"}  # fmt: skip
    response = classify(github, 200, headers, {"id": 1}, "get_repo")
    assert (response.rate_limit.limit, response.rate_limit.remaining) == (5000, 4999)
    assert response.rate_limit.reset_after_s == pytest.approx(1200)
    assert "set-cookie" not in response.headers
    exhausted = {**headers, "X-RateLimit-Remaining": "0"}
    with pytest.raises(RateLimited) as info:
        classify(github, 403, exhausted, {"message": "API rate limit exceeded"}, "get_repo")
    assert info.value.retry_after_s == pytest.approx(1200)
    assert "API rate limit exceeded" in str(info.value)
    with pytest.raises(AuthFailed):
        classify(github, 403, headers, {"message": "Resource not accessible"}, "get_repo")


def test_github_secondary_limit_403_with_retry_after(catalog: dict[str, Provider]) -> None:
    with pytest.raises(RateLimited) as info:
        classify(catalog["github"], 403, {"Retry-After": "60"}, {"message": "secondary"})
    assert info.value.retry_after_s == 60


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s",
          "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "250ms"}, 90.0),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s",
          "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({}, None),
    ],
)  # fmt: skip
def test_429_retry_after(
    catalog: dict[str, Provider], headers: dict[str, str], retry_after: float | None
) -> None:
    body = {"error": {"code": None, "message": "Rate limit reached for requests"}}
    with pytest.raises(RateLimited) as info:
        classify(catalog["openai"], 429, headers, body)
    assert info.value.retry_after_s == retry_after


def test_a_503_with_retry_after_carries_the_wait_for_the_retry(
    catalog: dict[str, Provider],
) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        classify(catalog["openai"], 503, {"Retry-After": "30"}, {"error": {"message": "down"}})
    assert info.value.retry_after_s == 30.0
    with pytest.raises(ProviderUnavailable) as without:
        classify(catalog["openai"], 503, {}, {"error": {"message": "down"}})
    assert without.value.retry_after_s is None


def test_openai_two_dimensions_and_token_cost(catalog: dict[str, Provider]) -> None:
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
               "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
               "x-ratelimit-remaining-tokens": "199950", "x-ratelimit-reset-tokens": "15ms",
               "x-request-id": "req_1"}  # fmt: skip
    body = {"usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}}
    response = classify(catalog["openai"], 200, headers, body, "create_chat_completion")
    assert response.rate_limits["requests"].remaining == 499
    assert response.rate_limits["tokens"].limit == 200000
    assert response.rate_limits["requests"].reset_after_s == pytest.approx(0.12)
    assert response.cost == pytest.approx(1000 * 0.00000015 + 500 * 0.0000006)
    assert response.headers["x-request-id"] == "req_1"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (429, "insufficient_quota", BadRequest),  # waiting does not refill a credit balance
        (401, "invalid_api_key", AuthFailed),
        (404, "model_not_found", NotFound),
        (429, "rate_limit_exceeded", RateLimited),
    ],
)
def test_openai_error_codes(
    catalog: dict[str, Provider], status: int, code: str, error: type[ProviderError]
) -> None:
    body = {"error": {"message": "m", "type": "x", "code": code}}
    with pytest.raises(error):
        classify(catalog["openai"], status, {}, body, "create_chat_completion")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"ok": False, "error": "invalid_auth"}, AuthFailed),
        ({"ok": False, "error": "ratelimited"}, RateLimited),
        ({"ok": False, "error": "channel_not_found"}, NotFound),
        ({"ok": False, "error": "internal_error"}, ProviderUnavailable),
        ({"ok": False, "error": "msg_too_long"}, BadRequest),
    ],
)
def test_slack_ok_false_in_a_200(
    catalog: dict[str, Provider], body: dict[str, Any], error: type[ProviderError]
) -> None:
    with pytest.raises(error) as info:
        classify(catalog["slack"], 200, {}, body, "post_message")
    assert body["error"] in str(info.value)


def test_slack_ok_true_and_429(catalog: dict[str, Provider]) -> None:
    assert classify(catalog["slack"], 200, {}, {"ok": True}, "auth_test").status == 200
    with pytest.raises(RateLimited) as info:
        classify(catalog["slack"], 429, {"Retry-After": "30"}, b"", "post_message")
    assert info.value.retry_after_s == 30


def test_stripe_error_shape(catalog: dict[str, Provider]) -> None:
    body = {"error": {"type": "invalid_request_error", "code": "resource_missing",
                      "message": "No such customer: 'cus_x'"}}  # fmt: skip
    with pytest.raises(NotFound, match="No such customer"):
        classify(catalog["stripe"], 404, {}, body, "get_customer")
    with pytest.raises(ProviderUnavailable):  # a concurrent request holds the idempotency key
        classify(catalog["stripe"], 409, {}, {"error": {"type": "idempotency_error"}})


@pytest.mark.parametrize(
    ("status", "should_retry", "error"),
    [(400, "true", ProviderUnavailable), (500, "false", BadRequest), (402, None, BadRequest),
     (429, "true", RateLimited), (503, "true", ProviderUnavailable)],
)  # fmt: skip
def test_stripe_should_retry_header(
    catalog: dict[str, Provider], status: int, should_retry: str | None,
    error: type[ProviderError],
) -> None:  # fmt: skip
    headers = {"Stripe-Should-Retry": should_retry} if should_retry else {}
    with pytest.raises(error):
        classify(catalog["stripe"], status, headers, {"error": {"type": "api_error"}})


def test_openweathermap_and_open_meteo_messages(catalog: dict[str, Provider]) -> None:
    with pytest.raises(AuthFailed, match="Invalid API key"):
        classify(catalog["openweathermap"], 401, {}, {"cod": 401, "message": "Invalid API key."})
    with pytest.raises(BadRequest, match="Latitude must be"):
        classify(catalog["open_meteo"], 400, {}, {"error": True, "reason": "Latitude must be"})


def test_a_non_json_error_body_is_quoted_briefly(provider: Provider) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        classify(provider, 502, {}, b"<html>\n" + b"x" * 5000, "get_item")
    assert len(str(info.value)) < 300
