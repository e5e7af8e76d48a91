"""Reading the dead-letter topic up to the end offsets captured at the start, counted by a tally.

A read assigns every partition of the topic and stops at the end offsets it saw first, so it
always ends, even while workers keep adding dead letters. Both the replay and the count of the
dead letters run :func:`tallied`; only their tallies differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import TopicPartition

from agents.dlq_replay.fingerprint import Position
from agents.dlq_replay.selection import start_offset
from agents.dlq_replay.tally import ReadProgress
from schemas.codec import Codecs
from schemas.errors import DecodeError
from schemas.models import DeadLetterEvent
from streams.errors import CallstreamError, ConfigurationError
from streams.kafka import admin_client
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

_POLL_MS = 200

# Per partition: the offset reading starts at, and the end offset captured at the start.
Spans = Mapping[TopicPartition, tuple[int, int]]


class ReplayError(CallstreamError):
    """A replay could not go on. Operator action: check the broker, then run it again."""


ProgressT_co = TypeVar("ProgressT_co", bound=ReadProgress, covariant=True)


class Tally(Protocol[ProgressT_co]):
    """Counts records as they are read: :class:`~agents.dlq_replay.tally.ReplayTally` or
    :class:`~agents.dlq_replay.tally.StatsTally`."""

    def full(self) -> bool:
        """True when no further record is wanted."""

    def count(self, letter: DeadLetterEvent | None, at: Position | None = None) -> bool:
        """Count one record (None: not a dead letter) read at ``at``; True when it is to be
        republished."""

    def progress(self, total: int) -> ProgressT_co:
        """The counts so far, for a progress display; ``total`` as :func:`span_total`."""


@dataclass
class Batch:
    """One fetched batch, counted: what to republish and how far each partition was read."""

    letters: list[DeadLetterEvent] = field(default_factory=list)
    # The next offset to read per partition, after the records counted.
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    # The tally was full before the batch's end: the read stops here.
    stopped: bool = False


async def partition_counts(kafka: KafkaSettings, topics: list[str]) -> dict[str, int]:
    """The partition count of each of ``topics``, checked to exist before any client uses it.

    Without names, describe_topics() lists every topic; a metadata request naming a missing
    topic would make a broker with ``auto.create.topics.enable`` create it with defaults.

    Raises:
        BrokerUnavailable: Kafka is unreachable.
        ConfigurationError: a topic is missing.
    """
    async with admin_client(kafka) as admin:
        described = await admin.describe_topics()
    counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
    missing = [topic for topic in topics if topic not in counts]
    if missing:
        raise ConfigurationError(
            f"topic {', '.join(missing)} does not exist. Operator action: check the topic "
            "settings (CALLSTREAM_TOPICS__*); workers create the topics when they start."
        )
    return {topic: counts[topic] for topic in topics}


async def assign_spans(consumer: Any, topic: str, partitions: int) -> Spans:
    """Assign every partition of ``topic``; each one's (start, end) offsets, end fixed now.

    The start is the consumer group's committed position, or the log start without one.
    """
    tps = [TopicPartition(topic, partition) for partition in range(partitions)]
    consumer.assign(tps)
    log_ends = await consumer.end_offsets(tps)
    log_starts = await consumer.beginning_offsets(tps)
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        position = await consumer.position(tp)
        start = start_offset(position, log_start=log_starts[tp], log_end=log_ends[tp])
        if start != position:
            log.info("%s[%d]: reading from %d, not %d", topic, tp.partition, start, position)
            consumer.seek(tp, start)
        spans[tp] = (start, log_ends[tp])
    return spans


def span_total(spans: Spans) -> int:
    """Offsets to read in all: an upper bound of the records (offsets can have gaps)."""
    return sum(end - start for start, end in spans.values())


async def tallied(
    consumer: Any, spans: Spans, tally: Tally[ReadProgress], *, stall_timeout_s: float
) -> AsyncGenerator[Batch, None]:
    """The spans' records, decoded and counted by ``tally``, batch by batch.

    Read it inside ``contextlib.aclosing``: leaving early (an error) then closes the read.

    Raises:
        ReplayError: no record arrived for ``stall_timeout_s`` although some were due.
    """
    codecs = Codecs()
    async with contextlib.aclosing(_batches(consumer, spans, stall_timeout_s)) as batches:
        async for records in batches:
            batch = _count(records, tally, codecs)
            yield batch
            if batch.stopped:
                return


def _count(records: list[Any], tally: Tally[ReadProgress], codecs: Codecs) -> Batch:
    batch = Batch()
    for record in records:
        if tally.full():
            batch.stopped = True
            break
        letter = _decode(codecs, record.value)
        at = Position(record.topic, record.partition, record.offset)
        if tally.count(letter, at) and letter is not None:
            batch.letters.append(letter)
        batch.positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
    return batch


def _decode(codecs: Codecs, value: bytes | None) -> DeadLetterEvent | None:
    """The dead letter in ``value``; None for anything else (a tombstone, foreign bytes)."""
    if value is None:
        return None
    try:
        letter = codecs.dead_letter.decode(value)
    except DecodeError:
        return None
    return _with_original(codecs, letter)


def _with_original(codecs: Codecs, letter: DeadLetterEvent) -> DeadLetterEvent:
    """A letter published reduced (too large: ``original`` dropped, ``original_raw`` whole)
    gets its request back from the raw bytes, so it replays like any other letter.

    A letter whose raw bytes were truncated, or never decoded, stays without ``original``.
    """
    if letter.original is not None or letter.original_truncated or letter.request_id is None:
        return letter
    try:
        original = codecs.request.decode(letter.original_raw)
    except DecodeError:
        return letter
    return letter.model_copy(update={"original": original})


async def _batches(
    consumer: Any, spans: Spans, stall_timeout_s: float
) -> AsyncGenerator[list[Any], None]:
    """Batches of records below each partition's end offset, until every partition is done."""
    due = {tp for tp, (start, end) in spans.items() if start < end}
    consumer.pause(*(set(spans) - due))
    last_progress = time.monotonic()
    while due:
        fetched = await consumer.getmany(*due, timeout_ms=_POLL_MS)
        records = _below_ends(fetched, spans)
        await _retire_done(consumer, due, spans)
        if fetched:
            last_progress = time.monotonic()
            if records:
                yield records
            # getmany() returns buffered records without suspending: let other tasks run.
            await asyncio.sleep(0)
        elif due and time.monotonic() - last_progress > stall_timeout_s:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(due))
            raise ReplayError(
                f"reading dead letters stalled for {stall_timeout_s:.0f} s on {where}"
            )


def _below_ends(fetched: Mapping[TopicPartition, list[Any]], spans: Spans) -> list[Any]:
    # Records past the end offset were added after the start: the next run reads them.
    return [
        record for tp, batch in fetched.items() for record in batch if record.offset < spans[tp][1]
    ]


async def _retire_done(consumer: Any, due: set[TopicPartition], spans: Spans) -> None:
    """Pause and drop from ``due`` the partitions read up to their end offset."""
    # Offsets can have gaps: compare the position, not the last record's offset.
    for tp in list(due):
        if await consumer.position(tp) >= spans[tp][1]:
            due.discard(tp)
            consumer.pause(tp)
