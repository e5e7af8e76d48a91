"""The L1 response cache: in-process, bounded in bytes, one class per eviction policy.

Every policy has the same small interface (``ByteCache``): ``get`` (a demand access: a hit
returns the value and tells the policy it was used), ``put`` (store after a miss, or refresh an
entry in place), ``pop`` (invalidate), ``peek`` and ``in`` (look without counting as a use).
The cache holds at most ``capacity_bytes``: the sum of the sizes callers pass to ``put`` never
exceeds it, an entry larger than the whole cache is declined.

The policies (issue 23 chooses one by measurement on real traces, ``agents.cache.simulate``;
S3-FIFO is kept there, ``KEPT``, with the figures and the rule):

- ``LruCache``: least recently used, the baseline; a hit reorders an ``OrderedDict``.
- ``SieveCache`` (Zhang et al., NSDI'24): a FIFO queue and a "visited" bit; the eviction hand
  walks from the oldest entry towards the newest, clearing bits, and evicts the first entry it
  finds unvisited. A hit only sets the bit.
- ``S3FifoCache`` (Yang et al., SOSP'23): a small FIFO (10% of the bytes) where new keys go, a
  main FIFO (the rest) and a ghost FIFO of recently evicted keys (no values). An entry leaving
  the small FIFO moves to main if it was read again while there, else its key goes to the
  ghost; a key found in the ghost goes straight to main. Main is a 2-bit CLOCK. A hit only
  bumps a saturating counter. One-hit wonders (about half the keys of our web traces) leave
  after a short stay in the small FIFO.
- ``WTinyLfuCache`` (Einziger et al., TOS'17; as in Caffeine): a window LRU (1%) in front of
  a segmented LRU main (probation 20%, protected 80%); a count-min sketch of 4-bit counters,
  halved every 10 x entries accesses, estimates every key's recent frequency, and an entry
  leaving the window enters main only if it is more frequent than main's next victim.

Why our own code: no package on PyPI fits. The W-TinyLFU of ``theine`` (kept, Rust core) and
the caches of ``cachebox`` bound entries, not bytes; ``s3fifo``, ``s3fifo-cache`` and
``sieve-cache`` are single small releases with no upkeep. Each class here is short, and the
hit path, the one that runs per cached request, is a dict lookup and an attribute store (a
reorder for LRU and W-TinyLFU, plus the sketch's counters for W-TinyLFU): O(1), allocating
nothing. A miss allocates one entry.

``put`` of a key already cached is a refresh (a revalidation, a prefetch): it replaces the
value and size in place and is not counted as a use, so refreshes never make a key look hot.
With LRU, SIEVE and S3-FIFO a refresh never evicts its own entry (one that grew past the room
left is taken out, room made, and put back as the newest of its queue; SIEVE's hand passes
over it); W-TinyLFU may decline a grown one as it declines a newcomer.
Values may be anything but ``None``, which ``get`` returns for a miss. Not thread-safe: one
cache per event loop, as the worker runs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterator
from typing import ClassVar, Generic, Literal, TypeVar

__all__ = [
    "POLICIES",
    "ByteCache",
    "FrequencySketch",
    "LruCache",
    "PolicyName",
    "S3FifoCache",
    "SieveCache",
    "WTinyLfuCache",
    "make_cache",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

PolicyName = Literal["lru", "sieve", "s3fifo", "wtinylfu"]

# Where an entry is: the queue or segment that holds it. GONE marks an entry that was evicted
# or popped; S3-FIFO leaves such entries in its deques and skips them when they come out.
_SMALL, _MAIN, _WINDOW, _PROBATION, _PROTECTED, _GONE = range(6)


class _Entry(Generic[K, V]):
    """One cached value. ``freq`` is the policy's counter: SIEVE's visited bit, S3-FIFO's
    2-bit frequency. ``newer``/``older`` link SIEVE's queue; the others leave them unset."""

    __slots__ = ("freq", "key", "newer", "older", "seg", "size", "value")

    def __init__(self, key: K, value: V, size: int, seg: int) -> None:
        self.key = key
        self.value = value
        self.size = size
        self.seg = seg
        self.freq = 0
        self.newer: _Entry[K, V] | None = None
        self.older: _Entry[K, V] | None = None


class ByteCache(ABC, Generic[K, V]):
    """A cache bounded in bytes: the interface every policy implements."""

    name: ClassVar[PolicyName]

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be >= 1, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        # The sum of the sizes of the entries held: never above capacity_bytes.
        self.used_bytes = 0
        # Entries the policy pushed out to make room (not pops, not refreshes), for metrics.
        self.evictions = 0
        self.evicted_bytes = 0
        self._map: dict[K, _Entry[K, V]] = {}

    @abstractmethod
    def get(self, key: K) -> V | None:
        """The value cached for ``key`` (a use: the policy learns of it), or None."""

    @abstractmethod
    def put(self, key: K, value: V, size: int) -> bool:
        """Store ``value`` (``size`` bytes, >= 1) for ``key``, evicting as the policy decides.

        False if not stored: an entry larger than the whole cache is declined (and an older
        value for the key dropped, as it is stale). On True, LRU, SIEVE and S3-FIFO hold the
        entry when ``put`` returns; W-TinyLFU may already have declined it (admission).
        """

    def pop(self, key: K) -> V | None:
        """Invalidate ``key``: its value if it was cached, else None."""
        entry = self._map.pop(key, None)
        if entry is None:
            return None
        self.used_bytes -= entry.size
        self._unlink(entry)
        return entry.value

    @abstractmethod
    def _unlink(self, entry: _Entry[K, V]) -> None:
        """Take a popped entry (already out of the map and used_bytes) out of the policy."""

    def peek(self, key: K) -> V | None:
        """The value cached for ``key`` without counting a use."""
        entry = self._map.get(key)
        return None if entry is None else entry.value

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def _check_size(self, key: K, size: int) -> bool:
        """Whether an entry of ``size`` bytes can be stored at all; drops a stale one if not."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if size > self.capacity_bytes:
            self.pop(key)
            return False
        return True

    def _refresh(self, entry: _Entry[K, V], value: V, size: int) -> None:
        """Replace a cached entry's value in place (not a use); the caller then evicts."""
        entry.value = value
        self.used_bytes += size - entry.size
        self._resize(entry, size - entry.size)
        entry.size = size

    def _resize(self, entry: _Entry[K, V], delta: int) -> None:
        """Hook: a refresh changed ``entry``'s size by ``delta`` (per-queue byte counts)."""

    def _evicted(self, entry: _Entry[K, V]) -> None:
        """Book an eviction of an entry already out of the map: the bytes and the counters."""
        self.used_bytes -= entry.size
        self.evictions += 1
        self.evicted_bytes += entry.size


class LruCache(ByteCache[K, V]):
    """Least recently used: the baseline every candidate is judged against."""

    name = "lru"

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        # The map itself, oldest first: a hit moves its key to the end.
        self._order: OrderedDict[K, _Entry[K, V]] = OrderedDict()
        self._map = self._order

    def get(self, key: K) -> V | None:
        entry = self._map.get(key)
        if entry is None:
            return None
        self._order.move_to_end(key)
        return entry.value

    def put(self, key: K, value: V, size: int) -> bool:
        if not self._check_size(key, size):
            return False
        entry = self._map.get(key)
        if entry is not None:
            if self.used_bytes + size - entry.size <= self.capacity_bytes:
                self._refresh(entry, value, size)
                return True
            # Grown past the room left: out, then back in as below, so that the evictions
            # cannot take it (it comes back as the newest: the one way to keep it).
            self.pop(key)
        while self.used_bytes + size > self.capacity_bytes:
            _, victim = self._order.popitem(last=False)
            self._evicted(victim)
        self._order[key] = _Entry(key, value, size, _MAIN)
        self.used_bytes += size
        return True

    def _unlink(self, entry: _Entry[K, V]) -> None:
        pass  # out of the map is out of the order: they are one OrderedDict


class SieveCache(ByteCache[K, V]):
    """SIEVE: a FIFO queue, a visited bit per entry, and a hand that sweeps oldest to newest."""

    name = "sieve"

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        # A doubly linked list (entries removed from the middle: SIEVE evicts where the hand
        # stands and keeps the survivors in place, unlike a CLOCK that reinserts them).
        self._newest: _Entry[K, V] | None = None
        self._oldest: _Entry[K, V] | None = None
        # The next entry the hand looks at; None: start again from the oldest.
        self._hand: _Entry[K, V] | None = None

    def get(self, key: K) -> V | None:
        entry = self._map.get(key)
        if entry is None:
            return None
        entry.freq = 1
        return entry.value

    def put(self, key: K, value: V, size: int) -> bool:
        if not self._check_size(key, size):
            return False
        entry = self._map.get(key)
        if entry is not None:
            self._refresh(entry, value, size)
            while self.used_bytes > self.capacity_bytes:
                self._evict_one(keep=entry)
            return True
        while self.used_bytes + size > self.capacity_bytes:
            self._evict_one(keep=None)
        entry = _Entry(key, value, size, _MAIN)
        entry.older = self._newest
        if self._newest is not None:
            self._newest.newer = entry
        else:
            self._oldest = entry
        self._newest = entry
        self._map[key] = entry
        self.used_bytes += size
        return True

    def _evict_one(self, keep: _Entry[K, V] | None) -> None:
        """Evict the first unvisited entry from the hand on, clearing the bits it passes.

        ``keep`` (an entry just refreshed to a larger size) is passed over, so a refresh never
        evicts the entry it refreshes; it is alone only if it fits alone.
        """
        entry = self._hand or self._oldest
        assert entry is not None  # called only while something other than `keep` is held
        while entry.freq or entry is keep:
            if entry is not keep:
                entry.freq = 0
            entry = entry.newer or self._oldest
            assert entry is not None
        self._hand = entry  # so that _unlink leaves it on the next newer entry
        del self._map[entry.key]
        self._unlink(entry)
        self._evicted(entry)

    def _unlink(self, entry: _Entry[K, V]) -> None:
        if self._hand is entry:
            self._hand = entry.newer
        newer, older = entry.newer, entry.older
        if newer is not None:
            newer.older = older
        else:
            self._newest = older
        if older is not None:
            older.newer = newer
        else:
            self._oldest = newer
        entry.newer = entry.older = None


class S3FifoCache(ByteCache[K, V]):
    """S3-FIFO: a small FIFO that filters one-hit wonders, a main CLOCK, a ghost of keys."""

    name = "s3fifo"

    def __init__(
        self,
        capacity_bytes: int,
        *,
        small_ratio: float = 0.1,
        ghost_ratio: float = 0.9,
        promote_at: int = 2,
    ) -> None:
        """``small_ratio`` and ``ghost_ratio``: the shares of ``capacity_bytes`` for the small
        FIFO and for the ghost (sizes of the keys it remembers), as libCacheSim's defaults.
        ``promote_at``: the hits while in the small FIFO that move an entry to main. 2 is the
        paper's algorithm and libCacheSim's default; 1 reads its prose ("accessed more than
        once", the insert included). Measured (``agents.cache.simulate``): 2 closes more of
        the gap at 5% on all three traces (+0.8 to +4.0 points) and on average over the nine
        trace x capacity cells; 1 does better only at 10% on web07 and the Apache log."""
        super().__init__(capacity_bytes)
        if not (0 < small_ratio < 1 and ghost_ratio >= 0 and promote_at >= 1):
            raise ValueError("need 0 < small_ratio < 1, ghost_ratio >= 0, promote_at >= 1")
        self._small_target = max(1, int(capacity_bytes * small_ratio))
        self._ghost_target = int(capacity_bytes * ghost_ratio)
        self._promote_at = promote_at
        # Oldest on the left. Entries popped by the user stay until they reach the left end
        # (marked _GONE; counted in _dead, compacted when they outnumber the live ones), so a
        # pop is O(1) without a linked list.
        self._small: deque[_Entry[K, V]] = deque()
        self._main: deque[_Entry[K, V]] = deque()
        self._small_bytes = 0
        self._main_bytes = 0
        self._dead = 0
        # Keys evicted from the small FIFO, with their sizes: oldest first.
        self._ghost: OrderedDict[K, int] = OrderedDict()
        self._ghost_bytes = 0

    def get(self, key: K) -> V | None:
        entry = self._map.get(key)
        if entry is None:
            return None
        if entry.freq < 3:
            entry.freq += 1
        return entry.value

    def put(self, key: K, value: V, size: int) -> bool:
        if not self._check_size(key, size):
            return False
        entry = self._map.get(key)
        freq = 0
        if entry is not None:
            if self.used_bytes + size - entry.size <= self.capacity_bytes:
                self._refresh(entry, value, size)
                return True
            # Grown past the room left: take it out, make room, put it back in its queue
            # (at the new end) with its counter, so the refresh cannot evict itself.
            freq, seg = entry.freq, entry.seg
            self.pop(key)
        else:
            ghost_size = self._ghost.pop(key, None)
            if ghost_size is not None:
                self._ghost_bytes -= ghost_size
            seg = _SMALL if ghost_size is None else _MAIN
        while self.used_bytes + size > self.capacity_bytes:
            self._evict_one()
        entry = _Entry(key, value, size, seg)
        entry.freq = freq
        if seg == _MAIN:
            self._main.append(entry)
            self._main_bytes += size
        else:
            self._small.append(entry)
            self._small_bytes += size
        self._map[key] = entry
        self.used_bytes += size
        return True

    def _evict_one(self) -> None:
        """Evict one entry: from the small FIFO while it holds its share, else from main."""
        small_turn = self._small_bytes >= self._small_target or not self._main_bytes
        if not (small_turn and self._evict_small()):
            self._evict_main()

    def _evict_small(self) -> bool:
        """Move the small FIFO's oldest entries read while there to main, until one that was
        not is evicted (its key to the ghost). False if none was (all moved to main)."""
        small, main = self._small, self._main
        while small:
            entry = small.popleft()
            if entry.seg != _SMALL:
                self._dead -= 1
                continue
            self._small_bytes -= entry.size
            if entry.freq >= self._promote_at:
                entry.seg, entry.freq = _MAIN, 0
                main.append(entry)
                self._main_bytes += entry.size
                continue
            entry.seg = _GONE
            del self._map[entry.key]
            self._evicted(entry)
            self._remember(entry.key, entry.size)
            return True
        return False

    def _evict_main(self) -> None:
        """CLOCK over main: an entry read since it last passed goes round again with its
        counter less one; the first with a zero counter is evicted."""
        main = self._main
        while main:
            entry = main.popleft()
            if entry.seg != _MAIN:
                self._dead -= 1
                continue
            if entry.freq:
                entry.freq -= 1
                main.append(entry)
                continue
            entry.seg = _GONE
            self._main_bytes -= entry.size
            del self._map[entry.key]
            self._evicted(entry)
            return

    def _remember(self, key: K, size: int) -> None:
        """Put an evicted key in the ghost, forgetting the oldest beyond its share."""
        ghost = self._ghost
        ghost[key] = size
        self._ghost_bytes += size
        while self._ghost_bytes > self._ghost_target and ghost:
            self._ghost_bytes -= ghost.popitem(last=False)[1]

    def _resize(self, entry: _Entry[K, V], delta: int) -> None:
        if entry.seg == _SMALL:
            self._small_bytes += delta
        else:
            self._main_bytes += delta

    def _unlink(self, entry: _Entry[K, V]) -> None:
        self._resize(entry, -entry.size)
        entry.seg = _GONE
        self._dead += 1
        if self._dead > len(self._map) + 64:
            # Compact: drop the popped entries so a pop-heavy workload cannot grow the deques.
            self._small = deque(e for e in self._small if e.seg == _SMALL)
            self._main = deque(e for e in self._main if e.seg == _MAIN)
            self._dead = 0


class FrequencySketch:
    """A count-min sketch of 4-bit counters, periodically halved: recent key frequencies.

    Four rows of ``width`` counters (one byte each, saturating at 15), indexed by double
    hashing of ``hash(key)``. After ``sample_factor x entries`` increments every counter is
    halved (one ``bytes.translate``): the estimate follows recent popularity (TinyLFU's reset).
    Estimates never undercount within a period; collisions can overcount. ``hash`` of a str is
    salted per process, so estimates (and W-TinyLFU's hit ratios) vary slightly run to run.
    """

    __slots__ = ("_additions", "_entries", "_mask", "_sample", "_table", "_width")

    _HALVE = bytes(i >> 1 for i in range(256))

    def __init__(self, entries: int, *, per_entry: int = 16, sample_factor: int = 10) -> None:
        # `per_entry` counters per entry in each row. Caffeine's sketch has 4; with that few,
        # collisions (most keys of a web trace are one-hit wonders) made W-TinyLFU's hit ratio
        # on the Apache trace at 5% swing from 22% to 40% of the gap with the process's hash
        # salt; at 16 the swing is gone (see the tests). 64 bytes per entry.
        self._width = 1 << max(4, math.ceil(math.log2(max(1, entries) * per_entry)))
        self._mask = self._width - 1
        self._table = bytearray(4 * self._width)
        self._entries = max(1, entries)
        # Halve every `sample_factor` x entries increments: TinyLFU's and Caffeine's 10.
        self._sample = sample_factor * self._entries
        self._additions = 0

    @property
    def entries(self) -> int:
        """The number of entries the sketch was sized for."""
        return self._entries

    def _indexes(self, key: Hashable) -> tuple[int, int, int, int]:
        h = (hash(key) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        h2 = (h >> 29) | 1
        mask, width = self._mask, self._width
        return (
            h & mask,
            width + ((h + h2) & mask),
            2 * width + ((h + 2 * h2) & mask),
            3 * width + ((h + 3 * h2) & mask),
        )

    def increment(self, key: Hashable) -> None:
        """Count one access to ``key``."""
        table = self._table
        a, b, c, d = self._indexes(key)
        if table[a] < 15:
            table[a] += 1
        if table[b] < 15:
            table[b] += 1
        if table[c] < 15:
            table[c] += 1
        if table[d] < 15:
            table[d] += 1
        self._additions += 1
        if self._additions >= self._sample:
            self._table = self._table.translate(self._HALVE)
            self._additions //= 2

    def frequency(self, key: Hashable) -> int:
        """The estimated recent accesses of ``key`` (0 to 15)."""
        table = self._table
        a, b, c, d = self._indexes(key)
        return min(table[a], table[b], table[c], table[d])


class WTinyLfuCache(ByteCache[K, V]):
    """W-TinyLFU: a window LRU, a segmented LRU main, and frequency-based admission to main."""

    name = "wtinylfu"

    def __init__(
        self,
        capacity_bytes: int,
        *,
        window_ratio: float = 0.01,
        protected_ratio: float = 0.8,
        expected_entries: int | None = None,
        sample_factor: int = 10,
    ) -> None:
        """``window_ratio``: the window's share of the bytes; ``protected_ratio``: the
        protected segment's share of main (Caffeine's defaults). ``expected_entries`` sizes
        the sketch (default: one entry per KiB of capacity, at least 16); it is rebuilt twice
        as large, empty, when the cache holds more entries than that. ``sample_factor``: the
        sketch's period, in accesses per entry (``FrequencySketch``)."""
        super().__init__(capacity_bytes)
        if not (0 <= window_ratio < 1 and 0 < protected_ratio < 1):
            raise ValueError("need 0 <= window_ratio < 1 and 0 < protected_ratio < 1")
        main = int(capacity_bytes * (1 - window_ratio))
        self._window_max = capacity_bytes - main
        self._protected_max = int(main * protected_ratio)
        self._sample_factor = sample_factor
        self._sketch = FrequencySketch(
            expected_entries or max(16, capacity_bytes >> 10), sample_factor=sample_factor
        )
        # Oldest first, each; together the same entries as _map.
        self._window: OrderedDict[K, _Entry[K, V]] = OrderedDict()
        self._probation: OrderedDict[K, _Entry[K, V]] = OrderedDict()
        self._protected: OrderedDict[K, _Entry[K, V]] = OrderedDict()
        self._window_bytes = 0
        self._protected_bytes = 0

    def get(self, key: K) -> V | None:
        self._sketch.increment(key)
        entry = self._map.get(key)
        if entry is None:
            return None
        seg = entry.seg
        if seg == _PROTECTED:
            self._protected.move_to_end(key)
        elif seg == _WINDOW:
            self._window.move_to_end(key)
        else:
            self._promote(entry)
        return entry.value

    def _promote(self, entry: _Entry[K, V]) -> None:
        """A hit in probation: to protected, demoting protected's oldest beyond its share."""
        del self._probation[entry.key]
        entry.seg = _PROTECTED
        self._protected[entry.key] = entry
        self._protected_bytes += entry.size
        while self._protected_bytes > self._protected_max and len(self._protected) > 1:
            _, demoted = self._protected.popitem(last=False)
            demoted.seg = _PROBATION
            self._probation[demoted.key] = demoted
            self._protected_bytes -= demoted.size

    def put(self, key: K, value: V, size: int) -> bool:
        if not self._check_size(key, size):
            return False
        entry = self._map.get(key)
        if entry is not None:
            self._refresh(entry, value, size)
        else:
            if len(self._map) > self._sketch.entries:
                self._sketch = FrequencySketch(
                    2 * self._sketch.entries, sample_factor=self._sample_factor
                )
            entry = _Entry(key, value, size, _WINDOW)
            self._map[key] = self._window[key] = entry
            self._window_bytes += size
            self.used_bytes += size
        self._fit(entry)
        return True

    def _fit(self, entry: _Entry[K, V]) -> None:
        """Move the window's overflow into probation, each as a candidate against main's next
        victim while the cache is over capacity; then evict oldest-first if still over (a
        refresh that grew an entry)."""
        while self._window_bytes > self._window_max:
            _, candidate = self._window.popitem(last=False)
            self._window_bytes -= candidate.size
            candidate.seg = _PROBATION
            self._probation[candidate.key] = candidate
            while self.used_bytes > self.capacity_bytes and candidate.seg != _GONE:
                self._duel(candidate)
        while self.used_bytes > self.capacity_bytes:
            for segment in (self._probation, self._protected, self._window):
                victim = next((e for e in segment.values() if e is not entry), None)
                if victim is not None:
                    self._evict(victim)
                    break

    def _duel(self, candidate: _Entry[K, V]) -> None:
        """Evict either main's next victim or the candidate: the less frequent (the candidate
        on a tie, as Caffeine: a newcomer must be more popular to displace a resident)."""
        victim = next(iter(self._probation.values()))
        if victim is candidate:
            victim = next(iter(self._protected.values()), candidate)
        if victim is not candidate and self._sketch.frequency(
            candidate.key
        ) > self._sketch.frequency(victim.key):
            self._evict(victim)
        else:
            self._evict(candidate)

    def _evict(self, entry: _Entry[K, V]) -> None:
        del self._map[entry.key]
        self._unlink(entry)
        self._evicted(entry)

    def _resize(self, entry: _Entry[K, V], delta: int) -> None:
        if entry.seg == _WINDOW:
            self._window_bytes += delta
        elif entry.seg == _PROTECTED:
            self._protected_bytes += delta

    def _unlink(self, entry: _Entry[K, V]) -> None:
        self._resize(entry, -entry.size)
        seg = entry.seg
        if seg == _WINDOW:
            del self._window[entry.key]
        elif seg == _PROTECTED:
            del self._protected[entry.key]
        else:
            del self._probation[entry.key]
        entry.seg = _GONE


POLICIES: dict[PolicyName, type[ByteCache[Hashable, object]]] = {
    "lru": LruCache,
    "sieve": SieveCache,
    "s3fifo": S3FifoCache,
    "wtinylfu": WTinyLfuCache,
}


def make_cache(policy: PolicyName, capacity_bytes: int) -> ByteCache[Hashable, object]:
    """A cache of ``policy`` with its default settings."""
    return POLICIES[policy](capacity_bytes)
