"""Rebuilding partition stores from their changelog: where replay starts, the replay, the report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from streams.errors import CallstreamError
from streams.state.store import PartitionStore

log = logging.getLogger(__name__)


class RecoveryError(CallstreamError):
    """A changelog replay made no progress. Operator action: check the broker and the topic."""


@dataclass(frozen=True)
class ReplayPlan:
    """Where the replay of one partition starts, and why the local store is dropped first."""

    start: int
    wipe_reason: str | None = None  # None: keep the store and replay only the tail


def plan_replay(checkpoint: int | None, *, log_start: int, log_end: int) -> ReplayPlan:
    """Choose the first changelog offset to replay onto a store whose checkpoint is given.

    Args:
        checkpoint: offset of the last record already in the store, ``None`` for no checkpoint.
        log_start: the changelog partition's first offset.
        log_end: its end offset (one past the last record).
    """
    if checkpoint is None:
        return ReplayPlan(log_start, "no local checkpoint")
    if checkpoint >= log_end:
        # The store has seen a record the log does not have: the topic was deleted and
        # recreated (or truncated), so nothing local can be trusted.
        return ReplayPlan(log_start, f"checkpoint {checkpoint} is past the changelog end {log_end}")
    if checkpoint + 1 < log_start:
        # Records after the checkpoint were deleted (retention or DeleteRecords): the tail
        # alone cannot tell which local keys they removed.
        return ReplayPlan(log_start, f"changelog starts at {log_start}, after {checkpoint + 1}")
    return ReplayPlan(checkpoint + 1)


@dataclass(frozen=True)
class PartitionRecovery:
    """What the replay of one partition did."""

    partition: int
    start_offset: int
    end_offset: int
    records: int
    rebuilt_because: str | None  # set when the store was wiped and replayed from the start


@dataclass(frozen=True)
class RecoveryReport:
    """What one :meth:`ChangelogTable.assign` replayed, and how long it took."""

    table: str
    partitions: tuple[PartitionRecovery, ...]
    seconds: float

    @property
    def records(self) -> int:
        return sum(part.records for part in self.partitions)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def replay(
    consumer: Any,  # a started AIOKafkaConsumer without a group (aiokafka is untyped)
    topic: str,
    stores: Mapping[int, PartitionStore],
    *,
    stall_timeout_s: float,
) -> tuple[PartitionRecovery, ...]:
    """Bring each store up to the changelog's current end offset.

    Every fetched batch goes into the store in one WriteBatch with its last offset, so a crash
    mid-replay leaves a consistent store that the next attempt continues. The batches are
    written on the event loop: rocksdict holds the GIL while it writes (a thread would block
    the loop just the same), and one fetch of ``max_poll_records`` takes a few milliseconds.

    Raises:
        RecoveryError: no record arrived for ``stall_timeout_s`` while some were still due.
    """
    tps = {partition: TopicPartition(topic, partition) for partition in stores}
    consumer.assign(list(tps.values()))
    log_starts = await consumer.beginning_offsets(list(tps.values()))
    log_ends = await consumer.end_offsets(list(tps.values()))
    plans: dict[int, ReplayPlan] = {}
    for partition, store in stores.items():
        tp = tps[partition]
        plan = plan_replay(store.checkpoint, log_start=log_starts[tp], log_end=log_ends[tp])
        if plan.wipe_reason is not None:
            log.info(
                "rebuilding %s from offset %d: %s", store.path.name, plan.start, plan.wipe_reason
            )
            store.wipe()
            await asyncio.sleep(0)  # a wipe reopens the store: tens of ms without yielding
        consumer.seek(tp, plan.start)
        plans[partition] = plan
    due = {tp for partition, tp in tps.items() if plans[partition].start < log_ends[tp]}
    consumer.pause(*(set(tps.values()) - due))
    counts = await _consume(consumer, stores, due, log_ends, stall_timeout_s)
    return tuple(
        PartitionRecovery(
            partition=partition,
            start_offset=plans[partition].start,
            end_offset=log_ends[tp],
            records=counts.get(tp, 0),
            rebuilt_because=plans[partition].wipe_reason,
        )
        for partition, tp in sorted(tps.items())
    )


async def _consume(
    consumer: Any,
    stores: Mapping[int, PartitionStore],
    due: set[TopicPartition],
    log_ends: Mapping[TopicPartition, int],
    stall_timeout_s: float,
) -> dict[TopicPartition, int]:
    counts: dict[TopicPartition, int] = {}
    last_progress = time.monotonic()
    while due:
        batches = await consumer.getmany(*due, timeout_ms=200)
        for tp, records in batches.items():
            pairs = ((record.key, record.value) for record in records if record.key is not None)
            applied = stores[tp.partition].apply(pairs, records[-1].offset)
            counts[tp] = counts.get(tp, 0) + applied
        # Compaction leaves gaps in the offsets: compare the position, not the last offset.
        for tp in list(due):
            if await consumer.position(tp) >= log_ends[tp]:
                due.discard(tp)
                consumer.pause(tp)
        if batches:
            last_progress = time.monotonic()
            # getmany() returns already-fetched records without suspending, so without this the
            # whole fetch buffer (megabytes) would be applied in one step of the event loop.
            await asyncio.sleep(0)
        elif due and time.monotonic() - last_progress > stall_timeout_s:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(due))
            raise RecoveryError(f"changelog replay stalled for {stall_timeout_s:.0f} s on {where}")
    return counts
