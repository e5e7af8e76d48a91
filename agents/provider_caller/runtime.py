"""The call stage's consumer loop: many calls in flight, offsets committed in order.

Why not a Faust agent here: measured on this machine (shared/ENVIRONMENT.md), a Faust agent with
aiohttp reaches 0.62 of a direct client at 50 ms provider latency, a lean aiokafka loop 0.98.
And Faust re-processes events around every rebalance, graceful ones included; this loop drains
its in-flight calls and commits before it releases a partition, so the next owner starts exactly
where this one stopped and no provider is called twice for a request on a graceful handover.

The rules that keep at-least-once:
- a record's offset is committed only after its outcome (and those of every earlier record of
  the partition) is acknowledged by the broker (:class:`streams.offsets.OffsetTracker`);
- records fetched before a rebalance are dropped if the rebalance happened before they started:
  the new assignment re-reads from the committed position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from agents.publishing.envelope import Outcome, SourceRecord
from agents.publishing.publisher import OutcomePublisher
from streams.metrics import Metrics
from streams.offsets import OffsetTracker
from streams.settings import CallerSettings

log = logging.getLogger(__name__)


class RecordHandler(Protocol):
    async def handle(self, source: SourceRecord) -> Outcome: ...


class CallerLoop:
    """Consumes request records, runs the handler for each concurrently, commits in order."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        handler: RecordHandler,
        publisher: OutcomePublisher,
        metrics: Metrics,
        settings: CallerSettings,
    ) -> None:
        self._consumer = consumer
        self._handler = handler
        self._publisher = publisher
        self._metrics = metrics
        self._settings = settings
        self._tracker = OffsetTracker()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._owned: set[TopicPartition] = set()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        # Bumped on every revocation: a batch fetched under an older generation is stale.
        self._generation = 0
        self._stopping = False
        self.has_assignment = False

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    @property
    def in_flight(self) -> int:
        return self._tracker.total_in_flight()

    @property
    def owned_partitions(self) -> frozenset[TopicPartition]:
        return frozenset(self._owned)

    async def run(self) -> None:
        """Fetch and dispatch until :meth:`stop` is called."""
        while not self._stopping:
            generation = self._generation
            batches = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                self._metrics.events_in.labels(tp.topic).inc(len(records))
                await self._dispatch(tp, records, generation)

    async def run_commits(self) -> None:
        """Commit progress every ``commit_interval_s``, apart from fetching: the fetch loop
        can wait a long time for free call slots, and progress must not wait with it."""
        while not self._stopping:
            await asyncio.sleep(self._settings.commit_interval_s)
            await self.commit()

    async def _dispatch(
        self, tp: TopicPartition, records: Iterable[ConsumerRecord[bytes, bytes]], generation: int
    ) -> None:
        for record in records:
            await self._slots.acquire()
            if self._stopping or generation != self._generation or tp not in self._owned:
                self._slots.release()
                return
            self._tracker.start(tp, record.offset)
            source = SourceRecord(tp.topic, tp.partition, record.offset, record.value or b"")
            task = asyncio.create_task(self._process(tp, source))
            self._tasks[tp].add(task)
            task.add_done_callback(self._tasks[tp].discard)
            self._metrics.calls_in_flight.inc()

    async def _process(self, tp: TopicPartition, source: SourceRecord) -> None:
        try:
            outcome = await self._handler.handle(source)
            await self._publisher.publish(outcome)
            self._tracker.finish(tp, source.offset)
        finally:
            self._slots.release()
            self._metrics.calls_in_flight.dec()

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit every partition whose contiguous finished position moved."""
        due = self._tracker.to_commit()
        if only is not None:
            wanted = set(only)
            due = {tp: pos for tp, pos in due.items() if tp in wanted}
        if not due:
            return
        offsets = {tp: pos for tp, pos in due.items() if isinstance(tp, TopicPartition)}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group is rebalancing; the records will be committed by the drain or redone.
            log.warning("offset commit failed: %r", exc)
            return
        self._tracker.mark_committed(due)
        self._metrics.commits.inc()

    async def drain(self, partitions: Iterable[TopicPartition]) -> None:
        """Wait for the in-flight records of ``partitions``, then commit them."""
        partitions = list(partitions)
        pending = [task for tp in partitions for task in self._tasks.get(tp, ())]
        if pending:
            done, still = await asyncio.wait(pending, timeout=self._settings.drain_timeout_s)
            if still:
                log.warning("%d calls still in flight after the drain timeout", len(still))
        await self.commit(only=partitions)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        self._owned -= revoked
        self._metrics.rebalances.labels("revoked").inc()
        await self.drain(revoked)
        for tp in revoked:
            self._tracker.release(tp)
            self._tasks.pop(tp, None)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owned |= assigned
        self.has_assignment = True
        self._metrics.rebalances.labels("assigned").inc()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def stop(self) -> None:
        """Stop fetching, let in-flight calls finish, and commit their offsets."""
        self._stopping = True
        await self.drain(list(self._owned))

    async def update_lag(self) -> None:
        """Set the lag gauge from the broker's high watermarks and our committed positions."""
        for tp in list(self._owned):
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                committed = await self._consumer.committed(tp)
            except KafkaError:
                continue
            lag = highwater - (committed or 0)
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(lag, 0))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits these during a rebalance: the drain happens before partitions move."""

    def __init__(self, loop: CallerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(set(assigned))
