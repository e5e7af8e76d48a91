"""What a dead-letter replay selects and republishes, without a broker."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.dlq_replay.reading import _decode
from agents.dlq_replay.selection import ReplayFilter, replay_request, start_offset
from agents.dlq_replay.tally import ReplaySummary
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent
from schemas.models import dead_letter_key as dedup_key
from streams.__main__ import main
from streams.cli.dlq_cmd import parse_since, summary_lines

CHECK = settings(database=None, deadline=None, max_examples=100)


def letter(
    *,
    reason: str = "not_found",
    stage: str = "caller",
    last_failure_at_ms: int = 1_700_000_000_000,
    original: RequestEvent | None = None,
    decodable: bool = True,
    **fields: Any,
) -> DeadLetterEvent:
    if decodable and original is None:
        original = RequestEvent(provider="fake", operation="get_item", params={"item_id": "a"})
    return DeadLetterEvent(
        request_id=original.request_id if original else None,
        original_raw=b"raw bytes",
        original=original,
        source_topic="requests",
        source_partition=3,
        source_offset=41,
        reason=reason,
        error_type="NotFound",
        error_message="404",
        first_failure_at_ms=last_failure_at_ms - 10,
        last_failure_at_ms=last_failure_at_ms,
        stage=stage,
        **fields,
    )


# --- ReplayFilter ----------------------------------------------------------------------------


def test_empty_filter_matches_every_decodable_letter_only() -> None:
    assert ReplayFilter().matches(letter())
    assert not ReplayFilter().matches(letter(decodable=False, reason="undecodable"))


def test_undecodable_letters_match_only_when_included() -> None:
    undecodable = letter(decodable=False, reason="undecodable", stage="decode")
    assert ReplayFilter(include_undecodable=True).matches(undecodable)
    assert ReplayFilter(include_undecodable=True, reasons=frozenset({"undecodable"})).matches(
        undecodable
    )
    assert not ReplayFilter(include_undecodable=True, reasons=frozenset({"auth_failed"})).matches(
        undecodable
    )


@pytest.mark.parametrize(
    ("replay_filter", "expected"),
    [
        (ReplayFilter(reasons=frozenset({"not_found"})), True),
        (ReplayFilter(reasons=frozenset({"auth_failed", "not_found"})), True),
        (ReplayFilter(reasons=frozenset({"auth_failed"})), False),
        (ReplayFilter(stages=frozenset({"caller"})), True),
        (ReplayFilter(stages=frozenset({"admission"})), False),
        (ReplayFilter(since_ms=1_700_000_000_000), True),  # at the bound: included
        (ReplayFilter(since_ms=1_700_000_000_001), False),
        (ReplayFilter(since_ms=0), True),
        # Every given condition must hold.
        (ReplayFilter(reasons=frozenset({"not_found"}), stages=frozenset({"admission"})), False),
    ],
)
def test_filter_conditions(replay_filter: ReplayFilter, expected: bool) -> None:
    assert replay_filter.matches(letter()) is expected


def test_request_id_filter() -> None:
    dead = letter()
    assert dead.request_id is not None
    assert ReplayFilter(request_ids=frozenset({dead.request_id, "other"})).matches(dead)
    assert not ReplayFilter(request_ids=frozenset({"other"})).matches(dead)
    # An undecodable letter has no request id: a request-id filter never selects it.
    undecodable = letter(decodable=False)
    assert not ReplayFilter(request_ids=frozenset({"other"}), include_undecodable=True).matches(
        undecodable
    )


# --- replay_request --------------------------------------------------------------------------


def test_replay_is_the_next_attempt_of_the_same_request() -> None:
    original = RequestEvent(
        provider="fake",
        operation="get_item",
        params={"item_id": "a"},
        idempotency_key="key-1",
        tenant="acme",
        attempt=2,
        deadline_at_ms=1_800_000_000_000,
        trace={"traceparent": "00-abc-def-01"},
    )
    replayed = replay_request(letter(original=original))
    assert replayed is not None
    assert replayed.attempt == 3
    assert replayed.request_id == original.request_id
    assert replayed.idempotency_key == "key-1"
    assert replayed.model_dump(exclude={"attempt"}) == original.model_dump(exclude={"attempt"})
    assert original.attempt == 2, "the letter's original is left as it was"


def test_undecodable_letter_has_no_request_to_replay() -> None:
    assert replay_request(letter(decodable=False)) is None


requests = st.builds(
    RequestEvent,
    provider=st.sampled_from(["fake", "open_meteo"]),
    operation=st.text(st.characters(codec="ascii", categories=["L"]), min_size=1, max_size=20),
    # Visible ASCII only: the model refuses control characters in ids (finding 11).
    idempotency_key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
    params=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    priority=st.integers(0, 9),
    attempt=st.integers(1, 1_000),
)


@CHECK
@given(requests)
def test_replay_changes_nothing_but_the_attempt_and_survives_the_wire(
    original: RequestEvent,
) -> None:
    replayed = replay_request(letter(original=original))
    assert replayed is not None
    assert replayed.model_dump() == {**original.model_dump(), "attempt": original.attempt + 1}
    assert replayed.effective_idempotency_key() == original.effective_idempotency_key()
    codec = Codecs().request
    assert codec.decode(codec.encode(replayed)) == replayed


# --- where reading starts, and what counts as the same letter ----------------------------------


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (0, 0),  # new group: the log start
        (5, 5),  # committed position inside the log
        (10, 10),  # at the end: nothing to read
        (11, 0),  # past the end: the topic was recreated
        (-1, 0),
    ],
)
def test_start_offset(position: int, expected: int) -> None:
    assert start_offset(position, log_start=0, log_end=10) == expected


def test_start_offset_after_retention_deleted_records() -> None:
    assert start_offset(3, log_start=7, log_end=10) == 7


def test_dedup_key_is_the_request_id_or_the_original_position() -> None:
    dead = letter()
    assert dedup_key(dead) == dead.request_id
    assert dedup_key(letter(decodable=False)) == "requests/3/41"


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1715000000123", 1_715_000_000_123),
        ("2024-05-06T12:53:20Z", 1_715_000_000_000),
        ("2024-05-06T14:53:20+02:00", 1_715_000_000_000),
        ("2024-05-06T12:53:20", 1_715_000_000_000),  # no offset: UTC
        ("2024-05-06T12:53:20.123456Z", 1_715_000_000_123),
        ("2024-05-06", 1_714_953_600_000),
    ],
)
def test_parse_since(text: str, expected: int) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "1715000000", "-5", "2024-13-01"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_since(text)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["dlq", "replay", "--since", "yesterday"], "Invalid value for '--since'"),
        (["dlq", "replay", "--since", "1715000000"], "looks like epoch seconds"),
        (["dlq", "replay", "--limit", "0"], "--limit"),
        (["dlq", "stats", "--config", "/nonexistent.toml"], "config file not found"),
        (
            ["dlq", "stats", "--bootstrap", "127.0.0.1:1"],
            "cannot reach Kafka at 127.0.0.1:1",
        ),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: ")
    assert expected in err
    assert err.count("\n") == 1, err


def summary(**fields: Any) -> ReplaySummary:
    base: dict[str, Any] = {
        "group_id": "g",
        "dry_run": False,
        "read": 10,
        "replayed": 4,
        "skipped": 4,
        "duplicates": 1,
        "unreadable": 1,
        "by_reason": {"auth_failed": 1, "not_found": 3},
        "request_ids": ("a", "b", "c"),
        "request_ids_truncated": False,
        "complete": True,
    }
    return ReplaySummary(**{**base, **fields})


def test_summary_lines_name_every_count_and_the_most_frequent_reason_first() -> None:
    lines = summary_lines(summary(), "requests", None)
    assert lines[0] == "replayed 4 of 10 records read, to requests (group g)"
    text = "\n".join(lines)
    assert text.index("reason not_found: 3") < text.index("reason auth_failed: 1")
    assert "dry run" not in text and "--limit" not in text


def test_summary_lines_say_what_a_dry_run_or_a_limit_left_undone() -> None:
    text = "\n".join(summary_lines(summary(dry_run=True, complete=False), "requests", 4))
    assert text.startswith("would replay 4 of 10")
    assert "stopped at --limit 4" in text
    assert "nothing was published" in text


# --- Letters published reduced (too large for the topic) -------------------------------------


def test_a_truncated_letter_is_never_replayed_even_with_undecodable_included() -> None:
    truncated = letter(decodable=False, reason="bad_request", original_truncated=True)
    assert not ReplayFilter().matches(truncated)
    assert not ReplayFilter(include_undecodable=True).matches(truncated)


def test_a_letter_reduced_to_its_raw_bytes_gets_its_request_back_when_read() -> None:
    codecs = Codecs()
    request = RequestEvent(provider="fake", operation="get_item", params={"item_id": "a"})
    reduced = letter(decodable=False).model_copy(
        update={"request_id": request.request_id, "original_raw": codecs.request.encode(request)}
    )
    read = _decode(codecs, codecs.dead_letter.encode(reduced))
    assert read is not None and read.original == request
    assert ReplayFilter().matches(read)
    replayed = replay_request(read)
    assert replayed is not None and replayed.attempt == request.attempt + 1


def test_garbage_raw_bytes_stay_an_undecodable_letter_when_read() -> None:
    codecs = Codecs()
    garbage = letter(decodable=False).model_copy(update={"request_id": "req-1"})
    read = _decode(codecs, codecs.dead_letter.encode(garbage))
    assert read is not None and read.original is None
