"""Secrets never leak into topics, logs or metrics; requests cannot reach undeclared targets."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.models import RequestEvent
from streams.kafka import client_options
from tests.integration.pipeline.outcomes import collect, publish, run

pytestmark = pytest.mark.integration

SECRET = "sk-live-THIS-MUST-NEVER-LEAK-42"


async def raw_records(settings) -> bytes:
    consumer = AIOKafkaConsumer(
        settings.topics.requests,
        settings.topics.results,
        settings.topics.dead_letters,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    data = bytearray()
    try:
        while batches := await consumer.getmany(timeout_ms=1500):
            for records in batches.values():
                for record in records:
                    data += (record.key or b"") + (record.value or b"")
    finally:
        await consumer.stop()
    return bytes(data)


def test_the_secret_appears_in_no_topic_log_or_metric(
    settings, tmp_path, fake_provider_factory, worker_factory
):
    fake = fake_provider_factory("--latency-ms", "1")
    # The worker's key is wrong for this fake (it demands the suite's key): every call fails
    # with 401, the path where clients most often echo credentials into errors.
    worker = worker_factory(
        fake.url, CALLSTREAM_PROVIDERS__FAKE__SECRET=SECRET, CALLSTREAM_LOG_LEVEL="debug"
    )
    requests = [
        RequestEvent(provider="fake", operation="get_item", params={"item_id": str(i)})
        for i in range(20)
    ]
    run(publish(settings, requests))
    outcomes = run(collect(settings, until_ids={r.request_id for r in requests}))
    assert {d.reason for d in outcomes.dead_letters} == {"auth_failed"}
    metrics = httpx.get(f"{worker.url}/metrics").text
    worker.stop()

    topics = run(raw_records(settings))
    logs = worker.log_path.read_text(errors="replace")
    encoded = base64.b64encode(SECRET.encode()).decode()
    for where, text in (
        ("topics", topics.decode("latin-1")),
        ("worker log", logs),
        ("metrics", metrics),
    ):
        assert SECRET not in text, f"secret leaked into {where}"
        assert encoded not in text, f"base64 secret leaked into {where}"

    shown = subprocess.run(
        [sys.executable, "-m", "streams", "providers", "show", "fake"],
        capture_output=True,
        text=True,
        check=False,
        env={"CALLSTREAM_PROVIDERS__FAKE__SECRET": SECRET, "PATH": ""},
    )
    assert SECRET not in shown.stdout + shown.stderr


def test_undeclared_hosts_and_headers_are_not_allowed_and_never_called(
    settings, fake_provider_factory, worker_factory
):
    fake = fake_provider_factory("--latency-ms", "1")
    worker_factory(fake.url)
    attempts = [
        RequestEvent(provider="fake", operation="get_item", params={"item_id": "../../admin"}),
        RequestEvent(
            provider="fake",
            operation="get_item",
            params={"item_id": "1", "callback": "http://169.254.169.254/latest"},
        ),
        RequestEvent(
            provider="fake",
            operation="get_item",
            params={"item_id": "1"},
            headers={"Host": "internal.example"},
        ),
        RequestEvent(
            provider="fake",
            operation="get_item",
            params={"item_id": "1"},
            headers={"Authorization": "Bearer stolen"},
        ),
    ]
    run(publish(settings, attempts))
    outcomes = run(collect(settings, until_ids={r.request_id for r in attempts}))

    assert not outcomes.results
    reasons = {d.request_id: d.reason for d in outcomes.dead_letters}
    # A value outside its parameter's declared pattern is a bad request; a target or header
    # the provider does not declare is not allowed.
    assert [reasons[r.request_id] for r in attempts] == [
        "bad_request",
        "not_allowed",
        "not_allowed",
        "not_allowed",
    ]
    assert httpx.get(f"{fake.url}/_fake/stats").json()["calls_total"] == 0
