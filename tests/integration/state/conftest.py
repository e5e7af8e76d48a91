"""Per-test changelog topics, a producer, and table instances standing in for workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import client_options, producer_options
from streams.settings import KafkaSettings
from streams.state import ChangelogTable, ensure_changelog_topic

PARTITIONS = 4


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap)


@pytest.fixture
async def changelog_topic(kafka: KafkaSettings) -> str:
    topic = unique("t-quotas-changelog")
    await ensure_changelog_topic(kafka, topic, PARTITIONS, 1)
    return topic


@pytest.fixture
async def producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**producer_options(kafka))
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    yield admin
    await admin.close()


@pytest.fixture
def table_factory(
    tmp_path: Path, kafka: KafkaSettings, producer: AIOKafkaProducer, changelog_topic: str
) -> Iterator[Callable[..., ChangelogTable]]:
    """``table_factory("worker-a")``: one table instance with its own directory, as a worker."""
    made: list[ChangelogTable] = []

    def make(worker: str = "worker-a", *, topic: str | None = None) -> ChangelogTable:
        table = ChangelogTable(
            "quotas",
            changelog_topic=topic or changelog_topic,
            directory=tmp_path / worker,
            producer=producer,
            kafka=kafka,
            stall_timeout_s=20.0,
        )
        made.append(table)
        return table

    yield make
    for table in made:
        table.close()


async def put_many(table: ChangelogTable, partition: int, items: dict[bytes, bytes]) -> None:
    """Concurrent puts: they share producer batches, like the caller's many calls in flight."""
    await asyncio.gather(*(table.put(partition, key, value) for key, value in items.items()))


def keys(prefix: str, count: int, version: int = 0) -> dict[bytes, bytes]:
    return {f"{prefix}-{i:05d}".encode(): f"v{version}-{i}".encode() * 4 for i in range(count)}
