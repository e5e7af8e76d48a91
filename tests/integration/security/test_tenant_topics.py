"""Tenants that cannot be forged: SASL/SCRAM users, ACLs per tenant topic, quotas by topic.

Starts its own secured Apache Kafka node (the session broker is PLAINTEXT and lets anyone do
anything), a fake provider and one worker authenticated as a super user.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from infra.errors import ToolMissing
from infra.kafka import KafkaCluster, resolve_jars
from infra.kafka.acls import allow_produce, create_acls
from infra.kafka.node import find_java
from infra.kafka.security import ScramUsers
from schemas.codec import Codecs
from schemas.models import RequestEvent, ResultEvent
from streams.cli.dev.processes import start_fake_provider, start_worker, wait_worker_ready
from streams.kafka import client_options
from streams.sdk import CallstreamClient
from streams.settings import KafkaSettings, Settings, TopicSettings

pytestmark = pytest.mark.integration

API_KEY = "test-key-0123456789"
PASSWORDS = {"admin": "admin-pw", "worker": "worker-pw", "alice": "alice-pw", "bob": "bob-pw"}
TOPICS = TopicSettings(
    requests="ten.requests", results="ten.results", dead_letters="ten.dlq", partitions=3
)
EU, US = "ten.requests.shop-eu", "ten.requests.shop-us"


@pytest.fixture(scope="module")
def secured_bootstrap() -> Iterator[str]:
    try:
        find_java()
        resolve_jars()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    users = ScramUsers(PASSWORDS, super_users=("admin", "worker"))
    with KafkaCluster(nodes=1, sasl=users) as cluster:
        yield cluster.bootstrap_servers


def kafka_as(user: str, bootstrap: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=user,
        sasl_password=PASSWORDS[user],  # type: ignore[arg-type]
        session_timeout_s=6,
        heartbeat_interval_s=1,
    )


async def grant(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(kafka_as("admin", bootstrap)))
    await admin.start()
    try:
        await create_acls(admin, allow_produce("alice", EU) + allow_produce("bob", US))
    finally:
        await admin.close()


async def publish_as(user: str, topic: str, bootstrap: str, requests: list[RequestEvent]) -> None:
    """What a tenant's publisher runs: the SDK, its request topic set to the tenant's topic."""
    settings = Settings(
        kafka=kafka_as(user, bootstrap), topics=TOPICS.model_copy(update={"requests": topic})
    )
    async with CallstreamClient(settings, ensure_topics=False) as client:
        await client.publish_many(requests)


async def produce_raw(user: str, topic: str, bootstrap: str) -> None:
    producer = AIOKafkaProducer(**client_options(kafka_as(user, bootstrap)))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"anything", key=b"fake")
    finally:
        await producer.stop()


async def read_results(bootstrap: str, count: int, timeout_s: float = 30) -> list[ResultEvent]:
    codecs = Codecs()
    consumer = AIOKafkaConsumer(
        TOPICS.results, auto_offset_reset="earliest", **client_options(kafka_as("admin", bootstrap))
    )
    await consumer.start()
    results: list[ResultEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(results) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    results += [codecs.result.decode(r.value or b"") for r in records]
    finally:
        await consumer.stop()
    return results


def test_a_tenant_cannot_publish_as_another_and_is_charged_by_its_topic(
    secured_bootstrap: str, tmp_path: Path
) -> None:
    bootstrap = secured_bootstrap
    asyncio.run(grant(bootstrap))
    provider = start_fake_provider(tmp_path, "--api-key", API_KEY)
    tenants = {"shop-eu": {"topic": EU}, "shop-us": {"topic": US}}
    quotas = [{"tenant": "shop-eu", "provider": "fake", "per_minute": 3}]
    worker = start_worker(
        tmp_path,
        {
            "CALLSTREAM_APP_ID": "ten",
            "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "CALLSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CALLSTREAM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
            "CALLSTREAM_KAFKA__SASL_USERNAME": "worker",
            "CALLSTREAM_KAFKA__SASL_PASSWORD": PASSWORDS["worker"],
            "CALLSTREAM_KAFKA__SESSION_TIMEOUT_S": "6",
            "CALLSTREAM_KAFKA__HEARTBEAT_INTERVAL_S": "1",
            "CALLSTREAM_TOPICS__REQUESTS": TOPICS.requests,
            "CALLSTREAM_TOPICS__RESULTS": TOPICS.results,
            "CALLSTREAM_TOPICS__DEAD_LETTERS": TOPICS.dead_letters,
            "CALLSTREAM_TOPICS__PARTITIONS": str(TOPICS.partitions),
            "CALLSTREAM_PROVIDERS__FAKE__BASE_URL": provider.url,
            "CALLSTREAM_PROVIDERS__FAKE__SECRET": API_KEY,
            "CALLSTREAM_TENANTS": json.dumps(tenants),
            "CALLSTREAM_LIMITER__QUOTAS": json.dumps(quotas),
            "CALLSTREAM_DATA_DIR": str(tmp_path / "worker"),
        },
    )
    try:
        wait_worker_ready(worker, timeout_s=60)

        # The broker refuses alice's writes anywhere but her tenant's topic.
        for topic in (US, TOPICS.requests):
            with pytest.raises(TopicAuthorizationFailedError):
                asyncio.run(produce_raw("alice", topic, bootstrap))

        # On her own topic, alice claims to be shop-us: she is counted as shop-eu (3 a minute).
        forged = [
            RequestEvent(
                tenant="shop-us",
                provider="fake",
                operation="get_item",
                params={"item_id": str(i)},
                priority=9,
            )
            for i in range(5)
        ]
        genuine = [
            RequestEvent(
                tenant="shop-us",
                provider="fake",
                operation="get_item",
                params={"item_id": str(i)},
            )
            for i in range(2)
        ]
        asyncio.run(publish_as("alice", EU, bootstrap, forged))
        asyncio.run(publish_as("bob", US, bootstrap, genuine))

        results = asyncio.run(read_results(bootstrap, len(forged) + len(genuine)))
    finally:
        worker.stop()
        provider.stop()

    by_id = {r.request_id: r for r in results}
    from_alice = [by_id[r.request_id] for r in forged]
    from_bob = [by_id[r.request_id] for r in genuine]
    assert {r.tenant for r in from_alice} == {"shop-eu"}, worker.log_tail(40)
    assert sorted(r.status for r in from_alice) == ["ok"] * 3 + ["rejected"] * 2
    assert {r.reason for r in from_alice if r.status == "rejected"} == {"quota_exceeded"}
    assert {(r.tenant, r.status) for r in from_bob} == {("shop-us", "ok")}
