"""One setting, topics.max_outcome_bytes, sizes outcomes, the producer and the topics (issue 19)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from streams.errors import ConfigurationError
from streams.kafka import producer_options
from streams.settings import (
    OUTCOME_ROOM_BYTES,
    CallerSettings,
    KafkaSettings,
    TopicSettings,
    load_settings,
)
from streams.topics import pipeline_topics


def test_the_default_response_cap_leaves_room_under_the_outcome_limit() -> None:
    settings = load_settings()
    topics, caller = settings.topics, settings.caller
    assert topics.max_outcome_bytes == 1_000_000
    assert caller.max_response_bytes + OUTCOME_ROOM_BYTES <= topics.max_outcome_bytes
    assert topics.max_outcome_bytes < topics.max_record_bytes <= 1024 * 1024


def test_a_response_cap_without_room_is_one_clear_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(caller=CallerSettings(max_response_bytes=2_000_000))
    assert "caller.max_response_bytes (2000000) must be at most" in str(caught.value)
    assert "Operator action" in str(caught.value)
    raised = TopicSettings(max_outcome_bytes=3_000_000)
    assert load_settings(topics=raised, caller=CallerSettings(max_response_bytes=2_000_000))


def test_every_pipeline_topic_accepts_a_record_of_max_record_bytes() -> None:
    topics = TopicSettings(max_outcome_bytes=2_000_000)
    for spec in pipeline_topics(topics):
        assert spec.config["max.message.bytes"] == str(2_000_000 + 16 * 1024)


@pytest.mark.parametrize("max_outcome_bytes", [200_000, 1_000_000, 5_000_000])
async def test_the_producer_sends_an_outcome_at_the_limit_and_batches_within_the_topic_limit(
    max_outcome_bytes: int,
) -> None:
    topics = TopicSettings(max_outcome_bytes=max_outcome_bytes)
    options = producer_options(KafkaSettings(), max_record_bytes=topics.max_record_bytes)
    assert options["max_request_size"] == topics.max_record_bytes
    assert options["max_batch_size"] <= topics.max_record_bytes
    producer = AIOKafkaProducer(**options)  # not started: only its size check runs
    key = b"k" * 512
    producer._serialize(key, b"v" * max_outcome_bytes, [])
    with pytest.raises(MessageSizeTooLargeError):
        producer._serialize(key, b"v" * (topics.max_record_bytes + 1), [])
    await producer.stop()


def test_without_a_limit_the_producer_keeps_aiokafka_defaults() -> None:
    options = producer_options(KafkaSettings())
    assert "max_request_size" not in options
    assert options["max_batch_size"] == 1024 * 1024
