"""`callstream prefetcher` on a real broker (issue 24): access batches in, prefetch requests
out shortly before a read entry expires, none for an unread one, and after a restart on an
empty data dir the table (from its changelog) still knows what was decided and scheduled; then
end to end with a worker, whose refreshed entry answers after the old expiry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import Codecs
from schemas.keys import request_limit_key
from schemas.models import (
    AccessBatch,
    AccessEvent,
    AccessKind,
    RequestEvent,
    ResultEvent,
    ResultStatus,
    now_ms,
)
from streams.cli.dev.processes import Child, free_port, spawn, wait_http
from streams.kafka import producer_options, reader, started
from streams.settings import PrefetchSettings, ProviderSettings, Settings
from tests.integration.conftest import API_KEY, FAKE_SHARDS
from tests.integration.pipeline.outcomes import collect, publish

pytestmark = pytest.mark.integration

LEAD_S = 2.0
CODECS = Codecs()


class Seen(NamedTuple):
    """A record of the requests topic, and when the test read it."""

    at_ms: int
    key: bytes
    request: RequestEvent


@pytest.fixture
def prefetch_settings(settings: Settings, app_id: str) -> Settings:
    topics = settings.topics.model_copy(update={"access": f"{app_id}.access"})
    return settings.model_copy(
        update={"topics": topics, "prefetch": PrefetchSettings(lead_s=LEAD_S)}
    )


@pytest.fixture
def prefetcher_factory(
    tmp_path: Path, prefetch_settings: Settings
) -> Iterator[Callable[[str], Child]]:
    """Starts `callstream prefetcher` processes (each with its own data dir) and waits until
    each is ready; all stopped at the end."""
    started_children: list[Child] = []
    settings = prefetch_settings

    def start(name: str) -> Child:
        port = free_port()
        env = {
            "CALLSTREAM_APP_ID": settings.app_id,
            "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "CALLSTREAM_KAFKA__SESSION_TIMEOUT_S": "6",
            "CALLSTREAM_KAFKA__HEARTBEAT_INTERVAL_S": "1",
            "CALLSTREAM_TOPICS__REQUESTS": settings.topics.requests,
            "CALLSTREAM_TOPICS__ACCESS": settings.topics.access,
            "CALLSTREAM_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "CALLSTREAM_PROVIDERS__FAKE__SHARDS": str(FAKE_SHARDS),
            "CALLSTREAM_PREFETCH__LEAD_S": str(LEAD_S),
            "CALLSTREAM_DATA_DIR": str(tmp_path / name),
        }
        argv = [sys.executable, "-m", "streams", "prefetcher", "--web-port", str(port)]
        child = spawn(name, argv, env, tmp_path)
        started_children.append(child)
        child.url = f"http://127.0.0.1:{port}"
        wait_http(child, f"{child.url}/healthz", timeout_s=60)
        return child

    yield start
    for child in started_children:
        child.stop()


def cache_key(name: str) -> bytes:
    return b"fake/get_item/default/" + hashlib.blake2b(name.encode(), digest_size=16).digest()


def fill(name: str, at_ms: int, expires_ms: int) -> AccessEvent:
    template = RequestEvent(provider="fake", operation="get_item", params={"item_id": name})
    return AccessEvent(
        key=cache_key(name),
        at_ms=at_ms,
        kind=AccessKind.FILL,
        expires_at_ms=expires_ms,
        request=CODECS.request.encode(template),
    )


def hit(name: str, at_ms: int, expires_ms: int) -> AccessEvent:
    return AccessEvent(
        key=cache_key(name), at_ms=at_ms, kind=AccessKind.HIT, expires_at_ms=expires_ms
    )


@contextlib.asynccontextmanager
async def access_sender(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    """Sends access events as the worker does: one batch per access-topic partition."""
    producer = AIOKafkaProducer(**producer_options(settings.kafka))
    partitions = settings.topics.partitions

    async def send(*events: AccessEvent) -> None:
        batches: dict[int, list[AccessEvent]] = {}
        for event in events:
            batches.setdefault(zlib.crc32(event.key) % partitions, []).append(event)
        for partition, batch in batches.items():
            value = CODECS.access.encode(AccessBatch(events=batch))
            await producer.send_and_wait(settings.topics.access, value, partition=partition)

    async with started(producer, settings.kafka):
        yield send


class Watch:
    """Every record of the requests topic, as it arrives."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._arrived = asyncio.Event()

    def add(self, seen: Seen) -> None:
        self.seen.append(seen)
        self._arrived.set()

    def of(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.request.params == {"item_id": name}]

    async def first(self, name: str, *, timeout_s: float) -> None:
        """Wait until a request for ``name`` arrived (or the timeout passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self.of(name):
                    self._arrived.clear()
                    await self._arrived.wait()


@contextlib.asynccontextmanager
async def watching(settings: Settings) -> AsyncIterator[Watch]:
    watch = Watch()

    async def read() -> None:
        async with reader(settings.kafka, settings.topics.requests) as consumer:
            async for record in consumer:
                watch.add(Seen(now_ms(), record.key, CODECS.request.decode(record.value)))

    task = asyncio.create_task(read())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def sleep_until(epoch_ms: int) -> None:
    await asyncio.sleep(max(0.0, (epoch_ms - now_ms()) / 1000))


def keys_tracked(child: Child) -> float | None:
    for line in httpx.get(f"{child.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("callstream_prefetcher_keys "):
            return float(line.split()[1])
    return None


async def test_read_entries_are_prefetched_before_expiry_once_across_a_restart(
    prefetch_settings: Settings, prefetcher_factory: Callable[[str], Child]
) -> None:
    settings = prefetch_settings
    first = await asyncio.to_thread(prefetcher_factory, "prefetcher-a")
    async with access_sender(settings) as send, watching(settings) as seen:
        t0 = now_ms()
        hot_expiry, warm_expiry = t0 + 6_000, t0 + 24_000
        await send(
            fill("hot", t0, hot_expiry),
            fill("cold", t0, hot_expiry),  # never read: the rule lets it expire
            fill("warm", t0, warm_expiry),
        )
        await send(hit("hot", t0 + 300, hot_expiry), hit("warm", t0 + 300, warm_expiry))
        await sleep_until(hot_expiry + 1_000)

        (hot,) = seen.of("hot")
        assert hot.key == request_limit_key("fake", cache_key("hot").hex(), FAKE_SHARDS).encode()
        assert (hot.request.prefetch, hot.request.priority) == (True, 0)
        assert hot.request.provider == "fake"
        assert hot_expiry - LEAD_S * 1000 <= hot.request.created_at_ms < hot_expiry
        assert hot.at_ms < hot_expiry  # on the topic before the entry expired
        assert seen.of("cold") == []
        assert seen.of("warm") == []  # its decision is 15 s away

        # A new process on an empty data dir: state and schedule come from the changelog.
        await asyncio.to_thread(first.stop)
        second = await asyncio.to_thread(prefetcher_factory, "prefetcher-b")
        assert await asyncio.to_thread(keys_tracked, second) == 3
        # The accesses of the decided entry again (as a rebalance replays them): no repeat.
        await send(fill("hot", t0, hot_expiry), hit("hot", t0 + 300, hot_expiry))
        await seen.first("warm", timeout_s=(warm_expiry - now_ms()) / 1000)
        await asyncio.sleep(1.0)

    (warm,) = seen.of("warm")  # decided by the restarted process, from the rebuilt schedule
    assert warm_expiry - LEAD_S * 1000 <= warm.request.created_at_ms < warm_expiry
    assert warm.at_ms < warm_expiry
    assert len(seen.of("hot")) == 1
    assert seen.of("cold") == []


# A cacheable operation for the worker; the fake provider answers it (with an ETag).
CACHY = """
name = "cachy"
base_url = "{url}"
auth = {{ type = "api_key", in = "header", name = "X-API-Key", key = "env:CACHY_KEY" }}
[limits]
rate_per_s = 50
burst = 10
[operations.item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
cache = {{ ttl_s = 6 }}
"""


def metric_sum(child: Child, name: str) -> float:
    lines = httpx.get(f"{child.url}/metrics", timeout=5).text.splitlines()
    return sum(
        float(line.split()[-1]) for line in lines if line.startswith((name + " ", name + "{"))
    )


def test_a_read_entry_is_refreshed_by_the_worker_and_answers_after_its_ttl(
    prefetch_settings: Settings,
    prefetcher_factory: Callable[[str], Child],
    fake_provider_factory: Callable[..., Child],
    worker_factory: Callable[..., Child],
    tmp_path: Path,
) -> None:
    """End to end: the worker's access events in, the prefetch served on a spare token, and
    the next request after the old expiry answered from the refreshed entry."""
    fake = fake_provider_factory()
    specs = tmp_path / "provider_files"
    specs.mkdir()
    (specs / "cachy.toml").write_text(CACHY.format(url=fake.url))
    worker = worker_factory(
        fake.url,
        CALLSTREAM_PROVIDER_DIRS=f'["{specs}"]',
        CALLSTREAM_PROVIDERS__CACHY__ENABLED="true",
        CACHY_KEY=API_KEY,
        CALLSTREAM_PREFETCH__ENABLED="true",
        CALLSTREAM_TOPICS__ACCESS=prefetch_settings.topics.access,
    )
    prefetcher = prefetcher_factory("prefetcher")
    settings = prefetch_settings.model_copy(update={"providers": {"cachy": ProviderSettings()}})

    def ask(item: str) -> ResultEvent:
        request = RequestEvent(provider="cachy", operation="item", params={"item_id": item})
        asyncio.run(publish(settings, [request], spread=False))
        outcomes = asyncio.run(collect(settings, until_ids={request.request_id}, settle_s=0.1))
        (result,) = [r for r in outcomes.results if r.request_id == request.request_id]
        return result

    filled_at = time.monotonic()
    assert ask("hot").status is ResultStatus.OK
    assert ask("cold").status is ResultStatus.OK
    assert ask("hot").cache_tier == "l1"  # read since its fill: the rule refreshes it
    time.sleep(max(0.0, filled_at + 7.5 - time.monotonic()))  # past the first expiry

    again = ask("hot")
    assert (again.status, again.cache_tier) == (ResultStatus.CACHED, "l1")
    assert metric_sum(prefetcher, "callstream_prefetcher_prefetches_total") == 1
    assert metric_sum(worker, "callstream_prefetch_calls_total") == 1
