"""Probe p7 (security review 2026-12-02, finding 1): an outcome too large for the producer.

On the old main ``OutcomePublisher`` retried every error, so an outcome over the producer's
``max_request_size`` was retried forever ("publish() still retrying after 2 s, 40 attempts;
never returns, offset never finishes") and its partition's commits stopped for good.

As the probe did, the sender here runs aiokafka's own size check (``_serialize``) on a
producer built the way the worker builds it (``producer_options`` with
``topics.max_record_bytes``), and fakes only the network. Each of the probe's three outcomes
(a 1.5 MB answer, the dead letter of a 600 KB request, the ``undecodable`` letter of
1,048,489 bytes of garbage) is published exactly once, reduced; the stage loop then commits
past them and past the records behind them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry

from agents.outcomes import dead_letter, result
from agents.provider_caller.caller import Caller
from providers.auth.request import PreparedRequest
from providers.errors import BadRequest
from providers.response import ProviderReply
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.kafka import producer_options
from streams.metrics import Metrics
from streams.settings import CallerSettings, KafkaSettings, TopicSettings
from streams.stage.loop import StageLoop
from streams.stage.no_return import PointOfNoReturn
from streams.stage.publisher import OutcomePublisher
from streams.stage.records import Outcome, SourceRecord
from tests.unit.streams.stage.fakes import TP0, FakeConsumer, Limits, wait_until

CODECS = Codecs()
TOPICS = TopicSettings()  # the defaults: max_outcome_bytes 1,000,000
# The largest value (no key) aiokafka's default producer accepted on the old main.
GARBAGE = b"\xfe" * 1_048_489
FOLLOWERS = 200


class SizeCheckedSender:
    """``AIOKafkaProducer.send`` without the network: aiokafka's size check, then an ack."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.attempts = 0
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[object]:
        self.attempts += 1
        self._producer._serialize(key, value, [])  # raises MessageSizeTooLargeError
        assert value is not None
        self.sent.append((topic, value, key))
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery

    def decoded(self) -> list[ResultEvent | DeadLetterEvent]:
        return [
            (CODECS.dead_letter if topic == "dlq" else CODECS.result).decode(value)
            for topic, value, _ in self.sent
        ]


@pytest.fixture
async def sender() -> AsyncIterator[SizeCheckedSender]:
    options = producer_options(KafkaSettings(), max_record_bytes=TOPICS.max_record_bytes)
    producer = AIOKafkaProducer(**options)  # never started: only its size check runs
    yield SizeCheckedSender(producer)
    await producer.stop()


def publisher_for(sender: SizeCheckedSender, metrics: Metrics) -> OutcomePublisher:
    return OutcomePublisher(
        sender,
        CODECS,
        metrics,
        results_topic="results",
        dead_letter_topic="dlq",
        known_providers=frozenset({"openai"}),
        retry_backoff_s=0.05,  # the probe's
        max_outcome_bytes=TOPICS.max_outcome_bytes,
    )


def reduced(metrics: Metrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value("callstream_outcomes_reduced_total", {"kind": kind})


BIG_REQUEST = RequestEvent(
    provider="openai",
    operation="create_chat_completion",
    body=b"y" * 600_000,
    content_type="application/json",
)


async def test_a_1_5_mb_answer_is_published_once_without_its_body(
    sender: SizeCheckedSender,
) -> None:
    metrics = Metrics.create(CollectorRegistry())
    request = RequestEvent(provider="openai", operation="create_chat_completion")
    ok = result(request, ResultStatus.OK, now_ms=0, body=b"x" * 1_500_000, http_status=200)
    assert len(CODECS.result.encode(ok)) > TOPICS.max_record_bytes

    await asyncio.wait_for(publisher_for(sender, metrics).publish(Outcome(ok)), timeout=2)

    assert sender.attempts == 1
    (written,) = sender.decoded()
    assert isinstance(written, ResultEvent)
    assert (written.request_id, written.status, written.reason, written.body) == (
        request.request_id,
        "failed",
        "body_too_large",
        None,
    )
    assert written.http_status == 200
    assert reduced(metrics, "result") == 1


async def test_the_dead_letter_of_a_600_kb_request_is_published_once_with_its_raw_bytes(
    sender: SizeCheckedSender,
) -> None:
    metrics = Metrics.create(CollectorRegistry())
    raw = CODECS.request.encode(BIG_REQUEST)
    letter = dead_letter(
        SourceRecord("req", 0, 7, raw),
        reason="bad_request",
        error=BadRequest("HTTP 400"),
        stage="caller",
        now_ms=0,
        request=BIG_REQUEST,
    )
    assert len(CODECS.dead_letter.encode(letter)) > TOPICS.max_record_bytes  # the probe's 1.2 MB

    await asyncio.wait_for(publisher_for(sender, metrics).publish(Outcome(letter)), timeout=2)

    assert sender.attempts == 1
    (written,) = sender.decoded()
    assert isinstance(written, DeadLetterEvent)
    assert (written.reason, written.original, written.original_truncated) == (
        "bad_request",
        None,
        False,
    )
    assert written.original_raw == raw, "the request can still be replayed from its bytes"
    assert CODECS.request.decode(written.original_raw) == BIG_REQUEST
    assert reduced(metrics, "dead_letter") == 1


async def test_a_megabyte_of_garbage_becomes_one_truncated_dead_letter(
    sender: SizeCheckedSender,
) -> None:
    metrics = Metrics.create(CollectorRegistry())

    class NoGateway:
        provider_names = frozenset({"openai"})

        def build(self, request: RequestEvent) -> PreparedRequest:
            raise AssertionError("garbage is never built")

        async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
            raise AssertionError("garbage is never called")

    caller = Caller(
        NoGateway(), CODECS.request, max_event_bytes=CallerSettings().max_request_event_bytes
    )
    outcome = await caller.handle(SourceRecord("req", 0, 9, GARBAGE))
    assert isinstance(outcome, Outcome)

    await asyncio.wait_for(publisher_for(sender, metrics).publish(outcome), timeout=2)

    assert sender.attempts == 1
    (written,) = sender.decoded()
    assert isinstance(written, DeadLetterEvent)
    assert (written.request_id, written.original, written.original_truncated) == (None, None, True)
    assert (written.reason, written.stage) == ("too_large", "decode")  # over the event cap
    assert GARBAGE.startswith(written.original_raw)
    assert len(sender.sent[0][1]) <= TOPICS.max_outcome_bytes


class Gateway:
    """Answers 1.5 MB for item ``big``, refuses a body as the provider would (HTTP 400), and
    answers ``{}`` otherwise."""

    provider_names = frozenset({"openai"})

    def build(self, request: RequestEvent) -> PreparedRequest:
        return PreparedRequest("POST", "http://openai.test/v1")

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        if request.body:
            raise BadRequest("openai: HTTP 400: context too long")
        if request.params.get("item") == "big":
            return ProviderReply(200, b"x" * 1_500_000)
        return ProviderReply(200, json.dumps({"item": request.params.get("item")}).encode())


class Consumer(FakeConsumer):
    def feed_values(self, values: list[bytes]) -> None:
        batch = [
            ConsumerRecord(
                topic=TP0.topic, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                key=None, value=value, checksum=None, serialized_key_size=0,
                serialized_value_size=0, headers=(),
            )
            for offset, value in enumerate(values)
        ]  # fmt: skip
        self._batches.append(({TP0: batch}, None))
        self._fed.set()


async def test_the_records_behind_the_three_all_complete_and_commits_pass_them(
    sender: SizeCheckedSender,
) -> None:
    metrics = Metrics.create(CollectorRegistry())
    no_return = PointOfNoReturn()
    caller = Caller(
        Gateway(),
        CODECS.request,
        no_return=no_return,
        max_event_bytes=CallerSettings().max_request_event_bytes,
    )
    consumer = Consumer()
    loop = StageLoop(
        consumer,
        caller,
        publisher_for(sender, metrics),
        metrics,
        Limits(),
        no_return=no_return,
    )
    big = RequestEvent(provider="openai", operation="get", params={"item": "big"})
    followers = [
        RequestEvent(provider="openai", operation="get", params={"item": str(i)})
        for i in range(FOLLOWERS)
    ]
    values = [CODECS.request.encode(e) for e in (big, BIG_REQUEST)] + [GARBAGE]
    values += [CODECS.request.encode(e) for e in followers]
    await loop.on_assigned({TP0})
    runner = asyncio.create_task(loop.run())
    try:
        consumer.feed_values(values)
        await wait_until(lambda: len(sender.sent) == len(values), timeout_s=10)
        await wait_until(lambda: loop.in_flight == 0)
        await loop.commit()
    finally:
        await loop.stop()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    assert consumer.committed_offset(TP0) == len(values)
    assert sender.attempts == len(values), "each outcome written once, none retried"
    outcomes = sender.decoded()
    results = {o.request_id: o for o in outcomes if isinstance(o, ResultEvent)}
    letters = [o for o in outcomes if isinstance(o, DeadLetterEvent)]
    assert (results[big.request_id].status, results[big.request_id].reason) == (
        "failed",
        "body_too_large",
    )
    assert sorted((d.request_id is None, d.reason) for d in letters) == [
        (False, "bad_request"),
        (True, "too_large"),
    ]
    assert all(results[f.request_id].status == "ok" for f in followers)
    assert reduced(metrics, "result") == 1 and reduced(metrics, "dead_letter") == 2
