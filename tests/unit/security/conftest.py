"""A raw recording HTTP server on loopback: the probes' recorder, to see the exact request bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

Respond = Callable[[bytes], bytes]


def http_response(status: str, body: bytes = b"{}", headers: str = "") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length."""
    head = f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


OK = http_response("200 OK", headers="Content-Type: application/json\r\n")


class Recorder:
    """Answers every request with ``respond(head)`` and keeps each request head it saw."""

    def __init__(self, respond: Respond | bytes = OK) -> None:
        self.heads: list[str] = []
        self.respond = respond
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.heads.append(head.decode("latin-1"))
            answer = self.respond(head) if callable(self.respond) else self.respond
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def recorder_factory() -> AsyncIterator[Callable[..., asyncio.Future[Recorder]]]:
    servers: list[asyncio.Server] = []

    async def start(respond: Respond | bytes = OK) -> Recorder:
        recorder = Recorder(respond)
        server = await asyncio.start_server(recorder._handle, "127.0.0.1", 0)
        recorder.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return recorder

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()
