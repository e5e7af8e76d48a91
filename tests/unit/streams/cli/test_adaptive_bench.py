"""The pure parts of the adaptive benchmark: settling, utilization, failures, the report."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from schemas.keys import request_limit_key
from schemas.models import AttemptRecord, DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.cli.dev.adaptive_bench import (
    DEFAULT_PARTITIONS,
    KEPT,
    _Counts,
    _feed,
    _figures,
    _gauges,
    _owned,
    _owners,
    _Sample,
    _settle_s,
    _Tally,
    _Timeline,
    make_plan,
    print_adaptive,
    spread_partitions,
)
from streams.routing import partition_for


def _samples(start: float, *rates: float | None) -> list[_Sample]:
    return [_Sample(start + 0.5 * index, rate, None) for index, rate in enumerate(rates)]


def test_settled_from_the_first_sample_that_stays_within_ten_percent():
    # Real 60/s: 100 and 70 are out of the band, 65 and 55 in it.
    samples = _samples(10.0, 100, 65, 70, 65, 55, 60)
    assert _settle_s(60, 10.0, samples) == 1.5


def test_not_settled_when_the_phase_ends_out_of_the_band_or_the_gauge_is_absent():
    assert _settle_s(60, 0.0, _samples(0.0, 60, 60, 80)) is None
    assert _settle_s(60, 0.0, _samples(0.0, None, None)) is None
    assert _settle_s(60, 0.0, []) is None


def test_a_gauge_per_key_by_either_label_name():
    text = (
        "# TYPE callstream_limiter_rate_per_s gauge\n"
        'callstream_limiter_rate_per_s{limit_key="fake#0"} 10.0\n'
        'callstream_limiter_rate_per_s{limit_key="fake#1"} 57.5\n'
        "# TYPE callstream_limiter_learned_limit_per_s gauge\n"
        'callstream_limiter_learned_limit_per_s{key="fake"} 50.0\n'
    )
    assert _gauges(text, "callstream_limiter_rate_per_s") == {"fake#0": 10.0, "fake#1": 57.5}
    assert _gauges(text, "callstream_limiter_learned_limit_per_s") == {"fake": 50.0}
    assert _gauges(text, "callstream_limiter_absent") == {}


def test_one_worker_keeps_the_default_partitions_and_one_key():
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2)
    assert (plan.keys, plan.partitions, plan.backlog_per_key) == (("fake",), 6, plan.backlog)
    assert DEFAULT_PARTITIONS == 6


@pytest.mark.parametrize(("workers", "shards"), [(2, 2), (2, 4), (3, 3), (4, 4), (2, 1)])
def test_the_partitions_deal_the_keys_evenly_over_the_workers(workers, shards):
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2, workers=workers, shards=shards)
    owned = [partition_for(key.encode(), range(plan.partitions)) for key in plan.keys]
    assert len(set(owned)) == shards  # a partition each
    # aiokafka's round-robin assignor deals partition p to member p % workers.
    loads = [sum(partition % workers == worker for partition in owned) for worker in range(workers)]
    assert max(loads) - min(loads) <= 1
    assert plan.backlog_per_key * shards >= plan.backlog


def test_at_the_default_partitions_two_shards_go_to_two_workers():
    # murmur2 alone put fake#0 and fake#1 on partition 1 of 6; shards are now consecutive.
    keys = ["fake#0", "fake#1"]
    assert spread_partitions(keys, 2) == DEFAULT_PARTITIONS
    assert len({partition_for(key.encode(), range(6)) % 2 for key in keys}) == 2


def test_more_shards_than_default_partitions_get_a_count_of_their_own():
    keys = [f"fake#{shard}" for shard in range(DEFAULT_PARTITIONS + 2)]
    count = spread_partitions(keys, 2)
    assert count >= len(keys)
    assert len({partition_for(key.encode(), range(count)) for key in keys}) == len(keys)


def test_settled_when_every_partition_has_exactly_one_worker():
    health = {"ready": True, "partitions": ["t.requests[0]", "t.requests[2]", "other[1]"]}
    assert _owned(health, "t.requests") == {0, 2}
    assert _owned({"ready": False, "stage": "starting"}, "t.requests") == set()
    assert _owners([{0, 2}, {1}], 3) == {0: 0, 2: 0, 1: 1}
    assert _owners([{0, 1, 2}, {1}], 3) is None  # a rebalance under way: 1 owned twice
    assert _owners([{0}, {1}], 3) is None  # 2 owned by none


class _Publisher:
    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.published: list[RequestEvent] = []

    async def publish_many(self, batch: list[RequestEvent]) -> None:
        self.published += batch
        self.tally.stop_feeding()  # one round


def test_the_feeder_keeps_each_key_backlogged():
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2, workers=2, shards=2)
    tally = _Tally()
    tally.outstanding_by_key["fake#0"] = plan.backlog_per_key - 3  # three of fake#0 ended
    publisher = _Publisher(tally)
    asyncio.run(_feed(publisher, tally, plan))  # type: ignore[arg-type]
    keys = [request_limit_key("fake", rq.request_id, 2) for rq in publisher.published]
    assert keys.count("fake#0") == 3
    assert keys.count("fake#1") == plan.backlog_per_key
    per_key = plan.backlog_per_key
    assert tally.outstanding_by_key == {"fake#0": per_key, "fake#1": per_key}
    first = publisher.published[0].request_id
    assert tally.key_of[first] == keys[0] and first in tally.created_ms


def _counts(at: float, accepted: int, throttled: int) -> _Counts:
    return _Counts(at, accepted, throttled, accepted + throttled)


def test_each_key_ends_with_its_last_enforced_rate_of_the_load():
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2, workers=2, shards=2)
    timeline = _Timeline(
        marks=[_counts(0.0, 0, 0), _counts(10.0, 480, 3)],
        samples=[
            _Sample(4.0, 60.0, None, {"fake#0": 30.0, "fake#1": 30.0}),
            _Sample(9.0, None, None, {"fake#0": 24.04}),  # fake#1's owner did not answer
            _Sample(11.0, 40.0, None, {"fake#0": 20.0, "fake#1": 20.0}),  # past the load
        ],
    )
    figures = _figures(plan, _Tally(), timeline)
    assert figures["keys"] == {"fake#0": 24.0, "fake#1": 30.0}
    assert figures["phases"][0]["enforced_rate_mean_by_key"] == {"fake#0": 27.0, "fake#1": 30.0}
    assert figures["phases"][0]["enforced_rate_mean"] == 60.0


def test_figures_compare_accepted_calls_with_what_each_real_limit_allowed():
    plan = make_plan("changing", 10, headers=False, warm_up_s=2)
    timeline = _Timeline(
        marks=[
            _counts(0.0, 0, 0),
            _counts(10.0, 540, 10),  # 60/s allowed 600
            _counts(20.0, 1340, 10),  # 80/s allowed 800
            _counts(30.0, 1740, 30),  # 40/s allowed 400
        ],
        warmed=_counts(2.0, 100, 5),
        samples=[*_samples(0.0, 100, 61), *_samples(10.0, 61, 79), *_samples(20.0, 79, 50)],
    )
    figures = _figures(plan, _Tally(), timeline)
    assert figures["utilization"] == round(1740 / 1800, 4)
    assert figures["utilization_by_phase"] == [0.9, 1.0, 1.0]
    assert figures["throttled_share"] == round(30 / 1770, 4)
    assert figures["throughput_per_s"] == round(1640 / 28, 1)
    assert figures["settle_s"] == [0.5, 0.5, None]
    assert figures["phases"][0]["enforced_rate_mean"] == 80.5


def _letter(request_id: str, http_status: int) -> DeadLetterEvent:
    attempt = AttemptRecord(attempt=1, started_at_ms=1, duration_ms=1, http_status=http_status)
    return DeadLetterEvent(
        request_id=request_id,
        original_raw=b"",
        source_topic="t",
        source_partition=0,
        source_offset=0,
        reason="retries_exhausted",
        error_type="X",
        error_message="",
        attempts=[attempt],
        first_failure_at_ms=1,
        last_failure_at_ms=1,
        stage="retry",
    )


def test_failures_count_once_per_request_and_those_for_a_429_apart():
    tally = _Tally(created_ms={"a": 0, "b": 0, "c": 0, "d": 0})
    tally.add_dead_letter(_letter("a", 429))
    tally.add_dead_letter(_letter("a", 429))  # a duplicate: counted once
    tally.add_dead_letter(_letter("b", 503))
    ok = ResultEvent(
        request_id="c", tenant="t", provider="fake", operation="get_item", status=ResultStatus.OK
    )
    tally.add_result(ok)
    tally.add_dead_letter(_letter("unknown", 429))  # not one of ours
    assert (tally.failed, tally.failed_rate_limited) == (2, 1)
    assert tally.kinds == {"dead_letter/retries_exhausted": 2, "ok": 1}
    assert not tally.done.is_set()
    tally.stop_feeding()
    assert not tally.done.is_set()  # "d" has no outcome yet
    failed = ok.model_copy(
        update={"request_id": "d", "status": ResultStatus.FAILED, "reason": "rate_limited"}
    )
    tally.add_result(failed)
    assert tally.done.is_set()
    assert (tally.failed, tally.failed_rate_limited) == (3, 2)


def test_the_report_prints_a_row_per_variant():
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2)
    timeline = _Timeline(marks=[_counts(0.0, 0, 0), _counts(10.0, 480, 3)])
    figures = _figures(plan, _Tally(), timeline)
    report = {
        "declared": {"rate_per_s": 100, "burst": 10},
        "phases": [{"real_per_s": 50, "seconds": 10}],
        "headers": False,
        "warm_up_s": 2,
        "variants": {"cubic": figures},
        "kept": KEPT,
    }
    out = io.StringIO()
    print_adaptive(Console(file=out, width=100), report)
    text = out.getvalue()
    assert "real 50/s" in text and "no headers" in text
    assert "cubic" in text and "96%" in text
    assert "workers" not in text


def test_the_report_names_the_workers_and_each_key_s_end_rate():
    plan = make_plan("fixed", 10, headers=False, warm_up_s=2, workers=2, shards=2)
    timeline = _Timeline(
        marks=[_counts(0.0, 0, 0), _counts(10.0, 480, 3)],
        samples=[_Sample(9.0, 50.0, None, {"fake#0": 26.0, "fake#1": 24.0})],
    )
    figures = {**_figures(plan, _Tally(), timeline), "owners": {"fake#0": 1, "fake#1": 0}}
    report = {
        "workers": 2,
        "shards": 2,
        "declared": {"rate_per_s": 100, "burst": 10},
        "phases": [{"real_per_s": 50, "seconds": 10}],
        "headers": False,
        "warm_up_s": 2,
        "variants": {"cubic": figures},
        "kept": KEPT,
    }
    out = io.StringIO()
    print_adaptive(Console(file=out, width=120), report)
    text = out.getvalue()
    assert "2 workers," in text and "2 shards" in text
    assert "fake#0 26/s (worker 1), fake#1 24/s (worker 0)" in text
