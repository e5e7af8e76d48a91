"""Which partition a key belongs to: Kafka's murmur2 partitioner (shards of a limit spread over
consecutive partitions), shared by every producer and by the caller's check of which partition
owns a limit key."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from murmurhash2 import murmurhash2

# The seed of the Java client's Utils.murmur2, which every Kafka client that partitions keys
# the Java way uses: keys published by any of them land where the caller expects them.
_KAFKA_MURMUR2_SEED: Final = 0x9747B28C
# A limit's shard number has at most this many digits (``limits.shards`` <= 1024); a longer
# run of digits after a '#' is some other key's text and is partitioned as Kafka would.
_MAX_SHARD_DIGITS: Final = 4


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``partitions`` (sorted) for a record key: Kafka's default partitioner's
    choice, except for a shard of a limit (``provider#3``), which goes to the partition after
    its provider's for each shard number, so N shards land on N different partitions.

    Murmur2 alone put ``fake#0`` and ``fake#1`` on one partition of 2, 3, 4, 6 and 12: a
    sharded limit spread over workers only at some partition counts. A publisher that keys
    with another client's default partitioner still works: its shards are forwarded once.
    """
    head, hashmark, shard = key.rpartition(b"#")
    if hashmark and head and len(shard) <= _MAX_SHARD_DIGITS and shard.isdigit():
        base = murmurhash2(head, _KAFKA_MURMUR2_SEED) & 0x7FFFFFFF
        return partitions[(base + int(shard)) % len(partitions)]
    return partitions[(murmurhash2(key, _KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]


class Murmur2Partitioner:
    """aiokafka's ``DefaultPartitioner``, same choices (but for limit shards, ``partition_for``),
    with murmur2 computed in C.

    aiokafka hashes in pure Python: with every result keyed by a distinct request id, that
    was ~2% of a busy worker's CPU. A test checks the two agree.
    """

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:  # unkeyed records spread at random, as aiokafka does
            return random.choice(available or all_partitions)
        return partition_for(key, all_partitions)


class PartitionRouter:
    """Maps a limit key to its partition with the same murmur2 partitioner publishers use."""

    def __init__(self) -> None:
        self._partitions: list[int] = []
        self._owners: dict[str, int] = {}

    def update(self, partitions: Iterable[int]) -> None:
        """Set the topic's partitions (from metadata); forgets cached owners if they changed."""
        partitions = sorted(partitions)
        if partitions != self._partitions:
            self._partitions = partitions
            self._owners.clear()

    def owner_of(self, key: str) -> int | None:
        """The partition for ``key``, or None while the partition count is unknown."""
        if not self._partitions:
            return None
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = partition_for(key.encode(), self._partitions)
        return owner


class RouterRefresh:
    """A partition listener that re-reads the topic's partitions at every assignment (a topic
    can gain partitions, and a limit key's owner moves with them)."""

    def __init__(
        self, router: PartitionRouter, partitions_of: Callable[[], Iterable[int] | None]
    ) -> None:
        self._router = router
        self._partitions_of = partitions_of

    async def assigned(self, partitions: set[int]) -> None:
        known = self._partitions_of()
        if known:
            self._router.update(known)

    async def revoked(self, partitions: set[int]) -> None:
        return None
