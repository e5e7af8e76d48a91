"""Probe p3 (security review 2026-12-02, "held up: slowloris"): a provider that trickles its
answer cannot hold a call past the operation's ``timeout_s``.

Held on the old main too (each case ended at 2.0 s with ``timeout_s=2``); pinned here because
it rests on aiohttp's ``ClientTimeout(total=...)`` covering the whole read of the body: a
per-read timeout would let a byte every 0.3 s hold a call (and its slot) for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import ProviderTimeout
from providers.http import ProviderClient
from schemas.models import RequestEvent

TIMEOUT_S = 1.0
DRIP_S = 0.1  # one byte this often: every single read is quick

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _drip(writer: asyncio.StreamWriter, head: bytes, chunk: bytes) -> None:
    writer.write(head)
    try:
        for _ in range(200):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(DRIP_S)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await _drip(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x")


async def slow_chunked_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await _drip(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n")


async def slow_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await _drip(writer, b"HTTP/1.1 200 OK\r\n", b"X-Slow-" + b"a" * 3 + b": b\r\n")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    "handler", [slow_body, slow_chunked_body, slow_headers], ids=lambda h: h.__name__
)
async def test_a_trickling_answer_ends_at_the_timeout(
    serve: Callable[[Handler], Awaitable[str]], handler: Handler
) -> None:
    url = await serve(handler)
    spec = ProviderSpec.model_validate(
        {"name": "acme", "base_url": url, "operations": {"get": {"path": "/x"}},
         "timeout_s": TIMEOUT_S}
    )  # fmt: skip
    started = time.perf_counter()
    async with ProviderClient() as client:
        with pytest.raises(ProviderTimeout):
            await client.call(Provider(spec), RequestEvent(provider="acme", operation="get"))
    elapsed = time.perf_counter() - started
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 0.8, elapsed
