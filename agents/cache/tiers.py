"""The cache's two tiers: L1 in the worker's memory over L2, each partition's changelogged store.

L1 is one byte-bounded ``ByteCache`` for every partition the worker owns (the policy chosen on
real traces, ``agents.cache.simulate``): a hit there is a dict lookup, no I/O, no decoding.
L2 is the partition's RocksDB table (``ChangelogTable``), mirrored to a compacted changelog
topic, so the entries of a partition move with it: they survive a restart (the local store
and its checkpoint) and a handover (the next owner replays the changelog). An L1 miss reads
L2 (a local RocksDB get and a decode) and promotes what it finds.

Writes go to L1 at once and to L2 in the background: the request's outcome does not wait for
the changelog. A write lost in a crash only costs a miss later. L2 is bounded per partition:
it evicts its oldest writes first (a refreshed entry counts as new), by an index of sizes
built when the partition is assigned.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Hashable
from typing import Any, NamedTuple

from agents.cache.entry import CachedResponse, decode_entry, encode_entry
from agents.cache.policy import ByteCache
from streams.metrics import Metrics
from streams.state.table import ChangelogTable, PartitionNotAssignedError

log = logging.getLogger(__name__)

L1, L2 = "l1", "l2"


class Held(NamedTuple):
    """An L1 value: the entry and the partition that owns it (dropped when it is revoked)."""

    entry: CachedResponse
    partition: int


class _PartitionIndex:
    """The keys of one partition's L2 store in write order, with their sizes."""

    __slots__ = ("bytes", "sizes")

    def __init__(self) -> None:
        self.sizes: OrderedDict[bytes, int] = OrderedDict()
        self.bytes = 0

    def wrote(self, key: bytes, size: int) -> None:
        old = self.sizes.pop(key, None)
        self.bytes += size - (old or 0)
        self.sizes[key] = size

    def forget(self, key: bytes) -> None:
        old = self.sizes.pop(key, None)
        if old is not None:
            self.bytes -= old


class CacheTiers:
    """Get, put and drop entries across L1 and L2; follow the partitions the worker owns."""

    def __init__(
        self,
        l1: ByteCache[Hashable, object] | None,
        l2: ChangelogTable | None,
        metrics: Metrics,
        *,
        l2_max_bytes: int,
    ) -> None:
        """Args:
        l1: the in-memory tier (None: L2 only).
        l2: the changelogged table (None: L1 only, lost on restart).
        l2_max_bytes: the bound of one partition's L2 entries.
        """
        self._l1 = l1
        self._l2 = l2
        self._metrics = metrics
        self._l2_max_bytes = l2_max_bytes
        self._indexes: dict[int, _PartitionIndex] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._l1_evictions = 0
        self._l2_evictions = metrics.cache_evictions.labels(L2)
        self._write_failures = metrics.cache_write_failures

    @property
    def has_l2(self) -> bool:
        return self._l2 is not None

    def get(self, partition: int, key: bytes) -> tuple[CachedResponse, str] | None:
        """The entry for ``key`` and the tier that held it, or None (a use of the L1 entry)."""
        l1 = self._l1
        if l1 is not None:
            held = l1.get(key)
            if isinstance(held, Held):
                return held.entry, L1
        entry = self._from_l2(partition, key)
        if entry is None:
            return None
        if l1 is not None:
            l1.put(key, Held(entry, partition), entry.size)
        return entry, L2

    def peek(self, partition: int, key: bytes) -> tuple[CachedResponse, str] | None:
        """Like ``get``, without counting a use in L1 nor promoting from L2."""
        if self._l1 is not None:
            held = self._l1.peek(key)
            if isinstance(held, Held):
                return held.entry, L1
        entry = self._from_l2(partition, key)
        return (entry, L2) if entry is not None else None

    def _from_l2(self, partition: int, key: bytes) -> CachedResponse | None:
        """The partition's stored entry, if L2 holds a readable one (a miss otherwise)."""
        if self._l2 is None:
            return None
        try:
            raw = self._l2.get(partition, key)
        except PartitionNotAssignedError:
            return None
        return decode_entry(raw) if raw is not None else None

    def put(self, partition: int, key: bytes, entry: CachedResponse) -> None:
        """Keep ``entry`` in L1 now and in L2 in the background."""
        if self._l1 is not None:
            self._l1.put(key, Held(entry, partition), entry.size)
        if self._l2 is not None and partition in self._indexes:
            self._background(self._write(partition, key, encode_entry(entry)))

    def drop(self, partition: int, key: bytes) -> None:
        """Forget ``key`` in both tiers (an answer that may no longer be stored)."""
        if self._l1 is not None:
            self._l1.pop(key)
        index = self._indexes.get(partition)
        if self._l2 is not None and index is not None and key in index.sizes:
            index.forget(key)
            self._background(self._delete(partition, key))

    async def assigned(self, partitions: set[int]) -> None:
        """Recover the partitions' L2 stores and index them (a ``PartitionListener``)."""
        if self._l2 is None:
            return
        await self._l2.assign(partitions)
        for partition in partitions - self._indexes.keys():
            self._indexes[partition] = self._index(partition)
            await asyncio.sleep(0)  # a large store takes a while to scan: let others run

    async def revoked(self, partitions: set[int]) -> None:
        """Drop the partitions' L1 entries (their next owner may change them) and close L2."""
        l1 = self._l1
        if l1 is not None:
            for key in [k for k in l1 if _partition_of(l1.peek(k)) in partitions]:
                l1.pop(key)
        for partition in partitions:
            self._indexes.pop(partition, None)
        if self._l2 is not None:
            self._l2.revoke(partitions)

    def update_gauges(self) -> None:
        gauges, entries = self._metrics.cache_bytes, self._metrics.cache_entries
        if self._l1 is not None:
            gauges.labels(L1).set(self._l1.used_bytes)
            entries.labels(L1).set(len(self._l1))
            new = self._l1.evictions - self._l1_evictions
            if new:
                self._metrics.cache_evictions.labels(L1).inc(new)
                self._l1_evictions = self._l1.evictions
        if self._l2 is not None:
            gauges.labels(L2).set(sum(i.bytes for i in self._indexes.values()))
            entries.labels(L2).set(sum(len(i.sizes) for i in self._indexes.values()))

    def _index(self, partition: int) -> _PartitionIndex:
        """The partition's keys in the order of their entries' times (a scan of its store)."""
        assert self._l2 is not None
        found: list[tuple[float, bytes, int]] = []
        for key, raw in self._l2.items(partition):
            entry = decode_entry(raw)
            if entry is not None:
                found.append((entry.stored_at, key, len(raw)))
        index = _PartitionIndex()
        for _, key, size in sorted(found):
            index.wrote(key, size)
        return index

    async def _write(self, partition: int, key: bytes, raw: bytes) -> None:
        assert self._l2 is not None
        index = self._indexes.get(partition)
        if index is None:
            return
        index.wrote(key, len(raw))
        try:
            await self._l2.put(partition, key, raw)
        except PartitionNotAssignedError:
            return  # revoked meanwhile: the next owner keeps what the changelog holds
        except Exception as exc:  # the broker refused: the entry stays in L1 only
            self._write_failures.inc()
            log.warning("cache: L2 write to partition %d failed: %s", partition, exc)
            return
        while index.bytes > self._l2_max_bytes and len(index.sizes) > 1:
            oldest = next(iter(index.sizes))
            index.forget(oldest)
            self._l2_evictions.inc()
            await self._delete(partition, oldest)

    async def _delete(self, partition: int, key: bytes) -> None:
        assert self._l2 is not None
        try:
            await self._l2.delete(partition, key)
        except PartitionNotAssignedError:
            return
        except Exception as exc:
            self._write_failures.inc()
            log.warning("cache: L2 delete in partition %d failed: %s", partition, exc)

    def _background(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def _partition_of(held: object) -> int | None:
    return held.partition if isinstance(held, Held) else None
