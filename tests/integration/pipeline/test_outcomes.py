"""Every request ends as exactly one outcome, whatever the provider or the input does."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from schemas.codec import Codecs
from schemas.models import RequestEvent
from streams.sdk import CallstreamClient
from tests.integration.pipeline.outcomes import collect, publish, run

pytestmark = pytest.mark.integration

# A request failing on every attempt ends when its attempts run out, or earlier when the
# provider's retries are over their budget (most of this mix fails, so the budget binds).
GAVE_UP = {"retries_exhausted", "retry_budget_exceeded"}
# What the fake provider is told to do, and the outcome each must become.
MIX = {
    "ok": ({}, ("result", {"ok"})),
    "not_found": ({"fake_status": "404"}, ("dead_letter", {"not_found"})),
    "server_error": ({"fake_status": "500"}, ("dead_letter", GAVE_UP)),
    "timeout": ({"fake_delay_ms": "2500"}, ("dead_letter", GAVE_UP)),
}


def mixed_requests(count: int) -> tuple[list[RequestEvent], dict[str, str]]:
    kinds = ["ok"] * 6 + ["not_found", "server_error", "timeout"]
    requests, kind_of = [], {}
    for index in range(count):
        kind = kinds[index % len(kinds)] if index % 40 else "timeout"
        params = {"item_id": f"item-{index}", **MIX[kind][0]}
        request = RequestEvent(provider="fake", operation="get_item", params=params)
        requests.append(request)
        kind_of[request.request_id] = kind
    return requests, kind_of


def test_mixed_outcomes_each_request_exactly_once(settings, fake_provider_factory, worker_factory):
    fake = fake_provider_factory("--latency-ms", "5")
    worker_factory(
        fake.url,
        CALLSTREAM_PROVIDERS__FAKE__TIMEOUT_S="1",
        CALLSTREAM_RETRY__MAX_ATTEMPTS="3",
        # Over half of this mix's calls fail (every attempt of a quarter of the requests): a
        # breaker would rightly open and hold every request for its waits in open. Outcomes
        # under an open breaker are tests/integration/pipeline/test_breaker.py's subject.
        CALLSTREAM_BREAKER__ENABLED="false",
    )
    requests, kind_of = mixed_requests(2000)

    run(publish(settings, requests))
    outcomes = run(collect(settings, until_ids=set(kind_of)))

    ids = Counter(outcomes.ids())
    assert set(ids) == set(kind_of), "every request has an outcome"
    assert max(ids.values()) == 1, "no request has two outcomes"
    assert outcomes.total == 2000
    for event in outcomes.results:
        want_topic, want_status = MIX[kind_of[event.request_id]][1]
        assert want_topic == "result" and event.status in want_status, event
    for letter in outcomes.dead_letters:
        assert letter.request_id is not None
        kind = kind_of[letter.request_id]
        want_topic, want_reason = MIX[kind][1]
        assert want_topic == "dead_letter" and letter.reason in want_reason, letter
        assert letter.original is not None
        assert letter.attempts, "the history of every attempt"
        if kind == "not_found":  # permanent: never retried
            assert letter.stage == "caller" and len(letter.attempts) == 1
            assert letter.attempts[0].http_status == 404
        else:
            assert letter.stage == "retry" and 1 <= len(letter.attempts) <= 3
            assert [a.attempt for a in letter.attempts] == list(range(1, len(letter.attempts) + 1))
            assert all(a.delay_ms > 0 for a in letter.attempts[1:]), "retries waited"
    timeouts = [d for d in outcomes.dead_letters if kind_of[d.request_id or ""] == "timeout"]
    assert timeouts and all(d.attempts[-1].error_type == "ProviderTimeout" for d in timeouts)
    assert all(r.http_status == 200 and r.body for r in outcomes.results if r.status == "ok")


def test_bad_input_becomes_dead_letters_and_the_stream_goes_on(
    settings, fake_provider_factory, worker_factory
):
    fake = fake_provider_factory("--latency-ms", "1")
    worker_factory(fake.url)
    codecs = Codecs()
    good = [
        RequestEvent(provider="fake", operation="get_item", params={"item_id": str(i)})
        for i in range(20)
    ]
    garbage = [b"\x00\x01garbage", b"", b"\xc3\x01" + b"\xff" * 8 + b"\x02"]
    invalid = codecs.request.encode_unchecked(  # valid Avro, but priority out of range
        {**good[0].model_dump(), "request_id": "bad-priority", "priority": 42}
    )
    unknown_provider = RequestEvent(provider="nope", operation="get_item")
    unknown_operation = RequestEvent(provider="fake", operation="nope")
    not_allowed = RequestEvent(
        provider="fake",
        operation="get_item",
        params={"item_id": "1", "url": "http://169.254.169.254/"},
    )

    async def send() -> None:
        async with CallstreamClient(settings) as client:
            await client.publish_many(good[:10])
            for raw in [*garbage, invalid]:
                await client.publish_raw(raw, key=b"fake")
            await client.publish_many(
                [unknown_provider, unknown_operation, not_allowed, *good[10:]]
            )

    run(send())
    wanted = {r.request_id for r in good} | {
        unknown_provider.request_id,
        unknown_operation.request_id,
        not_allowed.request_id,
    }
    outcomes = run(collect(settings, until_ids=wanted, extra_dead_letters=4))

    assert {r.request_id for r in outcomes.results} == {r.request_id for r in good}
    by_raw = {d.original_raw: d for d in outcomes.dead_letters if d.request_id is None}
    for raw in garbage:
        assert by_raw[raw].reason == "undecodable"
        assert by_raw[raw].stage == "decode"
    assert by_raw[invalid].reason == "invalid"
    assert "priority" in by_raw[invalid].error_message
    reasons = {d.request_id: d.reason for d in outcomes.dead_letters if d.request_id}
    assert reasons == {
        unknown_provider.request_id: "unknown_provider",
        unknown_operation.request_id: "unknown_operation",
        not_allowed.request_id: "not_allowed",
    }
    stats = httpx.get(f"{fake.url}/_fake/stats").json()
    assert stats["calls_total"] == len(good), "refused requests never reach the provider"
