"""Reading every outcome record of a test's topics, duplicates included."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.kafka import client_options
from streams.sdk import CallstreamClient
from streams.settings import Settings


@dataclass
class Outcomes:
    results: list[ResultEvent] = field(default_factory=list)
    dead_letters: list[DeadLetterEvent] = field(default_factory=list)

    def ids(self) -> list[str]:
        """Request ids of every outcome record, repeats included."""
        return [r.request_id for r in self.results] + [
            d.request_id for d in self.dead_letters if d.request_id is not None
        ]

    @property
    def total(self) -> int:
        return len(self.results) + len(self.dead_letters)


async def collect(
    settings: Settings,
    *,
    until_ids: set[str],
    extra_dead_letters: int = 0,
    timeout_s: float = 120.0,
    settle_s: float = 1.5,
) -> Outcomes:
    """Every outcome record until each of ``until_ids`` has one (and ``extra_dead_letters``
    id-less dead letters arrived), then ``settle_s`` more to catch late duplicates."""
    codecs = Codecs()
    outcomes = Outcomes()
    consumer = AIOKafkaConsumer(
        settings.topics.results,
        settings.topics.dead_letters,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    missing = set(until_ids)
    anonymous = 0
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < (settle_until or deadline):
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    assert record.value is not None
                    if tp.topic == settings.topics.results:
                        event = codecs.result.decode(record.value)
                        outcomes.results.append(event)
                        missing.discard(event.request_id)
                    else:
                        letter = codecs.dead_letter.decode(record.value)
                        outcomes.dead_letters.append(letter)
                        if letter.request_id is None:
                            anonymous += 1
                        missing.discard(letter.request_id or "")
            if not missing and anonymous >= extra_dead_letters and settle_until is None:
                settle_until = time.monotonic() + settle_s
    finally:
        await consumer.stop()
    return outcomes


def spread_key(request: RequestEvent) -> bytes:
    """A key that ignores limit keys: workers must forward such requests to their owner."""
    return request.request_id.encode()


async def publish(settings: Settings, requests: list[RequestEvent], *, spread: bool = True) -> None:
    async with CallstreamClient(settings) as client:
        if spread:
            await client.publish_many(requests, partition_key=spread_key)
        else:
            await client.publish_many(requests)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)
