"""A 3-node Apache Kafka cluster keeps taking acks=all writes after losing one node."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from infra.kafka import KafkaCluster

from .clients import create_topic, read_all, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("kafka_runtime")]


@pytest.mark.timeout(300)
async def test_rf3_topic_keeps_producing_after_a_node_is_killed() -> None:
    cluster = KafkaCluster(nodes=3)
    await asyncio.to_thread(cluster.start)
    topic = unique("infra-rf3")
    try:
        await create_topic(
            cluster.bootstrap_servers, topic, replicas=3, configs={"min.insync.replicas": "2"}
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap_servers,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=15_000,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"before", partition=0)
            # Killing the partition leader is the case that forces a leader election.
            leader = producer.client.cluster.leader_for_partition(TopicPartition(topic, 0))
            await asyncio.to_thread(cluster.kill_node, leader - 1)
            await asyncio.wait_for(producer.send_and_wait(topic, b"after", partition=0), 30)
        finally:
            await producer.stop()

        assert await read_all(cluster.bootstrap_servers, topic, expected=2) == [b"before", b"after"]
        await asyncio.to_thread(cluster.start_node, leader - 1)
        assert cluster.nodes[leader - 1].is_running()
    finally:
        await asyncio.to_thread(cluster.stop)
    assert not any(node.is_running() for node in cluster.nodes)
