"""A blocking Kafka Metadata request: proof that a broker answers, not just that a port is open."""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

# Metadata v4 is the oldest version Kafka 4.x still accepts (KIP-896) and it is not a "flexible"
# version, so fixed-width fields are enough to encode and decode it.
_METADATA_API_KEY = 3
_METADATA_VERSION = 4
_CLIENT_ID = b"callstream-infra-probe"
_correlation_ids = itertools.count(1)


class ProbeError(Exception):
    """The peer answered with something that is not a Metadata v4 response."""


@dataclass(frozen=True)
class ClusterView:
    """What one broker reports about its cluster: the live brokers and the active controller."""

    broker_ids: frozenset[int]
    controller_id: int
    cluster_id: str | None


def encode_metadata_request(correlation_id: int) -> bytes:
    """Frame a Metadata v4 request that asks for no topics, only brokers and the controller."""
    header = (
        struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(_CLIENT_ID))
        + _CLIENT_ID
    )
    body = struct.pack(">ib", 0, 0)  # an empty topic array; allow_auto_topic_creation=false
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


class _Reader:
    """Sequential big-endian reads over one response body."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self._pos + size > len(self._data):
            raise ProbeError("Metadata response is truncated")
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += size
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        raw = self._data[self._pos : self._pos + length]
        if len(raw) != length:
            raise ProbeError("Metadata response is truncated")
        self._pos += length
        return raw.decode("utf-8")


def decode_metadata_response(frame: bytes, correlation_id: int) -> ClusterView:
    """Read the brokers, cluster id and controller from a Metadata v4 response (size stripped)."""
    reader = _Reader(frame)
    if reader.int32() != correlation_id:
        raise ProbeError("Metadata response carries another request's correlation id")
    reader.int32()  # throttle_time_ms
    broker_ids = []
    for _ in range(reader.int32()):
        broker_ids.append(reader.int32())
        reader.string()  # host
        reader.int32()  # port
        reader.string()  # rack
    cluster_id = reader.string()
    return ClusterView(frozenset(broker_ids), reader.int32(), cluster_id)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProbeError("broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


def describe(host: str, port: int, *, timeout_s: float = 2.0) -> ClusterView:
    """Send one Metadata request to `host:port` and return what that broker reports.

    Raises:
        OSError: the connection failed or timed out.
        ProbeError: the answer was not a Metadata v4 response.
    """
    correlation_id = next(_correlation_ids)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(encode_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        return decode_metadata_response(_read_exactly(sock, size), correlation_id)


def wait_for(
    host: str,
    port: int,
    *,
    ready: Callable[[ClusterView], bool],
    timeout_s: float,
    check_alive: Callable[[], None],
) -> ClusterView:
    """Ask `host:port` for metadata until `ready` accepts the answer.

    Args:
        ready: decides whether the broker's view of the cluster is complete enough.
        timeout_s: how long to keep asking before raising `TimeoutError`.
        check_alive: called before every attempt; raises when the broker process has exited,
            so a crash is reported at once rather than after the whole timeout.

    Returns:
        The first view `ready` accepted.
    """
    deadline = time.monotonic() + timeout_s
    last: ClusterView | Exception | None = None
    while True:
        check_alive()
        try:
            last = describe(host, port, timeout_s=min(2.0, timeout_s))
            if ready(last):
                return last
        except (OSError, ProbeError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} not ready after {timeout_s:.0f} s (last: {last!r})")
        time.sleep(0.1)
