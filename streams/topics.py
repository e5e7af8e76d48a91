"""The topics the pipeline reads and writes, and their creation at start-up.

Faust (and aiokafka) never create a topic that is only written to: sends to it block and the
worker hangs silently (measured, shared/ENVIRONMENT.md). So every topic is created or checked
before anything runs, and a missing one is a loud ConfigurationError.
"""

from __future__ import annotations

import logging
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
    """Requests, results and dead letters, sized and retained by the settings."""

    def spec(name: str, retention_ms: int) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            config={"retention.ms": str(retention_ms)},
        )

    return [
        spec(topics.requests, topics.retention_ms),
        spec(topics.results, topics.retention_ms),
        spec(topics.dead_letters, topics.dead_letter_retention_ms),
    ]


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
