"""Replaying dead letters: their original requests go back to the request topic as new attempts.

A replay reads each partition of the dead-letter topic from its consumer group's committed
position (the earliest offset for a new group) up to the end offsets captured when it starts
(:mod:`agents.dlq_replay.reading`), selects the letters (:mod:`agents.dlq_replay.selection`)
and republishes their requests. The group's position moves only after the republished
requests are acknowledged: a crash mid-replay repeats at most the batch in flight (at least
once, never lost). One group therefore replays each dead letter once; another group, or a dry
run, sees them all again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.dlq_replay.fingerprint import Conflict
from agents.dlq_replay.reading import (
    Batch,
    ReplayError,
    Spans,
    Tally,
    assign_spans,
    partition_counts,
    span_total,
    tallied,
)
from agents.dlq_replay.selection import ReplayFilter, replay_request
from agents.dlq_replay.tally import (
    DeadLetterStats,
    ReadProgress,
    ReplayProgress,
    ReplaySummary,
    ReplayTally,
    StatsTally,
)
from schemas.errors import SchemaError
from schemas.models import DeadLetterEvent
from streams.errors import PublishError
from streams.kafka import consumer_options, reader, started
from streams.sdk import CallstreamClient, SeenIds
from streams.settings import Settings

log = logging.getLogger(__name__)

_STALL_TIMEOUT_S = 30.0
# A forged key can be long; the log names it, cut to this (request ids are at most 128).
_LOGGED_KEY_CHARS = 160

ProgressT = TypeVar("ProgressT", bound=ReadProgress)


async def replay_dead_letters(
    settings: Settings,
    filter: ReplayFilter,
    *,
    group_id: str,
    dry_run: bool = False,
    limit: int | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    stall_timeout_s: float = _STALL_TIMEOUT_S,
    commit_empty: bool = False,
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
        commit_empty: move the group past what was read even when nothing matched; without
            it, a run that replays nothing leaves the group where it was (a mistyped filter
            must not mark every letter as replayed).

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
    partitions = (await partition_counts(settings.kafka, needed))[topics.dead_letters]
    tally = ReplayTally(filter, limit=limit, on_conflict=warn_conflict)
    consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, group_id=group_id))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(started(consumer, settings.kafka))
        spans = await assign_spans(consumer, topics.dead_letters, partitions)
        republisher = None
        if not dry_run:
            # The topics were checked above; the client's own check could create missing ones.
            client = await stack.enter_async_context(
                CallstreamClient(settings, ensure_topics=False)
            )
            republisher = _Republisher(
                client, consumer, spans, group_id, topics.requests, commit_empty=commit_empty
            )
        complete = await _read(consumer, spans, tally, republisher, progress, stall_timeout_s)
        if complete and republisher is not None:
            await republisher.commit_ends()
    committed = republisher is not None and republisher.committed
    return tally.summary(group_id, dry_run=dry_run, complete=complete, committed=committed)


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
    partitions = (await partition_counts(settings.kafka, [topic]))[topic]
    tally = StatsTally(first_time=SeenIds().add, on_conflict=warn_conflict)
    async with reader(settings.kafka) as consumer:
        spans = await assign_spans(consumer, topic, partitions)
        await _read(consumer, spans, tally, None, progress, stall_timeout_s)
    return tally.stats()


def warn_conflict(conflict: Conflict) -> None:
    """Log a conflicting letter: its key and both letters' positions, never their contents."""
    log.warning(
        "dead letter at %s has the key %r of the letter at %s but another request: a replay "
        "republishes only the first one read. Operator action: check who can write the "
        "dead-letter topic; only workers should.",
        conflict.second or "?",
        conflict.key[:_LOGGED_KEY_CHARS],
        conflict.first or "?",
    )


async def _read(
    consumer: Any,
    spans: Spans,
    tally: Tally[ProgressT],
    republisher: _Republisher | None,
    progress: Callable[[ProgressT], None] | None,
    stall_timeout_s: float,
) -> bool:
    """Read the spans into ``tally``, republishing batch by batch; False if it filled up."""
    total = span_total(spans)
    batches = tallied(consumer, spans, tally, stall_timeout_s=stall_timeout_s)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if republisher is not None:
                await republisher.publish(batch)
            if progress is not None:
                progress(tally.progress(total))
            if batch.stopped:
                return False
    return True


class _Republisher:
    """Republishes each batch's requests, then moves the group past the batch.

    Until a letter is republished (or with ``commit_empty``), positions are only remembered:
    a run that matches nothing moves nothing.
    """

    def __init__(
        self,
        client: CallstreamClient,
        consumer: Any,
        spans: Spans,
        group_id: str,
        topic: str,
        *,
        commit_empty: bool = False,
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._spans = spans
        self._group_id = group_id
        self._topic = topic
        self._may_commit = commit_empty
        self._pending: dict[TopicPartition, int] = {}
        self.committed = False

    async def publish(self, batch: Batch) -> None:
        """Republish; commit once every request is acknowledged (never before)."""
        await _republish(self._client, batch.letters, self._topic)
        self._may_commit = self._may_commit or bool(batch.letters)
        self._pending.update(batch.positions)
        await self._commit(self._pending)

    async def commit_ends(self) -> None:
        """After a complete read, commit each span's end, whatever the last record's offset:
        offsets can have gaps (compaction, transaction markers)."""
        await self._commit({tp: end for tp, (_, end) in self._spans.items()})

    async def _commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Move the group past what was read; partitions this run did not advance stay."""
        moved = {tp: offset for tp, offset in positions.items() if offset > self._spans[tp][0]}
        if not moved or not self._may_commit:
            return
        try:
            await self._consumer.commit(moved)
            self._pending.clear()
            self.committed = True
        except KafkaError as exc:
            raise ReplayError(
                f"replayed dead letters, but could not commit group {self._group_id}'s "
                f"position: {exc!r}. The next run with this group replays them again."
            ) from None


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
    except SchemaError as exc:  # selection leaves out letters it can tell cannot be written
        raise PublishError(
            f"could not encode a replayed request: {exc}. The batch was not committed."
        ) from None
