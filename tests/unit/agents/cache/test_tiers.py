"""CacheTiers: L1 over L2, promotion, the per-partition L2 bound, and following partitions.
L2 here is an in-memory stand-in with ChangelogTable's interface (the real table is exercised on
Kafka by tests/integration/pipeline/test_cache.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry

from agents.cache.entry import CachedResponse, encode_entry
from agents.cache.freshness import Lifetime
from agents.cache.policy import make_cache
from agents.cache.tiers import CacheTiers
from streams.metrics import Metrics
from streams.state.table import PartitionNotAssignedError


class MemoryTable:
    """ChangelogTable's get/put/delete/items/assign/revoke over dicts."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.held: set[int] = set()

    async def assign(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.held.add(partition)
            self.data.setdefault(partition, {})

    def revoke(self, partitions: Iterable[int]) -> None:
        self.held -= set(partitions)

    def _part(self, partition: int) -> dict[bytes, bytes]:
        if partition not in self.held:
            raise PartitionNotAssignedError(str(partition))
        return self.data[partition]

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._part(partition).get(key)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._part(partition).items()))

    async def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._part(partition)[key] = value

    async def delete(self, partition: int, key: bytes) -> None:
        self._part(partition).pop(key, None)


def entry(stored_at: float, body: bytes = b"x" * 100) -> CachedResponse:
    life = Lifetime(stored_at + 60, stored_at + 60, stored_at + 60)
    return CachedResponse(200, body, {"etag": '"1"'}, "p", "json", stored_at, life)


def tiers(table: MemoryTable, *, l1_bytes: int = 1 << 20, l2_bytes: int = 1 << 20) -> CacheTiers:
    metrics = Metrics.create(CollectorRegistry())
    l1 = make_cache("s3fifo", l1_bytes) if l1_bytes else None
    return CacheTiers(l1, table, metrics, l2_max_bytes=l2_bytes)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_entry_is_in_l1_at_once_and_in_l2_after_its_write() -> None:
    table = MemoryTable()
    cache = tiers(table)
    await cache.assigned({0})
    cache.put(0, b"k", entry(1.0))
    assert cache.get(0, b"k") == (entry(1.0), "l1")
    await settle()
    assert b"k" in table.data[0]


async def test_an_l2_hit_is_promoted_to_l1() -> None:
    table = MemoryTable()
    table.data[0] = {b"k": encode_entry(entry(1.0))}
    cache = tiers(table)
    await cache.assigned({0})
    assert cache.get(0, b"k") == (entry(1.0), "l2")
    assert cache.get(0, b"k") == (entry(1.0), "l1")


async def test_unreadable_l2_values_are_misses() -> None:
    table = MemoryTable()
    table.data[0] = {b"k": b"\xffgarbage"}
    cache = tiers(table)
    await cache.assigned({0})
    assert cache.get(0, b"k") is None


async def test_l2_evicts_its_oldest_writes_past_its_bound() -> None:
    table = MemoryTable()
    size = len(encode_entry(entry(0.0)))
    table.data[0] = {b"old": encode_entry(entry(1.0)), b"older": encode_entry(entry(0.5))}
    cache = tiers(table, l1_bytes=0, l2_bytes=3 * size)
    await cache.assigned({0})  # the index orders what the store holds by entry time
    cache.put(0, b"new", entry(2.0))
    await settle()
    assert set(table.data[0]) == {b"older", b"old", b"new"}
    cache.put(0, b"newest", entry(3.0))
    await settle()
    assert set(table.data[0]) == {b"old", b"new", b"newest"}  # "older" went first


async def test_revoking_a_partition_drops_its_l1_entries_and_closes_l2() -> None:
    table = MemoryTable()
    cache = tiers(table)
    await cache.assigned({0, 1})
    cache.put(0, b"a", entry(1.0))
    cache.put(1, b"b", entry(1.0))
    await settle()
    await cache.revoked({0})
    assert cache.get(0, b"a") is None  # not in L1, and L2 of 0 is no longer held
    assert cache.get(1, b"b") == (entry(1.0), "l1")
    cache.put(0, b"c", entry(2.0))  # a late answer for a revoked partition: L1 only
    await settle()
    assert b"c" not in table.data[0]


async def test_drop_forgets_both_tiers() -> None:
    table = MemoryTable()
    cache = tiers(table)
    await cache.assigned({0})
    cache.put(0, b"k", entry(1.0))
    await settle()
    cache.drop(0, b"k")
    await settle()
    assert cache.get(0, b"k") is None
    assert b"k" not in table.data[0]
