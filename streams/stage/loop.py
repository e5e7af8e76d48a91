"""A stage's consumer loop: many records in flight, offsets committed in order.

Any stage runs on it: it hands each record to the stage's handler (the provider caller today)
and publishes the outcome the handler decides. Why not a Faust agent here: measured on this machine
(shared/ENVIRONMENT.md), a Faust agent with aiohttp reaches 0.62 of a direct client at 50 ms
provider latency, a lean aiokafka loop 0.98. And Faust re-processes events around every
rebalance, graceful ones included; this loop drains its in-flight calls and commits before it
releases a partition, so the next owner starts exactly where this one stopped and no provider is
called twice for a request on a graceful handover.

The rules that keep at-least-once:
- a record's offset is committed only after its outcome (and those of every earlier record of
  the partition) is acknowledged by the broker (:class:`streams.stage.offsets.OffsetTracker`);
  an outcome the broker refuses for good is replaced by a dead letter, so no record stays
  unfinished and stops its partition's commits;
- records fetched before a rebalance are dropped if the rebalance happened before they started:
  the new assignment re-reads from the committed position.

Backpressure pauses partitions, never the fetch loop (issue 20, review findings 2 and 3). The
worker's bound on records read and not finished (``max_pending``) is shared equally among the
partitions it owns, each share at most ``max_pending_per_partition``: a partition whose
provider is slow fills its own share and no other. A batch that meets its partition's share
starts the records that fit, keeps the rest of the batch in memory and pauses the partition
(``consumer.pause``); ``getmany`` keeps running for the others, so the member never goes idle
past ``max.poll.interval.ms``. Once the partition is down to half its share, the loop resumes
it and starts the records it held, before any newer one: a partition's records always start in
offset order, so everything started is a prefix of what was fetched and the committed position
(the lowest record in flight, or one past the highest finished) never passes a held record. A
revocation drops what its partitions held; the next owner reads it from the committed position.
Per record this costs two counters and two comparisons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streams.metrics import Metrics
from streams.stage.delays import DelayLine, DueDelay
from streams.stage.no_return import PointOfNoReturn
from streams.stage.offsets import OffsetTracker, decode_done, encode_done
from streams.stage.publisher import OutcomePublisher
from streams.stage.records import Delay, Forward, Outcome, Settled, SourceRecord
from streams.state.table import PartitionNotAssignedError

log = logging.getLogger(__name__)

Records = Sequence[ConsumerRecord[bytes, bytes]]


class RecordHandler(Protocol):
    async def handle(self, source: SourceRecord) -> Outcome | Forward | Delay | Settled: ...

    async def resume(self, partition: int, payload: bytes) -> Outcome | Forward | Delay | Settled:
        """Take up a delay of ``partition`` that is due (its ``Delay.payload``)."""
        ...


# The longest the delay task sleeps: it also wakes when a delay is held or room frees up.
_DELAY_POLL_S = 1.0
# How soon a partition without room for its due delays is looked at again.
_NO_ROOM_RETRY_S = 0.05


class LoopLimits(Protocol):
    """How much the loop holds and how often it commits (``CallerSettings`` for the caller)."""

    @property
    def max_pending(self) -> int: ...
    @property
    def max_pending_per_partition(self) -> int: ...
    @property
    def commit_interval_s(self) -> float: ...
    @property
    def drain_timeout_s(self) -> float: ...


class PartitionListener(Protocol):
    """Per-partition state that follows the assignment (the limiter, the quota table)."""

    async def assigned(self, partitions: set[int]) -> None: ...
    async def revoked(self, partitions: set[int]) -> None: ...


class _Share:
    """Records of one partition started and not finished (a task keeps its partition's share,
    so one finishing after a revocation never counts against the partition's next share)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = 0

    def __repr__(self) -> str:
        return f"_Share(pending={self.pending})"


class StageLoop:
    """Consumes records, runs the stage's handler for each concurrently, commits in order."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        handler: RecordHandler,
        publisher: OutcomePublisher,
        metrics: Metrics,
        settings: LoopLimits,
        listeners: Iterable[PartitionListener] = (),
        no_return: PointOfNoReturn | None = None,
        commit_metadata: bool = True,
        delays: DelayLine | None = None,
    ) -> None:
        """Args:
        delays: the timer table of durable delays; None for a stage whose handler never
            delays (a ``Delay`` then ends its record as a dead letter).
        """
        self._consumer = consumer
        self._handler = handler
        self._publisher = publisher
        self._metrics = metrics
        self._settings = settings
        self._tracker = OffsetTracker()
        self._listeners = list(listeners)
        self._no_return = no_return or PointOfNoReturn()
        # Records read and not finished, per partition and in all; calls themselves are bounded
        # by the caller. Reaching a bound pauses partitions, never the fetch loop.
        self._shares: dict[TopicPartition, _Share] = {}
        self._total = 0
        self._max_total = settings.max_pending
        # max_pending shared equally among the partitions owned, each at most
        # max_pending_per_partition: full partitions cannot take the others' room.
        self._max_share = self._share_of(0)
        # Paused partitions and the rest of the batch each was given when it paused.
        self._held: dict[TopicPartition, Records] = {}
        self._owned: set[TopicPartition] = set()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        # Bumped on every revocation: a batch fetched under an older generation is stale.
        self._generation = 0
        self._stopping = False
        # Clear while a rebalance runs its callbacks: dispatch waits for the handover to end.
        self._settled = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        # Per partition, offsets the previous owner finished above its committed position.
        self._done_before: dict[TopicPartition, set[int]] = {}
        self._metadata = commit_metadata
        self._delays = delays
        self._delay_wake = asyncio.Event()
        self.has_assignment = False
        # Read at scrape time rather than counted per record (a gauge update takes a lock).
        metrics.requests_pending.set_function(self._tracker.total_in_flight)
        metrics.partitions_paused.set_function(self._held.__len__)

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    @property
    def in_flight(self) -> int:
        return self._tracker.total_in_flight()

    @property
    def owned_partitions(self) -> frozenset[TopicPartition]:
        return frozenset(self._owned)

    @property
    def paused_partitions(self) -> frozenset[TopicPartition]:
        """Partitions paused because they hold their share of unfinished records."""
        return frozenset(self._held)

    async def run(self) -> None:
        """Fetch and dispatch until :meth:`stop` is called.

        Never waits for room: a full partition is paused and the others keep being fetched,
        so ``getmany`` runs at least every 100 ms whatever the providers do.
        """
        while not self._stopping:
            generation = self._generation
            batches = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                self._metrics.events_in.labels(tp.topic).inc(len(records))
                await self._dispatch(tp, records, generation)
            if self._held:
                self._resume_drained()

    async def run_commits(self) -> None:
        """Commit progress every ``commit_interval_s``, apart from fetching: a commit can wait
        for the coordinator, and fetching must not wait with it."""
        while not self._stopping:
            await asyncio.sleep(self._settings.commit_interval_s)
            await self.commit()

    async def run_delays(self) -> None:
        """Take up the delays that are due, as records are: each counts in its partition's
        share, so due delays wait for room like fetched records do, and a revocation drains
        them like records (those that have not called are cancelled and stay in the table)."""
        if self._delays is None:
            return
        delays = self._delays
        while not self._stopping:
            self._delay_wake.clear()
            if not self._settled.is_set():
                await self._settled.wait()  # a handover: nothing fires until it is over
                continue
            now_ms = time.time_ns() // 1_000_000
            for due in delays.take_due(now_ms, self._room_by_partition()):
                self._start_delayed(due, now_ms)
            next_due = delays.next_due_ms()
            timeout = _DELAY_POLL_S
            if next_due is not None:
                # Still due now: its partition has no room yet; look again shortly.
                wait_s = (next_due - now_ms) / 1000
                timeout = min(timeout, wait_s if wait_s > 0 else _NO_ROOM_RETRY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delay_wake.wait(), timeout)

    def _room_by_partition(self) -> dict[int, int]:
        """How many more unfinished records each owned partition number may start now."""
        free = self._max_total - self._total
        return {
            tp.partition: min(free, self._max_share - share.pending)
            for tp, share in self._shares.items()
            if tp in self._owned
        }

    def _start_delayed(self, due: DueDelay, now_ms: int) -> None:
        tp = self._partition_of(due.partition)
        share = self._shares.get(tp) if tp is not None else None
        if tp is None or share is None:  # not owned any more: its next owner takes it up
            return
        self._metrics.delays_fired.labels(due.kind).inc()
        self._metrics.delay_lateness_seconds.observe(max(0, now_ms - due.due_ms) / 1000)
        share.pending += 1
        self._total += 1
        task = asyncio.create_task(self._process_delayed(share, due))
        tasks = self._tasks[tp]
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _partition_of(self, number: int) -> TopicPartition | None:
        """The owned partition with this number (tenant topics share numbers and owners:
        any of them stands for the number in drains and shares)."""
        for tp in self._owned:
            if tp.partition == number:
                return tp
        return None

    async def _process_delayed(self, share: _Share, due: DueDelay) -> None:
        """Take up one due delay: its outcome is published and the delay released, or it is
        delayed again (replacing itself). Cancelled (a revocation), it stays in the table."""
        assert self._delays is not None
        try:
            outcome = await self._take_up(due)
            if isinstance(outcome, Delay):
                await self._delays.hold(due.partition, outcome)
            else:
                await self._delays.release(due.partition, due.key)
        except (PartitionNotAssignedError, KafkaError) as exc:
            # The table still has the delay: the partition's next owner takes it up again.
            log.warning("timer table write for %r failed (%r): it fires again", due.key, exc)
        finally:
            share.pending -= 1
            self._total -= 1
            self._delay_wake.set()

    async def _take_up(self, due: DueDelay) -> Outcome | Forward | Delay | Settled | None:
        """The handler's decision for a due delay, its outcome published; None when the
        handler failed and a dead letter replaced it."""
        source = SourceRecord("<timer table>", due.partition, -1, due.payload)
        request_id = due.key.decode(errors="replace")
        try:
            outcome = await self._handler.resume(due.partition, due.payload)
        except Exception as exc:  # a bug: the delay must not fire forever
            log.exception("handler failed to resume delay %r", due.key)
            await self._publisher.publish_instead(
                source, exc, stage="handler", request_id=request_id
            )
            return None
        if isinstance(outcome, Delay | Settled):
            return outcome
        try:
            await self._publisher.publish(outcome)
        except Exception as exc:
            await self._publisher.publish_instead(
                source, exc, stage="publish", request_id=request_id
            )
        return outcome

    async def _dispatch(self, tp: TopicPartition, records: Records, generation: int) -> None:
        await self._settled.wait()  # never dispatch while partitions are being handed over
        if self._stopping or generation != self._generation or tp not in self._owned:
            await self._rewind(tp)
            return
        held = self._held.get(tp)
        if held is not None:  # fetched before the pause took effect: it queues behind
            self._held[tp] = [*held, *records]
            return
        self._start(tp, records)

    def _start(self, tp: TopicPartition, records: Records) -> None:
        """Start ``records`` in order until the partition or the worker is full, then hold the
        rest and pause the partition (see the module docstring)."""
        share = self._shares[tp]
        done_before = self._done_before.get(tp)
        for index, record in enumerate(records):
            if share.pending >= self._max_share or self._total >= self._max_total:
                self._held[tp] = records[index:]
                self._pause(tp)
                return
            self._tracker.start(tp, record.offset)
            if done_before and record.offset in done_before:
                # Finished by the partition's previous owner after its committed position.
                self._tracker.finish(tp, record.offset)
                self._metrics.skipped.inc()
                continue
            share.pending += 1
            self._total += 1
            source = SourceRecord(tp.topic, tp.partition, record.offset, record.value or b"")
            task = asyncio.create_task(self._process(tp, share, source))
            tasks = self._tasks[tp]
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _resume_drained(self) -> None:
        """Resume the paused partitions that are down to half their share and start the
        records they held, oldest first (the next fetch of each goes on after them)."""
        if self._stopping or not self._settled.is_set():
            return
        for tp in list(self._held):
            share = self._shares.get(tp)
            if share is not None and share.pending > self._max_share // 2:
                continue
            if self._total >= self._max_total:  # revoked partitions' calls still finishing
                return
            records = self._held.pop(tp)
            self._resume(tp)
            if share is not None and tp in self._owned:
                self._start(tp, records)  # may pause it again at once

    def _share_of(self, owned: int) -> int:
        """How many unfinished records each of ``owned`` partitions may hold."""
        settings = self._settings
        return max(
            1, min(settings.max_pending_per_partition, settings.max_pending // max(1, owned))
        )

    def _pause(self, tp: TopicPartition) -> None:
        # Records aiokafka prefetched for it are dropped and fetched again after the resume.
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to pause
            self._consumer.pause(tp)
        log.debug(
            "paused %s: %d records pending, %d in all", tp, self._shares[tp].pending, self._total
        )

    def _resume(self, tp: TopicPartition) -> None:
        with contextlib.suppress(IllegalStateError):
            self._consumer.resume(tp)

    async def _rewind(self, tp: TopicPartition) -> None:
        """Read ``tp`` again from its committed position after dropping a stale batch.

        A batch fetched around a rebalance may be dropped here, but the consumer's position
        has already moved past it; if the partition is (still or again) ours, going back to
        the committed offset is the one safe place: nothing of it is in flight.
        """
        if self._stopping or tp not in self._consumer.assignment():
            return
        try:
            committed = await self._consumer.committed(tp)
        except KafkaError as exc:
            log.warning("cannot read the committed offset of %s: %r", tp, exc)
            return
        if committed is None:
            await self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, committed)

    async def _process(self, tp: TopicPartition, share: _Share, source: SourceRecord) -> None:
        try:
            await self._run(source)
            self._tracker.finish(tp, source.offset)  # not when cancelled: the next owner redoes it
        finally:
            share.pending -= 1
            self._total -= 1

    async def _run(self, source: SourceRecord) -> None:
        """Handle the record and publish its outcome. If the handler fails (a bug: per-record
        failures are outcomes) or the broker refuses the outcome for good, a dead letter ends
        the record instead: a record must never jam its partition (issue 19)."""
        try:
            outcome = await self._handler.handle(source)
        except Exception as exc:
            if self._no_return.cancelled_before_call():  # never called: the next owner's
                log.warning(
                    "error while revoked %s[%d]@%d unwound, left to the next owner: %r",
                    source.topic,
                    source.partition,
                    source.offset,
                    exc,
                )
                raise asyncio.CancelledError from exc
            log.exception(
                "handler failed on %s[%d]@%d", source.topic, source.partition, source.offset
            )
            await self._publisher.publish_instead(source, exc, stage="handler", request_id=None)
            return
        if isinstance(outcome, Delay):
            await self._hold(source, outcome)
            return
        if isinstance(outcome, Settled):
            return
        try:
            await self._publisher.publish(outcome)
        except Exception as exc:
            request_id = None if isinstance(outcome, Forward) else outcome.event.request_id
            await self._publisher.publish_instead(
                source, exc, stage="publish", request_id=request_id
            )

    async def _hold(self, source: SourceRecord, delay: Delay) -> None:
        """Keep a record's delay in the timer table; the record is finished once it is there."""
        try:
            if self._delays is None:
                raise RuntimeError("the stage delayed a record but has no timer table")
            await self._delays.hold(source.partition, delay)
        except PartitionNotAssignedError:
            # Revoked while it was decided: unfinished, so the next owner reads it again.
            raise asyncio.CancelledError from None
        except Exception as exc:
            log.warning("cannot keep the delay of %r: %r", delay.key, exc)
            await self._publisher.publish_instead(
                source, exc, stage="delay", request_id=delay.key.decode(errors="replace")
            )
            return
        self._delay_wake.set()  # it may be due before the delay task would wake

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit every partition whose contiguous finished position moved.

        One commit at a time, each computing its positions inside the lock: a periodic commit
        computed before a revocation and sent after the revocation's own commit would move
        the committed offset backwards, and the next owner would call those requests again.
        """
        async with self._commit_lock:
            due = self._tracker.to_commit()
            if only is not None:
                wanted = set(only)
                due = {tp: pos for tp, pos in due.items() if tp in wanted}
            offsets = {
                tp: (position, encode_done(position, done) if self._metadata else "")
                for tp, (position, done) in due.items()
                if isinstance(tp, TopicPartition)
            }
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The group is rebalancing; the drain commits again or the records are redone.
                log.warning("offset commit failed: %r", exc)
                return
            self._tracker.mark_committed(due)
            self._metrics.commits.inc()

    async def drain(self, partitions: Iterable[TopicPartition]) -> None:
        """Cancel the records of ``partitions`` that have not called their provider yet, wait
        for the calls in flight and their outcomes, then commit."""
        partitions = list(partitions)
        pending = [task for tp in partitions for task in self._tasks.get(tp, ())]
        for task in pending:
            if not self._no_return.has_passed(task):
                task.cancel()  # uncommitted, so the partition's next owner calls it once
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._settings.drain_timeout_s)
            if still:
                log.warning("%d calls still in flight after the drain timeout", len(still))
        await self.commit(only=partitions)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._settled.clear()
        self._generation += 1
        self._owned -= revoked
        self._max_share = self._share_of(len(self._owned))
        for tp in revoked:
            # What a revoked partition held never started: the next owner reads it again from
            # the committed position, which is at or below its first offset.
            self._held.pop(tp, None)
        self._metrics.rebalances.labels("revoked").inc()
        # Listeners first: the limiter cancels requests still waiting for a token (never
        # called, they stay uncommitted for the next owner); then in-flight calls finish.
        numbers = {tp.partition for tp in revoked}
        for listener in self._listeners:
            await listener.revoked(numbers)
        await self.drain(revoked)
        if self._delays is not None:  # after the drain: calls in flight may still delay
            self._delays.revoke(numbers)
        for tp in revoked:
            self._tracker.release(tp)
            self._tasks.pop(tp, None)
            self._shares.pop(tp, None)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        numbers = {tp.partition for tp in assigned}
        for listener in self._listeners:
            await listener.assigned(numbers)  # e.g. quota tables recover before any record
        if self._delays is not None:
            await self._delays.assign(numbers)
            self._delay_wake.set()
        await self._load_done_before(assigned)
        for tp in assigned:
            self._shares.setdefault(tp, _Share())
        self._owned |= assigned
        self._max_share = self._share_of(len(self._owned))
        self.has_assignment = True
        self._settled.set()
        self._metrics.rebalances.labels("assigned").inc()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def _load_done_before(self, assigned: set[TopicPartition]) -> None:
        """Read which records above each committed offset are already finished."""
        self._done_before = {}
        if not self._metadata or not assigned:
            return
        try:
            # aiokafka's public committed() drops the metadata; its coordinator returns it.
            committed = await self._consumer._coordinator.fetch_committed_offsets(list(assigned))
        except (AttributeError, KafkaError) as exc:
            log.warning("cannot read commit metadata (%r): finished records may run again", exc)
            return
        for tp, meta in committed.items():
            done = decode_done(meta.offset, meta.metadata or "")
            if done:
                self._done_before[tp] = done
                log.info(
                    "%s: %d records finished above offset %d will be skipped",
                    tp,
                    len(done),
                    meta.offset,
                )

    async def stop(self) -> None:
        """Stop fetching, let in-flight calls finish, and commit their offsets.

        Requests still waiting for a token are cancelled unsent: their offsets stay
        uncommitted and the partition's next owner reads them again.
        """
        self._stopping = True
        self._settled.set()  # release a dispatch waiting for a handover that will not come
        owned = list(self._owned)
        numbers = {tp.partition for tp in owned}
        for listener in self._listeners:
            await listener.revoked(numbers)
        await self.drain(owned)
        if self._delays is not None:
            self._delays.revoke(numbers)
        self._delay_wake.set()  # let the delay task see the stop

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

    def __init__(self, loop: StageLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(set(assigned))
