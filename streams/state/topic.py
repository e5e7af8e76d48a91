"""The changelog topic of a table: created compacted, or checked when it already exists."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streams.errors import ConfigurationError
from streams.kafka import admin_client
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

_METADATA_WAIT_S = 15.0


async def ensure_changelog_topic(
    kafka: KafkaSettings,
    topic: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create ``topic`` with ``cleanup.policy=compact`` unless it exists, then check it.

    The create comes first on purpose: a metadata request that names a missing topic makes a
    broker with ``auto.create.topics.enable`` (the default) create it with its own defaults,
    uncompacted, and aiokafka's ``describe_topics([name])`` sends exactly that (measured here).

    Args:
        partitions: must equal the partition count of the source topic: a table partition
            lives with the source partition of the same number.
        configs: more topic configs for its creation (an existing topic keeps its own).

    Raises:
        ConfigurationError: the topic cannot be created, or exists with another partition
            count or without compaction.
    """
    new_topic = NewTopic(
        name=topic,
        num_partitions=partitions,
        replication_factor=replication_factor,
        topic_configs={**(configs or {}), "cleanup.policy": "compact"},
    )
    async with admin_client(kafka) as admin:
        response = await admin.create_topics([new_topic])
        error = _topic_error(response.to_object(), topic)
        if error is None:
            log.info("created changelog topic %s (%d partitions)", topic, partitions)
            await _await_metadata(admin, topic, partitions)
            return
        if not isinstance(error, TopicAlreadyExistsError):
            raise ConfigurationError(f"cannot create changelog topic {topic}: {error!r}")
        await _check_existing(admin, topic, partitions)


async def changelog_partitions(kafka: KafkaSettings, topic: str) -> int | None:
    """The partition count of ``topic``, or ``None`` if it does not exist (never creates it)."""
    async with admin_client(kafka) as admin:
        return await _partition_count(admin, topic)


async def _check_existing(admin: Any, topic: str, partitions: int) -> None:
    found = await _partition_count(admin, topic)
    deadline = time.monotonic() + _METADATA_WAIT_S
    while found is None and time.monotonic() < deadline:
        # Created a moment ago by another worker starting beside this one: the controller
        # knows it, the metadata caches not yet.
        await asyncio.sleep(0.05)
        found = await _partition_count(admin, topic)
    if found != partitions:
        raise ConfigurationError(
            f"changelog topic {topic} has {found} partitions, the table needs {partitions}. "
            "Operator action: delete the topic (the tables rebuild from the source of truth) "
            "or make the partition counts match."
        )
    policy = await _cleanup_policy(admin, topic)
    if "compact" not in policy.split(","):
        raise ConfigurationError(
            f"changelog topic {topic} has cleanup.policy={policy}: old values of live keys "
            "would be deleted. Operator action: set cleanup.policy=compact on it."
        )


async def _partition_count(admin: Any, topic: str) -> int | None:
    # describe_topics() without names lists every topic and, unlike naming one, creates nothing.
    for entry in await admin.describe_topics():
        if entry["topic"] == topic:
            return len(entry["partitions"])
    return None


async def _await_metadata(admin: Any, topic: str, partitions: int) -> None:
    # The controller answers before the brokers' metadata caches know the topic (measured:
    # a recovery consumer right after the create found no such topic).
    deadline = time.monotonic() + _METADATA_WAIT_S
    while await _partition_count(admin, topic) != partitions:
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"changelog topic {topic} was created but its {partitions} partitions did not "
                f"appear in the metadata within {_METADATA_WAIT_S:.0f} s"
            )
        await asyncio.sleep(0.05)


async def _cleanup_policy(admin: Any, topic: str) -> str:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    (response,) = await admin.describe_configs([resource])
    for entry in response.to_object()["resources"][0]["config_entries"]:
        if entry["config_names"] == "cleanup.policy":
            return str(entry["config_value"])
    return "delete"  # Kafka's default


def _topic_error(response: dict[str, Any], topic: str) -> KafkaError | None:
    # create_topics() does not raise for per-topic failures: they come back as error codes.
    for entry in response["topic_errors"]:
        if entry["topic"] == topic and entry["error_code"] != 0:
            error: KafkaError = for_code(entry["error_code"])(entry["error_message"])
            return error
    return None
