"""The waiting room of one partition: calls over their limit wait here, not in the stream."""

# How the async runtime drives it: after each new call and at each timer tick it calls
# `release(now, gate)`, sends `ready`, publishes `expired` and `unservable` as outcomes, and
# sleeps until `next_due_at`. Nothing here awaits or reads a clock, so the same sequence of
# calls always gives the same answer and tests step time by hand.
#
# Structure: one heap per limit key ordered by (-priority, enqueued_at, seq), so the highest
# priority goes first when tokens are scarce, FIFO within a priority, prefetch (priority 0)
# last. A heap of per-key wake-up times means a release only looks at keys that may have
# become able to send. Expiry uses its own deadline heap; entries leave the other heaps
# lazily (marked dead, dropped when they surface) and a compaction bounds the garbage, so
# every operation is O(log n) amortised.

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Gate", "Release", "WaitingRoom"]

T = TypeVar("T")

# Compaction slack: tiny queues are never worth rebuilding.
_SLACK = 64


class Gate(Protocol):
    """Where the waiting room asks for tokens (see `gate.BucketGate`)."""

    def try_take(self, key: str, cost: int, now: float) -> float:
        """Spend `cost` tokens of `key` and return 0.0 if the call may go now.

        Otherwise spend nothing and return the seconds until it could (math.inf: never).
        """
        ...


@dataclass(slots=True, eq=False)
class _Entry(Generic[T]):
    item: T
    key: str
    priority: int
    enqueued_at: float
    seq: int
    cost: int
    deadline_at: float | None
    live: bool = True
    queued: bool = False  # in its key's queue (else still in _delayed)

    def rank(self) -> tuple[int, float, int, _Entry[T]]:
        # seq is unique, so tuples never fall through to comparing entries.
        return (-self.priority, self.enqueued_at, self.seq, self)


@dataclass(frozen=True, slots=True)
class Release(Generic[T]):
    """What one `release` call decided.

    Attributes:
        ready: send these now, in this order; their tokens are already spent.
        expired: deadline passed while waiting; publish as expired, never send.
        unservable: the gate said they can never go (cost above the burst); reject them.
        next_due_at: when to call `release` again (never before `now`); None if empty.
    """

    ready: list[T]
    expired: list[T]
    unservable: list[T]
    next_due_at: float | None


def _seq_of(entry: _Entry[T]) -> int:
    return entry.seq


class WaitingRoom(Generic[T]):
    """Calls waiting for tokens, per limit key, by priority then arrival; not thread-safe."""

    _queues: dict[str, list[tuple[int, float, int, _Entry[T]]]]
    _delayed: list[tuple[float, int, _Entry[T]]]  # (not_before, seq, entry)
    _deadlines: list[tuple[float, int, _Entry[T]]]
    _wakes: list[tuple[float, str]]
    _wake_at: dict[str, float]  # the valid wake per key; heap rows may be stale
    _counts: dict[str, int]
    _dead: int  # expired entries still sitting in a key's queue
    _len: int

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._queues, self._delayed, self._deadlines, self._wakes = {}, [], [], []
        self._wake_at, self._counts = {}, {}
        self._dead = self._len = 0

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"WaitingRoom(waiting={self._len}, by_key={self._counts!r})"

    def count(self, key: str) -> int:
        """Calls waiting for `key`."""
        return self._counts.get(key, 0)

    def counts(self) -> dict[str, int]:
        """Calls waiting per key (a copy), for metrics."""
        return dict(self._counts)

    def push(
        self,
        item: T,
        *,
        key: str,
        priority: int,
        deadline_at: float | None,
        enqueued_at: float,
        cost: int = 1,
        not_before: float | None = None,
    ) -> None:
        """Add a call for `key`.

        Args:
            item: what the runtime wants back (the request, its offset...).
            key: the limit key whose tokens it spends.
            priority: higher goes first; 0 is prefetch.
            deadline_at: after this instant it is expired, never sent.
            enqueued_at: arrival time; FIFO within a priority. Keep the first value when a
                call comes back, so it keeps its place.
            cost: tokens it spends.
            not_before: hold it until then (Retry-After, a quota reset).
        """
        entry = _Entry(item, key, priority, enqueued_at, next(self._seq), cost, deadline_at)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._len += 1
        if deadline_at is not None:
            heapq.heappush(self._deadlines, (deadline_at, entry.seq, entry))
        if not_before is None:
            self._enqueue(entry)
        else:
            heapq.heappush(self._delayed, (not_before, entry.seq, entry))

    def expire(self, now: float) -> list[T]:
        """Remove and return the calls whose deadline is at or before `now`."""
        expired: list[T] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)[2]
            if entry.live:
                # A new head may need fewer tokens than the one that expired, so its key's
                # wake (set for the old head's cost) can be too late: look at the key again.
                if entry.queued and self._head(entry.key) is entry:
                    self._wake(entry.key, -math.inf)
                self._retire(entry)
                self._dead += int(entry.queued)
                expired.append(entry.item)
        self._compact_if_needed()
        return expired

    def release(self, now: float, gate: Gate) -> Release[T]:
        """Expire what is late, then let through every call the gate has tokens for."""
        expired = self.expire(now)
        self._promote(now)
        ready: list[T] = []
        unservable: list[T] = []
        for key in self._due_keys(now):
            wait = self._drain(key, now, gate, ready, unservable)
            if wait is not None:
                # At least one float step ahead, so a loop on a frozen clock cannot spin.
                self._wake(key, max(now + wait, math.nextafter(now, math.inf)))
        return Release(ready, expired, unservable, self.next_due(now))

    def next_due(self, now: float) -> float | None:
        """When the next call may go, be promoted or expire; never before `now`."""
        if not self._len:
            return None
        tops = (self._wake_top(), self._live_top(self._deadlines), self._live_top(self._delayed))
        return max(now, min(t for t in tops if t is not None))

    def clear(self) -> list[T]:
        """Empty the room (partition revoked) and return the waiting calls, oldest first."""
        queued = (row[3] for queue in self._queues.values() for row in queue)
        delayed = (row[2] for row in self._delayed)
        live = sorted((e for e in itertools.chain(queued, delayed) if e.live), key=_seq_of)
        self._reset()
        return [e.item for e in live]

    def _enqueue(self, entry: _Entry[T]) -> None:
        entry.queued = True
        heapq.heappush(self._queues.setdefault(entry.key, []), entry.rank())
        self._wake(entry.key, -math.inf)  # a newcomer may outrank the head: look again

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            entry = heapq.heappop(self._delayed)[2]
            if entry.live:
                self._enqueue(entry)

    def _due_keys(self, now: float) -> list[str]:
        keys: list[str] = []
        while self._wakes and self._wakes[0][0] <= now:
            at, key = heapq.heappop(self._wakes)
            if self._wake_at.get(key) == at:
                del self._wake_at[key]
                keys.append(key)
        return keys

    def _drain(
        self, key: str, now: float, gate: Gate, ready: list[T], unservable: list[T]
    ) -> float | None:
        """Release `key`'s calls in rank order until one must wait; return that wait."""
        while (entry := self._head(key)) is not None:
            wait = gate.try_take(key, entry.cost, now)
            if 0.0 < wait < math.inf:
                return wait
            heapq.heappop(self._queues[key])
            self._retire(entry)
            (ready if wait <= 0.0 else unservable).append(entry.item)
        return None

    def _head(self, key: str) -> _Entry[T] | None:
        queue = self._queues.get(key)
        while queue and not queue[0][3].live:
            heapq.heappop(queue)
            self._dead -= 1
        if not queue:
            self._queues.pop(key, None)
            return None
        return queue[0][3]

    def _retire(self, entry: _Entry[T]) -> None:
        entry.live = False
        self._len -= 1
        left = self._counts[entry.key] - 1
        if left:
            self._counts[entry.key] = left
        else:
            del self._counts[entry.key]

    def _wake(self, key: str, at: float) -> None:
        current = self._wake_at.get(key)
        if current is None or at < current:
            self._wake_at[key] = at
            heapq.heappush(self._wakes, (at, key))

    def _wake_top(self) -> float | None:
        while self._wakes and self._wake_at.get(self._wakes[0][1]) != self._wakes[0][0]:
            heapq.heappop(self._wakes)
        return self._wakes[0][0] if self._wakes else None

    @staticmethod
    def _live_top(heap: list[tuple[float, int, _Entry[T]]]) -> float | None:
        # Dead rows here are released calls (deadlines) or expired ones (delayed).
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact_if_needed(self) -> None:
        # Live calls fill at most one row in _deadlines and one in a queue or _delayed.
        garbage = self._dead + len(self._deadlines) + len(self._delayed) + len(self._wakes)
        if garbage <= 3 * self._len + len(self._wake_at) + _SLACK:
            return
        for key, queue in list(self._queues.items()):
            self._queues[key] = [row for row in queue if row[3].live]
            heapq.heapify(self._queues[key])
        self._delayed = [row for row in self._delayed if row[2].live]
        self._deadlines = [row for row in self._deadlines if row[2].live]
        self._wakes = [(at, key) for key, at in self._wake_at.items()]
        heapq.heapify(self._delayed)
        heapq.heapify(self._deadlines)
        heapq.heapify(self._wakes)
        self._dead = 0
