"""Apache Kafka from infra: start, round-trip, restart on the same data, and failing loudly."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from infra.errors import BrokerStartError
from infra.kafka import KafkaCluster
from infra.kafka.cluster import CLUSTER_ID_FILE
from infra.kafka.node import PortInUse
from infra.ports import LOOPBACK

from .clients import create_topic, produce, read_all, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("kafka_runtime")]


@pytest.mark.timeout(180)
async def test_single_node_round_trip_survives_restart_on_same_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic = unique("infra-roundtrip")

    first = KafkaCluster(nodes=1, data_dir=data_dir)
    await asyncio.to_thread(first.start)
    try:
        await create_topic(first.bootstrap_servers, topic)
        await produce(first.bootstrap_servers, topic, b"kept across restarts", acks="all")
        assert await read_all(first.bootstrap_servers, topic, expected=1) == [
            b"kept across restarts"
        ]
    finally:
        await asyncio.to_thread(first.stop)
    cluster_id = (data_dir / CLUSTER_ID_FILE).read_text()

    second = KafkaCluster(nodes=1, data_dir=data_dir)
    await asyncio.to_thread(second.start)
    try:
        assert await read_all(second.bootstrap_servers, topic, expected=1) == [
            b"kept across restarts"
        ]
    finally:
        await asyncio.to_thread(second.stop)
    assert (data_dir / CLUSTER_ID_FILE).read_text() == cluster_id
    assert data_dir.exists(), "a caller's data dir is never removed"


@pytest.mark.timeout(120)
def test_temporary_data_dir_is_removed_on_stop() -> None:
    with KafkaCluster(nodes=1) as cluster:
        data_dir = cluster.data_dir
        assert (data_dir / "node-1" / "logs" / "server.log").is_file()
    assert not data_dir.exists()


@pytest.mark.timeout(120)
def test_start_failure_raises_with_the_broker_log_tail(tmp_path: Path) -> None:
    # A heap too small for the LogManager: formatting succeeds, the broker dies starting.
    cluster = KafkaCluster(nodes=1, heap="48m", data_dir=tmp_path / "kafka")
    with pytest.raises(BrokerStartError) as caught:
        cluster.start()

    message = str(caught.value)
    assert "Operator action:" in message.splitlines()[0]
    assert "server.log" in message
    assert "OutOfMemoryError" in caught.value.log_tail
    assert not any(node.is_running() for node in cluster.nodes)


def test_a_taken_port_is_refused_before_any_broker_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        cluster = KafkaCluster(nodes=1, port=taken, data_dir=tmp_path / "kafka")
        with pytest.raises(PortInUse) as caught:
            cluster.start()

    assert f"port {taken}" in str(caught.value)
    assert "Operator action:" in str(caught.value)
    assert not any(node.is_running() for node in cluster.nodes)
