"""OutcomePublisher: each outcome to its topic, keyed by request id, retried until acknowledged;
reduced when too large, replaced by a dead letter when refused for good."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from prometheus_client import CollectorRegistry

from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.metrics import Metrics
from streams.stage.publisher import OutcomePublisher, refuses_record
from streams.stage.records import Forward, Outcome, SourceRecord

from .fakes import NOW_MS, FakeEncoder, FakeSender, dead_letter, result, wait_until


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


# -- outcomes too large to publish (issue 19) ------------------------------------------------

LIMIT = 10_000


def sized_publisher(
    sender: FakeSender, metrics: Metrics, limit: int = LIMIT, encoder: object | None = None
) -> OutcomePublisher:
    return OutcomePublisher(
        sender,
        encoder or Codecs(),  # type: ignore[arg-type]
        metrics,
        results_topic="results",
        dead_letter_topic="dlq",
        known_providers=frozenset({"acme"}),
        retry_backoff_s=0.001,
        max_outcome_bytes=limit,
        clock=lambda: NOW_MS / 1000,
    )


def big_letter(raw_bytes: int, *, decoded: bool = True) -> DeadLetterEvent:
    request = RequestEvent(
        provider="acme", operation="echo", request_id="r9", body=b"y" * raw_bytes
    )
    raw = Codecs().request.encode(request)
    return dead_letter("r9").model_copy(
        update={"original_raw": raw, "original": request if decoded else None}
    )


def sent_value(sender: FakeSender) -> bytes:
    ((_, value, _),) = sender.sent
    assert value is not None
    return value


async def test_a_result_over_the_limit_is_published_failed_without_its_body(
    metrics: Metrics,
) -> None:
    sender = FakeSender()
    big = result("r1", http_status=200, body=b"x" * 20_000, content_type="application/json")
    await sized_publisher(sender, metrics).publish(Outcome(big, reply_to="replies"))

    topic, value, key = sender.sent[0]
    assert (topic, key) == ("replies", b"r1")
    assert value is not None and len(value) <= LIMIT
    event = Codecs().result.decode(value)
    assert (event.status, event.reason, event.body, event.http_status) == (
        "failed",
        "body_too_large",
        None,
        200,
    )
    assert event.content_type is None
    assert event.error_type == "OutcomeTooLarge"
    assert event.error_message is not None and "20000 bytes was dropped" in event.error_message
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="result") == 1
    assert sample(metrics, "callstream_outcomes_total", provider="acme", status="ok") == 1


async def test_a_result_with_a_huge_trace_keeps_its_status_and_loses_trace_and_headers(
    metrics: Metrics,
) -> None:
    sender = FakeSender()
    event = result("r1", status=ResultStatus.EXPIRED, reason="deadline_passed")
    event = event.model_copy(update={"trace": {"t": "z" * 20_000}, "headers": {"h": "v"}})
    await sized_publisher(sender, metrics).publish(Outcome(event))

    written = Codecs().result.decode(sent_value(sender))
    assert (written.status, written.reason, written.trace, written.headers) == (
        "expired",
        "deadline_passed",
        {},
        {},
    )


async def test_a_dead_letter_over_the_limit_drops_original_and_keeps_the_exact_raw_bytes(
    metrics: Metrics,
) -> None:
    sender = FakeSender()
    letter = big_letter(6_000)  # raw ~6 KB, with the decoded original ~12 KB
    await sized_publisher(sender, metrics).publish(Outcome(letter))

    value = sent_value(sender)
    written = Codecs().dead_letter.decode(value)
    assert len(value) <= LIMIT
    assert written.original is None
    assert written.original_raw == letter.original_raw
    assert not written.original_truncated
    assert Codecs().request.decode(written.original_raw) == letter.original
    assert (written.request_id, written.reason, written.stage) == ("r9", "timeout", "caller")
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="dead_letter") == 1
    assert sample(metrics, "callstream_outcomes_total", provider="acme", status="dead_letter") == 1


@pytest.mark.parametrize("decoded", [True, False])
async def test_raw_bytes_that_alone_exceed_the_limit_are_truncated_and_flagged(
    metrics: Metrics, decoded: bool
) -> None:
    sender = FakeSender()
    letter = big_letter(30_000, decoded=decoded)
    await sized_publisher(sender, metrics).publish(Outcome(letter))

    value = sent_value(sender)
    written = Codecs().dead_letter.decode(value)
    assert LIMIT - 8 <= len(value) <= LIMIT, "as much of the raw bytes as fits is kept"
    assert written.original is None
    assert written.original_truncated
    assert letter.original_raw.startswith(written.original_raw)
    assert written.attempts == letter.attempts
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="dead_letter") == 1


async def test_an_outcome_within_the_limit_is_encoded_once_and_sent_unchanged(
    metrics: Metrics,
) -> None:
    class CountingEncoder:
        def __init__(self) -> None:
            self.codecs, self.calls = Codecs(), 0

        def encode_result(self, event: ResultEvent) -> bytes:
            self.calls += 1
            return self.codecs.encode_result(event)

        def encode_dead_letter(self, event: DeadLetterEvent) -> bytes:
            return self.codecs.encode_dead_letter(event)

    codecs = CountingEncoder()
    sender = FakeSender()
    event = result("r1", body=b"x" * 5_000)
    await sized_publisher(sender, metrics, encoder=codecs).publish(Outcome(event))

    assert codecs.calls == 1
    assert Codecs().result.decode(sent_value(sender)) == event
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="result") is None


@pytest.mark.parametrize(
    ("error", "refuses"),
    [
        (MessageSizeTooLargeError(), True),
        (RecordTooLargeError(), True),
        (TopicAuthorizationFailedError(), True),
        (NotLeaderForPartitionError(), False),  # retriable
        (KafkaTimeoutError(), False),  # aiokafka marks it final, but it is an outage
        (ProducerClosed(), False),
        (ClusterAuthorizationFailedError(), False),
        (KafkaError("base"), False),
    ],
)
def test_only_errors_about_the_record_refuse_it_for_good(error: KafkaError, refuses: bool) -> None:
    assert refuses_record(error) is refuses


@pytest.mark.parametrize("where", ["send", "ack"])
async def test_a_refused_record_is_not_retried(where: str) -> None:
    refusal = MessageSizeTooLargeError()
    sender = FakeSender(failures=[refusal if where == "send" else ("ack", refusal)])
    with pytest.raises(MessageSizeTooLargeError):
        await asyncio.wait_for(publisher_for(sender).publish(Outcome(result("r1"))), 1)
    assert len(sender.sent) == 1


async def test_publish_instead_writes_a_dead_letter_with_the_raw_bytes_and_the_error(
    metrics: Metrics,
) -> None:
    sender = FakeSender()
    source = SourceRecord("requests", 3, 41, b"\x00raw request")
    await sized_publisher(sender, metrics).publish_instead(
        source, MessageSizeTooLargeError("too big"), stage="publish", request_id="r5"
    )

    ((topic, value, key),) = sender.sent
    assert (topic, key) == ("dlq", b"r5")
    assert value is not None
    letter = Codecs().dead_letter.decode(value)
    assert (letter.request_id, letter.original_raw, letter.original) == (
        "r5",
        b"\x00raw request",
        None,
    )
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "requests",
        3,
        41,
    )
    assert (letter.reason, letter.stage, letter.error_type) == (
        "internal_error",
        "publish",
        "MessageSizeTooLargeError",
    )
    assert letter.last_failure_at_ms == NOW_MS
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="replaced") == 1
    assert sample(
        metrics, "callstream_dead_letters_total", reason="internal_error", stage="publish"
    )


async def test_publish_instead_truncates_raw_bytes_too_large_for_a_dead_letter(
    metrics: Metrics,
) -> None:
    sender = FakeSender()
    source = SourceRecord("requests", 0, 1, b"g" * 50_000)
    await sized_publisher(sender, metrics).publish_instead(
        source, ValueError("bug"), stage="handler", request_id=None
    )

    value = sent_value(sender)
    letter = Codecs().dead_letter.decode(value)
    assert len(value) <= LIMIT
    assert letter.original_truncated and source.value.startswith(letter.original_raw)
    assert (letter.request_id, letter.stage, letter.error_type) == (None, "handler", "ValueError")


async def test_publish_instead_refused_too_is_logged_and_counted_and_never_raises(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    sender = FakeSender(failures=[TopicAuthorizationFailedError()])
    source = SourceRecord("requests", 0, 9, b"raw")
    await sized_publisher(sender, metrics).publish_instead(
        source, TopicAuthorizationFailedError(), stage="publish", request_id="r1"
    )

    assert sample(metrics, "callstream_outcomes_reduced_total", kind="lost") == 1
    assert sample(metrics, "callstream_outcomes_reduced_total", kind="replaced") is None
    assert "requests[0]@9 ends without an outcome" in caplog.text
