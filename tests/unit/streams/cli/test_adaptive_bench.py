"""The pure parts of the adaptive benchmark: settling, utilization, failures, the report."""

from __future__ import annotations

import io

from rich.console import Console

from schemas.models import AttemptRecord, DeadLetterEvent, ResultEvent, ResultStatus
from streams.cli.dev.adaptive_bench import (
    KEPT,
    _Counts,
    _figures,
    _gauge,
    _Sample,
    _settle_s,
    _Tally,
    _Timeline,
    make_plan,
    print_adaptive,
)


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


def test_the_gauge_of_the_key_by_either_label_name():
    text = (
        "# TYPE callstream_limiter_rate_per_s gauge\n"
        'callstream_limiter_rate_per_s{limit_key="other"} 10.0\n'
        'callstream_limiter_rate_per_s{limit_key="fake"} 57.5\n'
        "# TYPE callstream_limiter_learned_limit_per_s gauge\n"
        'callstream_limiter_learned_limit_per_s{key="fake"} 50.0\n'
    )
    assert _gauge(text, "callstream_limiter_rate_per_s") == 57.5
    assert _gauge(text, "callstream_limiter_learned_limit_per_s") == 50.0
    assert _gauge(text, "callstream_limiter_absent") is None


def _counts(at: float, accepted: int, throttled: int) -> _Counts:
    return _Counts(at, accepted, throttled, accepted + throttled)


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
