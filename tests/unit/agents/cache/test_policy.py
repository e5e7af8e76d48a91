"""The L1 policies: the byte bound and the cache contract under random operations
(hypothesis), each policy against a naive model of itself, and what makes each one worth
measuring (scan resistance)."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cache.policy import (
    POLICIES,
    ByteCache,
    FrequencySketch,
    PolicyName,
    S3FifoCache,
    WTinyLfuCache,
    make_cache,
)

# No example database: nothing written into the work tree; no deadline: CI machines vary.
CHECK = settings(database=None, deadline=None, max_examples=150)
ALL: list[PolicyName] = list(POLICIES)
ALWAYS_ADMIT: list[PolicyName] = ["lru", "sieve", "s3fifo"]

# (operation, key, size): gets, puts and pops over a few keys, sizes up to past the capacity.
operations = st.lists(
    st.tuples(
        st.sampled_from(["get", "get", "put", "put", "pop"]),
        st.integers(0, 12),
        st.integers(1, 12),
    ),
    max_size=300,
)


def _check_bytes(cache: ByteCache[Hashable, object], sizes: dict[Hashable, int]) -> None:
    """used_bytes is the sum of the held entries' sizes, and within the bound."""
    held = sum(sizes[key] for key in cache)
    assert cache.used_bytes == held
    assert 0 <= cache.used_bytes <= cache.capacity_bytes


@pytest.mark.parametrize("policy", ALL)
@CHECK
@given(capacity=st.integers(1, 30), ops=operations)
def test_never_over_the_byte_bound_and_never_a_stale_value(policy, capacity, ops):
    cache = make_cache(policy, capacity)
    sizes: dict[Hashable, int] = {}
    values: dict[Hashable, object] = {}
    for n, (op, key, size) in enumerate(ops):
        if op == "put":
            stored = cache.put(key, n, size)
            assert stored == (size <= capacity)
            if stored:
                sizes[key], values[key] = size, n
                if policy in ALWAYS_ADMIT:
                    assert key in cache  # a put that stores never evicts its own entry
            else:
                assert key not in cache  # too large: declined, and the old value dropped
        elif op == "get":
            got = cache.get(key)
            assert got == (values[key] if key in cache else None)
        else:
            popped = cache.pop(key)
            assert key not in cache
            assert popped is None or popped == values[key]
        _check_bytes(cache, sizes)
        # Every held key has the value last put for it: no stale value survives a refresh.
        assert all(cache.peek(key) == values[key] for key in cache)


@pytest.mark.parametrize("policy", ALL)
@CHECK
@given(capacity=st.integers(1, 30), ops=operations, key=st.integers(0, 12))
def test_a_get_after_a_put_hits_unless_evicted(policy, capacity, ops, key):
    cache = make_cache(policy, capacity)
    for n, (op, other, size) in enumerate(ops):
        if op == "put":
            cache.put(other, n, size)
        elif op == "get":
            cache.get(other)
    if cache.put(key, "fresh", 1) and key in cache:
        assert cache.get(key) == "fresh"
        assert cache.get(key) == "fresh"  # and the use itself evicts nothing


@pytest.mark.parametrize("policy", ALL)
def test_counts_evictions_and_sizes_are_checked(policy):
    cache = make_cache(policy, 10)
    with pytest.raises(ValueError, match="size"):
        cache.put("a", 1, 0)
    for i in range(30):
        cache.get(i)
        cache.put(i, i, 2)
    assert cache.used_bytes <= 10
    # Every byte put is held or was evicted (no pops here; W-TinyLFU's declines are evictions).
    assert cache.used_bytes + cache.evicted_bytes == 30 * 2
    assert cache.evictions == cache.evicted_bytes // 2
    with pytest.raises(ValueError, match="capacity"):
        make_cache(policy, 0)


# Naive models, one list each, checked against the real classes on unit-size entries.


class _NaiveLru:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.order: list[int] = []  # oldest first

    def access(self, key: int) -> bool:
        if key in self.order:
            self.order.remove(key)
            self.order.append(key)
            return True
        if len(self.order) == self.capacity:
            self.order.pop(0)
        self.order.append(key)
        return False


class _NaiveSieve:
    """SIEVE as the paper's pseudocode, on a list (oldest first) and a hand index."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queue: list[int] = []  # oldest first
        self.visited: dict[int, bool] = {}
        self.hand: int | None = None

    def access(self, key: int) -> bool:
        if key in self.visited:
            self.visited[key] = True
            return True
        if len(self.queue) == self.capacity:
            i = 0 if self.hand is None else self.hand
            while self.visited[self.queue[i]]:
                self.visited[self.queue[i]] = False
                i = i + 1 if i + 1 < len(self.queue) else 0
            del self.visited[self.queue.pop(i)]
            self.hand = i if i < len(self.queue) else None
        self.queue.append(key)
        self.visited[key] = False
        return False


class _NaiveS3Fifo:
    """S3-FIFO as the paper's algorithm (threshold 2, ghost of 90%), on lists."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.small_max = max(1, int(capacity * 0.1))
        self.ghost_max = int(capacity * 0.9)
        self.small: list[int] = []
        self.main: list[int] = []
        self.ghost: list[int] = []
        self.freq: dict[int, int] = {}

    def access(self, key: int) -> bool:
        if key in self.freq:
            self.freq[key] = min(self.freq[key] + 1, 3)
            return True
        in_ghost = key in self.ghost
        if in_ghost:
            self.ghost.remove(key)
        while len(self.small) + len(self.main) >= self.capacity:
            self.evict()
        (self.main if in_ghost else self.small).append(key)
        self.freq[key] = 0
        return False

    def evict(self) -> None:
        if len(self.small) >= self.small_max or not self.main:
            while self.small:
                key = self.small.pop(0)
                if self.freq[key] >= 2:
                    self.freq[key] = 0
                    self.main.append(key)
                else:
                    del self.freq[key]
                    self.ghost.append(key)
                    if len(self.ghost) > self.ghost_max:
                        self.ghost.pop(0)
                    return
        while True:
            key = self.main.pop(0)
            if self.freq[key]:
                self.freq[key] -= 1
                self.main.append(key)
            else:
                del self.freq[key]
                return


@pytest.mark.parametrize(
    ("policy", "naive"), [("lru", _NaiveLru), ("sieve", _NaiveSieve), ("s3fifo", _NaiveS3Fifo)]
)
@CHECK
@given(
    capacity=st.integers(1, 25),
    keys=st.lists(st.integers(0, 40) | st.integers(0, 5), max_size=400),
)
def test_each_policy_decides_as_its_naive_model(policy, naive, capacity, keys):
    cache = make_cache(policy, capacity)
    model = naive(capacity)
    for key in keys:
        hit = cache.get(key) is not None
        if not hit:
            cache.put(key, key, 1)
        assert hit == model.access(key)


def test_the_candidates_resist_a_scan_that_flushes_lru():
    # Ten keys read five times each, then a scan of 500 keys read once, then the ten again.
    hot = [f"hot{i}" for i in range(10)]
    scan = [f"scan{i}" for i in range(500)]
    hits_after: dict[str, int] = {}
    for policy in ALL:
        cache = make_cache(policy, 20)
        for key in hot * 5 + scan:
            if cache.get(key) is None:
                cache.put(key, key, 1)
        hits_after[policy] = sum(cache.get(key) is not None for key in hot)
    assert hits_after["lru"] == 0
    assert hits_after["s3fifo"] == hits_after["sieve"] == 10
    # The hot key that was in W-TinyLFU's one-entry window when the scan began leaves it as a
    # candidate against a hot resident: a tie (the sketch halved twice during the scan).
    assert hits_after["wtinylfu"] >= 9


def test_byte_sizes_evict_as_many_entries_as_needed():
    for policy in ALL:
        cache = make_cache(policy, 100)
        for i in range(10):
            cache.get(i)
            cache.put(i, i, 10)
        assert cache.used_bytes == 100
        cache.get("big")
        assert cache.put("big", "b", 95)
        assert cache.used_bytes <= 100
        if policy == "wtinylfu":
            # Admission: seen once, it is no more frequent than the first resident it would
            # displace (each seen once too), so it is declined and the residents stay.
            assert "big" not in cache and len(cache) == 10
        else:
            assert "big" in cache and len(cache) == 1


def test_a_refresh_replaces_in_place_and_is_not_a_use():
    cache = S3FifoCache[str, str](10)
    cache.put("a", "old", 1)
    assert cache.put("a", "new", 3)
    assert cache.peek("a") == "new"
    assert cache.used_bytes == 3
    # Never read: a scan evicts it from the small FIFO, refreshes notwithstanding.
    for i in range(20):
        cache.put(f"k{i}", "v", 1)
        if "a" in cache:
            cache.put("a", "newer", 3)
    assert "a" not in cache


def test_a_refresh_that_grows_an_entry_keeps_it():
    for policy in ALWAYS_ADMIT:
        cache = make_cache(policy, 10)
        for i in range(10):
            cache.put(f"k{i}", i, 1)
        assert cache.put("k0", 0, 8)
        assert "k0" in cache
        assert cache.used_bytes <= 10


def test_s3fifo_pops_do_not_grow_its_queues():
    cache = S3FifoCache[int, int](1000)
    for i in range(10_000):
        cache.put(i % 7, i, 1)
        cache.pop(i % 7)
    assert len(cache._small) + len(cache._main) <= 64 + 7


def test_wtinylfu_admits_by_frequency():
    cache = WTinyLfuCache[str, str](100, expected_entries=100)
    for key in [f"k{i}" for i in range(100)] * 3:  # a full cache of keys seen three times
        if cache.get(key) is None:
            cache.put(key, key, 1)
    for i in range(50):  # new keys seen once: never more frequent than the residents
        cache.get(f"new{i}")
        cache.put(f"new{i}", "v", 1)
    assert sum(f"k{i}" in cache for i in range(100)) >= 98


@CHECK
@given(keys=st.lists(st.integers(0, 300), max_size=600), entries=st.integers(1, 64))
def test_the_sketch_never_undercounts_before_a_reset(keys, entries):
    sketch = FrequencySketch(entries)
    counts: dict[int, int] = {}
    for key in keys[: 10 * entries - 1]:  # no halving yet
        sketch.increment(key)
        counts[key] = counts.get(key, 0) + 1
    assert all(sketch.frequency(k) >= min(n, 15) for k, n in counts.items())


def test_the_sketch_halves_and_forgets():
    sketch = FrequencySketch(16)
    for _ in range(12):
        sketch.increment("hot")
    before = sketch.frequency("hot")
    rng = random.Random(5)
    for _ in range(160):
        sketch.increment(rng.random())
    assert sketch.frequency("hot") <= before // 2 + 1
