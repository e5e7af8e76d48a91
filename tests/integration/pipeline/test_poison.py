"""A record must never jam its partition (issue 19): outcomes too large to publish are
published reduced, and the records after them on the same partition all complete."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import Codecs
from schemas.models import RequestEvent
from streams.kafka import client_options
from streams.sdk import CallstreamClient
from streams.settings import ProviderSettings, Settings
from tests.integration.pipeline.outcomes import collect, run

pytestmark = pytest.mark.integration

FOLLOWERS = 1000
GARBAGE = b"\xfe" * 1_000_000  # 1 MB a publisher may send: the topic accepts it
# Each trace value under the request model's cap; together they push a result over the limit.
TRACE = {f"t{index}": "z" * 6000 for index in range(20)}


def get_item(item_id: str, **params: str) -> RequestEvent:
    return RequestEvent(
        provider="fake", operation="get_item", params={"item_id": item_id, **params}
    )


def poison() -> dict[str, RequestEvent]:
    return {
        # 2 MB answer: over caller.max_response_bytes, the caller's own dead letter.
        "answer_2mb": get_item("big", fake_status="200", fake_body_bytes="2000000"),
        # An answer under the cap, but with the trace its result is over max_outcome_bytes.
        "result_over": get_item("over", fake_status="200", fake_body_bytes="880000").model_copy(
            update={"trace": TRACE}
        ),
        # 700 KB refused by the provider: the dead letter holds it twice (raw and decoded).
        "request_700kb": RequestEvent(
            provider="fake",
            operation="echo",
            params={"fake_status": "400"},
            body=b"y" * 700_000,
            content_type="application/octet-stream",
        ),
    }


async def publish_all(settings: Settings, first: list[RequestEvent], then: list[RequestEvent]):
    # One shard: every request is keyed "fake", so all of them share one partition.
    async with CallstreamClient(settings) as client:
        await client.publish_many(first)
        await client.publish_raw(GARBAGE, key=b"fake")
        await client.publish_many(then)


async def committed_reaches_the_end(settings: Settings, partition: int, timeout_s: float) -> bool:
    tp = TopicPartition(settings.topics.requests, partition)
    group = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=f"{settings.app_id}.caller",  # only read: it never joins the group
        enable_auto_commit=False,
    )
    await group.start()
    try:
        end = (await group.end_offsets([tp]))[tp]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await group.committed(tp) == end:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await group.stop()


def test_outcomes_too_large_are_reduced_and_the_partition_goes_on(
    settings, fake_provider_factory, worker_factory
):
    settings = settings.model_copy(update={"providers": {"fake": ProviderSettings(shards=1)}})
    fake = fake_provider_factory("--latency-ms", "1")
    worker_factory(fake.url, CALLSTREAM_PROVIDERS__FAKE__SHARDS="1")
    bad = poison()
    followers = [get_item(f"item-{index}") for index in range(FOLLOWERS)]

    run(publish_all(settings, list(bad.values()), followers))
    wanted = {request.request_id for request in [*bad.values(), *followers]}
    outcomes = run(collect(settings, until_ids=wanted, extra_dead_letters=1, timeout_s=45))

    ids = Counter(outcomes.ids())
    assert set(ids) == wanted and max(ids.values()) == 1, "one outcome per request"
    anonymous = [d for d in outcomes.dead_letters if d.request_id is None]
    assert len(anonymous) == 1 and outcomes.total == len(wanted) + 1
    results = {r.request_id: r for r in outcomes.results}
    letters = {d.request_id: d for d in outcomes.dead_letters if d.request_id}

    assert letters[bad["answer_2mb"].request_id].reason == "body_too_large"

    reduced = results[bad["result_over"].request_id]
    assert (reduced.status, reduced.reason, reduced.body, reduced.http_status) == (
        "failed",
        "body_too_large",
        None,
        200,
    )
    assert reduced.trace == TRACE

    refused = letters[bad["request_700kb"].request_id]
    assert refused.reason == "bad_request"
    assert refused.original is None and not refused.original_truncated
    assert Codecs().request.decode(refused.original_raw) == bad["request_700kb"]

    (garbage,) = anonymous
    assert garbage.original_truncated and garbage.original is None
    assert 900_000 < len(garbage.original_raw) < len(GARBAGE)
    assert GARBAGE.startswith(garbage.original_raw)

    assert all(results[r.request_id].status == "ok" for r in followers)
    partitions = {d.source_partition for d in outcomes.dead_letters}
    assert len(partitions) == 1, "everything went to one partition"
    assert run(committed_reaches_the_end(settings, partitions.pop(), timeout_s=10))
