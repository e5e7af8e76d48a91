"""OAuth2 against the fake's token endpoint: one fetch for 100 calls, refresh, 401 recovery."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from providers.auth.config import parse_auth_config
from providers.auth.factory import build_signer
from providers.auth.oauth2 import aiohttp_token_fetcher
from providers.auth.request import PreparedRequest
from providers.auth.signer import Signer
from providers.fake.server import FakeProviderServer
from tests.conftest import ServerFactory
from tests.integration.providers.fake.conftest import signed_call

pytestmark = pytest.mark.integration


async def oauth_server(
    fake_server_factory: ServerFactory, *, expires_in_s: float = 3600, **fields: Any
) -> FakeProviderServer:
    return await fake_server_factory(
        auth={
            "type": "oauth2_client_credentials",
            "client_id": "app",
            "client_secret": "cs",
            "token_expires_in_s": expires_in_s,
        },
        **fields,
    )


def oauth_signer(
    server: FakeProviderServer, session: aiohttp.ClientSession, *, margin_s: float = 30
) -> Signer:
    config = parse_auth_config(
        {
            "type": "oauth2_client_credentials",
            "client_id": "app",
            "client_secret": "cs",
            "token_url": server.token_url,
            "refresh_margin_s": margin_s,
        }
    )
    return build_signer(config, fetch_token=aiohttp_token_fetcher(session))


async def test_hundred_concurrent_calls_one_token_request(fake_server_factory, session):
    server = await oauth_server(fake_server_factory, latency_ms=20)
    signer = oauth_signer(server, session)
    requests = [PreparedRequest("GET", f"{server.url}/v1/items/{i}", {}) for i in range(100)]
    responses = await asyncio.gather(*(signed_call(session, signer, r) for r in requests))
    assert [r.status for r in responses] == [200] * 100
    assert server.stats.token_requests == 1
    assert server.stats.calls_total == 100


async def test_refreshes_before_expiry(fake_server_factory, session):
    server = await oauth_server(fake_server_factory, expires_in_s=2)
    signer = oauth_signer(server, session, margin_s=0.5)  # refresh 1.5 s after the fetch
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    start = time.time()
    assert (await signed_call(session, signer, request, now=start)).status == 200
    assert (await signed_call(session, signer, request, now=start + 1.4)).status == 200
    assert server.stats.token_requests == 1
    assert (await signed_call(session, signer, request, now=start + 1.6)).status == 200
    assert server.stats.token_requests == 2


async def test_expired_token_gets_401_then_one_refetch(fake_server_factory, session):
    server = await oauth_server(fake_server_factory, expires_in_s=1.0)
    # The client's clock stands still, so only the server knows the token expired.
    signer = oauth_signer(server, session, margin_s=0)
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    assert (await signed_call(session, signer, request, now=1000.0)).status == 200
    await asyncio.sleep(1.2)
    assert (await signed_call(session, signer, request, now=1000.0)).status == 200
    assert (server.stats.token_requests, server.stats.auth_failures) == (2, 1)


async def test_revoked_token_burst_of_401s_refetches_once(fake_server_factory, session):
    server = await oauth_server(fake_server_factory, latency_ms=10)
    signer = oauth_signer(server, session)
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    assert (await signed_call(session, signer, request)).status == 200
    server.revoke_tokens()
    responses = await asyncio.gather(*(signed_call(session, signer, request) for _ in range(20)))
    assert [r.status for r in responses] == [200] * 20
    assert server.stats.token_requests == 2
    assert server.stats.auth_failures == 20
