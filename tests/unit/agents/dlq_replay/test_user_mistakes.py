"""Replay and stats facing forged letters, typos and replays that failed again (issue 19)."""

from __future__ import annotations

import providers.errors
from agents.dlq_replay.selection import (
    MAX_ATTEMPT,
    STAGES,
    ReplayFilter,
    Verdict,
    known_reasons,
    replay_request,
    screen,
    unknown_values,
)
from agents.dlq_replay.tally import ReplayTally, StatsTally
from schemas.models import RequestEvent
from streams.sdk import SeenIds
from tests.unit.agents.dlq_replay.test_replay import letter


def test_every_reason_a_dead_letter_can_carry_is_known() -> None:
    provider_reasons = {
        cls.reason
        for cls in vars(providers.errors).values()
        if isinstance(cls, type) and issubclass(cls, providers.errors.ProviderError)
    }
    decode_and_bug = {"undecodable", "invalid", "internal_error"}
    assert provider_reasons | decode_and_bug <= known_reasons()
    assert {"decode", "admission", "caller", "retry"} == STAGES


def test_unknown_values_name_each_typo_with_the_known_ones() -> None:
    assert unknown_values(["not_found", "auth_failed"], ["caller"]) == []
    problems = unknown_values(["not_fuond"], ["calller"])
    assert problems[0].startswith("unknown --reason 'not_fuond' (known: auth_failed")
    assert problems[1].startswith("unknown --stage 'calller' (known: admission")


def test_a_letter_at_the_largest_attempt_is_unreadable_not_a_crash() -> None:
    forged = letter(original=RequestEvent(provider="fake", operation="get", attempt=MAX_ATTEMPT))
    assert screen(forged, ReplayFilter()) is Verdict.UNREADABLE
    assert replay_request(forged) is None
    tally = ReplayTally(ReplayFilter())
    assert tally.count(forged) is False
    assert (tally.unreadable, tally.replayed) == (1, 0)


def test_stats_count_a_replayed_request_that_failed_again_as_a_letter_not_a_duplicate() -> None:
    first = RequestEvent(provider="fake", operation="get")
    again = first.model_copy(update={"attempt": 2})
    other = RequestEvent(provider="fake", operation="get")
    tally = StatsTally(first_time=SeenIds().add)
    records = [letter(original=first), letter(original=other), letter(original=again)]
    for record in [*records, letter(original=again), None]:  # one written twice, one garbage
        tally.count(record)
    stats = tally.stats()
    assert (stats.read, stats.letters, stats.requests) == (5, 3, 2)
    assert (stats.failed_again, stats.duplicates, stats.unreadable) == (1, 1, 1)
    assert stats.by_reason == {"not_found": 3}
