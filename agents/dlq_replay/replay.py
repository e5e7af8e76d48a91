"""Replaying dead letters: their original requests go back to the request topic as new attempts.

The pure part (:class:`ReplayFilter`, :func:`replay_request`, :func:`start_offset`) decides
*what* is replayed; the Kafka part (:func:`replay_dead_letters`, :func:`dead_letter_stats`)
reads the dead-letter topic and publishes.

A replay reads each partition from its consumer group's committed position (the earliest
offset for a new group) up to the end offsets captured when it starts, so it always ends, even
while workers keep adding dead letters. The group's position moves only after the republished
requests are acknowledged: a crash mid-replay repeats at most the batch in flight (at least
once, never lost). One group therefore replays each dead letter once; another group, or a
dry run, sees them all again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.codec import Codecs
from schemas.errors import DecodeError
from schemas.models import DeadLetterEvent, RequestEvent
from streams.errors import CallstreamError, ConfigurationError, PublishError
from streams.kafka import admin_client, client_options, consumer_options, start_client
from streams.sdk import CallstreamClient, SeenIds
from streams.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

# The summary lists replayed request ids for the operator; a huge replay lists the first ones.
MAX_LISTED_IDS = 1000
_POLL_MS = 200
_STALL_TIMEOUT_S = 30.0


class ReplayError(CallstreamError):
    """A replay could not go on. Operator action: check the broker, then run it again."""


# --- what is replayed (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay. Empty sets and ``None`` mean "no condition".

    Undecodable letters (no ``original``) are left out unless ``include_undecodable``: their
    bytes failed once already and will again unless whatever produced them was fixed.
    """

    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    # Only letters whose last failure happened at or after this time (epoch ms).
    since_ms: int | None = None
    include_undecodable: bool = False

    def matches(self, letter: DeadLetterEvent) -> bool:
        """True when every given condition holds for ``letter``."""
        if letter.original is None and not self.include_undecodable:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.request_ids and letter.request_id not in self.request_ids:
            return False
        return self.since_ms is None or letter.last_failure_at_ms >= self.since_ms


def replay_request(letter: DeadLetterEvent) -> RequestEvent | None:
    """The letter's original request as its next attempt; None when it was undecodable.

    The request id and idempotency key stay the same, so a caller waiting for the outcome
    finds it, and a provider that honours Idempotency-Key does not act twice.
    """
    if letter.original is None:
        return None
    return letter.original.model_copy(update={"attempt": letter.original.attempt + 1})


def start_offset(position: int, *, log_start: int, log_end: int) -> int:
    """Where to start reading a partition whose committed (or reset) position is ``position``.

    A position past the log end means the topic was deleted and recreated since the last
    commit: its dead letters are all new, so read them from the start. A position before the
    log start means retention deleted records; the earliest remaining one is next.
    """
    if position > log_end or position < log_start:
        return log_start
    return position


def dedup_key(letter: DeadLetterEvent) -> str:
    """What makes two dead-letter records the same letter (outcomes are at least once)."""
    if letter.request_id is not None:
        return letter.request_id
    return f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"


# --- what a run reports ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReadProgress:
    """How far a read of the dead-letter topic is; ``total`` counts offsets, an upper bound."""

    read: int
    total: int


@dataclass(frozen=True)
class ReplayProgress(ReadProgress):
    replayed: int
    skipped: int
    unreadable: int


@dataclass(frozen=True)
class ReplaySummary:
    """What one replay did (or, for a dry run, would have done).

    ``read == replayed + skipped + duplicates + unreadable`` always holds.
    """

    group_id: str
    dry_run: bool
    read: int
    replayed: int
    skipped: int  # decodable dead letters the filter did not match
    duplicates: int  # repeats of a letter already replayed in this run
    unreadable: int  # records of the topic that are not dead-letter events at all
    by_reason: dict[str, int]  # replayed letters by reason
    request_ids: tuple[str, ...]  # of replayed letters, the first MAX_LISTED_IDS
    request_ids_truncated: bool
    # False when --limit stopped the run before the end offsets captured at its start.
    complete: bool


@dataclass(frozen=True)
class DeadLetterStats:
    """Counts over the whole dead-letter topic, each letter once."""

    read: int
    letters: int
    duplicates: int
    unreadable: int
    undecodable: int  # letters without a decoded original (only replayable raw)
    retriable: int
    by_reason: dict[str, int]
    by_stage: dict[str, int]


@dataclass
class _Tally:
    """The mutable counts of a replay in progress."""

    read: int = 0
    replayed: int = 0
    skipped: int = 0
    duplicates: int = 0
    unreadable: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    request_ids_truncated: bool = False

    def replay(self, letter: DeadLetterEvent) -> None:
        self.replayed += 1
        self.by_reason[letter.reason] += 1
        if letter.request_id is None:
            return
        if len(self.request_ids) < MAX_LISTED_IDS:
            self.request_ids.append(letter.request_id)
        else:
            self.request_ids_truncated = True

    def progress(self, total: int) -> ReplayProgress:
        return ReplayProgress(self.read, total, self.replayed, self.skipped, self.unreadable)

    def summary(self, group_id: str, *, dry_run: bool, complete: bool) -> ReplaySummary:
        return ReplaySummary(
            group_id=group_id,
            dry_run=dry_run,
            read=self.read,
            replayed=self.replayed,
            skipped=self.skipped,
            duplicates=self.duplicates,
            unreadable=self.unreadable,
            by_reason=dict(self.by_reason),
            request_ids=tuple(self.request_ids),
            request_ids_truncated=self.request_ids_truncated,
            complete=complete,
        )


# --- the Kafka part --------------------------------------------------------------------------


async def replay_dead_letters(
    settings: Settings,
    filter: ReplayFilter,
    *,
    group_id: str,
    dry_run: bool = False,
    limit: int | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    stall_timeout_s: float = _STALL_TIMEOUT_S,
) -> ReplaySummary:
    """Republish the original requests of matching dead letters to the request topic.

    Args:
        settings: the topics and Kafka connection.
        filter: which dead letters to replay; the others count as ``skipped``.
        group_id: the consumer group whose committed position says where to start, and which
            is moved past what this run read (each letter is replayed once per group).
        dry_run: count what would be replayed; publish nothing and commit nothing.
        limit: replay at most this many letters; the rest stays for the group's next run.
        progress: called after each batch read.
        stall_timeout_s: give up when nothing arrives for this long although records are due.

    Raises:
        BrokerUnavailable: Kafka is unreachable.
        ConfigurationError: a topic is missing.
        PublishError: a republish failed (that batch is not committed and replays again).
        ReplayError: the read stalled, or the group's position could not be committed.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    topics = settings.topics
    needed = [topics.dead_letters] if dry_run else [topics.dead_letters, topics.requests]
    partitions = (await _partition_counts(settings.kafka, needed))[topics.dead_letters]
    codecs = Codecs()
    tally = _Tally()
    seen = SeenIds()
    async with contextlib.AsyncExitStack() as stack:
        consumer = await stack.enter_async_context(
            _started(
                AIOKafkaConsumer(**consumer_options(settings.kafka, group_id=group_id)),
                settings.kafka,
            )
        )
        # The topics were checked above; the client's own check could create missing ones.
        client = (
            None
            if dry_run
            else await stack.enter_async_context(
                CallstreamClient(settings, codecs, ensure_topics=False)
            )
        )
        spans = await _spans(consumer, topics.dead_letters, partitions)
        total = sum(end - start for start, end in spans.values())
        positions = {tp: start for tp, (start, _) in spans.items()}
        complete = True
        async with contextlib.aclosing(_batches(consumer, spans, stall_timeout_s)) as batches:
            async for records in batches:
                to_publish: list[DeadLetterEvent] = []
                for record in records:
                    if limit is not None and tally.replayed >= limit:
                        complete = False
                        break
                    letter = _decode(codecs, record.value)
                    tally.read += 1
                    if letter is None:
                        tally.unreadable += 1
                    elif not filter.matches(letter):
                        tally.skipped += 1
                    elif not seen.add(dedup_key(letter)):
                        tally.duplicates += 1
                    else:
                        tally.replay(letter)
                        to_publish.append(letter)
                    positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
                if client is not None:
                    await _republish(client, to_publish, topics.requests)
                    await _commit(consumer, positions, spans, group_id)
                if progress is not None:
                    progress(tally.progress(total))
                if not complete:
                    break
        if complete and client is not None:
            # Offsets can have gaps (compaction, transaction markers): the whole span was read,
            # so its end is the position, whatever the last record's offset was.
            await _commit(consumer, {tp: end for tp, (_, end) in spans.items()}, spans, group_id)
    return tally.summary(group_id, dry_run=dry_run, complete=complete)


async def dead_letter_stats(
    settings: Settings,
    *,
    progress: Callable[[ReadProgress], None] | None = None,
    stall_timeout_s: float = _STALL_TIMEOUT_S,
) -> DeadLetterStats:
    """Count the dead letters of the whole topic, without a consumer group (nothing moves).

    Raises:
        BrokerUnavailable: Kafka is unreachable.
        ConfigurationError: the dead-letter topic is missing.
        ReplayError: the read stalled.
    """
    topic = settings.topics.dead_letters
    partitions = (await _partition_counts(settings.kafka, [topic]))[topic]
    codecs = Codecs()
    seen = SeenIds()
    read = duplicates = unreadable = undecodable = retriable = 0
    by_reason: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka.max_poll_records,
    )
    async with _started(consumer, settings.kafka):
        spans = await _spans(consumer, topic, partitions)
        total = sum(end - start for start, end in spans.values())
        async with contextlib.aclosing(_batches(consumer, spans, stall_timeout_s)) as batches:
            async for records in batches:
                for record in records:
                    read += 1
                    letter = _decode(codecs, record.value)
                    if letter is None:
                        unreadable += 1
                    elif not seen.add(dedup_key(letter)):
                        duplicates += 1
                    else:
                        by_reason[letter.reason] += 1
                        by_stage[letter.stage] += 1
                        undecodable += letter.original is None
                        retriable += letter.retriable
                if progress is not None:
                    progress(ReadProgress(read, total))
    return DeadLetterStats(
        read=read,
        letters=read - duplicates - unreadable,
        duplicates=duplicates,
        unreadable=unreadable,
        undecodable=undecodable,
        retriable=retriable,
        by_reason=dict(by_reason),
        by_stage=dict(by_stage),
    )


def _decode(codecs: Codecs, value: bytes | None) -> DeadLetterEvent | None:
    """The dead letter in ``value``; None for anything else (a tombstone, foreign bytes)."""
    if value is None:
        return None
    try:
        return codecs.dead_letter.decode(value)
    except DecodeError:
        return None


async def _republish(client: CallstreamClient, letters: list[DeadLetterEvent], topic: str) -> None:
    """Publish the batch and wait for every acknowledgement before anything is committed."""
    requests = [request for letter in letters if (request := replay_request(letter)) is not None]
    try:
        if requests:
            # Keyed by limit key, like any new request, so the limit's owner receives it.
            await client.publish_many(requests)
        for letter in letters:
            if letter.original is None:
                await client.publish_raw(letter.original_raw)
    except KafkaError as exc:
        raise PublishError(
            f"could not republish to {topic}: {exc!r}. The batch was not committed, so the next "
            "run with this group replays it again."
        ) from None


async def _commit(
    consumer: Any,
    positions: Mapping[TopicPartition, int],
    spans: Mapping[TopicPartition, tuple[int, int]],
    group_id: str,
) -> None:
    """Move the group past what was read; partitions this run did not advance are left alone."""
    moved = {tp: offset for tp, offset in positions.items() if offset > spans[tp][0]}
    if not moved:
        return
    try:
        await consumer.commit(moved)
    except KafkaError as exc:
        raise ReplayError(
            f"replayed dead letters, but could not commit group {group_id}'s position: "
            f"{exc!r}. The next run with this group replays them again."
        ) from None


async def _partition_counts(kafka: KafkaSettings, topics: list[str]) -> dict[str, int]:
    """The partition count of each of ``topics``, checked to exist before any client uses it.

    Without names, describe_topics() lists every topic; a metadata request naming a missing
    topic would make a broker with ``auto.create.topics.enable`` create it with defaults.
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


@contextlib.asynccontextmanager
async def _started(consumer: Any, kafka: KafkaSettings) -> AsyncIterator[Any]:
    """A started consumer, stopped on exit; a failed bootstrap is one clear error."""
    await start_client(consumer, kafka)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _spans(
    consumer: Any, topic: str, partitions: int
) -> dict[TopicPartition, tuple[int, int]]:
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


async def _batches(
    consumer: Any, spans: Mapping[TopicPartition, tuple[int, int]], stall_timeout_s: float
) -> AsyncGenerator[list[Any], None]:
    """Batches of records below each partition's end offset, until every partition is done."""
    due = {tp for tp, (start, end) in spans.items() if start < end}
    consumer.pause(*(set(spans) - due))
    last_progress = time.monotonic()
    while due:
        fetched = await consumer.getmany(*due, timeout_ms=_POLL_MS)
        # Records past the end offset were added after the start: the next run reads them.
        records = [
            record
            for tp, batch in fetched.items()
            for record in batch
            if record.offset < spans[tp][1]
        ]
        # Offsets can have gaps: compare the position, not the last record's offset.
        for tp in list(due):
            if await consumer.position(tp) >= spans[tp][1]:
                due.discard(tp)
                consumer.pause(tp)
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
