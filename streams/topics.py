"""The topics the pipeline reads and writes, and their creation at start-up.

Faust (and aiokafka) never create a topic that is only written to: sends to it block and the
worker hangs silently (measured, shared/ENVIRONMENT.md). So every topic is created or checked
before anything runs, and a missing one is a loud ConfigurationError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import ConfigurationError
from streams.kafka import admin_client
from streams.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def pipeline_topics(topics: TopicSettings) -> list[TopicSpec]:
    """Requests, results and dead letters, sized and retained by the settings.

    Each accepts records up to ``topics.max_record_bytes`` (``max_outcome_bytes`` plus room
    for key and framing), the producer's ``max_request_size`` too (issue 19).
    """

    def spec(name: str, retention_ms: int) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            config={
                "retention.ms": str(retention_ms),
                "max.message.bytes": str(topics.max_record_bytes),
            },
        )

    return [
        spec(topics.requests, topics.retention_ms),
        spec(topics.results, topics.retention_ms),
        spec(topics.dead_letters, topics.dead_letter_retention_ms),
    ]


def access_topic(topics: TopicSettings) -> TopicSpec:
    """The access topic (issue 24): batches of cache accesses, partitioned by cache key."""
    return TopicSpec(
        name=topics.access,
        partitions=topics.partitions,
        replication_factor=topics.replication_factor,
        config={
            "retention.ms": str(topics.access_retention_ms),
            "max.message.bytes": str(topics.max_record_bytes),
        },
    )


async def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec], *, create: bool) -> None:
    """Create missing topics (when allowed) and fail loudly on any that still do not exist.

    Raises:
        ConfigurationError: a topic is missing and may not be created, or creation failed.
    """
    async with admin_client(kafka) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing and not create:
            names = ", ".join(spec.name for spec in missing)
            raise ConfigurationError(
                f"topics missing: {names}. Operator action: create them or set "
                "CALLSTREAM_TOPICS__CREATE=true."
            )
        for spec in missing:
            await _create(admin, spec)


async def _create(admin: AIOKafkaAdminClient, spec: TopicSpec) -> None:
    topic = NewTopic(
        name=spec.name,
        num_partitions=spec.partitions,
        replication_factor=spec.replication_factor,
        topic_configs=spec.config,
    )
    try:
        response = await admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return  # another worker created it first
    except KafkaError as exc:
        raise ConfigurationError(f"cannot create topic {spec.name}: {exc!r}") from None
    # Per-topic failures come back as error codes in the response, not as exceptions.
    for error in getattr(response, "topic_errors", ()):
        name, code = error[0], error[1]
        message = error[2] if len(error) > 2 else ""
        if code not in (0, TopicAlreadyExistsError.errno):
            raise ConfigurationError(
                f"cannot create topic {name}: error {code} {(message or '').rstrip('.')}"
                ". Operator action: check the broker's limits (partitions, replication "
                "factor) and ACLs."
            )
    log.info("created topic %s (%d partitions)", spec.name, spec.partitions)


_METADATA_SETTLE_TRIES = 50


def tenant_topics(topics: TopicSettings, names: Iterable[str]) -> list[TopicSpec]:
    """Tenant request topics, made like the shared request topic, whose partitions they mirror:
    same count, same keying, so partition N of every one belongs to the same worker."""
    (requests,) = [spec for spec in pipeline_topics(topics) if spec.name == topics.requests]
    return [dataclasses.replace(requests, name=name) for name in names]


async def check_copartitioned(kafka: KafkaSettings, requests: str, others: Sequence[str]) -> None:
    """Fail unless each of ``others`` has exactly as many partitions as ``requests``.

    Raises:
        ConfigurationError: a topic has another partition count (or is missing).
    """
    if not others:
        return
    async with admin_client(kafka) as admin:
        for _ in range(_METADATA_SETTLE_TRIES):  # a topic just created lists no partitions yet
            described = await admin.describe_topics([requests, *others])
            counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
            if all(counts.get(name) for name in (requests, *others)):
                break
            await asyncio.sleep(0.2)
    expected = counts.get(requests)
    wrong = [f"{name} has {counts.get(name)}" for name in others if counts.get(name) != expected]
    if wrong:
        raise ConfigurationError(
            f"tenant topics must have the {expected} partitions of {requests}: "
            f"{', '.join(wrong)}. Operator action: recreate them or add partitions."
        )
