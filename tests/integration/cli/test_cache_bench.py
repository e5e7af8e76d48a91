"""`callstream bench cache` end to end on a few hundred requests of one trace: one JSON line
whose hit ratios are bounded by Belady's optimum and whose provider calls are the misses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.cli.test_cli_on_kafka import callstream

pytestmark = pytest.mark.integration

TRACE, LIMIT, PCT, CALIBRATION = "nasa", 400, 5, 100
REQUIRED = {
    "trace",
    "capacity_pct",
    "lru_hit_ratio",
    "kept_hit_ratio",
    "belady_hit_ratio",
    "provider_calls",
    "p50_ms",
    "p99_ms",
    "hit_cpu_ms",
    "call_cpu_ms",
}
# The worker sees the requests nearly in trace order (a window of 32 in flight), so no policy
# beats the optimum on the trace's order by more than a few reorderings.
TOLERANCE = 0.01
L2_RACE_SLACK = 3


def _bench(kafka_bootstrap: str, *extra: str) -> dict[str, Any]:
    result = callstream(
        *("bench", "cache", "--trace", TRACE, "--capacity-pct", str(PCT)),
        *("--limit", str(LIMIT), "--calibration", str(CALIBRATION)),
        *("--bootstrap", kafka_bootstrap, "--json", *extra),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "belady" in result.stderr  # the table, with the progress, goes to stderr
    (line,) = result.stdout.strip().splitlines()  # --json: only the JSON line on stdout
    (row,) = json.loads(line)["cache"]
    print(f"\nbench cache {TRACE} {LIMIT} requests at {PCT}%: {json.dumps(row)}")
    return dict(row)


def _misses(run: dict[str, Any]) -> int:
    hits = run["hits"]
    return int(run["requests"] - hits["l1"] - hits["l2"] - hits["coalesced"])


@pytest.mark.slow
def test_bench_cache_replays_a_trace_through_the_pipeline(kafka_bootstrap):
    row = _bench(kafka_bootstrap)
    assert set(row) >= REQUIRED
    assert (row["trace"], row["capacity_pct"], row["requests"], row["l2"]) == (
        TRACE,
        PCT,
        LIMIT,
        False,
    )
    assert row["capacity_entries"] == max(1, round(row["unique_keys"] * PCT / 100))
    assert row["l1_max_bytes"] == row["capacity_entries"] * row["entry_bytes"]
    for name in ("lru_hit_ratio", "kept_hit_ratio", "belady_hit_ratio"):
        assert 0 <= row[name] <= 1, name
    assert row["belady_hit_ratio"] > 0
    assert row["lru_hit_ratio"] <= row["belady_hit_ratio"] + TOLERANCE
    assert row["kept_hit_ratio"] <= row["belady_hit_ratio"] + TOLERANCE
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["hit_cpu_ms"] > 0 and row["call_cpu_ms"] > 0
    assert row["calibration"]["hit_share"] == 1.0  # the calibration's second pass all hit L1
    for policy, run in row["policies"].items():
        assert run["requests"] == LIMIT, policy
        assert run["failed"] == 0, (policy, run["outcomes"])
        assert run["hits"]["l2"] == 0, policy  # no L2 by default
        # Every request the cache did not answer made one call, and nothing else did.
        assert run["provider_calls"] == run["calls"] == _misses(run), (policy, run)
    assert row["provider_calls"] == row["policies"][row["kept"]]["provider_calls"]


@pytest.mark.slow
def test_with_l2_the_l1_misses_of_known_keys_are_l2_hits(kafka_bootstrap):
    row = _bench(kafka_bootstrap, "--l2")
    assert row["l2"] is True
    for policy, run in row["policies"].items():
        assert run["failed"] == 0, (policy, run["outcomes"])
        assert run["provider_calls"] == run["calls"] == _misses(run), (policy, run)
        assert run["hits"]["l2"] > 0, policy
        # L2 holds every answer: a key is called once, or waited for. Its write runs in the
        # background, so an entry that L1 evicts before that write ran (in the same turn of
        # the event loop) may be called again: a few at most.
        assert run["provider_calls"] <= row["unique_keys"] + L2_RACE_SLACK, policy
