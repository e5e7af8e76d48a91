"""The client-credentials flow, stepped by hand: the request it yields, the token it returns."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from providers.auth.config import OAuth2ClientCredentialsAuth
from providers.auth.oauth2_flow import (
    AccessToken,
    TokenResponse,
    build_token_request,
    client_credentials_flow,
    parse_token_response,
)
from providers.errors import AuthFailed, InvalidResponse, ProviderUnavailable, RateLimited

SECRET = "cl!ent secret"


def config(**fields: Any) -> OAuth2ClientCredentialsAuth:
    data = {
        "token_url": "https://id.test/oauth/token",
        "client_id": "my client",
        "client_secret": SECRET,
        **fields,
    }
    return OAuth2ClientCredentialsAuth.model_validate(data)


def ok(payload: dict[str, Any]) -> TokenResponse:
    return TokenResponse(200, json.dumps(payload).encode())


def test_token_request_with_basic_client_auth():
    request = build_token_request(config(scope="read write", audience="api"), SECRET)
    assert (request.method, request.url) == ("POST", "https://id.test/oauth/token")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body is not None
    form = parse_qs(request.body.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": ["read write"],
        "audience": ["api"],
    }
    scheme, encoded = request.headers["Authorization"].split(" ")
    # RFC 6749 §2.3.1: form-urlencoded before Basic.
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "my%20client:cl%21ent%20secret"


def test_token_request_with_body_client_auth():
    request = build_token_request(config(client_auth="body"), SECRET)
    assert "Authorization" not in request.headers
    assert request.body is not None
    form = parse_qs(request.body.decode())
    assert form["client_id"] == ["my client"]
    assert form["client_secret"] == [SECRET]


def test_flow_stepped_by_hand():
    token_request = build_token_request(config(), SECRET)
    flow = client_credentials_flow(token_request, now=1000.0, refresh_margin_s=30)
    assert next(flow) is token_request
    with pytest.raises(StopIteration) as done:
        flow.send(ok({"access_token": "abc", "token_type": "bearer", "expires_in": 3600}))
    token = done.value.value
    assert isinstance(token, AccessToken)
    assert (token.value, token.expires_at, token.refresh_at) == ("abc", 4600.0, 4570.0)
    assert token.headers == {"Authorization": "Bearer abc"}
    assert "abc" not in repr(token)


@pytest.mark.parametrize(
    ("expires_in", "expires_at", "refresh_at"),
    [
        (3600, 4600.0, 4570.0),
        ("120", 1120.0, 1090.0),
        (40, 1040.0, 1020.0),  # margin larger than half the lifetime: refresh half-way
        (None, None, None),  # no lifetime: kept until a 401
        (-5, None, None),
        ("soon", None, None),
        (True, None, None),
    ],
)
def test_expiry_and_refresh_instants(expires_in, expires_at, refresh_at):
    payload = {"access_token": "abc", "token_type": "Bearer"}
    if expires_in is not None:
        payload["expires_in"] = expires_in
    token = parse_token_response(ok(payload), now=1000.0, refresh_margin_s=30)
    assert (token.expires_at, token.refresh_at) == (expires_at, refresh_at)


@pytest.mark.parametrize(
    ("response", "error", "retriable"),
    [
        (TokenResponse(401, b'{"error":"invalid_client"}'), AuthFailed, False),
        (TokenResponse(400, b'{"error":"invalid_scope"}'), AuthFailed, False),
        (TokenResponse(429, b"", {"Retry-After": "7"}), RateLimited, True),
        (TokenResponse(503, b"down"), ProviderUnavailable, True),
        (TokenResponse(200, b"<html>"), InvalidResponse, False),
        (TokenResponse(200, b"[1]"), InvalidResponse, False),
        (ok({"token_type": "Bearer"}), InvalidResponse, False),
        (ok({"access_token": "x", "token_type": "mac"}), InvalidResponse, False),
    ],
)
def test_error_responses(response, error, retriable):
    with pytest.raises(error) as info:
        parse_token_response(response, now=0, refresh_margin_s=30)
    assert info.value.retriable is retriable
    assert "\n" not in str(info.value)


def test_error_codes_are_named_but_bodies_never_echoed():
    with pytest.raises(AuthFailed, match=r"\(invalid_client\)"):
        parse_token_response(
            TokenResponse(401, b'{"error":"invalid_client"}'), now=0, refresh_margin_s=0
        )
    leaky = json.dumps({"error": "your secret hunter2 is wrong"}).encode()
    with pytest.raises(AuthFailed) as info:
        parse_token_response(TokenResponse(401, leaky), now=0, refresh_margin_s=0)
    assert "hunter2" not in str(info.value)


def test_rate_limited_carries_retry_after():
    with pytest.raises(RateLimited) as info:
        parse_token_response(
            TokenResponse(429, b"", {"retry-after": "7"}), now=0, refresh_margin_s=0
        )
    assert info.value.retry_after_s == 7.0
