"""Durable delays: the timer table of the partitions a stage owns (issue 20).

A request that must wait longer than a call (a retry backing off, a quota window) leaves the
stream: its record is finished and committed once its delay is in the partition's timer table,
a ``ChangelogTable`` (RocksDB per partition, mirrored to a compacted changelog topic), so it
holds no fetch capacity while it waits. The table moves with its partition: after a crash or a
handover the partition's next owner replays the changelog and finds every delay still to fire.

Why a timer table and not delay-tier topics (measured by ``callstream bench delays``, README
"Retries and durable delays"): a delay here is one changelog record and one tombstone, it fires
on the partition that owns the request's limit key (same limiter, same quotas) with no extra
hop, any due time is exact (no tiers to round to), and re-delaying replaces the key in place.

Delays fire at least once: a delay taken up, finished and published whose tombstone did not
reach the changelog before a crash fires once more on the next owner (its outcome then appears
twice, with the same request id and attempt, which consumers already drop).

Memory: per partition, a map from key to due time and kind, and a heap of due times; the
payloads stay in RocksDB until they fire.
"""

from __future__ import annotations

import heapq
import logging
import struct
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from streams.errors import CallstreamError
from streams.stage.records import Delay

log = logging.getLogger(__name__)

# A value is the due time, the kind's length and the kind, then the stage's payload; the due
# time and kind come first so that an assignment rebuilds its heap without decoding payloads.
_HEAD = struct.Struct(">qB")


class CorruptDelay(CallstreamError):
    """A timer table value that is not a framed delay (written by something else)."""


class DelayStore(Protocol):
    """The part of ``ChangelogTable`` the delay line uses."""

    async def assign(self, partitions: Iterable[int]) -> object: ...
    def revoke(self, partitions: Iterable[int]) -> None: ...
    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]: ...
    async def put(self, partition: int, key: bytes, value: bytes) -> None: ...
    async def delete(self, partition: int, key: bytes) -> None: ...


class DueDelay(NamedTuple):
    """A delay whose time has come, read back from the table."""

    partition: int
    key: bytes
    due_ms: int
    kind: str
    payload: bytes


def frame(delay: Delay) -> bytes:
    kind = delay.kind.encode()
    return _HEAD.pack(delay.due_ms, len(kind)) + kind + delay.payload


def unframe(value: bytes) -> tuple[int, str, bytes]:
    """Due time, kind and payload of a table value.

    Raises:
        CorruptDelay: the value is too short to be a framed delay.
    """
    if len(value) < _HEAD.size:
        raise CorruptDelay(f"timer table value of {len(value)} bytes is not a delay")
    due_ms, length = _HEAD.unpack_from(value)
    start = _HEAD.size + length
    if len(value) < start:
        raise CorruptDelay("timer table value ends inside its kind")
    return due_ms, value[_HEAD.size : start].decode(errors="replace"), value[start:]


class DelayLine:
    """The delays of the partitions this worker owns, in due order.

    ``hold`` keeps a delay (returns once the changelog has it), ``take_due`` hands out those
    whose time has come, ``release`` removes one that is done. A key taken and not yet released
    or held again is not handed out twice; after a revocation the partition's next owner (maybe
    this worker again) reads it from the table.
    """

    def __init__(self, table: DelayStore) -> None:
        self._table = table
        # Per partition: key -> (due_ms, kind) of every delay held and not taken.
        self._waiting: dict[int, dict[bytes, tuple[int, str]]] = {}
        # (due_ms, partition, key); entries whose key was taken, released or re-held since are
        # stale and skipped when they surface.
        self._heap: list[tuple[int, int, bytes]] = []
        self._kinds: set[str] = set()

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._waiting)

    async def assign(self, partitions: Iterable[int]) -> int:
        """Recover the partitions' tables and queue their delays; returns how many."""
        wanted = sorted(set(partitions) - self._waiting.keys())
        if not wanted:
            return 0
        await self._table.assign(wanted)
        found = 0
        for partition in wanted:
            waiting: dict[bytes, tuple[int, str]] = {}
            for key, value in self._table.items(partition):
                try:
                    due_ms, kind, _ = unframe(value)
                except CorruptDelay as exc:
                    log.error("timer table partition %d, key %r: %s (skipped)", partition, key, exc)
                    continue
                waiting[key] = (due_ms, kind)
                self._heap.append((due_ms, partition, key))
            self._waiting[partition] = waiting
            found += len(waiting)
        heapq.heapify(self._heap)
        if found:
            log.info("timer table: %d delays to fire in partitions %s", found, wanted)
        return found

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget the partitions' delays (their next owner fires them) and close their stores."""
        gone = set(partitions) & self._waiting.keys()
        if not gone:
            return
        for partition in gone:
            del self._waiting[partition]
        self._heap = [entry for entry in self._heap if entry[1] not in gone]
        heapq.heapify(self._heap)
        self._table.revoke(gone)

    async def hold(self, partition: int, delay: Delay) -> None:
        """Keep ``delay`` for ``partition``, replacing any delay of its key.

        Raises:
            PartitionNotAssignedError: the partition is not owned (revoked meanwhile).
            KafkaError: the changelog refused the write; nothing is kept.
        """
        await self._table.put(partition, delay.key, frame(delay))
        waiting = self._waiting.get(partition)
        if waiting is None:  # revoked while the write was on its way: the next owner has it
            return
        waiting[delay.key] = (delay.due_ms, delay.kind)
        heapq.heappush(self._heap, (delay.due_ms, partition, delay.key))

    async def release(self, partition: int, key: bytes) -> None:
        """Remove a delay that is done (a tombstone in the changelog).

        Raises:
            PartitionNotAssignedError, KafkaError: as ``hold``; the delay then fires again on
                the partition's next owner.
        """
        await self._table.delete(partition, key)

    def next_due_ms(self) -> int | None:
        """When the earliest delay is due, or None when none waits."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def take_due(self, now_ms: int, room: dict[int, int]) -> list[DueDelay]:
        """The delays due at ``now_ms``, earliest first, at most ``room[p]`` for partition p.

        A delay of a partition without room stays queued (it fires when room frees up).
        """
        taken: list[DueDelay] = []
        deferred: list[tuple[int, int, bytes]] = []
        while self._heap and self._heap[0][0] <= now_ms:
            entry = heapq.heappop(self._heap)
            due_ms, partition, key = entry
            waiting = self._waiting.get(partition)
            if waiting is None or waiting.get(key, (None,))[0] != due_ms:
                continue  # stale: taken, released or re-held since
            if room.get(partition, 0) <= 0:
                deferred.append(entry)
                continue
            value = self._table.get(partition, key)
            _, kind = waiting.pop(key)
            if value is None:
                continue
            room[partition] -= 1
            taken.append(DueDelay(partition, key, due_ms, kind, unframe(value)[2]))
        for entry in deferred:
            heapq.heappush(self._heap, entry)
        return taken

    def counts(self) -> dict[str, int]:
        """Delays waiting per kind (every kind seen since start, zeros included)."""
        counts = dict.fromkeys(self._kinds, 0)
        for waiting in self._waiting.values():
            for _, kind in waiting.values():
                counts[kind] = counts.get(kind, 0) + 1
        self._kinds.update(counts)
        return counts

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due_ms, partition, key = heap[0]
            waiting = self._waiting.get(partition)
            if waiting is not None and waiting.get(key, (None,))[0] == due_ms:
                return
            heapq.heappop(heap)
