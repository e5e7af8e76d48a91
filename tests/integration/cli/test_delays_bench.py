"""`callstream bench delays` on the session broker: both designs fire every key exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIGURES = {
    "requests",
    "schedule_cpu_ms",
    "fire_cpu_ms",
    "cycle_cpu_ms",
    "broker_cpu_ms",
    "records_per_request",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "lateness_max_ms",
    "restore_s",
    "restore_records",
    "pending_at_restore",
    "left_pending",
    "extra_topics",
    "extra_partitions",
    "lost",
    "duplicates",
    "strays",
}


def test_bench_delays_fires_every_key_once_in_both_designs(kafka_bootstrap):
    result = subprocess.run(
        [
            *(sys.executable, "-m", "streams", "bench", "delays"),
            *("-n", "200", "--warm-up", "0", "--bootstrap", kafka_bootstrap, "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "topics/table" in result.stdout  # the rich table came first
    figures = json.loads(result.stdout.strip().splitlines()[-1])["delays"]
    table, topics = figures["timer_table"], figures["delay_topics"]
    assert set(table) == FIGURES | {"tick_ms"}
    assert set(topics) == FIGURES | {"tiers_s"}
    for variant in (table, topics):
        assert variant["requests"] == 400  # two rounds of 200
        assert (variant["lost"], variant["duplicates"], variant["strays"]) == (0, 0, 0)
        assert variant["pending_at_restore"] == 200
        assert variant["restore_s"] > 0
        assert variant["schedule_cpu_ms"] > 0 and variant["cycle_cpu_ms"] > 0
        assert variant["lateness_p50_ms"] >= 0
        assert variant["lateness_p50_ms"] <= variant["lateness_p99_ms"]
        # A broker given with --bootstrap is not ours: its CPU is not measured.
        assert variant["broker_cpu_ms"] is None
    # A put and a tombstone per request, and a full replay of the changelog.
    assert table["records_per_request"] == 2.0
    assert table["restore_records"] >= 200
    assert table["left_pending"] == 0
    assert (table["extra_topics"], table["extra_partitions"]) == (1, 6)
    # Into a tier, at least one hop, then out to the requests topic.
    assert topics["records_per_request"] >= 2.0
    assert (topics["extra_topics"], topics["extra_partitions"]) == (4, 24)
