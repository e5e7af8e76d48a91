"""Fixtures shared by every test: a clean CALLSTREAM_* environment, in-process fake providers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from providers.fake.config import FakeProviderConfig
from providers.fake.server import FakeProviderServer

ServerFactory = Callable[..., Awaitable[FakeProviderServer]]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment: a developer's CALLSTREAM_* must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("CALLSTREAM_") and name not in (
            "CALLSTREAM_TEST_BOOTSTRAP",
            "CALLSTREAM_CACHE_DIR",
        ):
            monkeypatch.delenv(name)


@pytest.fixture
async def fake_server_factory() -> AsyncIterator[ServerFactory]:
    """Start in-process fake providers from config fields; all stopped at the end of the test."""
    started: list[FakeProviderServer] = []

    async def start(**fields: Any) -> FakeProviderServer:
        server = FakeProviderServer(FakeProviderConfig.model_validate(fields))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
