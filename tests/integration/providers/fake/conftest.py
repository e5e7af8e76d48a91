"""Fake providers for the integration tests: in-process servers and child processes."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from providers.auth.request import PreparedRequest
from providers.auth.signer import Signer, SyncSigner
from providers.fake.config import FakeProviderConfig
from providers.fake.process import FakeProviderProcess
from tests.unit.providers.auth.certs import TlsMaterial, make_tls_material

ProcessFactory = Callable[..., FakeProviderProcess]


@pytest.fixture
def fake_process_factory() -> Iterator[ProcessFactory]:
    """Start ``python -m providers.fake`` children; all stopped (and checked) at the end."""
    started: list[FakeProviderProcess] = []

    def start(**fields: Any) -> FakeProviderProcess:
        process = FakeProviderProcess(FakeProviderConfig.model_validate(fields))
        process.start()
        started.append(process)
        return process

    yield start
    codes = [process.stop() for process in started]
    assert codes == [0] * len(codes), "the fake provider exits cleanly on SIGTERM"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as client:
        yield client


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


async def send(
    session: aiohttp.ClientSession,
    request: PreparedRequest,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientResponse:
    """Send a prepared request the way the pipeline does: URL bytes untouched."""
    async with session.request(
        request.method,
        URL(request.url, encoded=True),
        headers=dict(request.headers),
        data=request.body,
        ssl=ssl_context if ssl_context is not None else True,
    ) as response:
        await response.read()
        return response


async def signed_call(
    session: aiohttp.ClientSession,
    signer: Signer,
    request: PreparedRequest,
    *,
    now: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientResponse:
    """Sign and send; on a 401 let a refreshable signer drop its token and retry once."""
    signed = await signer.sign(request, now=time.time() if now is None else now)
    response = await send(session, signed, ssl_context=ssl_context)
    if response.status == 401 and not isinstance(signer, SyncSigner):
        signer.on_unauthorized(signed)
        signed = await signer.sign(request, now=time.time() if now is None else now)
        response = await send(session, signed, ssl_context=ssl_context)
    return response
