"""FAKE_PROVIDER: loads by entry point and its requests, signed, work against the fake server."""

from __future__ import annotations

import time

import aiohttp
import pytest
from yarl import URL

from providers.auth.request import PreparedRequest
from providers.base import Provider
from providers.declaration import CacheSpec, ProviderSpec
from providers.errors import BadRequest
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
    assert set(registration.spec.operations) == {
        "get_item",
        "get_cached_item",
        "get_public_item",
        "echo",
    }


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
    assert (status, body) == (200, b'{"id":"item-7","name":"Item item-7","version":1}')
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


def test_cached_operations_share_get_items_route():
    get_item = FAKE_PROVIDER.operations["get_item"]
    assert get_item.cache is None, "the throughput benchmark's operation is never cached"
    assert FAKE_PROVIDER.operations["echo"].cache is None
    for name, shared in (("get_cached_item", False), ("get_public_item", True)):
        op = FAKE_PROVIDER.operations[name]
        assert (op.method, op.path, op.path_params) == ("GET", get_item.path, get_item.path_params)
        assert (op.query_params, op.allowed_headers) == (
            get_item.query_params,
            get_item.allowed_headers,
        )
        assert op.cache == CacheSpec(
            ttl_s=60, shared=shared, stale_while_revalidate_s=30, stale_if_error_s=300
        )
    # The whole declaration still validates as data (as a catalog entry would be loaded).
    assert ProviderSpec.model_validate(FAKE_PROVIDER.model_dump()) == FAKE_PROVIDER


async def test_cached_operation_revalidates_against_the_fake(fake_server, session):
    provider = Provider(FAKE_PROVIDER.with_overrides({"base_url": fake_server.url}))
    event = RequestEvent(
        provider="fake",
        operation="get_cached_item",
        request_id="req-c",
        params={"item_id": "item-7", "fake_cache_control": "max-age=60, public"},
    )
    request = (await provider.prepare(event, now=time.time())).request
    url = URL(request.url, encoded=True)
    async with session.get(url, headers=dict(request.headers)) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "max-age=60, public"
        etag = response.headers["ETag"]
    headers = {**request.headers, "If-None-Match": etag}
    async with session.get(url, headers=headers) as response:
        assert (response.status, await response.read()) == (304, b"")
    assert fake_server.stats.not_modified == 1


def test_cache_control_directive_pattern_is_declared():
    provider = Provider(FAKE_PROVIDER)
    bad = RequestEvent(
        provider="fake",
        operation="get_public_item",
        params={"item_id": "1", "fake_cache_control": 'max-age="1"'},
    )
    with pytest.raises(BadRequest, match="fake_cache_control"):
        provider.build_request(bad)
