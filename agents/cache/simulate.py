"""Hit ratios of the L1 policies and of Belady's optimum on key sequences: the measurement that
chooses the policy (issue 23).

Unit sizes (every entry one byte of a cache of ``capacity`` bytes, so capacities are counted
in entries), capacities of 1%, 5% and 10% of the trace's unique keys, every request a ``get``
and every miss a ``put``: the hit ratio counts the cold misses too, as libCacheSim does.
``gap closed`` = (policy - LRU) / (Belady - LRU): 0 is no better than LRU, 1 the optimum.

``python -m agents.cache.simulate`` prints the table for the real traces (``traces.py``).
"""

from __future__ import annotations

import math
import random
import sys
import time
import timeit
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agents.cache.belady import belady_hits
from agents.cache.policy import (
    ByteCache,
    LruCache,
    PolicyName,
    S3FifoCache,
    SieveCache,
    WTinyLfuCache,
)

__all__ = [
    "CANDIDATES",
    "CAPACITY_PCTS",
    "KEPT",
    "SimRow",
    "Standing",
    "capacity_for",
    "compare",
    "format_table",
    "gap_closed",
    "get_hit_ns",
    "policy_hits",
    "standings",
]

CAPACITY_PCTS = (1.0, 5.0, 10.0)
CANDIDATES: tuple[PolicyName, ...] = ("sieve", "s3fifo", "wtinylfu")
# The policy the L1 keeps. The rule, fixed before the choice: the largest share of the gap
# closed on the worst trace at 5% (the goal is per trace, its baseline at 5%), then
# the mean over the nine trace x capacity cells. Measured (worst at 5% / mean of nine):
# S3-FIFO 27.8% (web07) / 41.9%; W-TinyLFU with Caffeine's settings 18.1% (web07) / ~35%,
# and with its window and sketch period tuned on these same traces (5%, x40) 24.1% / 44.0%;
# SIEVE -2.5% (Apache) / 35.1%. S3-FIFO also has the cheapest hit (with SIEVE: a dict lookup
# and a counter; W-TinyLFU's sketch makes its hit ~16x dearer) and no hash-salt dependence.
# No candidate reaches the goal of 40% on every trace: on web07 at 5% none closes more
# than 28%; tried and dropped, none reaching 40% there either: ARC (20%), W-TinyLFU with a
# hill-climbed window (~21%), S3-FIFO variants (small and ghost sizes, a sketch-fed ghost:
# at most 32%). Then (our own code, unit sizes; NASA / Apache / web07 at 5%, mean of nine):
# LIRS with the paper's 1% HIR share, ghosts up to 2x capacity: 41.6 / 24.3 / 14.0%, 30.1%;
# best HIR share (10%) 40.9 / 21.8 / 20.8%, 33.9%; its hit (a reorder, and S's pruning)
# costs ~2x S3-FIFO's, ~3.5x on get_hit_ns's repeated permutation (every hit is S's bottom).
# CLOCK-Pro, adaptive, cold target at least 1%: 45.0 / 29.3 / 18.1%, 34.6%; best (fixed 10%
# cold) 44.8 / 27.6 / 22.9%, 36.6%; a hit sets a bit (as SIEVE). 2Q with the paper's Kin 25%,
# Kout 50%: 37.1 / 28.3 / 19.7%, 32.8%; best (Kin 10%, Kout 100%) 41.2 / 27.8 / 23.9%, 35.5%.
# S3-FIFO with a LIRS-like refault test (a ghost key goes to main only if its reuse distance,
# in gets, is under half the recency of main's last victim; ghost 2x): 52.3 / 43.6 / 28.4%,
# 45.1%, hit ~1.5x S3-FIFO's (a tick and a timestamp); web07 at most 28.9% over ghost 2-4x
# and factor 0.5-2. It would lead by the rule (+0.6 point on web07), but it was tuned on these
# same traces and exists only as a unit-size prototype: a lead for issue 23, not kept.
KEPT: PolicyName = "s3fifo"


@dataclass(frozen=True, slots=True)
class SimRow:
    """One policy on one trace at one capacity."""

    trace: str
    capacity_pct: float
    capacity: int  # entries
    requests: int
    policy: str  # a PolicyName, or "belady"
    hit_ratio: float
    # (hit_ratio - LRU's) / (Belady's - LRU's); None where Belady is no better than LRU.
    gap_closed: float | None


def capacity_for(keys: Sequence[Hashable], pct: float) -> int:
    """``pct`` percent of the unique keys, rounded, at least 1."""
    return max(1, round(len(set(keys)) * pct / 100))


def _new_cache(policy: PolicyName, capacity: int) -> ByteCache[Hashable, object]:
    if policy == "lru":
        return LruCache(capacity)
    if policy == "sieve":
        return SieveCache(capacity)
    if policy == "s3fifo":
        return S3FifoCache(capacity)
    # Unit sizes: the sketch sized for the entries the cache can hold, as Caffeine sizes it.
    return WTinyLfuCache(capacity, expected_entries=capacity)


def policy_hits(keys: Iterable[Hashable], policy: PolicyName, capacity: int) -> int:
    """The hits of ``policy`` with room for ``capacity`` unit-size entries."""
    cache = _new_cache(policy, capacity)
    get, put = cache.get, cache.put
    hits = 0
    for key in keys:
        if get(key) is None:
            put(key, True, 1)
        else:
            hits += 1
    return hits


def gap_closed(hit_ratio: float, lru: float, belady: float) -> float | None:
    """The share of the LRU-to-Belady gap that ``hit_ratio`` closes."""
    gap = belady - lru
    return None if gap <= 1e-12 else (hit_ratio - lru) / gap


def compare(
    traces: Mapping[str, Sequence[Hashable]],
    *,
    pcts: Sequence[float] = CAPACITY_PCTS,
    policies: Sequence[PolicyName] = CANDIDATES,
) -> list[SimRow]:
    """Rows for LRU, each of ``policies`` and Belady, per trace and capacity."""
    rows: list[SimRow] = []
    for name, keys in traces.items():
        n = len(keys)
        if not n:
            continue
        for pct in pcts:
            capacity = capacity_for(keys, pct)
            lru = policy_hits(keys, "lru", capacity) / n
            best = belady_hits(keys, capacity) / n
            ratios: dict[str, float] = {"lru": lru}
            for policy in policies:
                if policy != "lru":
                    ratios[policy] = policy_hits(keys, policy, capacity) / n
            ratios["belady"] = best
            rows.extend(
                SimRow(name, pct, capacity, n, policy, ratio, gap_closed(ratio, lru, best))
                for policy, ratio in ratios.items()
            )
    return rows


@dataclass(frozen=True, slots=True)
class Standing:
    """A policy by the rule that chooses the kept one (``KEPT``)."""

    policy: str
    worst_at_pct: float  # the smallest gap closed over the traces at the rule's capacity
    mean: float  # the mean gap closed over every trace and capacity


def standings(rows: Iterable[SimRow], *, pct: float = 5.0) -> list[Standing]:
    """The candidates in ``rows``, best first by the rule (worst trace at ``pct``, then the
    mean over all cells); cells where Belady is no better than LRU are left out."""
    worst: dict[str, float] = {}
    gaps: dict[str, list[float]] = {}
    for row in rows:
        if row.policy in ("lru", "belady") or row.gap_closed is None:
            continue
        gaps.setdefault(row.policy, []).append(row.gap_closed)
        if row.capacity_pct == pct:
            worst[row.policy] = min(worst.get(row.policy, math.inf), row.gap_closed)
    ranked = [Standing(p, worst.get(p, math.nan), sum(g) / len(g)) for p, g in gaps.items()]
    return sorted(ranked, key=lambda s: (-s.worst_at_pct, -s.mean))


def format_table(rows: Iterable[SimRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| trace | capacity | policy | hit ratio | gap closed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        gap = "-" if row.gap_closed is None else f"{row.gap_closed:.1%}"
        lines.append(
            f"| {row.trace} | {row.capacity_pct:g}% ({row.capacity}) | {row.policy} "
            f"| {row.hit_ratio:.4f} | {gap} |"
        )
    return "\n".join(lines)


def get_hit_ns(policy: PolicyName, *, entries: int = 10_000, rounds: int = 20) -> float:
    """The CPU time of one ``get`` that hits, in ns: the best of 5 timings of ``rounds``
    passes over every entry of a full cache in random order, less the bare loop's time.

    String keys of API-call length, a full cache, hits spread over all entries (so LRU and
    W-TinyLFU really reorder, and W-TinyLFU's sketch counts every access).
    """
    cache = _new_cache(policy, entries)
    keys = [f"GET /v1/items/{i:08d}?fields=all&tenant=t-{i % 97}" for i in range(entries)]
    for key in keys:
        cache.put(key, key, 1)
    for key in keys:  # a second and third access: W-TinyLFU promotes, S3-FIFO counts
        cache.get(key)
        cache.get(key)
    order = random.Random(23).sample(keys, len(keys)) * rounds
    get = cache.get

    def hits() -> None:
        for key in order:
            get(key)

    def bare() -> None:
        for _key in order:
            pass

    spent = min(timeit.repeat(hits, number=1, repeat=5))
    loop = min(timeit.repeat(bare, number=1, repeat=5))
    if any(cache.peek(key) is None for key in keys):
        raise AssertionError(f"{policy}: a key of the full cache was evicted by gets")
    return (spent - loop) / len(order) * 1e9


def main() -> None:
    """Print the table for the real traces (``../shared/traces``)."""
    from agents.cache.traces import TRACES, trace_keys

    started = time.perf_counter()
    rows = compare({name: trace_keys(name) for name in TRACES})
    sys.stdout.write(format_table(rows) + "\n\n")
    for standing in standings(rows):
        sys.stdout.write(
            f"{standing.policy}: worst at 5% {standing.worst_at_pct:.1%}, "
            f"mean {standing.mean:.1%}\n"
        )
    sys.stdout.write(f"({time.perf_counter() - started:.1f} s)\n\nget() hit, ns:")
    for policy in ("lru", *CANDIDATES):
        sys.stdout.write(f" {policy} {get_hit_ns(policy):.0f}")
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
