"""Which offset of a partition may be committed while many of its records are in flight.

Records finish out of order (calls have different latencies), but Kafka commits a single
position per partition. The committable position is the lowest offset still in flight, or one
past the highest finished offset when nothing is in flight: committing further would skip an
unfinished record after a crash (at-least-once would become at-most-once).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class PartitionProgress:
    """In-flight and finished offsets of one partition."""

    in_flight: set[int] = field(default_factory=set)
    # Min-heap mirror of ``in_flight`` with lazy deletion: finishing is O(1) and the lowest
    # unfinished offset is found in amortised O(log n).
    _heap: list[int] = field(default_factory=list)
    highest_done: int = -1
    committed: int = -1

    def start(self, offset: int) -> None:
        self.in_flight.add(offset)
        heapq.heappush(self._heap, offset)

    def finish(self, offset: int) -> None:
        self.in_flight.discard(offset)
        self.highest_done = max(self.highest_done, offset)

    def committable(self) -> int:
        """The position to commit (next offset to read), or -1 when nothing has finished."""
        if self.highest_done < 0:
            return -1
        while self._heap and self._heap[0] not in self.in_flight:
            heapq.heappop(self._heap)
        if self._heap:
            return self._heap[0]
        return self.highest_done + 1


class OffsetTracker:
    """Progress of every owned partition, keyed by any hashable partition id."""

    def __init__(self) -> None:
        self._partitions: dict[object, PartitionProgress] = {}

    def start(self, partition: object, offset: int) -> None:
        self._partitions.setdefault(partition, PartitionProgress()).start(offset)

    def finish(self, partition: object, offset: int) -> None:
        progress = self._partitions.get(partition)
        if progress is not None:  # the partition may have been released meanwhile
            progress.finish(offset)

    def in_flight(self, partition: object) -> int:
        progress = self._partitions.get(partition)
        return len(progress.in_flight) if progress else 0

    def total_in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self._partitions.values())

    def to_commit(self) -> dict[object, int]:
        """Positions that moved since the last :meth:`mark_committed`."""
        due: dict[object, int] = {}
        for partition, progress in self._partitions.items():
            position = progress.committable()
            if position > progress.committed:
                due[partition] = position
        return due

    def mark_committed(self, positions: dict[object, int]) -> None:
        for partition, position in positions.items():
            progress = self._partitions.get(partition)
            if progress is not None:
                progress.committed = max(progress.committed, position)

    def release(self, partition: object) -> None:
        """Forget a partition that was revoked (after its final commit)."""
        self._partitions.pop(partition, None)
