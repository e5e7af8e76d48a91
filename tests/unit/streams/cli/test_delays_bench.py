"""The pure parts of the delays benchmark: tier routing, request plans, the report."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from streams.cli.dev.delays_bench import _Plan, _quantile, _Tiers, print_delays


@pytest.mark.parametrize(
    ("remaining_ms", "tier"),
    [
        (300, "1s"),  # under the smallest tier: waits there until due
        (1_000, "1s"),
        (4_999, "1s"),
        (5_000, "5s"),
        (29_000, "5s"),
        (45_000, "30s"),
        (3_600_000, "300s"),
    ],
)
def test_a_request_waits_in_the_largest_tier_that_fits(remaining_ms, tier):
    tiers = _Tiers("p.", "p.requests", (300, 1, 30, 5))
    assert tiers.topic_for(remaining_ms) == f"p.delay.{tier}"


def test_a_plan_spreads_delays_over_one_to_five_seconds_in_random_order():
    plan = _Plan("x", 1000, 6, 600)
    delays = [delay for _, _, delay in plan.requests]
    assert min(delays) == 1_000 and max(delays) < 5_000
    assert delays != sorted(delays)
    assert len(plan.keys) == 1000
    assert {partition for _, partition, _ in plan.requests} == set(range(6))
    assert len(plan.payload) == 600


def test_quantiles_of_nothing_are_unknown():
    assert _quantile([], 0.5) is None
    assert _quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0


def test_the_report_shows_both_designs_and_their_ratio():
    common = {"requests": 10, "lost": 0, "duplicates": 0, "broker_cpu_ms": None}
    figures = {
        "timer_table": {**common, "tick_ms": 10.0, "fire_cpu_ms": 0.2},
        "delay_topics": {**common, "tiers_s": [1, 5], "fire_cpu_ms": 0.1},
    }
    out = io.StringIO()
    print_delays(Console(file=out, width=120), figures)
    text = out.getvalue()
    assert "fire CPU ms/req" in text and "0.50" in text
    assert "2 rounds of 5 requests" in text and "tiers 1, 5 s" in text
