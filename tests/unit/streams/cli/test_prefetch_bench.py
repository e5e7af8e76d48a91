"""The pure parts of the prefetch benchmark: options and their errors, the portion and its
compression, the fake's limit, metrics, rows and ratios, the table; and the timed replay,
against a stand-in client."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from typing import Any

import pytest
from rich.console import Console

import streams.cli.dev.cache_bench as cache_bench
import streams.cli.dev.prefetch_bench as prefetch_bench
from schemas.models import RequestEvent, ResultEvent, ResultStatus
from streams.__main__ import main
from streams.cli.dev.prefetch_bench import (
    PrefetchPlan,
    RunFigures,
    agent_cpu,
    build_row,
    check_plan,
    duplicates,
    extra_calls_pct,
    metric_by_label,
    parse_variants,
    parse_window,
    peak,
    portion,
    prefetch_traces,
    print_prefetch,
    provider_limit,
    ratio,
    schedule,
    simulated,
    timed_replay,
    ttl_call_times,
)

REQUIRED = {
    "trace",
    "variant",
    "hit_ratio",
    "extra_calls_pct",
    "precision",
    "wasted_calls",
    "p99_ms",
    "violations",
    "prefetches_issued",
    "prefetches_skipped",
    "provider_calls",
    "p50_ms",
    "agent_cpu_pct",
    "agent_cpu_us_per_event",
}


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (None, ("nasa", "apache")),
        (["apache"], ("apache",)),
        (["apache, nasa"], ("nasa", "apache")),  # the report's order, whatever the options'
        (["nasa", "nasa"], ("nasa",)),
    ],
)
def test_traces_from_repeated_options_and_comma_lists(values, expected):
    assert prefetch_traces(values) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("web07", "'web07' has no timestamps; known: nasa, apache"),
        ("wiki", "'wiki' is not a trace; known: nasa, apache"),
    ],
)
def test_a_trace_without_timestamps_or_unknown_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        prefetch_traces([f"nasa,{value}"])


def test_variants_in_report_order_and_unknown_ones_named():
    assert parse_variants(None) == ("ttl", "rule", "model")
    assert parse_variants(["model,ttl"]) == ("ttl", "model")
    with pytest.raises(ValueError, match=r"unknown variant 'lru'; known: ttl, rule, model"):
        parse_variants(["rule", "lru"])


def test_the_rebalance_window_is_two_ordered_shares_of_the_replay():
    assert parse_window("0.5,0.85") == (0.5, 0.85)
    assert parse_window("0,1") == (0.0, 1.0)
    for bad in ("0.5", "a,b", "0.9,0.5", "0.2,1.5", "-0.1,0.5"):
        with pytest.raises(ValueError, match=r"START,STOP"):
            parse_window(bad)
    assert PrefetchPlan().rebalance_window == (0.5, 0.85)


def test_a_bad_rebalance_window_is_one_line_and_exit_2(capsys):
    assert main(["bench", "prefetch", "--rebalance", "--rebalance-window", "0.9,0.1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_default_plan_compresses_ttl_and_lead_alike_and_passes():
    plan = PrefetchPlan()
    assert (plan.ttl_real_s, plan.lead_real_s) == (5.0, 1.0)
    check_plan(plan)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lead_s": 300.0}, "--lead-s 300 must be shorter than --ttl-s 300"),
        ({"speedup": 600.0}, r"--ttl-s 300 at --speedup 600 is 0.5 s of real time"),
        ({"lead_s": 12.0}, r"--lead-s 12 at --speedup 60 is 0.2 s of real time, under the 0.4"),
    ],
)
def test_a_plan_the_pipelines_latencies_would_decide_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        check_plan(dataclasses.replace(PrefetchPlan(), **changes))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--trace", "web07"], "'web07' has no timestamps"),
        (["--variants", "ttl,lru"], "unknown variant 'lru'"),
        (["--speedup", "0"], "--speedup"),
        (["--lead-s", "12"], "0.2 s of real time"),
        (["--lead-s", "400"], "must be shorter than --ttl-s 300"),
        (["--limit", "0"], "--limit"),
        (["--hours", "0"], "--hours"),
    ],
)
def test_a_bad_option_is_one_line_before_anything_starts(argv, expected, capsys, monkeypatch):
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may start for a bad option")

    monkeypatch.setattr(prefetch_bench, "measure_prefetch", never)
    assert main(["bench", "prefetch", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: "), err
    assert err.count("\n") == 1, err
    assert expected in err


# -- the trace, offline --------------------------------------------------------------------

ROWS = [(1000.0, "/a"), (1100.0, "/b"), (1200.0, "/a"), (4599.0, "/c"), (4600.0, "/a")]


def test_a_portion_is_the_first_hours_then_the_first_requests():
    assert portion(ROWS, hours=1.0, limit=None) == ROWS[:4]  # 3599 s after the first: in
    assert portion(ROWS, hours=1.0, limit=2) == ROWS[:2]
    assert portion(ROWS, hours=None, limit=None) == ROWS
    assert portion([], hours=1.0, limit=None) == []


def test_the_schedule_divides_trace_time_by_the_speedup():
    assert schedule(ROWS, 100.0) == [0.0, 1.0, 2.0, 35.99, 36.0]
    assert schedule(ROWS[:1], 60.0) == [0.0]
    assert schedule([], 60.0) == []


def test_ttl_only_calls_are_the_requests_without_a_fresh_entry():
    rows = [(0.0, "a"), (10.0, "a"), (300.0, "a"), (301.0, "b"), (599.0, "a"), (600.0, "a")]
    # "a" fills at 0 (fresh until 300: 300 is a miss), at 300 (until 600) and at 600.
    assert ttl_call_times(rows, 300.0) == [0.0, 300.0, 301.0, 600.0]


def test_the_peak_counts_half_open_windows():
    times = [0.0, 0.5, 0.9, 1.0, 1.2, 5.0]
    assert peak(times, 1.0) == 4  # (0.2, 1.2]: 0.5, 0.9, 1.0, 1.2
    assert peak(times, 0.1) == 1
    assert peak([], 1.0) == 0


def test_the_fakes_limit_is_the_ttl_calls_peak_per_real_second_and_fifth():
    # 60x: a real second is 60 trace seconds, the burst window 12.
    rows = [(float(at), f"k{at}") for at in (0, 1, 2, 3, 30, 59, 120)]
    assert provider_limit(rows, ttl_s=300.0, speedup=60.0) == (6, 4)
    assert provider_limit([(0.0, "a"), (1.0, "a")], ttl_s=300.0, speedup=60.0) == (1, 1)


def test_the_simulator_judges_the_same_portion():
    rows = [(float(at), "hot") for at in range(0, 3000, 200)]
    sim = simulated("nasa", rows, 300.0)
    assert set(sim) == {"ttl", "rule", "model"}
    assert sim["ttl"]["extra_calls_pct"] == 0.0 and sim["ttl"]["precision"] is None
    assert sim["rule"]["hit_ratio"] >= sim["ttl"]["hit_ratio"]


# -- figures and rows ----------------------------------------------------------------------

WORKER_PAGE = """\
# TYPE callstream_prefetch_calls_total counter
callstream_prefetch_calls_total{provider="fake",result="refreshed"} 30.0
callstream_prefetch_calls_total{provider="fake",result="not_modified"} 10.0
callstream_prefetch_calls_total{provider="other",result="refreshed"} 2.0
# TYPE callstream_prefetch_used_total counter
callstream_prefetch_used_total{provider="fake"} 25.0
# TYPE callstream_prefetch_used_created gauge
callstream_prefetch_used_created{provider="fake"} 1.7e9
"""


def test_counters_summed_by_a_label_or_over_all():
    assert metric_by_label(WORKER_PAGE, "callstream_prefetch_calls_total", "result") == {
        "refreshed": 32,
        "not_modified": 10,
    }
    assert metric_by_label(WORKER_PAGE, "callstream_prefetch_used_total") == {"": 25}
    assert metric_by_label(WORKER_PAGE, "callstream_prefetch_skipped_total", "reason") == {}
    assert metric_by_label("", "callstream_prefetch_used_total") == {}


def test_ratios_and_extra_calls():
    assert ratio(1, 3) == 0.3333
    assert ratio(5, 0) is None
    assert extra_calls_pct(120, 100) == 20.0
    assert extra_calls_pct(90, 100) == -10.0
    assert extra_calls_pct(90, None) is None
    assert extra_calls_pct(90, 0) is None


def test_duplicates_are_repeats_of_one_key_and_expiry():
    assert duplicates([("a", 1), ("b", 1), ("a", 2)]) == 0
    assert duplicates([("a", 1), ("a", 1), ("a", 1), ("b", 2)]) == 2
    assert duplicates([]) == 0


def _figures(**changes: Any) -> RunFigures:
    base = RunFigures(
        requests=1000,
        hits=450,
        coalesced=10,
        failed=0,
        p50_ms=14.0,
        p99_ms=40.0,
        provider_calls=600,
        violations=0,
        provider_peak_1s=25,
        prefetches=120,
        duplicate_prefetches=0,
        prefetch_calls={"refreshed": 80, "not_modified": 20},
        prefetch_skipped={"quota": 15, "budget": 5},
        prefetch_used=60,
        decisions={"refresh": 120, "skip": 200},
        access_events={"hit": 1200, "fill": 500, "prefetch": 300},
        ticks=40,
        outcomes={"l1": 450, "coalesced": 10, "call": 440, "revalidated": 100},
        seconds=100.0,
        agent_cpu_s=5.0,
        agent_idle_cpu_share=0.01,
        worker_cpu_s=2.0,
    )
    return dataclasses.replace(base, **changes)


def test_the_agents_cpu_is_per_second_and_per_event_net_of_idle():
    cpu = agent_cpu(_figures())
    assert cpu["agent_cpu_pct"] == 5.0
    assert cpu["agent_idle_cpu_pct"] == 1.0
    assert cpu["agent_cpu_us_per_event"] == 2000.0  # (5 s - 1 s idle) / 2000 events
    assert set(agent_cpu(_figures(agent_cpu_s=None)).values()) == {None}
    assert agent_cpu(_figures(access_events={}))["agent_cpu_us_per_event"] is None


def test_a_row_judges_the_variant_against_the_ttl_run():
    base = _figures(hits=350, provider_calls=500, prefetches=0, prefetch_calls={}, prefetch_used=0)
    row = build_row(
        trace="nasa",
        variant="rule",
        run=_figures(),
        base=base,
        plan=PrefetchPlan(),
        limit=(30, 8),
        sim={"hit_ratio": 0.46, "extra_calls_pct": 21.0, "precision": 0.6},
    )
    assert set(row) >= REQUIRED
    assert (row["trace"], row["variant"], row["requests"]) == ("nasa", "rule", 1000)
    assert (row["hit_ratio"], row["coalesced_ratio"]) == (0.45, 0.01)
    assert row["extra_calls_pct"] == 20.0
    assert (row["prefetch_calls"], row["prefetch_used"]) == (100, 60)
    assert (row["precision"], row["wasted_calls"]) == (0.6, 40)
    assert row["p99_vs_ttl_pct"] == 0.0
    assert (row["limit_per_s"], row["limit_burst"]) == (30, 8)
    assert (row["ttl_real_s"], row["lead_real_s"]) == (5.0, 1.0)
    assert row["worker_cpu_ms_per_request"] == 2.0
    assert row["prefetches_skipped"] == {"budget": 5, "quota": 15}
    assert (row["revalidated_ratio"], row["agent_ticks"]) == (0.1, 40)
    assert row["access_events"] == {"fill": 500, "hit": 1200, "prefetch": 300}
    assert "rebalance_prefetch_ratio" not in row
    assert json.loads(json.dumps({"prefetch": [row]}))["prefetch"][0] == row


def test_without_a_ttl_run_or_a_prefetch_the_ratios_are_none():
    row = build_row(
        trace="apache",
        variant="ttl",
        run=_figures(prefetch_calls={}, prefetch_used=0, prefetches=0),
        base=None,
        plan=PrefetchPlan(),
        limit=(1, 1),
    )
    assert (row["extra_calls_pct"], row["precision"], row["wasted_calls"]) == (None, None, 0)
    assert row["sim"] == {}


def test_a_rebalanced_run_gives_the_prefetch_ratio_and_its_repeats():
    second = {"ready_after_s": 2.5, "prefetches": 12}
    row = build_row(
        trace="nasa",
        variant="model",
        run=_figures(prefetches=200),
        base=None,
        plan=PrefetchPlan(rebalance=True),
        limit=(30, 8),
        rebalanced=_figures(prefetches=210, duplicate_prefetches=3, second=second),
    )
    assert row["rebalance_prefetch_ratio"] == 1.05
    assert row["rebalance"]["prefetches_issued"] == 210
    assert row["rebalance"]["duplicate_prefetches"] == 3
    assert row["rebalance"]["second_prefetcher"] == second


def test_the_table_fits_80_columns_and_reports_the_rebalance():
    base = _figures(
        provider_calls=500, prefetch_calls={}, prefetch_used=0, prefetches=0, agent_cpu_s=None
    )
    plan = PrefetchPlan()
    rows = [
        build_row(trace="nasa", variant="ttl", run=base, base=base, plan=plan, limit=(1, 1)),
        build_row(
            trace="apache",
            variant="model",
            run=_figures(),
            base=base,
            plan=plan,
            limit=(1, 1),
            sim={"hit_ratio": 0.4567, "extra_calls_pct": 123.4},
            rebalanced=_figures(prefetches=118),
        ),
    ]
    out = io.StringIO()
    print_prefetch(Console(file=out, width=80), rows)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "45.0/45.7" in text and "+20%/+123%" in text
    assert "apache model: 118 prefetches with a rebalance, 120 without (ratio 0.983)" in text
    print_prefetch(Console(file=io.StringIO()), [])  # no rows: nothing to print, no error


# -- the timed replay ----------------------------------------------------------------------


class _Worker:
    name = "worker"
    log_path = "worker.log"

    def alive(self) -> bool:
        return True


def _result(request_id: str) -> ResultEvent:
    return ResultEvent(
        request_id=request_id,
        tenant="default",
        provider="fake",
        operation="get_cached_item",
        status=ResultStatus.CACHED,
        http_status=200,
        cache_tier="l1",
    )


class _AnsweringClient:
    """Stands in for CallstreamClient: answers each published request soon and records each
    batch published."""

    batches: list[list[str]] = []

    def __init__(self, settings: Any, *args: Any, **kwargs: Any) -> None:
        self.on_result: Any = None

    async def __aenter__(self) -> _AnsweringClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish_many(self, requests: list[RequestEvent]) -> list[str]:
        _AnsweringClient.batches.append([request.params["item_id"] for request in requests])
        loop = asyncio.get_running_loop()
        for request in requests:
            loop.call_later(0.001, self.on_result, _result(request.request_id))
        return [request.request_id for request in requests]


def test_the_replay_publishes_in_order_together_what_is_due_together(monkeypatch):
    _AnsweringClient.batches = []

    def read_outcomes(client, on_result, on_dead_letter):
        client.on_result = on_result
        return []

    # The replay's client and reader are cache_bench's (counted_replay, shared by both benches).
    monkeypatch.setattr(cache_bench, "CallstreamClient", _AnsweringClient)
    monkeypatch.setattr(cache_bench, "read_outcomes", read_outcomes)
    timed = [(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.02, "d"), (0.04, "e"), (0.04, "f")]
    sides: list[float] = []

    async def side(duration: float) -> None:
        sides.append(duration)

    progress: list[int] = []
    tally = asyncio.run(
        timed_replay(None, timed, _Worker(), progress.append, side=side)  # type: ignore[arg-type]
    )
    assert tally.done == 6 and tally.outstanding == 0
    assert tally.kinds == {"l1": 6}
    flat = [item for batch in _AnsweringClient.batches for item in batch]
    assert flat == ["a", "b", "c", "d", "e", "f"]
    assert _AnsweringClient.batches[0] == ["a", "b", "c"]  # due at once: one publish
    assert sides == [0.04]  # the side task got the replay's length and was awaited
    assert progress[-1] == 6
