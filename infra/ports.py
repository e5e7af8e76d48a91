"""Loopback addresses and free ephemeral ports for local brokers."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a port the kernel just handed out for `host`.

    The socket is closed before the broker binds, so another process could take the port in
    between; ephemeral ports are handed out in rotation, which makes that rare enough for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
