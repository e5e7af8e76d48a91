"""Writes outcomes to their topics and returns only once the broker has them."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from schemas.models import DeadLetterEvent, ResultEvent
from streams.metrics import LabelledCache, Metrics
from streams.stage.records import Forward, Outcome

log = logging.getLogger(__name__)


class EventEncoder(Protocol):
    def encode_result(self, event: ResultEvent) -> bytes: ...
    def encode_dead_letter(self, event: DeadLetterEvent) -> bytes: ...


class RecordSender(Protocol):
    """The part of ``AIOKafkaProducer`` the publisher uses."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[object]: ...


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
    ) -> None:
        self._sender = sender
        self._encoder = encoder
        self._metrics = metrics
        self._results_topic = results_topic
        self._dead_letter_topic = dead_letter_topic
        self._requests_topic = requests_topic
        self._retry_backoff_s = retry_backoff_s
        # Provider names come from events: only configured ones become label values, so a
        # stream of made-up names cannot blow up the metric's cardinality.
        self._known_providers = known_providers
        # Bounded: known providers (+ "other") times result statuses.
        self._outcome_counters = LabelledCache(metrics.outcomes)

    async def publish(self, outcome: Outcome | Forward) -> None:
        """Write the outcome (or forward the request) and wait for the broker's ack.

        A failed write is retried until it succeeds or the task is cancelled: the caller only
        commits the request's offset after this returns, so giving up here would lose it.
        """
        if isinstance(outcome, Forward):
            await self._send(self._requests_topic, outcome.value, outcome.key)
            self._metrics.forwarded.inc()
            return
        topic, value = self._encode(outcome)
        await self._send(topic, value, (outcome.event.request_id or "").encode() or None)
        self._count(outcome)

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                delivery = await self._sender.send(topic, value=value, key=key)
                await delivery
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("publish to %s failed (%r); retrying", topic, exc)
                await asyncio.sleep(self._retry_backoff_s)

    def _encode(self, outcome: Outcome) -> tuple[str, bytes]:
        event = outcome.event
        if isinstance(event, DeadLetterEvent):
            return self._dead_letter_topic, self._encoder.encode_dead_letter(event)
        return outcome.reply_to or self._results_topic, self._encoder.encode_result(event)

    def _count(self, outcome: Outcome) -> None:
        provider = outcome.provider if outcome.provider in self._known_providers else "other"
        self._outcome_counters[provider, str(outcome.status)].inc()
        event = outcome.event
        if isinstance(event, DeadLetterEvent):
            self._metrics.dead_letters.labels(event.reason, event.stage).inc()
