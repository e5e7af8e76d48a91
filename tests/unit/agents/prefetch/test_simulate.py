"""The replay on hand-made traces with known answers, the rows it gives, the goal, and the
cost figures' shape."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from agents.prefetch.model import LogitConfig
from agents.prefetch.simulate import (
    ModelStrategy,
    NoRefresh,
    PrefetchRow,
    Replay,
    RuleStrategy,
    compare,
    cpu_costs_us,
    format_table,
    meets_goal,
    replay,
    variant_costs_us,
)

T0 = 1_700_000_000.0
TTL = 300.0


Requests = list[tuple[float, Hashable]]


def every(period_s: float, count: int, key: str = "k", start: float = T0) -> Requests:
    return [(start + period_s * i, key) for i in range(count)]


def test_a_key_read_every_100_s():
    requests = every(100, 30)  # 0 .. 2,900 s
    # TTL only: a miss every 300 s (at 0, 300, ..., 2,700), two hits after each.
    assert replay(requests, NoRefresh(), ttl_s=TTL) == Replay(30, 20, 10, 0, 0, 9)
    # The rule refreshes at every expiry up to the last request (300 .. 2,700), each used.
    ruled = replay(requests, RuleStrategy(), ttl_s=TTL)
    assert ruled == Replay(30, 29, 10, 9, 9, 9)
    assert ruled.wasted == 0


def test_a_key_read_once_is_never_refreshed_by_the_rule():
    requests = [(T0, "once"), *every(1_000, 5, key="other", start=T0 + 1)]
    assert replay(requests, RuleStrategy(), ttl_s=TTL).refreshes == 0


def test_a_burst_then_silence_wastes_one_refresh():
    requests = [(T0, "k"), (T0 + 10, "k"), (T0 + 5_000, "k")]
    done = replay(requests, RuleStrategy(), ttl_s=TTL)
    # Refreshed at 300 (read since the fetch), unused; not again at 600 (no read since).
    assert done == Replay(3, 1, 3, 1, 0, 2)
    assert done.wasted == 1


def test_a_request_at_the_expiry_instant_finds_the_refresh():
    requests = [(T0, "k"), (T0 + 1, "k"), (T0 + TTL, "k")]
    done = replay(requests, RuleStrategy(), ttl_s=TTL)
    assert (done.hits, done.used, done.calls) == (2, 1, 2)
    assert replay(requests, NoRefresh(), ttl_s=TTL).hits == 1  # a miss without the refresh


def test_the_model_learns_one_label_per_closed_decision():
    requests = every(100, 60)
    strategy = ModelStrategy(LogitConfig(), window_s=TTL)
    done = replay(requests, strategy, ttl_s=TTL)
    # Decisions at 300 .. 5,700; the windows of the last closes after the trace ends.
    assert done.decisions == 19 and strategy.labels == 18
    assert not strategy.pending or all(p.requested for p in strategy.pending.values())
    # Every window held a request: the untrained model (0.5) refreshes nothing at first, then
    # learns to refresh.
    assert done.refreshes == 18 and done.used == 18
    assert strategy.model.bias > 0


def test_the_model_learns_to_stop_refreshing_a_key_that_never_returns():
    # Keys each read twice within a minute, then never: every refresh would be wasted.
    requests = sorted((T0 + 700 * i + dt, f"k{i}") for i in range(300) for dt in (0.0, 30.0))
    done = replay(requests, ModelStrategy(LogitConfig(), window_s=TTL), ttl_s=TTL)
    ruled = replay(requests, RuleStrategy(), ttl_s=TTL)
    assert ruled.refreshes == 299 and ruled.used == 0
    assert done.refreshes < 10  # the first few, while it has no label yet


def rows_for(traces: dict[str, Requests]) -> list[PrefetchRow]:
    return compare(traces, ttl_s=TTL, sweep=(0.9,))


def test_compare_gives_a_row_per_trace_and_variant():
    burst: Requests = [(T0, "x"), (T0 + 10, "x"), (T0 + 5_000, "x")]
    traces = {"a": every(100, 30), "b": burst}
    rows = rows_for(traces)
    assert [(r.trace, r.variant) for r in rows] == [
        (t, v) for t in ("a", "b") for v in ("ttl", "rule", "model", "model@0.9")
    ]
    by = {(r.trace, r.variant): r for r in rows}
    assert by["a", "rule"].precision == 1.0 and by["a", "rule"].extra_calls_pct == 0.0
    assert by["a", "ttl"].precision is None
    assert by["b", "rule"].extra_calls_pct == 50.0  # 3 calls against 2
    assert by["b", "rule"].wasted_calls == 1 and by["b", "rule"].precision == 0.0
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| a | rule | 0.9667 | 10 | +0.0% |" in table


def row(variant: str, hit_ratio: float, extra_pct: float) -> PrefetchRow:
    return PrefetchRow("t", variant, 100, hit_ratio, 100, extra_pct, 0, None, 0, 0, 0.0)


@pytest.mark.parametrize(
    ("hit_ratio", "extra_pct", "met"),
    [
        (0.60, 20.0, True),  # the rule's gain for two thirds of its extra calls
        (0.70, 10.0, True),
        (0.59, 10.0, False),  # less gain
        (0.65, 20.1, False),  # more calls
    ],
)
def test_the_goal(hit_ratio, extra_pct, met):
    rows = [row("ttl", 0.5, 0.0), row("rule", 0.6, 30.0), row("model", hit_ratio, extra_pct)]
    assert meets_goal(rows, "t") is met


def test_cost_figures():
    steps = cpu_costs_us(every(100, 30) + every(37, 80, key="j"))
    assert set(steps) == {"observe", "codec", "rule", "vector", "predict", "learn", "model_codec"}
    assert all(v >= 0.0 for v in steps.values())
    costs = variant_costs_us(steps)
    assert costs["ttl"] == (0.0, 0.0) and costs["rule"][0] == costs["model"][0]
