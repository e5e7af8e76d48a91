"""The response cache (issue 23) on a real broker with the fake provider: coalescing, tenant
isolation, L2 surviving a handover, 304 revalidation, stale-while-revalidate and stale-if-error.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.codec import Codecs
from schemas.models import RequestEvent, ResultStatus
from streams.kafka import client_options
from streams.settings import ProviderSettings, Settings
from tests.integration.conftest import API_KEY
from tests.integration.pipeline.outcomes import Outcomes, collect, publish

pytestmark = pytest.mark.integration

# One provider on the fake's item route, one operation per cache behaviour under test.
SPEC = """
name = "cachy"
base_url = "{url}"
auth = {{ type = "api_key", in = "header", name = "X-API-Key", key = "env:CACHY_KEY" }}
[limits]
rate_per_s = 5000
burst = 500
[operations.private_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 60 }}
[operations.public_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 60, shared = true }}
[operations.short_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 1 }}
[operations.swr_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 1, stale_while_revalidate_s = 120 }}
[operations.sie_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 1, stale_if_error_s = 600 }}
"""


@pytest.fixture
def cachy(
    settings: Settings, fake_provider_factory: Any, worker_factory: Any, tmp_path: Path
) -> Any:
    """Start the fake (with the given arguments) and a worker that knows ``cachy``; returns
    (fake, settings, the worker, start_worker)."""

    def start(*fake_args: str) -> tuple[Any, Settings, Any, Any]:
        fake = fake_provider_factory(*fake_args)
        specs = tmp_path / "provider_files"
        specs.mkdir(exist_ok=True)
        (specs / "cachy.toml").write_text(SPEC.format(url=fake.url))

        def start_worker(name: str = "worker") -> Any:
            return worker_factory(
                fake.url,
                name=name,
                CALLSTREAM_PROVIDER_DIRS=f'["{specs}"]',
                CALLSTREAM_PROVIDERS__CACHY__ENABLED="true",
                CACHY_KEY=API_KEY,
            )

        worker = start_worker()
        cachy_settings = settings.model_copy(update={"providers": {"cachy": ProviderSettings()}})
        return fake, cachy_settings, worker, start_worker

    return start


def _ask(settings: Settings, requests: list[RequestEvent]) -> Outcomes:
    """Publish keyed by limit key (one partition for cachy) and read every outcome back."""
    asyncio.run(publish(settings, requests, spread=False))
    until = {r.request_id for r in requests}
    return asyncio.run(collect(settings, until_ids=until, settle_s=0.5))


def _item(operation: str, item: str, tenant: str = "default") -> RequestEvent:
    return RequestEvent(
        provider="cachy", operation=operation, params={"item_id": item}, tenant=tenant
    )


def _stats(fake: Any) -> dict[str, Any]:
    response = httpx.get(f"{fake.url}/_fake/stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def _only(outcomes: Outcomes, request: RequestEvent) -> Any:
    found = [r for r in outcomes.results if r.request_id == request.request_id]
    assert len(found) == 1, (request, outcomes)
    return found[0]


def test_concurrent_misses_of_one_key_make_one_call(cachy):
    fake, settings, _, _ = cachy("--latency-ms", "400")
    requests = [_item("private_item", "hot") for _ in range(200)]
    outcomes = _ask(settings, requests)
    assert not outcomes.dead_letters
    assert {r.request_id for r in outcomes.results} == {r.request_id for r in requests}
    statuses = Counter((r.status, r.cache_tier) for r in outcomes.results)
    assert statuses[(ResultStatus.OK, None)] == 1, statuses
    assert sum(statuses.values()) == 200
    assert len({r.body for r in outcomes.results}) == 1  # every waiter got the answer
    assert _stats(fake)["calls_total"] == 1


def test_one_tenant_never_reads_another_tenants_private_entry(cachy):
    fake, settings, _, _ = cachy()
    first_a = _item("private_item", "x", tenant="alice")
    _ask(settings, [first_a])
    then_b = _item("private_item", "x", tenant="bob")
    again_a = _item("private_item", "x", tenant="alice")
    outcomes = _ask(settings, [then_b])
    assert _only(outcomes, then_b).status == ResultStatus.OK  # bob's own call, not alice's copy
    outcomes = _ask(settings, [again_a])
    assert _only(outcomes, again_a).status == ResultStatus.CACHED
    assert _stats(fake)["calls_total"] == 2
    # A shared operation's entry serves every tenant.
    public_a = _item("public_item", "y", tenant="alice")
    _ask(settings, [public_a])
    public_b = _item("public_item", "y", tenant="bob")
    outcomes = _ask(settings, [public_b])
    assert _only(outcomes, public_b).status == ResultStatus.CACHED
    assert _stats(fake)["calls_total"] == 3


def test_entries_survive_a_handover_and_a_restart(cachy):
    fake, settings, worker, start_worker = cachy()
    first = [_item("private_item", f"k{n}") for n in range(20)]
    outcomes = _ask(settings, first)
    assert Counter(r.status for r in outcomes.results) == {ResultStatus.OK: 20}
    time.sleep(1.0)  # the L2 writes reach the changelog in the background
    worker.stop()
    second = start_worker("second")  # its own data dir: only the changelog can tell it
    again = [_item("private_item", f"k{n}") for n in range(20)]
    outcomes = _ask(settings, again)
    tiers = Counter((_only(outcomes, r).status, _only(outcomes, r).cache_tier) for r in again)
    assert tiers == {(ResultStatus.CACHED, "l2"): 20}
    # And a plain restart on its own disk: L1 is empty, L2 answers at once.
    second.stop()
    start_worker("second")
    third = [_item("private_item", f"k{n}") for n in range(20)]
    outcomes = _ask(settings, third)
    tiers = Counter((_only(outcomes, r).status, _only(outcomes, r).cache_tier) for r in third)
    assert tiers == {(ResultStatus.CACHED, "l2"): 20}
    assert _stats(fake)["calls_total"] == 20


def test_a_304_refreshes_an_expired_entry_without_its_body(cachy):
    fake, settings, _, _ = cachy()
    first = _item("short_item", "r")
    _ask(settings, [first])
    sent = _stats(fake)["body_bytes"]
    time.sleep(1.3)  # past ttl_s = 1, no stale window: revalidated before use
    again = _item("short_item", "r")
    result = _only(_ask(settings, [again]), again)
    assert result.status == ResultStatus.CACHED
    assert result.cache_tier == "revalidated"
    assert result.body and b'"id":"r"' in result.body
    stats = _stats(fake)
    assert stats["calls_total"] == 2
    assert stats["not_modified"] == 1
    assert stats["body_bytes"] == sent  # the 304 carried no body


def test_stale_while_revalidate_answers_at_once_and_refreshes_behind(cachy):
    fake, settings, _, _ = cachy()
    _ask(settings, [_item("swr_item", "s")])
    time.sleep(1.3)
    stale = _item("swr_item", "s")
    result = _only(_ask(settings, [stale]), stale)
    assert result.status == ResultStatus.STALE
    assert result.cache_age_ms is not None and result.cache_age_ms >= 1000
    deadline = time.monotonic() + 10
    while _stats(fake)["not_modified"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stats(fake)["not_modified"] == 1  # the background refresh, answered 304
    fresh = _item("swr_item", "s")
    result = _only(_ask(settings, [fresh]), fresh)
    assert result.status == ResultStatus.CACHED
    assert result.cache_age_ms is not None and result.cache_age_ms < 1000


def test_stale_if_error_answers_when_the_provider_fails(cachy):
    fake, settings, _, _ = cachy()
    _ask(settings, [_item("sie_item", "e")])
    down = httpx.post(f"{fake.url}/_fake/config", json={"error_mix": {"status_503": 1.0}})
    assert down.status_code == 200, down.text
    time.sleep(1.3)
    stale = _item("sie_item", "e")
    result = _only(_ask(settings, [stale]), stale)
    assert result.status == ResultStatus.STALE
    assert result.reason is not None
    assert result.body and b'"id":"e"' in result.body
    assert _stats(fake)["calls_total"] == 2


async def _access_events(settings: Settings, *, at_least: int, timeout_s: float = 20) -> list[Any]:
    """Every access event on the access topic, once at least ``at_least`` have arrived."""
    consumer = AIOKafkaConsumer(
        settings.topics.access,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(events) < at_least and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    events.extend(Codecs().access.decode(record.value).events)
    finally:
        await consumer.stop()
    return events


def test_the_cache_tells_the_access_topic_and_serves_prefetches_quietly(
    settings: Settings, fake_provider_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    fake = fake_provider_factory()
    specs = tmp_path / "provider_files"
    specs.mkdir()
    (specs / "cachy.toml").write_text(SPEC.format(url=fake.url))
    worker_factory(
        fake.url,
        CALLSTREAM_PROVIDER_DIRS=f'["{specs}"]',
        CALLSTREAM_PROVIDERS__CACHY__ENABLED="true",
        CALLSTREAM_PREFETCH__ENABLED="true",
        CALLSTREAM_PREFETCH__FLUSH_MS="50",
        CACHY_KEY=API_KEY,
    )
    settings = settings.model_copy(update={"providers": {"cachy": ProviderSettings()}})
    first, second = _item("private_item", "p"), _item("private_item", "p")
    _ask(settings, [first])
    _ask(settings, [second])
    prefetch = _item("private_item", "p").model_copy(update={"prefetch": True, "priority": 0})
    asyncio.run(publish(settings, [prefetch], spread=False))
    deadline = time.monotonic() + 20
    while _stats(fake)["calls_total"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = _stats(fake)
    assert (stats["calls_total"], stats["not_modified"]) == (2, 1)  # refreshed with a 304
    events = asyncio.run(_access_events(settings, at_least=3))
    assert [str(e.kind) for e in events] == ["fill", "hit", "prefetch"]
    assert len({e.key for e in events}) == 1
    assert events[0].request is not None  # the fill carries what a prefetch sends again
    assert Codecs().request.decode(events[0].request).request_id == first.request_id
    outcomes = asyncio.run(collect(settings, until_ids={second.request_id}, settle_s=1.0))
    assert prefetch.request_id not in outcomes.ids()  # nobody waits for a prefetch
