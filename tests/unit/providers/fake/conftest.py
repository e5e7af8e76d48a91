"""Fixtures for the fake provider tests: servers on loopback and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from providers.fake.config import FakeProviderConfig
from providers.fake.server import FakeProviderServer

ServerFactory = Callable[..., Awaitable[FakeProviderServer]]


@pytest.fixture
async def fake_server_factory() -> AsyncIterator[ServerFactory]:
    """Start servers from config fields; all stopped at the end of the test."""
    started: list[FakeProviderServer] = []

    async def start(**fields: Any) -> FakeProviderServer:
        server = FakeProviderServer(FakeProviderConfig.model_validate(fields))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def fake_server(fake_server_factory: ServerFactory) -> FakeProviderServer:
    return await fake_server_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
