"""httpx adapters: static signers and HMAC on sync and async clients; OAuth2 through httpx."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

import httpx
import pytest

from providers.auth.config import parse_auth_config
from providers.auth.factory import build_signer
from providers.auth.hmac_signing import verify_hmac
from providers.auth.httpx_adapter import (
    OAuth2ClientCredentialsHttpxAuth,
    SignerAuth,
    build_httpx_auth,
)

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


def echo_auth(request: httpx.Request) -> httpx.Response:
    """Answer with what arrived: the credentials a signer added."""
    return httpx.Response(200, json={"headers": dict(request.headers), "url": str(request.url)})


STATIC_CASES = [
    (
        {"type": "api_key", "name": "X-Key", "key": "k1"},
        lambda seen: seen["headers"]["x-key"] == "k1",
    ),
    (
        {"type": "api_key", "in": "query", "name": "appid", "key": "k 1"},
        lambda seen: seen["url"].endswith("?q=1&appid=k%201"),
    ),
    ({"type": "bearer", "token": "t"}, lambda seen: seen["headers"]["authorization"] == "Bearer t"),
    (
        {"type": "basic", "username": "u", "password": "p"},
        lambda seen: seen["headers"]["authorization"] == "Basic dTpw",
    ),
]


@pytest.mark.parametrize(("data", "check"), STATIC_CASES)
def test_static_signers_on_sync_client(data, check):
    auth = build_httpx_auth(parse_auth_config(data), clock=clock)
    with httpx.Client(transport=httpx.MockTransport(echo_auth), auth=auth) as client:
        assert check(client.get("https://api.test/v1?q=1").json())


@pytest.mark.parametrize(("data", "check"), STATIC_CASES)
async def test_static_signers_on_async_client(data, check):
    auth = build_httpx_auth(parse_auth_config(data), clock=clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(echo_auth), auth=auth) as aclient:
        assert check((await aclient.get("https://api.test/v1?q=1")).json())


def verify_signature(request: httpx.Request) -> httpx.Response:
    ok = verify_hmac(
        b"s3",
        method=request.method,
        target=request.url.raw_path.decode(),
        body=request.content,
        signature=request.headers.get("X-Signature"),
        timestamp=request.headers.get("X-Timestamp"),
        now=NOW,
    )
    return httpx.Response(200 if ok else 401)


HMAC = {"type": "hmac", "key_id": "k", "secret": "s3"}
SIGNED_URL = "https://api.test/v1/echo?x=a%20b&y=%2F"


def test_hmac_signs_what_sync_httpx_sends():
    auth = build_httpx_auth(parse_auth_config(HMAC), clock=clock)
    with httpx.Client(transport=httpx.MockTransport(verify_signature), auth=auth) as client:
        assert client.post(SIGNED_URL, content=b'{"a": 1}').status_code == 200
        assert client.get(SIGNED_URL).status_code == 200
        wrong = build_httpx_auth(parse_auth_config({**HMAC, "secret": "other"}), clock=clock)
        assert client.get(SIGNED_URL, auth=wrong).status_code == 401


async def test_hmac_signs_what_async_httpx_sends():
    auth = build_httpx_auth(parse_auth_config(HMAC), clock=clock)
    transport = httpx.MockTransport(verify_signature)
    async with httpx.AsyncClient(transport=transport, auth=auth) as aclient:
        assert (await aclient.post(SIGNED_URL, json={"b": [1, 2]})).status_code == 200


class TokenServer:
    """A MockTransport handler with a token endpoint and an API that checks tokens."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.valid: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests += 1
            form = parse_qs(request.content.decode())
            assert form["grant_type"] == ["client_credentials"]
            token = f"tok-{self.token_requests}"
            self.valid.add(token)
            return httpx.Response(
                200, json={"access_token": token, "token_type": "Bearer", "expires_in": 60}
            )
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return httpx.Response(200 if token in self.valid else 401, json={"token": token})


OAUTH = {
    "type": "oauth2_client_credentials",
    "token_url": "https://id.test/token",
    "client_id": "c",
    "client_secret": "s",
    "refresh_margin_s": 10,
}


async def test_oauth2_async_single_flight_and_401_retry():
    server = TokenServer()
    auth = build_httpx_auth(parse_auth_config(OAUTH), clock=clock)
    assert isinstance(auth, OAuth2ClientCredentialsHttpxAuth)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as client:
        responses = await asyncio.gather(*(client.get("https://api.test/x") for _ in range(50)))
        assert {r.status_code for r in responses} == {200}
        assert server.token_requests == 1
        server.valid.clear()  # the provider revokes the token: 401, refetch, retry once
        response = await client.get("https://api.test/x")
        assert (response.status_code, response.json()["token"]) == (200, "tok-2")
        assert server.token_requests == 2


def test_oauth2_sync_refresh_with_injected_clock():
    server = TokenServer()
    now = [NOW]
    auth = build_httpx_auth(parse_auth_config(OAUTH), clock=lambda: now[0])
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        assert client.get("https://api.test/x").json()["token"] == "tok-1"
        now[0] += 49  # before expires_in 60 - margin 10
        assert client.get("https://api.test/x").json()["token"] == "tok-1"
        now[0] += 1
        assert client.get("https://api.test/x").json()["token"] == "tok-2"


def test_persistent_401_is_returned_after_one_retry():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 60})
        return httpx.Response(401)

    auth = build_httpx_auth(parse_auth_config(OAUTH), clock=clock)
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        assert client.get("https://api.test/x").status_code == 401
    assert calls == ["/token", "/x", "/token", "/x"]


async def test_async_only_signer_in_async_client(token_endpoint):
    signer = build_signer(parse_auth_config(OAUTH), fetch_token=token_endpoint)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=SignerAuth(signer, clock=clock)
    ) as client:
        assert (await client.get("https://api.test/x")).status_code == 200
    assert seen == ["Bearer tok-1", "Bearer tok-2"]


def test_async_only_signer_refuses_sync_clients(token_endpoint):
    signer = build_signer(parse_auth_config(OAUTH), fetch_token=token_endpoint)
    transport = httpx.MockTransport(echo_auth)
    client = httpx.Client(transport=transport, auth=SignerAuth(signer))
    with client, pytest.raises(TypeError, match="async httpx client"):
        client.get("https://api.test/x")


def test_mtls_returns_pass_through_auth():
    auth = build_httpx_auth(
        parse_auth_config({"type": "mtls", "cert_file": "/c", "key_file": "/k"})
    )
    with httpx.Client(transport=httpx.MockTransport(echo_auth), auth=auth) as client:
        assert "authorization" not in json.loads(client.get("https://api.test/").text)["headers"]
