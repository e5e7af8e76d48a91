"""OutcomePublisher: each outcome to its topic, keyed by request id, retried until acknowledged."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from schemas.models import ResultStatus
from streams.metrics import Metrics
from streams.stage.publisher import OutcomePublisher
from streams.stage.records import Forward, Outcome

from .fakes import FakeEncoder, FakeSender, dead_letter, result, wait_until


def publisher_for(sender: FakeSender, metrics: Metrics | None = None) -> OutcomePublisher:
    return OutcomePublisher(
        sender,
        FakeEncoder(),
        metrics or Metrics.create(CollectorRegistry()),
        results_topic="results",
        dead_letter_topic="dlq",
        requests_topic="requests",
        known_providers=frozenset({"acme"}),
        retry_backoff_s=0.001,
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create(CollectorRegistry())


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_result_goes_to_the_results_topic_keyed_by_request_id() -> None:
    sender = FakeSender()
    await publisher_for(sender).publish(Outcome(result("r1")))
    assert sender.sent == [("results", b"result:r1:ok", b"r1")]


async def test_a_result_with_reply_to_goes_to_that_topic() -> None:
    sender = FakeSender()
    await publisher_for(sender).publish(Outcome(result("r2"), reply_to="replies.tenant-a"))
    assert sender.sent == [("replies.tenant-a", b"result:r2:ok", b"r2")]


async def test_a_dead_letter_goes_to_the_dead_letter_topic_even_with_reply_to() -> None:
    sender = FakeSender()
    await publisher_for(sender).publish(Outcome(dead_letter("r3"), reply_to="replies.tenant-a"))
    assert sender.sent == [("dlq", b"dead:r3:timeout", b"r3")]


async def test_a_dead_letter_without_request_id_is_sent_without_key() -> None:
    sender = FakeSender()
    await publisher_for(sender).publish(Outcome(dead_letter(None, provider=None)))
    assert sender.sent == [("dlq", b"dead:None:timeout", None)]


async def test_a_forward_goes_to_the_requests_topic_with_its_own_key(metrics: Metrics) -> None:
    sender = FakeSender()
    await publisher_for(sender, metrics).publish(Forward(key=b"acme#3", value=b"request"))
    assert sender.sent == [("requests", b"request", b"acme#3")]
    assert sample(metrics, "callstream_requests_forwarded_total") == 1
    assert sample(metrics, "callstream_outcomes_total", provider="acme", status="ok") is None


async def test_a_failed_send_is_retried_until_the_broker_acknowledges_it(metrics: Metrics) -> None:
    sender = FakeSender(failures=[KafkaTimeoutError(), "ack", "ack"])
    await asyncio.wait_for(publisher_for(sender, metrics).publish(Outcome(result("r1"))), 1)
    assert sender.sent == [("results", b"result:r1:ok", b"r1")] * 4
    assert sample(metrics, "callstream_outcomes_total", provider="acme", status="ok") == 1


async def test_cancelling_a_publish_waiting_for_its_ack_propagates_without_a_retry(
    metrics: Metrics,
) -> None:
    sender = FakeSender(hang=True)
    publishing = asyncio.create_task(publisher_for(sender, metrics).publish(Outcome(result())))
    await wait_until(lambda: len(sender.sent) == 1)
    publishing.cancel()
    try:
        await asyncio.wait({publishing}, timeout=1)
        assert publishing.cancelled()
        assert len(sender.sent) == 1
        assert sample(metrics, "callstream_outcomes_total", provider="acme", status="ok") is None
    finally:
        sender.acknowledge_all()  # a publish that swallowed the cancellation can end


async def test_cancelling_a_publish_between_retries_propagates() -> None:
    sender = FakeSender(failures=[KafkaTimeoutError()] * 100)
    slow_retries = OutcomePublisher(
        sender,
        FakeEncoder(),
        Metrics.create(CollectorRegistry()),
        results_topic="results",
        dead_letter_topic="dlq",
        retry_backoff_s=60.0,
    )
    publishing = asyncio.create_task(slow_retries.publish(Outcome(result())))
    await wait_until(lambda: len(sender.sent) == 1)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(publishing, 1)
    assert len(sender.sent) == 1


async def test_outcomes_are_counted_by_provider_and_status_with_unknown_providers_as_other(
    metrics: Metrics,
) -> None:
    publisher = publisher_for(FakeSender(), metrics)
    await publisher.publish(Outcome(result("r1", provider="acme")))
    await publisher.publish(Outcome(result("r2", provider="acme")))
    await publisher.publish(Outcome(result("r3", provider="made-up")))
    await publisher.publish(Outcome(result("r4", provider="acme", status=ResultStatus.EXPIRED)))

    def outcomes(provider: str, status: str) -> float | None:
        return sample(metrics, "callstream_outcomes_total", provider=provider, status=status)

    assert outcomes("acme", "ok") == 2
    assert outcomes("other", "ok") == 1
    assert outcomes("made-up", "ok") is None
    assert outcomes("acme", "expired") == 1


async def test_dead_letters_are_counted_as_outcomes_and_by_reason_and_stage(
    metrics: Metrics,
) -> None:
    publisher = publisher_for(FakeSender(), metrics)
    await publisher.publish(Outcome(dead_letter("r1", provider="acme")))
    await publisher.publish(Outcome(dead_letter(None, provider=None)))

    assert sample(metrics, "callstream_outcomes_total", provider="acme", status="dead_letter") == 1
    assert sample(metrics, "callstream_outcomes_total", provider="other", status="dead_letter") == 1
    assert sample(metrics, "callstream_dead_letters_total", reason="timeout", stage="caller") == 2
