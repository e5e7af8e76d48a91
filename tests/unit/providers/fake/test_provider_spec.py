"""FAKE_PROVIDER: loads by entry point and its requests, signed, work against the fake server."""

from __future__ import annotations

import time

import aiohttp
from yarl import URL

from providers.auth.request import PreparedRequest
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.fake.provider import FAKE_PROVIDER
from providers.registry import ProviderRegistry
from schemas.models import RequestEvent


async def send(session: aiohttp.ClientSession, request: PreparedRequest) -> tuple[int, bytes]:
    async with session.request(
        request.method,
        URL(request.url, encoded=True),
        headers=dict(request.headers),
        data=request.body,
    ) as response:
        return response.status, await response.read()


def test_entry_point_resolves_to_the_spec():
    registration = ProviderRegistry(use_catalog=False).registration("fake")
    assert registration.error is None
    assert isinstance(registration.spec, ProviderSpec)
    assert set(registration.spec.operations) == {"get_item", "echo"}


async def test_operations_against_a_fake_that_demands_the_key(fake_server_factory, session):
    server = await fake_server_factory(
        auth={"type": "api_key", "name": "X-API-Key", "key": "fake-api-key"}
    )
    provider = Provider(FAKE_PROVIDER.with_overrides({"base_url": server.url}))
    get_item = RequestEvent(
        provider="fake",
        operation="get_item",
        request_id="req-1",
        params={"item_id": "item-7", "fake_status": "404"},
    )
    request = (await provider.prepare(get_item, now=time.time())).request
    assert (await send(session, request))[0] == 404
    ok = get_item.model_copy(update={"params": {"item_id": "item-7"}, "request_id": "req-2"})
    status, body = await send(session, (await provider.prepare(ok, now=time.time())).request)
    assert (status, body) == (200, b'{"id":"item-7","name":"Item item-7"}')
    echo = RequestEvent(
        provider="fake",
        operation="echo",
        request_id="req-3",
        body=b'{"a":1}',
        content_type="application/json",
    )
    request = (await provider.prepare(echo, now=time.time())).request
    assert await send(session, request) == (200, b'{"a":1}')
    assert server.stats.calls_for("req-3") == 1
