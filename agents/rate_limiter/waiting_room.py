"""The waiting room of one partition: calls over their limit wait here, not in the stream."""

# How the async runtime drives it: after each new call and at each timer tick it calls
# `release(now, gate)`, sends `ready`, publishes `expired` and `unservable` as outcomes, and
# sleeps until `next_due_at`. Nothing here awaits or reads a clock, so the same sequence of
# calls always gives the same answer and tests step time by hand.
#
# Structure, per limit key: priority bands, highest first (prefetch, priority 0, last); in a
# band, one queue per tenant, a heap on (enqueued_at, seq): FIFO, and a call that comes back
# with its first enqueued_at keeps its place. The band chooses among its backlogged tenants
# by start-time fair queuing (below). A push without a tenant goes to one implicit tenant,
# which gives the plain order (-priority, enqueued_at, seq). A heap of per-key wake-up times
# means a release only looks at keys that may have become able to send. Expiry uses its own
# deadline heap; entries leave the other heaps lazily (marked dead, dropped when they
# surface) and a compaction bounds the garbage.
#
# Fairness (issue 20): start-time fair queuing, SFQ (Goyal, Vin and Cheng, SIGCOMM 1996). A
# backlogged tenant has a start tag S; the band sends the head of the tenant with the
# smallest S (ties: the one that has waited longest for its turn), sets its virtual time V to
# that S, and moves the tenant's S on by cost / weight. A tenant that becomes backlogged
# starts at max(V, its last finish tag): no credit for time spent idle (it is at most one
# call ahead of the others), and nothing to gain by going idle for an instant. For any two
# tenants backlogged through an interval, |sent_a / w_a - sent_b / w_b| <= c/w_a + c/w_b (c
# the largest cost): with cost 1, 50% +-1 call at equal weights, 75/25 +-1 at 3:1.
# Why SFQ: its tags count tokens spent, never time, so it stays fair whatever rate the gate
# allows (the bucket, the provider's headers, a 429); WFQ and WF2Q track a fluid reference
# system run at a known link rate, which we do not have. Deficit round robin would do with
# unit costs, but serves a tenant its whole quantum in a row and needs the quantum tuned to
# the largest cost; SFQ interleaves by tag and takes any cost and any real weight.
# Cost: push O(log n) in its tenant's heap, plus O(log T) when its tenant becomes backlogged
# (T tenants in the band); each call sent O(log n + log T); a new band O(log B), B <= 10.
# Lazy deletion makes these amortised. Idle tenants are remembered only while their finish
# tag is ahead of V (at most one call's worth), so memory follows the calls waiting.

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
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
    tenant: str
    enqueued_at: float
    seq: int
    cost: int
    deadline_at: float | None
    live: bool = True
    queued: bool = False  # in its tenant's queue (else still in _delayed)


@dataclass(slots=True, eq=False)
class _Flow(Generic[T]):
    """One tenant's calls in one band, and its place in the band's fair order."""

    tenant: str
    quantum: float  # 1 / weight: how far one token moves its tag
    start: float  # backlogged: the start tag of its head; idle: its last finish tag
    tie: int  # its row's tie-break in order (backlogged) or idle (idle); newer rows win
    backlogged: bool = True
    rows: list[tuple[float, int, _Entry[T]]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Band(Generic[T]):
    """The calls of one priority on one key, by tenant."""

    vtime: float = 0.0  # start tag of the last call sent
    flows: dict[str, _Flow[T]] = field(default_factory=dict)  # backlogged and recently idle
    order: list[tuple[float, int, _Flow[T]]] = field(default_factory=list)  # backlogged
    idle: list[tuple[float, int, _Flow[T]]] = field(default_factory=list)  # finish tag > vtime


class _KeyQueue(Generic[T]):
    """The bands of one limit key; `len` counts rows, dead ones included."""

    __slots__ = ("bands", "prios")

    def __init__(self) -> None:
        self.bands: dict[int, _Band[T]] = {}
        self.prios: list[int] = []  # -priority of every band, a heap

    def __len__(self) -> int:
        return sum(len(f.rows) for band in self.bands.values() for f in band.flows.values())

    def entries(self) -> list[_Entry[T]]:
        return [row[2] for b in self.bands.values() for f in b.flows.values() for row in f.rows]


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
    """Calls waiting for tokens, per limit key: by priority, then a weighted fair share among
    tenants, then arrival; not thread-safe."""

    _queues: dict[str, _KeyQueue[T]]
    _delayed: list[tuple[float, int, _Entry[T]]]  # (not_before, seq, entry)
    _deadlines: list[tuple[float, int, _Entry[T]]]
    _wakes: list[tuple[float, str]]
    _wake_at: dict[str, float]  # the valid wake per key; heap rows may be stale
    _counts: dict[str, int]
    _dead: int  # expired entries still sitting in a tenant's queue
    _idle_rows: int  # rows in the bands' idle heaps, stale ones included
    _len: int

    def __init__(self, weights: Callable[[str], float] | None = None) -> None:
        """Start empty.

        Args:
            weights: a tenant's weight (positive, finite): its share of a key's calls against
                the other tenants waiting in the same band. Asked when a band first sees the
                tenant (again only after forgetting it), not per call. None: all weigh 1.
        """
        self._weights = weights
        self._seq = itertools.count()
        self._ties = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._queues, self._delayed, self._deadlines, self._wakes = {}, [], [], []
        self._wake_at, self._counts = {}, {}
        self._dead = self._idle_rows = self._len = 0

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
        tenant: str = "",
    ) -> None:
        """Add a call for `key`.

        Args:
            item: what the runtime wants back (the request, its offset...).
            key: the limit key whose tokens it spends.
            priority: higher goes first; 0 is prefetch.
            deadline_at: after this instant it is expired, never sent.
            enqueued_at: arrival time; FIFO within a tenant and priority. Keep the first
                value when a call comes back, so it keeps its place.
            cost: tokens it spends.
            not_before: hold it until then (Retry-After, a quota reset).
            tenant: whose call it is; tenants waiting in one band share its calls by weight.
        """
        entry = _Entry(item, key, priority, tenant, enqueued_at, next(self._seq), cost, deadline_at)
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
        queued = (entry for queue in self._queues.values() for entry in queue.entries())
        delayed = (row[2] for row in self._delayed)
        live = sorted((e for e in itertools.chain(queued, delayed) if e.live), key=_seq_of)
        self._reset()
        return [e.item for e in live]

    def _enqueue(self, entry: _Entry[T]) -> None:
        entry.queued = True
        queue = self._queues.get(entry.key)
        if queue is None:
            queue = self._queues[entry.key] = _KeyQueue()
        band = queue.bands.get(entry.priority)
        if band is None:
            band = queue.bands[entry.priority] = _Band()
            heapq.heappush(queue.prios, -entry.priority)
        flow = band.flows.get(entry.tenant)
        if flow is None:
            flow = band.flows[entry.tenant] = _Flow(
                entry.tenant, self._quantum(entry.tenant), band.vtime, next(self._ties)
            )
            heapq.heappush(band.order, (flow.start, flow.tie, flow))
        elif not flow.backlogged:
            # Back from idle: no credit for the time away, no gain from having left.
            flow.backlogged, flow.start, flow.tie = (
                True,
                max(flow.start, band.vtime),
                next(self._ties),
            )
            heapq.heappush(band.order, (flow.start, flow.tie, flow))
        heapq.heappush(flow.rows, (entry.enqueued_at, entry.seq, entry))
        self._wake(entry.key, -math.inf)  # a newcomer may outrank the head: look again

    def _quantum(self, tenant: str) -> float:
        if self._weights is None:
            return 1.0
        weight = self._weights(tenant)
        if not 0.0 < weight < math.inf:
            raise ValueError(
                f"tenant {tenant!r}: weight must be positive and finite, not {weight!r}"
            )
        return 1.0 / weight

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
        """Release `key`'s calls in turn until one must wait; return that wait."""
        while (front := self._front(key)) is not None:
            band, flow = front
            entry = flow.rows[0][2]
            wait = gate.try_take(key, entry.cost, now)
            if 0.0 < wait < math.inf:
                return wait
            heapq.heappop(flow.rows)
            self._retire(entry)
            if wait <= 0.0:
                self._charge(band, flow, entry.cost)
                ready.append(entry.item)
            else:  # never sent, so never charged to its tenant's share
                unservable.append(entry.item)
        return None

    def _charge(self, band: _Band[T], flow: _Flow[T], cost: int) -> None:
        """`flow`, first in `band`'s order, sent a call: move its tag and the band's clock."""
        band.vtime = flow.start
        flow.start += cost * flow.quantum
        order = band.order
        if len(order) == 1:  # alone in its band: no order to keep (the common case)
            order[0] = (flow.start, flow.tie, flow)
        else:
            flow.tie = next(self._ties)
            heapq.heapreplace(order, (flow.start, flow.tie, flow))
        idle = band.idle
        while idle and idle[0][0] <= band.vtime:  # V passed its finish tag: nothing to recall
            _, tie, old = heapq.heappop(idle)
            self._idle_rows -= 1
            if old.tie == tie:  # still idle since that row
                del band.flows[old.tenant]

    def _front(self, key: str) -> tuple[_Band[T], _Flow[T]] | None:
        """The band and tenant whose head call goes next; drops dead and empty ones on the way."""
        queue = self._queues.get(key)
        if queue is None:
            return None
        while queue.prios:
            priority = -queue.prios[0]
            band = queue.bands[priority]
            order = band.order
            while order:
                flow = order[0][2]
                rows = flow.rows
                while rows and not rows[0][2].live:
                    heapq.heappop(rows)
                    self._dead -= 1
                if rows:
                    return band, flow
                heapq.heappop(order)
                self._idle(band, flow)
            heapq.heappop(queue.prios)
            del queue.bands[priority]
            self._idle_rows -= len(band.idle)
        del self._queues[key]
        return None

    def _idle(self, band: _Band[T], flow: _Flow[T]) -> None:
        """`flow` has nothing left to send: remember its finish tag while it is ahead of V."""
        flow.backlogged = False
        if flow.start > band.vtime:
            flow.tie = next(self._ties)
            heapq.heappush(band.idle, (flow.start, flow.tie, flow))
            self._idle_rows += 1
        else:
            del band.flows[flow.tenant]

    def _head(self, key: str) -> _Entry[T] | None:
        front = self._front(key)
        return None if front is None else front[1].rows[0][2]

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
        garbage = (
            self._dead
            + self._idle_rows
            + len(self._deadlines)
            + len(self._delayed)
            + len(self._wakes)
        )
        if garbage <= 3 * self._len + len(self._wake_at) + _SLACK:
            return
        self._idle_rows = 0
        for key, queue in list(self._queues.items()):
            self._compact_queue(queue)
            if not queue.bands:
                del self._queues[key]
        self._delayed = [row for row in self._delayed if row[2].live]
        self._deadlines = [row for row in self._deadlines if row[2].live]
        self._wakes = [(at, key) for key, at in self._wake_at.items()]
        heapq.heapify(self._delayed)
        heapq.heapify(self._deadlines)
        heapq.heapify(self._wakes)
        self._dead = 0

    def _compact_queue(self, queue: _KeyQueue[T]) -> None:
        """Drop dead rows; tenants left with none go idle; bands left with none go."""
        for priority, band in list(queue.bands.items()):
            for flow in [f for f in band.flows.values() if f.backlogged]:
                flow.rows = [row for row in flow.rows if row[2].live]
                heapq.heapify(flow.rows)
                if not flow.rows:
                    self._idle(band, flow)
            band.order = [row for row in band.order if row[2].backlogged]
            band.idle = [row for row in band.idle if row[1] == row[2].tie]
            heapq.heapify(band.order)
            heapq.heapify(band.idle)
            if band.order:
                self._idle_rows += len(band.idle)
            else:
                del queue.bands[priority]
        queue.prios = [-priority for priority in queue.bands]
        heapq.heapify(queue.prios)
