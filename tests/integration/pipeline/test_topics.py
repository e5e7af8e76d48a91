"""Topics are created at start-up, and a topic the broker refuses is a loud, clear error."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.errors import ConfigurationError
from streams.settings import KafkaSettings
from streams.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


async def describe(bootstrap: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The topic's metadata (partitions, replicas) and its configuration as the broker has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([name])
        resource = ConfigResource(ConfigResourceType.TOPIC, name)
        (response,) = await admin.describe_configs([resource])
    finally:
        await admin.close()
    ((error_code, _, _, _, entries),) = response.resources
    assert error_code == 0
    return topic, {entry[0]: entry[1] for entry in entries}


async def test_created_then_found(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    spec = TopicSpec(f"{app_id}.made", 3, 1, {"retention.ms": "600000"})
    await ensure_topics(kafka, [spec], create=True)
    await ensure_topics(kafka, [spec], create=False)  # now it exists: no error
    topic, config = await describe(kafka_bootstrap, spec.name)
    assert (topic["topic"], topic["error_code"]) == (spec.name, 0)
    assert sorted(p["partition"] for p in topic["partitions"]) == [0, 1, 2]
    assert all(len(p["replicas"]) == 1 for p in topic["partitions"])
    assert config["retention.ms"] == "600000"


async def test_missing_topic_without_creation_is_a_configuration_error(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(ConfigurationError, match="topics missing"):
        await ensure_topics(kafka, [TopicSpec(f"{app_id}.absent", 1, 1, {})], create=False)


async def test_refused_creation_names_the_topic_and_the_reason(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(ConfigurationError, match=r"cannot create topic .*replication"):
        await ensure_topics(kafka, [TopicSpec(f"{app_id}.rf9", 1, 9, {})], create=True)
