"""The session's real Kafka broker, and per-test topics, fake providers and workers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.session_broker import open_test_broker
from streams.cli.dev.processes import Child, start_fake_provider, start_worker, wait_worker_ready
from streams.settings import KafkaSettings, ProviderSettings, Settings, TopicSettings

API_KEY = "test-key-0123456789"
# The fake provider's limit split into shards, so its requests spread over all partitions and
# rebalances move real work (publishers key each request by its shard's limit key).
FAKE_SHARDS = 12


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One real broker per test session: external, testcontainers, or infra's Apache Kafka."""
    with open_test_broker() as (bootstrap, description):
        print(f"\nintegration broker: {description} at {bootstrap}")
        yield bootstrap


@pytest.fixture
def app_id() -> str:
    """A unique app id per test: its own topics and consumer groups (no cross-talk)."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topics(app_id: str) -> TopicSettings:
    return TopicSettings(
        requests=f"{app_id}.requests",
        results=f"{app_id}.results",
        dead_letters=f"{app_id}.dlq",
        partitions=6,
    )


@pytest.fixture
def settings(kafka_bootstrap: str, app_id: str, topics: TopicSettings) -> Settings:
    return Settings(
        app_id=app_id,
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topics=topics,
        providers={"fake": ProviderSettings(shards=FAKE_SHARDS)},
    )


@pytest.fixture
def fake_provider_factory(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(*args: str) -> Child:
        child = start_fake_provider(tmp_path, "--api-key", API_KEY, *args)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


@pytest.fixture
def worker_factory(tmp_path: Path, settings: Settings) -> Iterator[Callable[..., Child]]:
    """Starts `callstream worker` processes for this test's topics; all stopped at the end."""
    started: list[Child] = []

    def start(provider_url: str, *, name: str = "worker", wait: bool = True, **env: str) -> Child:
        worker_env = {
            "CALLSTREAM_APP_ID": settings.app_id,
            "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "CALLSTREAM_KAFKA__SESSION_TIMEOUT_S": "6",
            "CALLSTREAM_KAFKA__HEARTBEAT_INTERVAL_S": "1",
            "CALLSTREAM_TOPICS__REQUESTS": settings.topics.requests,
            "CALLSTREAM_TOPICS__RESULTS": settings.topics.results,
            "CALLSTREAM_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
            "CALLSTREAM_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "CALLSTREAM_PROVIDERS__FAKE__BASE_URL": provider_url,
            "CALLSTREAM_PROVIDERS__FAKE__SECRET": API_KEY,
            "CALLSTREAM_PROVIDERS__FAKE__SHARDS": str(FAKE_SHARDS),
            "CALLSTREAM_DATA_DIR": str(tmp_path / name),
            **{
                key.upper() if key.startswith("CALLSTREAM") else key: value
                for key, value in env.items()
            },
        }
        child = start_worker(tmp_path, worker_env, name=f"{name}-{len(started)}")
        started.append(child)
        if wait:
            wait_worker_ready(child, timeout_s=90)
        return child

    yield start
    for child in started:
        child.stop()
    if os.environ.get("CALLSTREAM_TEST_SHOW_LOGS"):
        for child in started:
            print(f"--- {child.name}\n{child.log_tail(80)}")
