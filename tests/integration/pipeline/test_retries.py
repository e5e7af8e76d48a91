"""Retries (issue 20): a provider's Retry-After honoured without stalling the partition, and
retries waiting in the timer table that survive a SIGKILL of their worker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.keys import request_limit_key
from schemas.models import RequestEvent, now_ms
from streams.kafka import client_options
from streams.routing import partition_for
from streams.sdk import CallstreamClient
from streams.settings import Settings
from tests.integration.conftest import FAKE_SHARDS
from tests.integration.limits.test_no_stall import sample, scrape
from tests.integration.pipeline.outcomes import collect, publish, run

pytestmark = pytest.mark.integration


def get_item(item_id: str, **directives: str) -> RequestEvent:
    """A request to the fake provider; ``directives`` go in its query (providers/fake)."""
    return RequestEvent(
        provider="fake", operation="get_item", params={"item_id": item_id, **directives}
    )


def shard_of(request: RequestEvent) -> int:
    """The shard of the fake provider's limit that the request spends a token from."""
    key = request_limit_key(request.provider, request.request_id, FAKE_SHARDS)
    return int(key.rpartition("#")[2])


def partition_of_shard(shard: int, settings: Settings) -> int:
    """The partition owning a shard's limit key (publishers key requests by it)."""
    partitions = list(range(settings.topics.partitions))
    return partition_for(f"fake#{shard}".encode(), partitions)


def on_shards(shards: Iterable[int], item_id: str, **directives: str) -> RequestEvent:
    """A request whose random id puts it on one of ``shards`` (drawn until it does)."""
    wanted = set(shards)
    while shard_of(request := get_item(item_id, **directives)) not in wanted:
        pass
    return request


def crowded_partition(settings: Settings) -> tuple[int, list[int]]:
    """A partition owning several shards of the fake provider's limit, and those shards."""
    owners: dict[int, list[int]] = {}
    for shard in range(FAKE_SHARDS):
        owners.setdefault(partition_of_shard(shard, settings), []).append(shard)
    partition, shards = max(owners.items(), key=lambda item: len(item[1]))
    assert len(shards) >= 2, owners
    return partition, shards


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The caller group's committed offsets of the requests topic, by partition."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.app_id}.caller")
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == settings.topics.requests
    }


async def committed_offset(settings: Settings, partition: int) -> int:
    """One partition's committed offset (-1: none yet)."""
    return (await committed_offsets(settings)).get(partition, -1)


async def wait_committed(settings: Settings, partition: int, offset: int, timeout_s: float) -> int:
    """Poll until the partition's committed offset reaches ``offset``; return when (epoch ms)."""
    deadline = time.monotonic() + timeout_s
    while await committed_offset(settings, partition) < offset:
        assert time.monotonic() < deadline, f"partition {partition} not committed to {offset}"
        await asyncio.sleep(0.1)
    return now_ms()


async def publish_in_rounds(
    client: CallstreamClient, make: Iterable[RequestEvent], per_round: int, every_s: float
) -> list[RequestEvent]:
    """Publish ``make``'s requests ``per_round`` at a time, a round every ``every_s``."""
    pending, sent = list(make), []
    while pending:
        batch, pending = pending[:per_round], pending[per_round:]
        await client.publish_many(batch)
        sent.extend(batch)
        await asyncio.sleep(every_s)
    return sent


def test_a_429_with_retry_after_is_retried_no_sooner_and_the_partition_keeps_flowing(
    settings, fake_provider_factory, worker_factory
):
    fake = fake_provider_factory("--latency-ms", "2")
    # Two attempts at most, so that the twin below ends as a dead letter whose history shows
    # when each attempt started, on the worker's clock.
    worker = worker_factory(fake.url, CALLSTREAM_RETRY__MAX_ATTEMPTS="2")
    partition, shards = crowded_partition(settings)
    answer_429 = {"fake_status": "429", "fake_retry_after_s": "2"}
    # The request answered 429 (Retry-After: 2) once; it is the first record of its partition.
    retried = on_shards(shards[:1], "retried", fake_fail_first="1", **answer_429)
    # Its twin, answered 429 twice, on a partition of its own: a dead letter after two attempts.
    elsewhere = [s for s in range(FAKE_SHARDS) if partition_of_shard(s, settings) != partition]
    twin = on_shards(elsewhere, "twin", fake_fail_first="2", **answer_429)
    # Requests of the same partition on the other shards of its limit (a 429 holds back only
    # its own key), published while the retried one waits.
    others = [on_shards(shards[1:], f"other-{n}") for n in range(30)]

    async def scenario() -> tuple[list[RequestEvent], int]:
        async with CallstreamClient(settings) as client:
            await client.publish_many([retried, twin])
            sent, committed_at_ms = await asyncio.gather(
                publish_in_rounds(client, others, per_round=5, every_s=0.15),
                # The retried request is offset 0 of its partition: committed past it means
                # its record is done and its wait lives in the timer table only.
                wait_committed(settings, partition, 1, timeout_s=10),
            )
        return sent, committed_at_ms

    sent, committed_at_ms = run(scenario())
    ids = {retried.request_id, twin.request_id} | {r.request_id for r in sent}
    outcomes = run(collect(settings, until_ids=ids, timeout_s=30))

    results = {r.request_id: r for r in outcomes.results}
    assert Counter(outcomes.ids()) == Counter(ids), "one outcome per request"
    done = results[retried.request_id]
    assert (done.status, done.attempts) == ("ok", 2), done
    waited_ms = done.completed_at_ms - done.created_at_ms
    print(f"the 429'd request completed after {waited_ms} ms, 2 attempts")
    assert waited_ms >= 2000
    # The worker's history of the twin: the second attempt started 2 s or more after the first.
    [letter] = outcomes.dead_letters
    assert (letter.request_id, letter.reason, letter.stage) == (
        twin.request_id,
        "retries_exhausted",
        "retry",
    )
    first, second = letter.attempts
    assert (first.attempt, first.http_status, first.error_type, first.delay_ms) == (
        1,
        429,
        "RateLimited",
        0,
    )
    assert (second.attempt, second.http_status) == (2, 429)
    gap_ms = second.started_at_ms - first.started_at_ms
    print(f"twin: attempt 2 started {gap_ms} ms after attempt 1, after a {second.delay_ms} ms wait")
    assert second.delay_ms >= 2000
    assert gap_ms >= 2000

    # Meanwhile the partition kept flowing: its record committed, the others all done.
    assert committed_at_ms < done.completed_at_ms, "committed before the retry completed"
    later = [results[r.request_id] for r in sent]
    assert all((r.status, r.attempts) == ("ok", 1) for r in later)
    last_other_ms = max(r.completed_at_ms for r in later)
    print(
        f"{len(later)} requests of the same partition completed, the last "
        f"{done.completed_at_ms - last_other_ms} ms before the retried one; "
        f"partition committed past it {done.completed_at_ms - committed_at_ms} ms before"
    )
    assert last_other_ms < done.completed_at_ms

    # The provider saw two calls of the retried request, one of each other request.
    stats = httpx.get(f"{fake.url}/_fake/stats?keys=1").json()
    calls = stats["calls_by_key"]
    assert calls[retried.request_id] == 2
    assert calls[twin.request_id] == 2
    assert all(calls[r.request_id] == 1 for r in sent)
    assert stats["status_counts"]["429"] == 3
    metrics = scrape(worker.url)
    assert sample(metrics, "callstream_retries_total", provider="fake", reason="rate_limited") == 2
    refused = sample(
        metrics, "callstream_retries_refused_total", provider="fake", reason="retries_exhausted"
    )
    assert refused == 1


RETRY_AFTER_S = 30
WAITING = 500


def delayed_retries(worker_url: str) -> float:
    return sample(scrape(worker_url), "callstream_delayed_requests", kind="retry")


@pytest.mark.slow
def test_500_requests_waiting_30s_for_retries_survive_a_sigkill(
    settings, fake_provider_factory, worker_factory
):
    fake = fake_provider_factory("--latency-ms", "2")
    env = {
        # All 500 retries come due together, long after the first calls' budget deposits
        # decayed: with the default floor (10 retries/s) they would go out over ~50 s, as
        # they should to a provider that just had an outage. Here they may all go at once.
        "CALLSTREAM_RETRY__BUDGET_MIN_PER_S": "1000",
    }
    first = worker_factory(fake.url, **env)
    answer_503 = {"fake_status": "503", "fake_retry_after_s": str(RETRY_AFTER_S)}
    requests = [get_item(f"w{n}", fake_fail_first="1", **answer_503) for n in range(WAITING)]
    ids = {r.request_id for r in requests}
    run(publish(settings, requests, spread=False))

    # Wait until all 500 wait in the timer table for their retry, none fired yet.
    deadline = time.monotonic() + 30
    while (held := delayed_retries(first.url)) < WAITING:
        fired = sample(scrape(first.url), "callstream_delays_fired_total", kind="retry")
        assert fired == 0, f"{fired} retries fired before Retry-After: {RETRY_AFTER_S} s passed"
        assert time.monotonic() < deadline, f"only {held} of {WAITING} delayed for a retry"
        time.sleep(0.2)
    before = scrape(first.url)
    assert sample(before, "callstream_delays_fired_total", kind="retry") == 0
    assert sample(before, "callstream_requests_pending") == 0, "no record held while waiting"
    assert httpx.get(f"{fake.url}/_fake/stats").json()["status_counts"] == {"503": WAITING}
    # Every record is committed: from here on the timer table is the requests' only memory.
    partitions = list(range(settings.topics.partitions))
    per_partition = Counter(
        partition_for(request_limit_key("fake", r.request_id, FAKE_SHARDS).encode(), partitions)
        for r in requests
    )
    committed = run(committed_offsets(settings))
    assert {p: committed.get(p, -1) for p in per_partition} == dict(per_partition)

    first.kill()
    killed_at_ms = now_ms()
    second = worker_factory(fake.url, name="takeover", **env)
    outcomes = run(collect(settings, until_ids=ids, timeout_s=RETRY_AFTER_S + 30))

    assert not outcomes.dead_letters, outcomes.dead_letters[:3]
    assert {r.request_id for r in outcomes.results} == ids, "none lost"
    assert all(r.status == "ok" for r in outcomes.results)
    retried = [r for r in outcomes.results if r.attempts == 2]
    assert {r.request_id for r in retried} == ids, "every request retried, from the timer table"
    waits_ms = [r.completed_at_ms - r.created_at_ms for r in retried]
    assert min(waits_ms) >= RETRY_AFTER_S * 1000, "retried no sooner than Retry-After"
    assert min(r.completed_at_ms for r in retried) > killed_at_ms
    after = scrape(second.url)
    assert sample(after, "callstream_delays_fired_total", kind="retry") == WAITING

    # Outcomes are at least once: a repeat carries the same request id (and is counted).
    ids_seen = Counter(outcomes.ids())
    repeats = {rid: n for rid, n in ids_seen.items() if n > 1}
    repeat_attempts = Counter(r.attempts for r in outcomes.results if r.request_id in repeats)
    stats = httpx.get(f"{fake.url}/_fake/stats?keys=1").json()
    calls = stats["calls_by_key"]
    assert all(calls.get(rid, 0) >= 2 for rid in ids), "every request called twice at least"
    repeated_calls = sum(max(0, calls[rid] - 2) for rid in ids)
    print(
        f"after SIGKILL: {len(retried)} of {WAITING} retried, {len(repeats)} repeated outcomes "
        f"(attempts {dict(repeat_attempts)}), {repeated_calls} calls beyond one per attempt "
        f"({stats['calls_total']} calls for {2 * WAITING} attempts)"
    )
    # Every record was committed before the kill and no delay had fired, so none should be
    # called again; outcomes are at least once, though, so a few repeats are tolerated.
    assert repeated_calls <= WAITING // 20
