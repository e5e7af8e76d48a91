"""A broadcast: a small compacted topic that every worker reads whole and then follows.

For state that every worker must see and that changes rarely: the circuit breakers' modes
(issue 21), which the owners of one provider's shards share and a new owner must find after a
handover. Each worker publishes what it decides and applies what anyone published, its own
included, in the topic's order; the topic keeps the last value per key, so a worker that
starts reads the current state of every key, not its history.

Not a table: no partition follows a consumer group, and a value is applied when it is read, a
few milliseconds after it is written (not when it is acknowledged): a decision that must hold
exactly once belongs in a ``ChangelogTable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from streams.errors import CallstreamError
from streams.kafka import reader
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)


class BroadcastProducer(Protocol):
    async def send(self, topic: str, *, key: bytes, value: bytes) -> asyncio.Future[Any]: ...


Apply = Callable[[bytes, bytes], None]


class Broadcast:
    """Publishes to and follows one compacted topic (created by ``ensure_changelog_topic``)."""

    def __init__(
        self, topic: str, *, kafka: KafkaSettings, producer: BroadcastProducer, apply: Apply
    ) -> None:
        """Args:
        apply: called with every (key, value) read, in order; it must not block.
        """
        self.topic = topic
        self._kafka = kafka
        self._producer = producer
        self._apply = apply
        self._sending: set[asyncio.Task[None]] = set()

    def publish_soon(self, key: bytes, value: bytes) -> None:
        """``publish`` from code that cannot await (a decision made inside a call's path)."""
        task = asyncio.get_running_loop().create_task(self.publish(key, value))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def publish(self, key: bytes, value: bytes) -> None:
        """Send ``value`` for ``key`` (not waiting for the broker: a lost value is decided
        again by its owner; one that cannot be sent is logged)."""
        try:
            await self._producer.send(self.topic, key=key, value=value)
        except KafkaError as exc:
            log.warning("broadcast %s: cannot publish %r: %r", self.topic, key, exc)

    async def follow(self) -> None:
        """Read the topic from its start and apply every record, until cancelled; a lost
        connection is logged and the topic read again from its start (values are states, so
        applying one twice changes nothing)."""
        while True:
            try:
                async with reader(self._kafka, self.topic) as consumer:
                    while True:
                        batches = await consumer.getmany(timeout_ms=1000)
                        for records in batches.values():
                            for record in records:
                                if record.key is not None and record.value is not None:
                                    self._apply_one(record.key, record.value)
            except (KafkaError, CallstreamError) as exc:
                log.warning("broadcast %s: following stopped (%r); again in 1 s", self.topic, exc)
                await asyncio.sleep(1.0)

    def _apply_one(self, key: bytes, value: bytes) -> None:
        try:
            self._apply(key, value)
        except Exception:  # a bad value must not stop the follower
            log.exception("broadcast %s: cannot apply the value of %r", self.topic, key)
