"""Fixtures for the fake provider tests: servers on loopback and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.fake.server import FakeProviderServer
from tests.conftest import ServerFactory


@pytest.fixture
async def fake_server(fake_server_factory: ServerFactory) -> FakeProviderServer:
    return await fake_server_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
