"""ProviderClient on loopback: exact URLs, size caps, timeouts, error mapping, 401 retry."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from providers.auth.request import PreparedRequest
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import (
    AuthFailed,
    BodyTooLarge,
    InvalidResponse,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.http import ClientConfig, ProviderClient, exchange_error
from schemas.models import RequestEvent


async def echo(request: web.Request) -> web.Response:
    cookie = request.headers.get("Cookie", "")
    response = web.json_response({"path": request.raw_path, "cookie": cookie})
    response.set_cookie("session", "abc")
    return response


async def big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    if request.query.get("gzip"):
        response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        await response.write(gzip.compress(b"0" * 100_000))
        return response
    await response.prepare(request)  # chunked: no Content-Length
    for _ in range(10):
        await response.write(b"x" * 1000)
    return response


async def sized(request: web.Request) -> web.Response:
    return web.Response(body=b"y" * 5000)


RELEASE = web.AppKey("release", asyncio.Event)


async def slow(request: web.Request) -> web.Response:
    await asyncio.wait_for(request.app[RELEASE].wait(), 5)  # released at teardown
    return web.Response()


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://169.254.169.254/latest/meta-data")


async def cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "100"})
    await response.prepare(request)
    await response.write(b"partial")
    assert request.transport is not None
    request.transport.close()
    return response


async def guarded(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Bearer fresh":
        return web.json_response({"message": "Bad credentials"}, status=401)
    return web.json_response({"ok": True})


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    for path, handler in [("/echo/{tail:.*}", echo), ("/big", big), ("/sized", sized),
                          ("/slow", slow), ("/redirect", redirect), ("/cut", cut),
                          ("/guarded", guarded)]:  # fmt: skip
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    app[RELEASE].set()
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[ProviderClient]:
    async with ProviderClient(ClientConfig(limit=10)) as c:
        yield c


def get(url: str) -> PreparedRequest:
    return PreparedRequest("GET", url)


async def test_send_keeps_the_encoded_url_and_drops_cookies(
    client: ProviderClient, server_url: str
) -> None:
    url = f"{server_url}/echo/a%2Fb/..%2Fc?x=%2F"
    first = await client.send(get(url), timeout_s=2, max_response_bytes=10_000)
    assert first.status == 200
    assert b'"/echo/a%2Fb/..%2Fc?x=%2F"' in first.body
    second = await client.send(get(url), timeout_s=2, max_response_bytes=10_000)
    assert b'"cookie": ""' in second.body
    assert first.latency_s > 0


@pytest.mark.parametrize("path", ["/big", "/big?gzip=1", "/sized"])
async def test_bodies_over_the_cap_are_refused(
    client: ProviderClient, server_url: str, path: str
) -> None:
    with pytest.raises(BodyTooLarge):
        await client.send(get(server_url + path), timeout_s=2, max_response_bytes=4096)
    ok = await client.send(get(server_url + "/sized"), timeout_s=2, max_response_bytes=5000)
    assert len(ok.body) == 5000  # the pool still works after a refused body


async def test_the_client_wide_ceiling_applies(server_url: str) -> None:
    async with ProviderClient(ClientConfig(max_response_bytes=100)) as client:
        with pytest.raises(BodyTooLarge):
            await client.send(get(server_url + "/sized"), timeout_s=2, max_response_bytes=10**6)


async def test_timeout(client: ProviderClient, server_url: str) -> None:
    with pytest.raises(ProviderTimeout):
        await client.send(get(server_url + "/slow"), timeout_s=0.2, max_response_bytes=100)


async def test_connection_refused_and_cut(client: ProviderClient, server_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderUnavailable, match="ClientConnectorError"):
        await client.send(get(f"http://127.0.0.1:{port}/"), timeout_s=2, max_response_bytes=100)
    with pytest.raises(ProviderUnavailable):
        await client.send(get(server_url + "/cut"), timeout_s=2, max_response_bytes=1000)


async def test_redirects_are_never_followed(client: ProviderClient, server_url: str) -> None:
    raw = await client.send(get(server_url + "/redirect"), timeout_s=2, max_response_bytes=1000)
    assert raw.status == 302


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (TimeoutError(), ProviderTimeout),
        (ConnectionResetError(104, "reset"), ProviderUnavailable),
        (aiohttp.ServerDisconnectedError(), ProviderUnavailable),
        (aiohttp.InvalidURL("https://x.test/?appid=SECRET"), ProviderUnavailable),
    ],
)
def test_exchange_error(error: Exception, mapped: type[Exception]) -> None:
    converted = exchange_error(error)
    assert type(converted) is mapped
    assert "SECRET" not in str(converted)


class RefreshingSigner:
    """Token-based: the first token is stale, the refreshed one works."""

    def __init__(self) -> None:
        self.token = "stale"
        self.refreshes = 0

    async def sign(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request.with_headers({"Authorization": f"Bearer {self.token}"})

    def on_unauthorized(self, request: PreparedRequest | None = None) -> None:
        self.refreshes += 1
        self.token = "fresh"


def guarded_provider(server_url: str, signer: Any) -> Provider:
    spec = ProviderSpec.model_validate({
        "name": "guarded", "base_url": server_url, "operations": {"get": {"path": "/guarded"}},
        "error_shape": {"message_field": "message"},
    })  # fmt: skip
    return Provider(spec, signer=signer)


def call_event(operation: str = "get") -> RequestEvent:
    return RequestEvent(provider="guarded", operation=operation)


async def test_call_retries_once_after_refreshing_credentials(
    client: ProviderClient, server_url: str
) -> None:
    signer = RefreshingSigner()
    result = await client.call(guarded_provider(server_url, signer), call_event(), now=0.0)
    assert (result.status, result.sends, signer.refreshes) == (200, 2, 1)


async def test_call_with_static_credentials_does_not_retry(
    client: ProviderClient, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends: list[int] = []
    original: Callable[..., Any] = client.send

    async def counting(*args: Any, **kwargs: Any) -> Any:
        sends.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(client, "send", counting)
    with pytest.raises(AuthFailed, match="Bad credentials"):
        await client.call(guarded_provider(server_url, NoAuthSigner()), call_event())
    assert len(sends) == 1


async def test_call_maps_a_redirect_to_invalid_response(
    client: ProviderClient, server_url: str
) -> None:
    spec = ProviderSpec.model_validate(
        {"name": "r", "base_url": server_url, "operations": {"go": {"path": "/redirect"}}}
    )
    with pytest.raises(InvalidResponse, match="HTTP 302"):
        await client.call(Provider(spec, signer=NoAuthSigner()), call_event("go"))


async def test_fetch_token_uses_the_shared_session(client: ProviderClient, server_url: str) -> None:
    token_request = PreparedRequest("POST", server_url + "/echo/token", {}, b"")
    response = await client.fetch_token(token_request)
    assert response.status == 200
