"""Encoding and decoding the Metadata v4 request the readiness probe sends."""

from __future__ import annotations

import socket
import struct

import pytest

from infra.probe import (
    ClusterView,
    ProbeError,
    decode_metadata_response,
    encode_metadata_request,
    wait_for,
)


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _response(correlation_id: int, brokers: list[int], controller: int) -> bytes:
    body = struct.pack(">ii", correlation_id, 0) + struct.pack(">i", len(brokers))
    for node_id in brokers:
        body += struct.pack(">i", node_id) + _string("127.0.0.1") + struct.pack(">i", 9092)
        body += _string(None)
    return body + _string("cluster-a") + struct.pack(">i", controller) + struct.pack(">i", 0)


def test_request_is_a_size_prefixed_metadata_v4_asking_for_no_topics() -> None:
    frame = encode_metadata_request(7)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    api_key, version, correlation_id, client_len = struct.unpack_from(">hhih", frame, 4)
    assert (api_key, version, correlation_id) == (3, 4, 7)
    topics, auto_create = struct.unpack_from(">ib", frame, 14 + client_len)
    assert (topics, auto_create) == (0, 0)


def test_response_gives_brokers_controller_and_cluster_id() -> None:
    view = decode_metadata_response(_response(7, [1, 2, 3], controller=2), 7)
    assert view == ClusterView(frozenset({1, 2, 3}), 2, "cluster-a")


def test_response_to_another_request_is_rejected() -> None:
    with pytest.raises(ProbeError, match="correlation"):
        decode_metadata_response(_response(8, [1], controller=1), 7)


def test_truncated_response_is_rejected() -> None:
    with pytest.raises(ProbeError, match="truncated"):
        decode_metadata_response(_response(7, [1, 2], controller=1)[:20], 7)


def test_wait_gives_up_after_its_timeout_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TimeoutError, match="not ready"):
            wait_for(
                "127.0.0.1", port, ready=lambda _: True, timeout_s=0.3, check_alive=lambda: None
            )


def test_wait_reports_a_dead_process_at_once() -> None:
    def dead() -> None:
        raise RuntimeError("broker exited")

    with pytest.raises(RuntimeError, match="broker exited"):
        wait_for("127.0.0.1", 1, ready=lambda _: True, timeout_s=60, check_alive=dead)
