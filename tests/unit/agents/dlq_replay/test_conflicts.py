"""Letters sharing a key but not a request: counted and reported, never replayed (finding 17b)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.dlq_replay.fingerprint import Conflict, Mark, Marks, Position, digest
from agents.dlq_replay.replay import warn_conflict
from agents.dlq_replay.selection import ReplayFilter, Verdict, judge
from agents.dlq_replay.tally import ReplayTally, StatsTally
from schemas.models import DeadLetterEvent, RequestEvent, dead_letter_key
from streams.sdk import SeenIds
from tests.unit.agents.dlq_replay.test_replay import letter

CHECK = settings(database=None, deadline=None, max_examples=100)
GENUINE = RequestEvent(
    request_id="req-42", provider="stripe", operation="get_charge", params={"charge": "ch_x"}
)


def at(offset: int) -> Position:
    return Position("callstream.dead-letters.v1", 0, offset)


def changed(**update: Any) -> DeadLetterEvent:
    return letter(original=GENUINE.model_copy(update=update))


def undecodable(raw: bytes) -> DeadLetterEvent:
    plain = letter(decodable=False, reason="undecodable", stage="decode")
    return plain.model_copy(update={"original_raw": raw})


def replay_tally(**options: Any) -> tuple[ReplayTally, list[Conflict]]:
    heard: list[Conflict] = []
    return ReplayTally(ReplayFilter(**options), on_conflict=heard.append), heard


# --- the digest ----------------------------------------------------------------------------------


def test_the_digest_leaves_out_the_attempt_and_the_order_of_maps() -> None:
    reordered = GENUINE.model_copy(update={"params": {"b": "2", "a": "1"}})
    ordered = GENUINE.model_copy(update={"params": {"a": "1", "b": "2"}})
    assert digest(letter(original=GENUINE)) == digest(changed(attempt=7))
    assert digest(letter(original=reordered)) == digest(letter(original=ordered))
    assert len(digest(letter(original=GENUINE)) or b"") == 8


def test_a_raw_letter_never_has_a_decoded_letters_digest_and_a_truncated_one_has_none() -> None:
    assert digest(undecodable(b"x")) != digest(letter(original=GENUINE))
    assert digest(undecodable(b"x")) != digest(undecodable(b"y"))
    assert digest(letter(decodable=False, original_truncated=True)) is None


@pytest.mark.parametrize(
    ("earlier", "verdict"),
    [
        pytest.param(None, Verdict.REPLAY, id="first"),
        pytest.param(Mark(b"a"), Verdict.DUPLICATE, id="same request"),
        pytest.param(Mark(b"b"), Verdict.CONFLICTING, id="another request"),
        pytest.param(Mark(None), Verdict.DUPLICATE, id="nothing to compare"),
    ],
)
def test_judge(earlier: Mark | None, verdict: Verdict) -> None:
    assert judge(earlier, Mark(b"a")) is verdict


def test_marks_keep_the_first_letter_and_forget_the_oldest_key() -> None:
    marks = Marks(capacity=2)
    assert marks.remember("a", Mark(b"1", at(1))) is None
    assert marks.remember("a", Mark(b"2", at(2))) == Mark(b"1", at(1))
    marks.remember("b", Mark(b"1"))
    marks.remember("c", Mark(b"1"))
    assert marks.remember("a", Mark(b"3")) is None  # forgotten: remembered anew


# --- the replay ----------------------------------------------------------------------------------


def test_an_identical_repeat_is_a_duplicate() -> None:
    tally, heard = replay_tally()
    genuine = letter(original=GENUINE)
    assert [tally.count(genuine, at(1)), tally.count(genuine, at(2))] == [True, False]
    assert (tally.replayed, tally.duplicates, tally.conflicting, heard) == (1, 1, 0, [])


def test_the_next_attempt_of_the_same_request_is_no_conflict() -> None:
    tally, heard = replay_tally()
    assert tally.count(letter(original=GENUINE), at(1))
    assert not tally.count(changed(attempt=2), at(2))
    assert (tally.replayed, tally.duplicates, tally.conflicting, heard) == (1, 1, 0, [])


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param({"operation": "create_refund"}, id="operation"),
        pytest.param({"params": {"charge": "ch_x", "amount": "99999"}}, id="params"),
        pytest.param({"body": b"amount=99999"}, id="body"),
        pytest.param({"headers": {"Stripe-Account": "acct_evil"}}, id="headers"),
        pytest.param({"tenant": "other", "attempt": 2}, id="tenant, next attempt"),
    ],
)
def test_another_request_under_the_same_id_conflicts_and_is_not_replayed(
    forged: dict[str, Any],
) -> None:
    tally, heard = replay_tally()
    first, second = changed(**forged), letter(original=GENUINE)  # the forgery came first
    assert tally.count(first, at(3))
    assert not tally.count(second, at(9))
    summary = tally.summary("g", dry_run=False, complete=True)
    assert (summary.replayed, summary.duplicates, summary.conflicting) == (1, 0, 1)
    assert summary.request_ids == ("req-42",)
    assert heard == [Conflict("req-42", first=at(3), second=at(9))]


def test_undecodable_letters_of_one_position_with_other_raw_bytes_conflict() -> None:
    tally, heard = replay_tally(include_undecodable=True)
    assert tally.count(undecodable(b"\x00garbage"), at(1))
    assert not tally.count(undecodable(b"\x00garbage"), at(2))
    assert not tally.count(undecodable(b"\x00other"), at(3))
    assert (tally.replayed, tally.duplicates, tally.conflicting) == (1, 1, 1)
    assert heard == [Conflict("requests/3/41", first=at(1), second=at(3))]


def test_only_matching_letters_are_compared() -> None:
    tally, heard = replay_tally(reasons=frozenset({"not_found"}))
    assert not tally.count(changed(operation="create_refund").model_copy(update={"reason": "x"}))
    assert tally.count(letter(original=GENUINE))
    assert (tally.skipped, tally.replayed, tally.conflicting, heard) == (1, 1, 0, [])


letters = st.lists(
    st.sampled_from(
        [
            letter(original=GENUINE),
            changed(attempt=2),
            changed(operation="create_refund"),
            letter(),
            undecodable(b"a"),
            undecodable(b"b"),
            None,
        ]
    ),
    max_size=20,
)


@CHECK
@given(records=letters, include_undecodable=st.booleans())
def test_every_record_is_counted_once(
    records: list[DeadLetterEvent | None], include_undecodable: bool
) -> None:
    tally, heard = replay_tally(include_undecodable=include_undecodable)
    for offset, record in enumerate(records):
        tally.count(record, at(offset))
    s = tally.summary("g", dry_run=True, complete=True)
    assert s.read == s.replayed + s.skipped + s.duplicates + s.conflicting + s.unreadable
    assert len(heard) == s.conflicting
    matching = [r for r in records if r and (r.original or include_undecodable)]
    assert s.replayed == len({dead_letter_key(r) for r in matching})


# --- the stats -----------------------------------------------------------------------------------


def test_stats_count_conflicts_apart_from_letters_failed_again_and_duplicates() -> None:
    heard: list[Conflict] = []
    tally = StatsTally(first_time=SeenIds().add, on_conflict=heard.append)
    truncated = letter(decodable=False, original_truncated=True)
    records = [
        letter(original=GENUINE),
        letter(original=GENUINE),  # written twice
        changed(attempt=2),  # replayed and failed again
        changed(operation="create_refund"),  # forged
        truncated.model_copy(update={"request_id": "req-42"}),  # nothing to compare
    ]
    for offset, record in enumerate(records):
        tally.count(record, at(offset))
    stats = tally.stats()
    assert (stats.read, stats.letters, stats.requests) == (5, 3, 1)
    assert (stats.duplicates, stats.failed_again, stats.conflicting) == (1, 2, 1)
    assert stats.by_reason == {"not_found": 3}
    assert heard == [Conflict("req-42", first=at(0), second=at(3))]


# --- the warning ---------------------------------------------------------------------------------


def test_the_warning_names_the_key_and_both_positions_never_the_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally, _ = replay_tally()
    tally.on_conflict = warn_conflict
    tally.count(changed(operation="create_refund", body=b"amount=99999"), at(3))
    with caplog.at_level(logging.WARNING, logger="agents.dlq_replay.replay"):
        tally.count(letter(original=GENUINE), at(9))
    [record] = caplog.records
    message = record.getMessage()
    assert "'req-42'" in message
    assert "callstream.dead-letters.v1[0]@9" in message
    assert "callstream.dead-letters.v1[0]@3" in message
    assert "only workers should" in message
    assert "create_refund" not in message and "99999" not in message and "get_charge" not in message
