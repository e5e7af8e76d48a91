"""What `results tail` and `dlq stats`/`dlq replay` print (issue 19, finding 11)."""

from __future__ import annotations

from schemas.models import DeadLetterEvent, ResultEvent, ResultStatus
from streams.cli.dlq_cmd import summary_lines
from streams.cli.results_cmd import one_line, printable
from streams.composition_dlq import ReplaySummary


def test_printable_escapes_control_characters_and_keeps_other_text() -> None:
    assert printable("plain é ü") == "plain é ü"
    assert printable("a\r\nb\x1b[31m\x00\u2028") == "a\\r\\nb\\x1b[31m\\x00\\u2028"


def test_result_lines_escape_what_publishers_and_providers_chose() -> None:
    event = ResultEvent.model_construct(
        request_id="r\r\n2026 CRITICAL forged",
        tenant="t",
        provider="fake\x1b[2J",
        operation="get",
        status=ResultStatus.FAILED,
        http_status=500,
        latency_ms=1.0,
        reason="unavailable",
        error_message="boom\nsecond line",
    )
    line = one_line(event)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "error=boom\\nsecond line" in line


def test_dead_letter_lines_show_the_error_message() -> None:
    letter = DeadLetterEvent(
        request_id="r1",
        original_raw=b"x",
        source_topic="requests",
        source_partition=0,
        source_offset=1,
        reason="not_found",
        error_type="NotFound",
        error_message="fake: item 'abc' not found\x07",
        first_failure_at_ms=1,
        last_failure_at_ms=1,
        stage="caller",
    )
    assert one_line(letter) == (
        "r1  dead_letter  reason=not_found stage=caller error=NotFound: "
        "fake: item 'abc' not found\\x07"
    )


def test_a_replay_that_matched_nothing_says_the_group_did_not_move() -> None:
    summary = ReplaySummary(
        group_id="g",
        dry_run=False,
        read=5,
        replayed=0,
        skipped=5,
        duplicates=0,
        unreadable=0,
        by_reason={},
        request_ids=(),
        request_ids_truncated=False,
        complete=True,
        committed=False,
    )
    assert summary_lines(summary, "requests", None)[-1].startswith(
        "nothing matched: the group's position did not move (--commit-empty"
    )
