"""Topics are created at start-up, and a topic the broker refuses is a loud, clear error."""

from __future__ import annotations

import pytest

from streams.errors import ConfigurationError
from streams.settings import KafkaSettings
from streams.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


async def test_created_then_found(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    spec = TopicSpec(f"{app_id}.made", 3, 1, {"retention.ms": "600000"})
    await ensure_topics(kafka, [spec], create=True)
    await ensure_topics(kafka, [spec], create=False)  # now it exists: no error


async def test_missing_topic_without_creation_is_a_configuration_error(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(ConfigurationError, match="topics missing"):
        await ensure_topics(kafka, [TopicSpec(f"{app_id}.absent", 1, 1, {})], create=False)


async def test_refused_creation_names_the_topic_and_the_reason(kafka_bootstrap, app_id):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(ConfigurationError, match=r"cannot create topic .*replication"):
        await ensure_topics(kafka, [TopicSpec(f"{app_id}.rf9", 1, 9, {})], create=True)
