"""The embedded Tansu broker starts without Java and round-trips a message."""

from __future__ import annotations

import pytest

from infra.broker import start_broker
from infra.embedded import EmbeddedBroker

from .clients import create_topic, produce, read_all, unique

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.mark.timeout(60)
async def test_embedded_broker_round_trips_a_message() -> None:
    topic = unique("infra-embedded")
    with EmbeddedBroker() as broker:
        # Created first: Tansu would auto-create it with 4 partitions.
        await create_topic(broker.bootstrap_servers, topic)
        await produce(broker.bootstrap_servers, topic, b"hello tansu")
        assert await read_all(broker.bootstrap_servers, topic, expected=1) == [b"hello tansu"]


@pytest.mark.timeout(60)
def test_start_broker_returns_a_running_embedded_broker() -> None:
    broker = start_broker("embedded")
    try:
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
    finally:
        broker.stop()
