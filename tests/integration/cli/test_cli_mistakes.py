"""Issue 19 on a real broker: mistakes send and move nothing; forged letters do not crash."""

from __future__ import annotations

import pytest

from agents.dlq_replay.replay import dead_letter_stats, replay_dead_letters
from agents.dlq_replay.selection import MAX_ATTEMPT, ReplayFilter
from schemas.codec import Codecs
from tests.integration.cli.test_cli_on_kafka import callstream, topic_env
from tests.integration.pipeline.test_dlq_replay import (
    dead_letter,
    group_offsets,
    read_all,
    replayed_requests,
    topics_made,  # noqa: F401  (a fixture)
    write,
)

pytestmark = pytest.mark.integration


async def test_publish_of_an_unknown_operation_sends_nothing(topics_made) -> None:  # noqa: F811
    settings = topics_made
    env = {**topic_env(settings), "CALLSTREAM_PROVIDERS__FAKE__SHARDS": "2"}
    done = callstream("publish", "--provider", "fake", "--operation", "nope", env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no operation 'nope'" in done.stderr
    assert await read_all(settings, settings.topics.requests) == []


async def test_a_filter_matching_nothing_moves_nothing_unless_asked(topics_made) -> None:  # noqa: F811
    settings = topics_made
    await write(settings, Codecs().dead_letter.encode(dead_letter(settings, "not_found")))
    group = f"{settings.app_id}.g"
    nothing = ReplayFilter(reasons=frozenset({"auth_failed"}))
    summary = await replay_dead_letters(settings, nothing, group_id=group)
    assert (summary.read, summary.replayed, summary.committed) == (1, 0, False)
    assert await group_offsets(settings, group) == {}
    asked = await replay_dead_letters(settings, nothing, group_id=group, commit_empty=True)
    assert asked.committed
    assert sum((await group_offsets(settings, group)).values()) == 1


async def test_a_letter_at_the_largest_attempt_counts_unreadable(topics_made) -> None:  # noqa: F811
    settings = topics_made
    forged = dead_letter(settings, "not_found", attempt=MAX_ATTEMPT)
    genuine = dead_letter(settings, "not_found")
    codec = Codecs().dead_letter
    await write(settings, codec.encode(forged), codec.encode(genuine))
    summary = await replay_dead_letters(settings, ReplayFilter(), group_id=f"{settings.app_id}.f")
    assert (summary.replayed, summary.unreadable) == (1, 1)
    assert [r.request_id for r in await replayed_requests(settings)] == [genuine.request_id]


async def test_stats_after_a_replay_that_failed_again(topics_made) -> None:  # noqa: F811
    settings = topics_made
    first = dead_letter(settings, "not_found")
    assert first.original is not None
    again_request = first.original.model_copy(update={"attempt": 2})
    again = first.model_copy(update={"original": again_request})
    codec = Codecs().dead_letter
    await write(settings, codec.encode(first), codec.encode(again), codec.encode(again))
    stats = await dead_letter_stats(settings)
    assert (stats.letters, stats.requests, stats.failed_again, stats.duplicates) == (2, 1, 1, 1)
    shown = callstream(
        "dlq", "stats", "--bootstrap", settings.kafka.bootstrap_servers, env=topic_env(settings)
    )
    assert shown.returncode == 0, shown.stderr
    assert "2 dead letters" in shown.stdout and "1 replayed and failed again" in shown.stdout
