"""Which partition of the request topic owns a limit key: the producer's own partitioner."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.partitioner import DefaultPartitioner


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
            owner = DefaultPartitioner()(key.encode(), self._partitions, self._partitions)
            self._owners[key] = owner
        return owner
