"""Replaying dead letters on a real broker: what arrives on the request topic, and the group."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.dlq_replay.replay import dead_letter_stats, replay_dead_letters
from agents.dlq_replay.selection import ReplayFilter
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent, now_ms
from streams.errors import ConfigurationError
from streams.kafka import client_options, producer_options
from streams.settings import Settings
from streams.topics import ensure_topics, pipeline_topics
from tests.integration.cli.test_cli_on_kafka import callstream, topic_env

pytestmark = pytest.mark.integration

GARBAGE_REQUEST = b"\x00\x01 not an avro request"
NOT_A_DEAD_LETTER = b"this record is not a dead-letter event"


def dead_letter(
    settings: Settings,
    reason: str,
    *,
    stage: str = "caller",
    attempt: int = 1,
    retriable: bool = False,
    decodable: bool = True,
) -> DeadLetterEvent:
    original = (
        RequestEvent(
            provider="fake",
            operation="get_item",
            params={"item_id": reason},
            idempotency_key=f"key-{reason}-{attempt}",
            attempt=attempt,
        )
        if decodable
        else None
    )
    codecs = Codecs()
    now = now_ms()
    return DeadLetterEvent(
        request_id=original.request_id if original else None,
        original_raw=codecs.request.encode(original) if original else GARBAGE_REQUEST,
        original=original,
        source_topic=settings.topics.requests,
        source_partition=0,
        source_offset=7,
        reason=reason,
        error_type="ProviderError",
        error_message=reason,
        retriable=retriable,
        first_failure_at_ms=now,
        last_failure_at_ms=now,
        stage=stage,
    )


@dataclass
class Letters:
    not_found: DeadLetterEvent
    not_found_again: DeadLetterEvent  # a second failure: its original was attempt 2
    auth_failed: DeadLetterEvent
    unknown_provider: DeadLetterEvent
    undecodable: DeadLetterEvent


async def write(settings: Settings, *values: bytes) -> None:
    """Write records to the dead-letter topic, spread over its partitions."""
    producer = AIOKafkaProducer(**producer_options(settings.kafka))
    await producer.start()
    try:
        for index, value in enumerate(values):
            partition = index % settings.topics.partitions
            await producer.send_and_wait(settings.topics.dead_letters, value, partition=partition)
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list[bytes]:
    """Every record value of ``topic`` up to its current end offsets."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        due = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 30
        while due and time.monotonic() < deadline:
            batches = await consumer.getmany(*due, timeout_ms=500)
            for tp, records in batches.items():
                values += [r.value for r in records if r.offset < ends[tp]]
            for tp in list(due):
                if await consumer.position(tp) >= ends[tp]:
                    due.discard(tp)
        assert not due, f"could not read {topic} to its end"
        return values
    finally:
        await consumer.stop()


async def replayed_requests(settings: Settings) -> list[RequestEvent]:
    codec = Codecs().request
    return [codec.decode(value) for value in await read_all(settings, settings.topics.requests)]


async def group_offsets(settings: Settings, group_id: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


@pytest.fixture
async def topics_made(settings: Settings) -> Settings:
    """The test's topics, created and visible in the broker's metadata.

    CreateTopics returns before the metadata lists the topic (measured: a replay right after
    the create found no such topic), and a replay rightly reports a missing topic at once.
    """
    specs = pipeline_topics(settings.topics)
    await ensure_topics(settings.kafka, specs, create=True)
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        deadline = time.monotonic() + 15
        while {spec.name for spec in specs} - {t["topic"] for t in await admin.describe_topics()}:
            assert time.monotonic() < deadline, "topics did not appear in the metadata"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    return settings


@pytest.fixture
async def letters(topics_made: Settings) -> Letters:
    """Five dead letters, a duplicate of one, and a record that is no dead letter at all."""
    settings = topics_made
    made = Letters(
        not_found=dead_letter(settings, "not_found"),
        not_found_again=dead_letter(settings, "not_found", attempt=2),
        auth_failed=dead_letter(settings, "auth_failed", retriable=True),
        unknown_provider=dead_letter(settings, "unknown_provider", stage="admission"),
        undecodable=dead_letter(settings, "undecodable", stage="decode", decodable=False),
    )
    encode = Codecs().dead_letter.encode
    await write(
        settings,
        encode(made.not_found),
        encode(made.not_found_again),
        encode(made.auth_failed),
        encode(made.unknown_provider),
        encode(made.undecodable),
        encode(made.not_found),  # at least once: the same letter published twice
        NOT_A_DEAD_LETTER,
    )
    return made


async def test_replays_exactly_the_matching_letters_once_per_group(
    settings: Settings, letters: Letters
) -> None:
    wanted = ReplayFilter(reasons=frozenset({"not_found", "auth_failed"}))
    group = f"{settings.app_id}.replay"

    dry = await replay_dead_letters(settings, wanted, group_id=group, dry_run=True)
    assert (dry.read, dry.replayed, dry.skipped, dry.duplicates, dry.unreadable) == (7, 3, 2, 1, 1)
    assert await replayed_requests(settings) == [], "a dry run publishes nothing"
    assert await group_offsets(settings, group) == {}, "a dry run commits nothing"

    done = await replay_dead_letters(settings, wanted, group_id=group, dry_run=False)
    assert (done.read, done.replayed, done.skipped, done.duplicates, done.unreadable) == (
        7,
        3,
        2,
        1,
        1,
    )
    assert done.by_reason == {"not_found": 2, "auth_failed": 1}
    assert done.complete and not done.dry_run
    originals = {
        letter.original.request_id: letter.original
        for letter in (letters.not_found, letters.not_found_again, letters.auth_failed)
        if letter.original is not None
    }
    assert sorted(done.request_ids) == sorted(originals)
    published = await replayed_requests(settings)
    assert sorted(r.request_id for r in published) == sorted(originals)
    for request in published:
        original = originals[request.request_id]
        assert request.attempt == original.attempt + 1
        assert request.idempotency_key == original.idempotency_key
        assert request.model_dump(exclude={"attempt"}) == original.model_dump(exclude={"attempt"})
    committed = await group_offsets(settings, group)
    assert sum(committed.values()) == 7, committed

    again = await replay_dead_letters(settings, wanted, group_id=group, dry_run=False)
    assert (again.read, again.replayed) == (0, 0)
    assert len(await replayed_requests(settings)) == 3

    # New dead letters after a replay are what the group's next run replays.
    later = dead_letter(settings, "not_found")
    await write(settings, Codecs().dead_letter.encode(later))
    last = await replay_dead_letters(settings, wanted, group_id=group, dry_run=False)
    assert (last.read, last.replayed, last.request_ids) == (1, 1, (later.request_id,))
    assert len(await replayed_requests(settings)) == 4


async def test_undecodable_letters_are_replayed_raw_only_when_asked(
    settings: Settings, letters: Letters
) -> None:
    raw_only = ReplayFilter(reasons=frozenset({"undecodable"}))
    skipped = await replay_dead_letters(settings, raw_only, group_id=f"{settings.app_id}.a")
    # The duplicate does not match either: only repeats of replayed letters are duplicates.
    assert (skipped.replayed, skipped.skipped, skipped.duplicates) == (0, 6, 0)
    assert await read_all(settings, settings.topics.requests) == []

    included = ReplayFilter(reasons=frozenset({"undecodable"}), include_undecodable=True)
    done = await replay_dead_letters(settings, included, group_id=f"{settings.app_id}.b")
    assert (done.replayed, done.by_reason, done.request_ids) == (1, {"undecodable": 1}, ())
    assert await read_all(settings, settings.topics.requests) == [GARBAGE_REQUEST]


async def test_limit_leaves_the_rest_for_the_next_run(topics_made: Settings) -> None:
    settings = topics_made
    letters = [dead_letter(settings, "not_found") for _ in range(5)]
    await write(settings, *(Codecs().dead_letter.encode(letter) for letter in letters))
    group = f"{settings.app_id}.limited"

    first = await replay_dead_letters(settings, ReplayFilter(), group_id=group, limit=2)
    assert (first.replayed, first.complete) == (2, False)
    rest = await replay_dead_letters(settings, ReplayFilter(), group_id=group)
    assert (rest.replayed, rest.complete) == (3, True)

    ids = [request.request_id for request in await replayed_requests(settings)]
    assert sorted(ids) == sorted(letter.request_id for letter in letters if letter.request_id)


async def test_empty_and_missing_dead_letter_topics(topics_made: Settings) -> None:
    settings = topics_made
    empty = await replay_dead_letters(settings, ReplayFilter(), group_id=f"{settings.app_id}.e")
    assert (empty.read, empty.replayed, empty.skipped, empty.unreadable) == (0, 0, 0, 0)
    assert empty.complete and empty.by_reason == {}
    stats = await dead_letter_stats(settings)
    assert (stats.read, stats.letters, stats.by_reason) == (0, 0, {})

    missing = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"dead_letters": "no-such-dlq"})}
    )
    with pytest.raises(ConfigurationError, match="no-such-dlq does not exist"):
        await replay_dead_letters(missing, ReplayFilter(), group_id=f"{settings.app_id}.m")


async def test_stats_count_each_letter_once(settings: Settings, letters: Letters) -> None:
    stats = await dead_letter_stats(settings)
    assert (stats.read, stats.letters, stats.duplicates, stats.unreadable) == (7, 5, 1, 1)
    assert (stats.undecodable, stats.retriable) == (1, 1)
    assert stats.by_reason == {
        "not_found": 2,
        "auth_failed": 1,
        "unknown_provider": 1,
        "undecodable": 1,
    }
    assert stats.by_stage == {"caller": 3, "admission": 1, "decode": 1}


def test_cli_stats_and_replay(settings: Settings, letters: Letters) -> None:
    env = {**topic_env(settings), "CALLSTREAM_APP_ID": settings.app_id}
    bootstrap = ["--bootstrap", settings.kafka.bootstrap_servers]

    stats = callstream("dlq", "stats", *bootstrap, "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert (counts["letters"], counts["unreadable"], counts["retriable"]) == (5, 1, 1)
    assert counts["by_stage"] == {"caller": 3, "admission": 1, "decode": 1}

    dry = callstream("dlq", "replay", "--reason", "auth_failed", "--dry-run", *bootstrap, env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would replay 1 of 7 records read")
    assert f"(group {settings.app_id}.dlq-replay)" in dry.stdout
    assert "dry run: nothing was published" in dry.stdout

    replay = callstream("dlq", "replay", "-r", "auth_failed", "--json", *bootstrap, env=env)
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert (summary["replayed"], summary["skipped"], summary["unreadable"]) == (1, 5, 1)
    assert summary["request_ids"] == [letters.auth_failed.request_id]

    again = callstream("dlq", "replay", "-r", "auth_failed", "--json", *bootstrap, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["read"] == 0, "the default group remembers the replay"
