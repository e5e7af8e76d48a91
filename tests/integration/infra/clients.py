"""Small aiokafka helpers the launcher tests use to prove a broker really works."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def unique(prefix: str) -> str:
    """A topic or group name no other test shares."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_topic(
    bootstrap: str, topic: str, *, replicas: int = 1, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=replicas,
                    topic_configs=configs or {},
                )
            ]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, *values: bytes, acks: int | str = 1) -> None:
    # Idempotence off: Tansu rejects InitProducerId, and these tests do not need it.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=acks, enable_idempotence=False)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, *, expected: int, timeout_ms: int = 10_000
) -> list[bytes]:
    """Read partition 0 of `topic` from the start, without a consumer group, until `expected`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        while len(values) < expected:
            batches = await consumer.getmany(partition, timeout_ms=timeout_ms)
            if not batches:
                break
            values += [record.value for record in batches[partition] if record.value is not None]
        return values
    finally:
        await consumer.stop()
