"""``deny_private_networks``: resolved addresses are checked at connect time, on real loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from providers.auth.request import PreparedRequest
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import NotAllowed
from providers.http import ClientConfig, ProviderClient
from providers.network import PublicOnlyConnector, refusal
from schemas.models import RequestEvent


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fc00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not public"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_refusal(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"pong": True})


@pytest.fixture
async def loopback() -> AsyncIterator[int]:
    """A real HTTP server on 127.0.0.1; yields its port."""
    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


def provider_at(base_url: str) -> Provider:
    spec = ProviderSpec.model_validate(
        {"name": "local", "base_url": base_url, "operations": {"ping": {"path": "/ping"}}}
    )
    return Provider(spec, signer=NoAuthSigner())


EVENT = RequestEvent(provider="local", operation="ping")


async def test_loopback_is_allowed_by_default_with_no_wrapper(loopback: int) -> None:
    async with ProviderClient() as client:
        assert type(client.session.connector) is aiohttp.TCPConnector  # nothing added
        reply = await client.call(provider_at(f"http://127.0.0.1:{loopback}"), EVENT)
    assert reply.status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_with_the_option(loopback: int, host: str) -> None:
    config = ClientConfig(deny_private_networks=True)
    async with ProviderClient(config) as client:
        assert isinstance(client.session.connector, PublicOnlyConnector)
        with pytest.raises(NotAllowed) as caught:
            await client.call(provider_at(f"http://{host}:{loopback}"), EVENT)
    assert caught.value.reason == "not_allowed"
    assert not caught.value.retriable
    assert str(caught.value).startswith(f"{host}: loopback address ")
    assert "refused (deny_private_networks)" in str(caught.value)


async def test_refusals_release_their_connection_slot(loopback: int) -> None:
    config = ClientConfig(limit=1, deny_private_networks=True)
    request = PreparedRequest("GET", f"http://127.0.0.1:{loopback}/ping")
    async with ProviderClient(config) as client:
        for _ in range(3):  # a leaked slot would make the second one wait for the timeout
            with pytest.raises(NotAllowed):
                await client.send(request, timeout_s=2.0, max_response_bytes=1000)


class _Rebinding(AbstractResolver):
    """A name that looks public but resolves to the given addresses (DNS rebinding)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_public_looking_name_that_resolves_to_loopback_is_refused(loopback: int) -> None:
    connector = PublicOnlyConnector(resolver=_Rebinding("127.0.0.1"))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(NotAllowed, match=r"^api\.public\.test: loopback address 127\.0\.0\.1"):
            await session.get(f"http://api.public.test:{loopback}/ping")


async def test_only_public_addresses_of_a_mixed_answer_are_kept() -> None:
    connector = PublicOnlyConnector(resolver=_Rebinding("169.254.169.254", "93.184.215.14"))
    try:
        hosts = await connector._resolve_host("mixed.test", 443)
    finally:
        await connector.close()
    assert [h["host"] for h in hosts] == ["93.184.215.14"]
