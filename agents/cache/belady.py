"""Belady's offline optimum (MIN): the most hits any cache of ``capacity`` entries can get.

The yardstick of issue 23: a policy is judged by the share of the hit-ratio gap between LRU
and this optimum that it closes. Unit sizes (every entry one slot), as the issue's must-show.

On a miss the optimum holds the ``capacity`` keys whose next requests come soonest, counting
the requested key itself: a key requested later than every cached one (or never again) is not
admitted. That is the optimum over all policies, admission included, so it bounds W-TinyLFU
(which declines entries) as well as the policies that always admit.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence

__all__ = ["belady_hits", "next_uses"]


def next_uses(keys: Sequence[Hashable]) -> list[int]:
    """For each position, the position of the same key's next request; a key never requested
    again gets ``len(keys) + position``: past the end, and distinct for every position."""
    n = len(keys)
    following: dict[Hashable, int] = {}
    result = [0] * n
    for i in range(n - 1, -1, -1):
        key = keys[i]
        result[i] = following.get(key, n + i)
        following[key] = i
    return result


def belady_hits(keys: Sequence[Hashable], capacity: int) -> int:
    """The hits of the optimal cache of ``capacity`` entries on ``keys``."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    n = len(keys)
    nexts = next_uses(keys)
    # The cached keys and the position of each one's next request; a max-heap of them by that
    # position (negated). Heap items go stale when their key is hit (a newer item is pushed)
    # or evicted, and are skipped when they reach the top: positions are unique, so an item
    # is current exactly when it matches `cached`.
    cached: dict[Hashable, int] = {}
    farthest: list[tuple[int, Hashable]] = []
    hits = 0
    for i, key in enumerate(keys):
        nxt = nexts[i]
        if key in cached:
            hits += 1
        elif nxt >= n:
            continue  # never requested again: holding it cannot earn a hit
        elif len(cached) >= capacity:
            while cached.get(farthest[0][1]) != -farthest[0][0]:
                heapq.heappop(farthest)
            if -farthest[0][0] < nxt:
                continue  # every cached key is needed before this one: do not admit it
            del cached[heapq.heappop(farthest)[1]]
        cached[key] = nxt
        heapq.heappush(farthest, (-nxt, key))
    return hits
