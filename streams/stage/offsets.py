"""Which offset of a partition may be committed while many of its records are in flight.

Records finish out of order (calls have different latencies, limits release keys
independently), but Kafka commits a single position per partition. The committable position is
the lowest offset still in flight, or one past the highest finished offset when nothing is in
flight: committing further would skip an unfinished record after a crash.

Records finished *above* that position would be processed again by the partition's next
owner. So each commit also carries them, encoded in the commit's metadata string
(:func:`encode_done`); the next owner decodes them (:func:`decode_done`) and skips those
records. A graceful handover then repeats no provider call at all.
"""

from __future__ import annotations

import base64
import heapq
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Kafka's offset.metadata.max.bytes defaults to 4096; stay clearly under it.
MAX_METADATA_CHARS = 3800
# At most this many finished offsets go into, and come out of, commit metadata: another
# member's metadata is input, and 24 characters of it could otherwise name 10^8 offsets
# (9 GB; review finding 12). Offsets left out only run again on the next owner.
MAX_DONE_OFFSETS = 100_000
# Runs as varints take at most this much once inflated; more is not metadata we wrote.
_MAX_INFLATED_BYTES = 1 << 20
_PREFIX = "cs1:"


@dataclass
class PartitionProgress:
    """In-flight and finished offsets of one partition."""

    in_flight: set[int] = field(default_factory=set)
    # Min-heap mirror of ``in_flight`` with lazy deletion: finishing is O(1) and the lowest
    # unfinished offset is found in amortised O(log n).
    _heap: list[int] = field(default_factory=list)
    # Finished offsets not yet below the committable position (the out-of-order window).
    done_above: set[int] = field(default_factory=set)
    highest_done: int = -1
    committed: int = -1
    committed_done: list[int] = field(default_factory=list)

    def start(self, offset: int) -> None:
        self.in_flight.add(offset)
        heapq.heappush(self._heap, offset)

    def finish(self, offset: int) -> None:
        self.in_flight.discard(offset)
        self.done_above.add(offset)
        self.highest_done = max(self.highest_done, offset)

    def committable(self) -> int:
        """The position to commit (next offset to read), or -1 when nothing has finished."""
        if self.highest_done < 0:
            return -1
        while self._heap and self._heap[0] not in self.in_flight:
            heapq.heappop(self._heap)
        position = self._heap[0] if self._heap else self.highest_done + 1
        if self.done_above and min(self.done_above) < position:
            self.done_above = {offset for offset in self.done_above if offset >= position}
        return position


class OffsetTracker:
    """Progress of every owned partition, keyed by any hashable partition id."""

    def __init__(self) -> None:
        self._partitions: dict[object, PartitionProgress] = {}

    def start(self, partition: object, offset: int) -> None:
        progress = self._partitions.get(partition)
        if progress is None:  # not setdefault: that would build a PartitionProgress per call
            progress = self._partitions[partition] = PartitionProgress()
        progress.start(offset)

    def finish(self, partition: object, offset: int) -> None:
        progress = self._partitions.get(partition)
        if progress is not None:  # the partition may have been released meanwhile
            progress.finish(offset)

    def in_flight(self, partition: object) -> int:
        progress = self._partitions.get(partition)
        return len(progress.in_flight) if progress else 0

    def total_in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self._partitions.values())

    def to_commit(self) -> dict[object, tuple[int, list[int]]]:
        """Positions that moved (or whose finished-above set changed) since the last commit,
        each with the finished offsets above it."""
        due: dict[object, tuple[int, list[int]]] = {}
        for partition, progress in self._partitions.items():
            position = progress.committable()
            if position < 0:
                continue
            done = sorted(progress.done_above)
            if position > progress.committed or done != progress.committed_done:
                due[partition] = (position, done)
        return due

    def mark_committed(self, commits: dict[object, tuple[int, list[int]]]) -> None:
        for partition, (position, done) in commits.items():
            progress = self._partitions.get(partition)
            if progress is not None and position >= progress.committed:
                progress.committed = position
                progress.committed_done = done

    def release(self, partition: object) -> None:
        """Forget a partition that was revoked (after its final commit)."""
        self._partitions.pop(partition, None)


def encode_done(position: int, offsets: Iterable[int]) -> str:
    """Finished offsets above ``position`` as a compact commit-metadata string.

    Runs of consecutive offsets become (gap, length) pairs as varints, deflated and base64'd;
    offsets past the lowest ``MAX_DONE_OFFSETS``, or that would not fit ``MAX_METADATA_CHARS``,
    are left out (they may run twice).
    """
    runs = _runs(sorted(o for o in offsets if o >= position)[:MAX_DONE_OFFSETS], position)
    while runs:
        text = _PREFIX + base64.b64encode(zlib.compress(_varints(runs), 9)).decode()
        if len(text) <= MAX_METADATA_CHARS:
            return text
        runs = runs[: len(runs) * 3 // 4]
    return ""


def decode_done(position: int, metadata: str) -> set[int]:
    """The offsets :func:`encode_done` stored; empty for metadata it did not write.

    Metadata naming more than ``MAX_DONE_OFFSETS`` offsets (or inflating past what such runs
    take) is not ours: it is ignored whole, with a warning, so those records run again
    rather than being skipped on a stranger's word.
    """
    if not metadata.startswith(_PREFIX):
        return set()
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.b64decode(metadata[len(_PREFIX) :]), _MAX_INFLATED_BYTES)
    except (ValueError, zlib.error):
        return set()
    if inflater.unconsumed_tail:
        log.warning("commit metadata inflates past %d bytes: ignored", _MAX_INFLATED_BYTES)
        return set()
    numbers = _unvarints(data)
    pairs = list(zip(numbers[::2], numbers[1::2], strict=False))
    total = sum(length for _, length in pairs)
    if total > MAX_DONE_OFFSETS:
        log.warning(
            "commit metadata names %d finished offsets, over %d: ignored", total, MAX_DONE_OFFSETS
        )
        return set()
    done: set[int] = set()
    cursor = position
    for gap, length in pairs:
        cursor += gap
        done.update(range(cursor, cursor + length))
        cursor += length
    return done


def _runs(offsets: list[int], position: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    cursor = position
    start = previous = None
    for offset in offsets:
        if start is not None and previous is not None and offset == previous + 1:
            previous = offset
            continue
        if start is not None and previous is not None:
            runs.append((start - cursor, previous - start + 1))
            cursor = previous + 1
        start = previous = offset
    if start is not None and previous is not None:
        runs.append((start - cursor, previous - start + 1))
    return runs


def _varints(runs: list[tuple[int, int]]) -> bytes:
    out = bytearray()
    for number in (n for run in runs for n in run):
        while number >= 0x80:
            out.append((number & 0x7F) | 0x80)
            number >>= 7
        out.append(number)
    return bytes(out)


def _unvarints(data: bytes) -> list[int]:
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            numbers.append(value)
            value = shift = 0
    return numbers
