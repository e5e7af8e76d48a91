"""`callstream bench adaptive` end to end, the must-show of issue 22: a provider declared at
100/s that really allows 50/s and sends no rate-limit headers (429 and Retry-After only). The
adaptive limiter keeps >= 45/s through it and no request fails for a 429."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli.test_cli_on_kafka import callstream

pytestmark = pytest.mark.integration

REAL_PER_S, LOAD_S, WARM_UP_S = 50, 28, 5
# Accepted calls per second over the backlogged span after the warm-up: 90% of the real limit.
MIN_THROUGHPUT_PER_S = 45


@pytest.mark.slow
def test_adaptive_limiter_keeps_45_per_s_of_a_real_50_without_headers(kafka_bootstrap):
    result = callstream(
        *("bench", "adaptive", "--scenario", "fixed", "--phase-s", str(LOAD_S)),
        *("--warm-up-s", str(WARM_UP_S), "--variants", "cubic", "--no-headers"),
        *("--bootstrap", kafka_bootstrap, "--json"),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "429 share" in result.stderr  # the table, with the progress, goes to stderr
    (line,) = result.stdout.strip().splitlines()  # --json: only the JSON line on stdout
    report = json.loads(line)["adaptive"]
    assert report["scenario"] == "fixed"
    assert report["phases"] == [{"real_per_s": REAL_PER_S, "seconds": LOAD_S}]
    assert report["declared"] == {"rate_per_s": 100, "burst": 10}
    assert (report["headers"], report["warm_up_s"], report["kept"]) == (False, WARM_UP_S, "cubic")
    assert tuple(report["variants"]) == ("cubic",)
    cubic = report["variants"]["cubic"]
    print(f"\ncubic against a real {REAL_PER_S}/s declared 100/s: {json.dumps(cubic)}")

    # Every request published got its outcome. The fake counts a call on arrival and its
    # status once answered: calls in flight at either end of the load may be in one only.
    assert cubic["unfinished"] == 0
    assert sum(cubic["outcomes"].values()) == cubic["requests"] > 0
    assert abs(cubic["calls"] - cubic["accepted"] - cubic["throttled"]) <= 10
    assert cubic["throughput_per_s"] >= MIN_THROUGHPUT_PER_S, cubic
    assert cubic["failed"]["rate_limited"] == 0, cubic["outcomes"]
