"""Writes outcomes to their topics and returns only once the broker has them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka.errors import (
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    KafkaError,
    RecordTooLargeError,
)

from schemas.models import DeadLetterEvent, ResultEvent
from streams.metrics import LabelledCache, Metrics
from streams.stage.records import Forward, Outcome, SourceRecord, reduce_once, replacement

log = logging.getLogger(__name__)


class EventEncoder(Protocol):
    def encode_result(self, event: ResultEvent) -> bytes: ...
    def encode_dead_letter(self, event: DeadLetterEvent) -> bytes: ...


class RecordSender(Protocol):
    """The part of ``AIOKafkaProducer`` the publisher uses."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[object]: ...


def refuses_record(exc: KafkaError) -> bool:
    """True when ``exc`` refuses this record for good: too large, a topic not writable...

    That is a non-retriable broker error (aiokafka's own size check raises one too) or
    ``RecordTooLargeError``. The other errors aiokafka marks non-retriable are about the
    producer or the cluster, not the record: ``KafkaTimeoutError`` is what ``send`` raises
    while the cluster is out of reach, and throttling, a closing producer and cluster
    authorization pass too. Those are retried: ending records then would lose outcomes.
    """
    if isinstance(exc, ClusterAuthorizationFailedError):
        return False
    return isinstance(exc, (BrokerResponseError, RecordTooLargeError)) and not exc.retriable


class OutcomePublisher:
    """Publishes each outcome keyed by request id, so a consumer can spot duplicates."""

    def __init__(
        self,
        sender: RecordSender,
        encoder: EventEncoder,
        metrics: Metrics,
        *,
        results_topic: str,
        dead_letter_topic: str,
        requests_topic: str = "",
        known_providers: frozenset[str] = frozenset(),
        retry_backoff_s: float = 0.5,
        max_outcome_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        max_outcome_bytes: the largest encoded outcome written whole (``topics.
            max_outcome_bytes``); a larger one is published reduced (README, "Outcome").
        clock: epoch seconds, for the dead letters written instead of an outcome.
        """
        self._sender = sender
        self._encoder = encoder
        self._metrics = metrics
        self._results_topic = results_topic
        self._dead_letter_topic = dead_letter_topic
        self._requests_topic = requests_topic
        self._retry_backoff_s = retry_backoff_s
        self._max_outcome_bytes = max_outcome_bytes
        self._clock = clock
        # Provider names come from events: only configured ones become label values, so a
        # stream of made-up names cannot blow up the metric's cardinality.
        self._known_providers = known_providers
        # Bounded: known providers (+ "other") times result statuses.
        self._outcome_counters = LabelledCache(metrics.outcomes)
        self._reduced = LabelledCache(metrics.outcomes_reduced)

    async def publish(self, outcome: Outcome | Forward) -> None:
        """Write the outcome (or forward the request) and wait for the broker's ack.

        An outcome over ``max_outcome_bytes`` is written reduced. A failed write is retried
        unless the error refuses the record for good: the caller only commits the request's
        offset after this returns, so giving up on a broker outage would lose it.

        Raises:
            KafkaError: one that refuses this record for good (:func:`refuses_record`);
                :meth:`publish_instead` then ends the record.
        """
        if isinstance(outcome, Forward):
            await self._send(self._requests_topic, outcome.value, outcome.key)
            self._metrics.forwarded.inc()
            return
        topic, value = self._encode(outcome.event, outcome.reply_to)
        written = outcome
        if len(value) > self._max_outcome_bytes:  # rare: the common path costs this len()
            written, value = self._fit(outcome, value)
        await self._send(topic, value, (outcome.event.request_id or "").encode() or None)
        self._count(outcome)
        if written is not outcome:
            self._reduced["dead_letter" if outcome.is_dead_letter else "result"].inc()

    async def publish_instead(
        self, source: SourceRecord, error: BaseException, *, stage: str, request_id: str | None
    ) -> None:
        """End ``source`` with a dead letter (reduced to fit) when its outcome could not be
        written or its handler failed; when even that is refused, log and count it. Never
        raises but on cancellation, so the record finishes and its partition's commits move
        on (issue 19)."""
        letter = replacement(
            source, error, stage=stage, now_ms=int(self._clock() * 1000), request_id=request_id
        )
        try:
            outcome, value = self._fit(Outcome(letter), self._encoder.encode_dead_letter(letter))
            await self._send(self._dead_letter_topic, value, (request_id or "").encode() or None)
        except Exception as exc:  # the last resort: the record must still end
            log.error(
                "record %s[%d]@%d ends without an outcome: %r, then its dead letter: %r",
                source.topic,
                source.partition,
                source.offset,
                error,
                exc,
            )
            self._reduced["lost"].inc()
            return
        log.warning(
            "record %s[%d]@%d ends with a dead letter (stage %s): %r",
            source.topic,
            source.partition,
            source.offset,
            stage,
            error,
        )
        self._count(outcome)
        self._reduced["replaced"].inc()

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                delivery = await self._sender.send(topic, value=value, key=key)
                await delivery
                return
            except KafkaError as exc:
                if refuses_record(exc):
                    raise
                log.warning("publish to %s failed (%r); retrying", topic, exc)
            await asyncio.sleep(self._retry_backoff_s)

    def _fit(self, outcome: Outcome, value: bytes) -> tuple[Outcome, bytes]:
        """The outcome reduced (:func:`~streams.stage.records.reduce_once`) until its encoding
        fits ``max_outcome_bytes``, or as far as it goes."""
        event = outcome.event
        while len(value) > self._max_outcome_bytes:
            smaller = reduce_once(event, len(value), self._max_outcome_bytes)
            if smaller is None:
                break
            event = smaller
            value = self._encode(event, outcome.reply_to)[1]
        return (outcome if event is outcome.event else outcome._replace(event=event)), value

    def _encode(
        self, event: ResultEvent | DeadLetterEvent, reply_to: str | None
    ) -> tuple[str, bytes]:
        if isinstance(event, DeadLetterEvent):
            return self._dead_letter_topic, self._encoder.encode_dead_letter(event)
        return reply_to or self._results_topic, self._encoder.encode_result(event)

    def _count(self, outcome: Outcome) -> None:
        provider = outcome.provider if outcome.provider in self._known_providers else "other"
        self._outcome_counters[provider, str(outcome.status)].inc()
        event = outcome.event
        if isinstance(event, DeadLetterEvent):
            self._metrics.dead_letters.labels(event.reason, event.stage).inc()
