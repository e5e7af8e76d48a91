"""`callstream bench retries` end to end: three variants on the session broker, one JSON line."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli.test_cli_on_kafka import callstream

pytestmark = pytest.mark.integration

REQUESTS = 300
VARIANTS = ("none", "immediate", "callstream")


@pytest.mark.slow
def test_bench_retries_prints_figures(kafka_bootstrap):
    result = callstream(
        "bench",
        "retries",
        "-n",
        str(REQUESTS),
        "--bootstrap",
        kafka_bootstrap,
        "--json",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])["retries"]
    assert (report["failure_rate"], report["requests"]) == (0.3, REQUESTS)
    assert tuple(report["variants"]) == VARIANTS
    goal = report["goal"]
    assert (goal["success_rate"], goal["amplification"]) == (0.999, 1.5)
    assert goal["met"] == (
        report["variants"]["callstream"]["success_rate"] >= 0.999
        and report["variants"]["callstream"]["amplification"] <= 1.5
    )
    for name, figures in report["variants"].items():
        assert sum(figures["outcomes"].values()) == REQUESTS, name
        ok_share = figures["outcomes"].get("ok", 0) / REQUESTS
        assert figures["success_rate"] == pytest.approx(ok_share, abs=1e-4)  # printed rounded
        assert figures["provider_calls"] >= REQUESTS, name  # every request called at least once
        assert figures["amplification"] == pytest.approx(
            figures["provider_calls"] / REQUESTS, abs=0.001
        )
        assert 0 < figures["p50_ms"] <= figures["p99_ms"], name
        assert sum(figures["ok_attempts"].values()) == figures["outcomes"].get("ok", 0)
        assert sum(figures["dead_letter_attempts"].values()) == REQUESTS - sum(
            figures["ok_attempts"].values()
        )
        # 30% of calls fail: 300 requests leave no doubt about the drawn rate (3 sd is ~0.08).
        assert 0.15 < figures["provider_failure_rate"] < 0.45, name
    none, immediate, ours = (report["variants"][name] for name in VARIANTS)
    # Without retries each request is one call, and about 30% of them end in a dead letter
    # at the retry stage; every failure was transient, so nothing else ends them.
    assert none["amplification"] == 1.0
    assert set(none["ok_attempts"]) == {"1"}
    assert 0.5 < none["success_rate"] < 0.9
    assert set(none["outcomes"]) == {"ok", "dead_letter/retries_exhausted"}
    assert set(none["dead_letter_attempts"]) == {"1"}
    # Retrying recovers nearly all of them, at the cost of more calls.
    for retried in (immediate, ours):
        assert retried["success_rate"] > none["success_rate"]
        assert retried["success_rate"] >= 0.98
        assert 1.2 < retried["amplification"] < 1.8
        assert max(int(n) for n in retried["ok_attempts"]) > 1
    # Backoff and Retry-After cost time that immediate retries do not take.
    assert ours["p99_ms"] > immediate["p99_ms"]
