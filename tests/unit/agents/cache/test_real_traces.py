"""The real traces of issue 23 (``../shared/traces``): the loaders reproduce the parse
statistics of ENVIRONMENT.md, and the kept L1 policy's share of the LRU-to-Belady gap at 5%
of the unique keys holds what was measured."""

from __future__ import annotations

import itertools

import pytest

from agents.cache.belady import belady_hits
from agents.cache.simulate import (
    CANDIDATES,
    KEPT,
    capacity_for,
    compare,
    gap_closed,
    policy_hits,
    standings,
)
from agents.cache.traces import (
    APACHE_TRACE,
    NASA_TRACE,
    TRACES,
    WEB07_TRACE,
    read_apache,
    read_cache2k,
    read_nasa,
    trace_keys,
)

pytestmark = pytest.mark.skipif(
    not all(path.exists() for path in (NASA_TRACE, APACHE_TRACE, WEB07_TRACE)),
    reason="needs ../shared/traces",
)

# Measured with agents.cache.simulate (deterministic: S3-FIFO hashes nothing): the gap
# closed at 5%, less a point of slack so an equivalent refactoring still passes.
KEPT_AT_5_PCT = {"nasa": 0.504, "apache": 0.308, "web07": 0.278}


@pytest.fixture(scope="module")
def keys() -> dict[str, list[str | int]]:
    return {name: trace_keys(name) for name in TRACES}


def test_the_loaders_reproduce_the_parse_statistics(keys):
    shape = {name: (len(k), len(set(k))) for name, k in keys.items()}
    assert shape == {"nasa": (30_873, 2_088), "apache": (9_952, 1_486), "web07": (76_118, 20_484)}
    nasa = [r.time_s for r in read_nasa(speedup=60.0) if r.time_s is not None]
    assert len(nasa) == 30_873 and nasa[0] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(nasa))
    assert 12.8 * 60 < nasa[-1] < 12.9 * 60  # 12.9 h in 12.9 min
    apache = [r.time_s for r in read_apache() if r.time_s is not None]
    assert len(apache) == 9_952 and min(apache) == 0.0
    assert 82 * 3600 < max(apache) < 84 * 3600
    web07 = list(read_cache2k())
    assert web07[:3] == [(None, 0), (None, 1), (None, 2)]
    with pytest.raises(ValueError, match="speedup"):
        next(read_nasa(speedup=0))


@pytest.mark.parametrize("trace", list(KEPT_AT_5_PCT))
def test_the_kept_policy_closes_what_was_measured_at_5_pct(keys, trace):
    sequence = keys[trace]
    capacity = capacity_for(sequence, 5.0)
    lru = policy_hits(sequence, "lru", capacity)
    best = belady_hits(sequence, capacity)
    kept = policy_hits(sequence, KEPT, capacity)
    gap = gap_closed(kept / len(sequence), lru / len(sequence), best / len(sequence))
    assert gap is not None
    assert gap >= KEPT_AT_5_PCT[trace] - 0.01


def test_the_kept_policy_wins_by_the_rule(keys):
    rows = compare(keys, pcts=(5.0,), policies=CANDIDATES)
    assert standings(rows)[0].policy == KEPT


@pytest.mark.xfail(
    reason="issue 23's goal, not reached by any candidate (nor LIRS, CLOCK-Pro, 2Q: see KEPT): "
    "at 5% S3-FIFO closes 27.8% on web07 and 30.8% on the Apache log (50.4% on NASA)",
    strict=True,
)
def test_the_goal_40_pct_of_the_gap_on_every_trace(keys):
    for trace in KEPT_AT_5_PCT:
        sequence = keys[trace]
        capacity = capacity_for(sequence, 5.0)
        n = len(sequence)
        gap = gap_closed(
            policy_hits(sequence, KEPT, capacity) / n,
            policy_hits(sequence, "lru", capacity) / n,
            belady_hits(sequence, capacity) / n,
        )
        assert gap is not None and gap >= 0.40, trace
