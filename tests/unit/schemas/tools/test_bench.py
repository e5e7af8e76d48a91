"""Tests of the codec benchmark's shape (not its figures)."""

from __future__ import annotations

from schemas.codec import Codecs
from schemas.tools.bench import format_report, run_codec_bench, sample_request, sample_result


def test_bench_times_both_directions_of_each_event():
    rows = run_codec_bench(n=20)

    assert [(r.event, r.op) for r in rows] == [
        (event, op) for event in ("request", "result", "dead_letter") for op in ("encode", "decode")
    ]
    assert all(r.avro_us > 0 and r.fastavro_us > 0 and r.codec_us > 0 for r in rows)


def test_report_has_a_line_per_row_with_the_ratio():
    rows = run_codec_bench(n=10)

    report = format_report(rows)

    assert len(report.splitlines()) == len(rows) + 2
    assert "fastavro µs" in report
    assert report.count("x ") >= len(rows)


def test_sample_events_have_the_advertised_sizes():
    codecs = Codecs()

    assert 250 <= len(codecs.request.encode(sample_request())) <= 350
    assert len(sample_result().body or b"") == 200
