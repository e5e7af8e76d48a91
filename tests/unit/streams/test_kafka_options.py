"""Client options come from the one settings object, nothing hard-coded beside it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.kafka import consumer_options, producer_options
from streams.settings import KafkaSettings


def test_consumer_fetch_settings_come_from_settings() -> None:
    kafka = KafkaSettings(fetch_min_bytes=65536, fetch_max_wait_ms=25)
    options = consumer_options(kafka, group_id="g")
    assert options["fetch_min_bytes"] == 65536
    assert options["fetch_max_wait_ms"] == 25
    assert options["enable_auto_commit"] is False
    assert options["group_id"] == "g"


def test_defaults_answer_a_fetch_as_soon_as_a_record_is_there() -> None:
    options = consumer_options(KafkaSettings(), group_id="g")
    assert options["fetch_min_bytes"] == 1
    assert options["fetch_max_wait_ms"] == 100


def test_producer_waits_for_all_replicas() -> None:
    options = producer_options(KafkaSettings(producer_linger_ms=7))
    assert options["acks"] == "all"
    assert options["linger_ms"] == 7


@pytest.mark.parametrize("field", ["fetch_min_bytes"])
def test_nonsense_values_are_refused(field: str) -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(**{field: 0})
