"""`callstream bench outage` end to end: a short outage, both variants, one JSON line."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli.test_cli_on_kafka import callstream

pytestmark = pytest.mark.integration

# Short on purpose (the 30 s must-show is test_breaker's; this checks the command and its
# figures): the run without breakers drains its backlog at the retries' backoff, which grows
# with the outage (7 s after a 3 s outage, 74 s after 10 s). At 20/s the breaker still sees
# its minimum calls within a second, and a 1 s wait in open leaves room for half-open rounds
# before recovery.
RATE, BEFORE_S, OUTAGE_S, AFTER_S, WAIT_IN_OPEN_S = 20, 1, 3, 1, 1
REQUESTS = RATE * (BEFORE_S + OUTAGE_S + AFTER_S)
# floor(3 / 1) + 1 half-open rounds of the default 3 probes.
PROBES_BOUND = 12
WINDOW_S = 10  # the default breaker's time window: it opens within it
VARIANTS = ("no_breaker", "breaker")
FIGURES = {
    "requests",
    "provider_calls_during_outage",
    "provider_calls_by_status_during_outage",
    "seconds_to_open",
    "calls_before_open",
    "calls_since_open",
    "probes_bound",
    "half_open_rounds",
    "recovery_to_closed_s",
    "outcomes",
    "backlog_at_recovery",
    "recovery_to_half_drained_s",
    "recovery_to_drained_s",
    "provider_peak_calls_per_s",
    "lost",
}
# Without a deadline a request waits for the breaker; retries may still give up on it.
ENDS = {"ok", "dead_letter/retries_exhausted", "dead_letter/retry_budget_exceeded"}


@pytest.mark.slow
def test_bench_outage_prints_figures(kafka_bootstrap):
    result = callstream(
        *("bench", "outage", "--rate", str(RATE), "--before-s", str(BEFORE_S)),
        *("--outage-s", str(OUTAGE_S), "--after-s", str(AFTER_S)),
        *("--wait-in-open-s", str(WAIT_IN_OPEN_S), "--bootstrap", kafka_bootstrap, "--json"),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "since open" in result.stdout  # the rich table came first
    report = json.loads(result.stdout.strip().splitlines()[-1])["outage"]
    assert (report["outage_s"], report["rate"]) == (OUTAGE_S, RATE)
    assert tuple(report["variants"]) == VARIANTS
    for name, figures in report["variants"].items():
        assert set(figures) == FIGURES, name
        assert figures["requests"] == REQUESTS, name
        assert figures["lost"] == 0, name
        assert sum(figures["outcomes"].values()) == REQUESTS, name
        assert set(figures["outcomes"]) <= ENDS, name
        assert figures["recovery_to_drained_s"] is not None, name
        by_status = figures["provider_calls_by_status_during_outage"]
        assert by_status.get("503", 0) == figures["provider_calls_during_outage"] > 0, name
    without, with_breaker = (report["variants"][name] for name in VARIANTS)
    print(f"\nwithout breakers: {without}\nwith breakers: {with_breaker}")

    assert without["seconds_to_open"] is None and without["probes_bound"] is None
    assert 0 < with_breaker["seconds_to_open"] <= WINDOW_S
    assert with_breaker["probes_bound"] == PROBES_BOUND
    assert with_breaker["half_open_rounds"] >= 1
    assert with_breaker["recovery_to_closed_s"] is not None
    assert (
        with_breaker["calls_before_open"] + with_breaker["calls_since_open"]
        == with_breaker["provider_calls_during_outage"]
    )
    assert with_breaker["provider_calls_during_outage"] < without["provider_calls_during_outage"]
    assert with_breaker["outcomes"].get("ok", 0) >= without["outcomes"].get("ok", 0)

    goal = report["goal"]
    assert goal["calls_counted_from"] == "breaker_open"
    assert goal["lost"] == 0
    assert goal["calls_during_outage_le_probes"] == (
        with_breaker["calls_since_open"] <= PROBES_BOUND
    )
    assert goal["met"] == goal["calls_during_outage_le_probes"]  # nothing was lost
    assert goal["met"]
