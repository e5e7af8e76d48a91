"""The pure parts of the cache benchmark: options, item ids, entry sizes, tallies, rows, the
table; and the replay's window, against a stand-in client."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from typing import Any

import pytest
from rich.console import Console

import streams.cli.dev.cache_bench as cache_bench
from agents.cache.belady import belady_hits
from agents.cache.entry import ENTRY_OVERHEAD_BYTES
from providers.fake.provider import FAKE_PROVIDER
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.__main__ import main
from streams.cli.dev.cache_bench import (
    COLD_PREFIX,
    OPERATION,
    CachePlan,
    Calibration,
    RunTally,
    build_row,
    declaration_overrides,
    distinct_ids,
    entry_size,
    item_ids,
    parse_pcts,
    parse_traces,
    percentile,
    print_cache,
    replay,
    result_kind,
    run_figures,
)

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


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (None, ("nasa", "apache", "web07")),
        ([], ("nasa", "apache", "web07")),
        (["web07"], ("web07",)),
        (["web07,nasa"], ("nasa", "web07")),  # the report's order, whatever the options'
        (["apache", "nasa, apache"], ("nasa", "apache")),
    ],
)
def test_traces_from_repeated_options_and_comma_lists(values, expected):
    assert parse_traces(values) == expected


def test_an_unknown_trace_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown trace 'wiki'; known: nasa, apache, web07"):
        parse_traces(["nasa,wiki"])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (None, (1.0, 5.0, 10.0)),
        (["5"], (5.0,)),
        (["10,1", "2.5"], (1.0, 2.5, 10.0)),
        (["5,5", "100"], (5.0, 100.0)),
    ],
)
def test_capacities_from_repeated_options_and_comma_lists(values, expected):
    assert parse_pcts(values) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("five", "'five' is not a number"), ("0", "not a percentage"), ("101", "not a percentage")],
)
def test_a_capacity_that_is_not_a_percentage_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pcts([text])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--trace", "wiki"], "unknown trace 'wiki'"),
        (["--capacity-pct", "1,0"], "0 is not a percentage in (0, 100]"),
        (["--capacity-pct", "x"], "'x' is not a number of percent"),
        (["--limit", "0"], "--limit"),
        (["--window", "0"], "--window"),
    ],
)
def test_a_bad_option_is_one_line_before_anything_starts(argv, expected, capsys, monkeypatch):
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may start for a bad option")

    monkeypatch.setattr(cache_bench, "measure_cache", never)
    assert main(["bench", "cache", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: "), err
    assert err.count("\n") == 1, err
    assert expected in err


# -- ids, declaration, entry size ----------------------------------------------------------


def test_item_ids_are_fixed_width_and_one_per_key():
    ids = item_ids(["/a", 7, "/a", "/b", 7])
    assert ids == ["k000000", "k000001", "k000000", "k000002", "k000001"]
    assert distinct_ids(3, COLD_PREFIX) == ["c000000", "c000001", "c000002"]
    assert {len(item) for item in [*ids, *distinct_ids(1000, COLD_PREFIX)]} == {7}


def test_more_keys_than_the_width_numbers_is_refused(monkeypatch):
    monkeypatch.setattr(cache_bench, "ID_DIGITS", 1)
    assert len(set(item_ids(range(10)))) == 10
    with pytest.raises(ValueError, match="more than 10 unique keys"):
        item_ids(range(11))


def test_the_declaration_caches_the_operation_for_the_ttl_without_stale_windows():
    spec = FAKE_PROVIDER.with_overrides(declaration_overrides(3600))
    cache = spec.operations[OPERATION].cache
    assert cache is not None
    assert (cache.ttl_s, cache.stale_while_revalidate_s, cache.stale_if_error_s) == (3600, 0, 0)
    assert not cache.shared
    assert spec.operations["get_item"] == FAKE_PROVIDER.operations["get_item"]


def _answer(item_id: str, **extra: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"id": item_id, "name": f"Item {item_id}", "version": 1}).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "ETag": '"0123abcd-v1"',
        "Last-Modified": "Wed, 01 Jan 2020 00:01:07 GMT",
        "Date": "Thu, 03 Dec 2026 05:00:00 GMT",  # not kept: not counted
        "Server": "Python/3.11 aiohttp/3.9",
        **extra,
    }
    return headers, body


def test_an_entry_counts_its_body_its_kept_headers_and_the_overhead():
    spec = FAKE_PROVIDER.with_overrides(declaration_overrides(3600))
    headers, body = _answer("k000001")
    kept = ("Content-Type", "ETag", "Last-Modified")
    chars = sum(len(name) + len(headers[name]) for name in kept)
    assert entry_size(spec, 200, headers, body) == len(body) + chars + ENTRY_OVERHEAD_BYTES
    # Fixed-width ids: every entry the same size.
    other_headers, other_body = _answer("k020483")
    assert entry_size(spec, 200, other_headers, other_body) == entry_size(spec, 200, headers, body)


@pytest.mark.parametrize("cache_control", ["no-store", "max-age=60"])
def test_an_answer_not_kept_for_the_ttl_is_refused(cache_control):
    spec = FAKE_PROVIDER.with_overrides(declaration_overrides(3600))
    headers, body = _answer("k000001", **{"Cache-Control": cache_control})
    with pytest.raises(ValueError, match="not kept for 3600 s"):
        entry_size(spec, 200, headers, body)


# -- tallies and figures -------------------------------------------------------------------


def _result(
    request_id: str, status: ResultStatus, tier: str | None = None, **kw: Any
) -> ResultEvent:
    return ResultEvent(
        request_id=request_id,
        tenant="default",
        provider="fake",
        operation=OPERATION,
        status=status,
        cache_tier=tier,
        **kw,
    )


def _letter(request_id: str) -> DeadLetterEvent:
    return DeadLetterEvent(
        request_id=request_id,
        original_raw=b"",
        source_topic="t",
        source_partition=0,
        source_offset=0,
        reason="retries_exhausted",
        error_type="X",
        error_message="",
        first_failure_at_ms=1,
        last_failure_at_ms=1,
        stage="retry",
    )


@pytest.mark.parametrize(
    ("status", "tier", "reason", "kind"),
    [
        (ResultStatus.CACHED, "l1", None, "l1"),
        (ResultStatus.CACHED, "l2", None, "l2"),
        (ResultStatus.CACHED, "coalesced", None, "coalesced"),
        (ResultStatus.STALE, "revalidated", None, "revalidated"),
        (ResultStatus.CACHED, None, None, "cached/no_tier"),
        (ResultStatus.OK, None, None, "call"),
        (ResultStatus.FAILED, None, "timeout", "failed/timeout"),
    ],
)
def test_a_result_is_classified_by_its_status_and_tier(status, tier, reason, kind):
    assert result_kind(_result("a", status, tier, reason=reason)) == kind


def test_the_tally_counts_the_first_outcome_of_each_request_only():
    tally = RunTally()
    for index, request_id in enumerate("abcd"):
        tally.published(request_id, 1.0 + index)
    assert tally.outstanding == 4
    assert tally.add_result(_result("a", ResultStatus.OK), 1.010)
    assert not tally.add_result(_result("a", ResultStatus.OK), 1.020)  # a repeat
    assert not tally.add_result(_result("z", ResultStatus.OK), 1.020)  # not ours
    assert tally.add_result(_result("b", ResultStatus.CACHED, "l1"), 2.002)
    assert tally.add_dead_letter(_letter("c"), 3.5)
    assert tally.outstanding == 1
    assert tally.kinds == {"call": 1, "l1": 1, "dead_letter/retries_exhausted": 1}
    assert tally.latencies_ms["call"] == [pytest.approx(10.0)]
    assert tally.latencies_ms["l1"] == [pytest.approx(2.0)]


def test_percentiles_by_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0


def _tally(kinds: dict[str, int]) -> RunTally:
    tally = RunTally()
    number = 0
    for kind, count in kinds.items():
        for _ in range(count):
            request_id = f"r{number}"
            tally.published(request_id, 0.0)
            status, tier = {
                "call": (ResultStatus.OK, None),
                "failed": (ResultStatus.FAILED, None),
            }.get(kind, (ResultStatus.CACHED, kind))
            tally.add_result(_result(request_id, status, tier, reason="x"), number / 1000)
            number += 1
    return tally


def test_run_figures_count_tiers_calls_and_failures_apart():
    tally = _tally({"l1": 60, "l2": 10, "coalesced": 5, "revalidated": 5, "call": 15, "failed": 5})
    figures = run_figures(tally, provider_calls=20, not_modified=5, seconds=2.0, worker_cpu_s=0.05)
    assert figures["requests"] == 100
    assert (figures["l1_hit_ratio"], figures["l2_hit_ratio"], figures["coalesced_ratio"]) == (
        0.6,
        0.1,
        0.05,
    )
    assert figures["hits"] == {"l1": 60, "l2": 10, "coalesced": 5, "revalidated": 5}
    assert (figures["calls"], figures["provider_calls"], figures["failed"]) == (20, 20, 5)
    assert figures["requests_per_s"] == 50.0
    assert figures["worker_cpu_ms"] == 0.5
    assert figures["p50_ms"] <= figures["p99_ms"]
    assert figures["hit_p50_ms"] is not None and figures["call_p50_ms"] is not None


def _run(l1_hit_ratio: float, calls: int) -> dict[str, Any]:
    return {
        "l1_hit_ratio": l1_hit_ratio,
        "provider_calls": calls,
        "hits": {"l1": 0, "l2": 0, "coalesced": 3, "revalidated": 0},
        "p50_ms": 12.5,
        "p99_ms": 40.0,
    }


def test_a_row_holds_the_required_keys_and_judges_the_kept_policy_against_belady():
    keys = [1, 2, 3, 1, 2, 4, 1, 5, 2, 1] * 20
    plan = CachePlan(("nasa",), (10.0,))
    calibration = Calibration(call_cpu_ms=0.3, hit_cpu_ms=0.1, hit_share=1.0, gauge_entry_bytes=649)
    row = build_row(
        trace="nasa",
        pct=50.0,
        keys=keys,
        entry_bytes=649,
        plan=plan,
        runs={"lru": _run(0.5, 100), plan.kept: _run(0.6, 80)},
        calibration=calibration,
    )
    assert set(row) >= REQUIRED
    capacity = 2  # half of 5 unique keys, rounded to even
    assert (row["capacity_entries"], row["l1_max_bytes"]) == (capacity, capacity * 649)
    assert (row["requests"], row["unique_keys"]) == (200, 5)
    belady = belady_hits(keys, capacity) / len(keys)
    assert row["belady_hit_ratio"] == round(belady, 4)
    assert row["gap_closed"] == pytest.approx((0.6 - 0.5) / (belady - 0.5), abs=1e-4)
    assert 0 <= row["sim_lru_hit_ratio"] <= row["belady_hit_ratio"]
    assert 0 <= row["sim_kept_hit_ratio"] <= row["belady_hit_ratio"]
    assert (row["provider_calls"], row["coalesced"], row["p50_ms"], row["p99_ms"]) == (
        80,
        3,
        12.5,
        40.0,
    )
    assert (row["hit_cpu_ms"], row["call_cpu_ms"]) == (0.1, 0.3)
    assert set(row["policies"]) == {"lru", plan.kept}
    line = json.dumps({"cache": [row]})
    assert json.loads(line)["cache"][0]["trace"] == "nasa"


def test_the_table_fits_80_columns_and_names_the_cpu_per_trace():
    keys = list(range(10)) * 3
    plan = CachePlan(("nasa",))
    row = build_row(
        trace="nasa",
        pct=10.0,
        keys=keys,
        entry_bytes=649,
        plan=plan,
        runs={"lru": _run(0.1, 27), plan.kept: _run(0.2, 24)},
        calibration=Calibration(0.3, 0.1, 1.0, None),
    )
    out = io.StringIO()
    print_cache(Console(file=out, width=80), [row, {**row, "capacity_pct": 5.0}])
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "belady" in text and plan.kept in text
    assert text.count("nasa: the worker's CPU per L1 hit 0.100 ms, per call 0.300 ms") == 1
    print_cache(Console(file=io.StringIO()), [])  # no rows: nothing to print, no error


# -- the replay's window -------------------------------------------------------------------


class _Worker:
    name = "worker"
    log_path = "worker.log"

    def alive(self) -> bool:
        return True


class _AnsweringClient:
    """Stands in for CallstreamClient: answers each published request soon, in order, and
    records what was outstanding at each publish."""

    answered: list[str] = []
    peak: int = 0
    order: list[str] = []

    def __init__(self, settings: Any, *args: Any, **kwargs: Any) -> None:
        self.on_result: Any = None
        self.outstanding = 0

    async def __aenter__(self) -> _AnsweringClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish_many(self, requests: list[RequestEvent]) -> list[str]:
        self.outstanding += len(requests)
        _AnsweringClient.peak = max(_AnsweringClient.peak, self.outstanding)
        loop = asyncio.get_running_loop()
        for request in requests:
            _AnsweringClient.order.append(request.params["item_id"])
            loop.call_later(0.001, self._answer, request)
        return [request.request_id for request in requests]

    def _answer(self, request: RequestEvent) -> None:
        self.outstanding -= 1
        self.on_result(_result(request.request_id, ResultStatus.CACHED, "l1"))


def test_the_replay_publishes_in_trace_order_within_the_window(monkeypatch):
    _AnsweringClient.peak, _AnsweringClient.order = 0, []

    def read_outcomes(client, on_result, on_dead_letter):
        client.on_result = on_result
        return []

    monkeypatch.setattr(cache_bench, "CallstreamClient", _AnsweringClient)
    monkeypatch.setattr(cache_bench, "read_outcomes", read_outcomes)
    ids = item_ids([i % 37 for i in range(500)])
    progress: list[int] = []
    tally = asyncio.run(replay(None, ids, 8, _Worker(), progress.append))  # type: ignore[arg-type]
    assert tally.done == 500 and tally.outstanding == 0
    assert tally.kinds == {"l1": 500}
    assert _AnsweringClient.order == ids
    assert _AnsweringClient.peak == 8
    assert progress[-1] == 500


def test_a_worker_that_exits_ends_the_replay_with_its_log_kept(tmp_path, monkeypatch):
    log = tmp_path / "scratch" / "bench-cache-nasa-5-lru.1.log"
    log.parent.mkdir()
    log.write_text("the worker's last words\n")
    kept_dir = tmp_path / "kept"
    kept_dir.mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(kept_dir))

    class Exited(_Worker):
        name = "bench-cache-nasa-5-lru.1"
        log_path = log
        process = type("Process", (), {"returncode": -9})()

        def alive(self) -> bool:
            return False

    tally = RunTally()
    tally.published("a", 0.0)
    with pytest.raises(cache_bench.BenchStalled, match="exited with -9 after 0 outcomes") as raised:
        asyncio.run(cache_bench._wait_outcome(asyncio.Event(), Exited(), tally))  # type: ignore[arg-type]
    kept = kept_dir / log.name
    assert str(kept) in str(raised.value)
    assert kept.read_text() == "the worker's last words\n"
