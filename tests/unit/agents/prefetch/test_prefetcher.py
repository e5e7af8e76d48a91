"""The prefetcher without Faust: a dict for its table, lists for its topics, a hand clock."""

from __future__ import annotations

import zlib
from typing import Any

from prometheus_client import CollectorRegistry

from agents.prefetch import model as logit
from agents.prefetch.metrics import PrefetchMetrics
from agents.prefetch.planner import KeyState, PlannerConfig
from agents.prefetch.prefetcher import Prefetcher, model_key
from schemas.codec import Codecs
from schemas.keys import request_limit_key
from schemas.models import AccessBatch, AccessEvent, AccessKind, RequestEvent

CODECS = Codecs()
PARTITIONS = 4
TTL = 30_000
T0 = 1_700_000_000_000
CONFIG = PlannerConfig(lead_ms=2_000, label_grace_ms=1_000, forget_after_ms=3_600_000)
TEMPLATE = RequestEvent(provider="acme", operation="get_item", params={"id": "1"})


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


class Sent:
    def __init__(self) -> None:
        self.prefetches: list[tuple[bytes, RequestEvent]] = []
        self.ticks: list[int] = []

    async def prefetch(self, key: bytes, value: bytes) -> None:
        self.prefetches.append((key, CODECS.request.decode(value)))

    async def tick(self, partition: int, value: bytes) -> None:
        assert CODECS.access.decode(value) == AccessBatch()
        self.ticks.append(partition)


def build(
    store: dict[bytes, bytes], clock: Clock, sent: Sent, **kwargs: Any
) -> tuple[Prefetcher, PrefetchMetrics]:
    metrics = PrefetchMetrics.create(CollectorRegistry())
    prefetcher = Prefetcher(
        store,
        send_prefetch=sent.prefetch,
        send_tick=sent.tick,
        metrics=metrics,
        config=CONFIG,
        partitions=PARTITIONS,
        clock=clock,
        **kwargs,
    )
    return prefetcher, metrics


def key_of(name: str) -> tuple[bytes, int]:
    key = f"acme/get_item/{name}".encode()
    return key, zlib.crc32(key) % PARTITIONS


def record(*events: AccessEvent) -> bytes:
    return CODECS.access.encode(AccessBatch(events=list(events)))


def fill(key: bytes, at_ms: int) -> AccessEvent:
    return AccessEvent(
        key=key,
        at_ms=at_ms,
        kind=AccessKind.FILL,
        expires_at_ms=at_ms + TTL,
        request=CODECS.request.encode(TEMPLATE),
    )


def hit(key: bytes, at_ms: int, expires_ms: int) -> AccessEvent:
    return AccessEvent(key=key, at_ms=at_ms, kind=AccessKind.HIT, expires_at_ms=expires_ms)


def sample(metrics: PrefetchMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def run_until(prefetcher: Prefetcher, clock: Clock, sent: Sent, until_ms: int) -> None:
    """Advance the clock in timer steps; deliver every tick as its partition's next record."""
    while clock.ms < until_ms:
        clock.ms += 200
        await prefetcher.tick()
        ticks, sent.ticks = sent.ticks, []
        for partition in ticks:
            await prefetcher.handle(partition, record())


async def test_a_key_read_since_its_fill_is_prefetched_once_before_expiry() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    prefetcher, metrics = build(store, clock, sent, shards={"acme": 6})
    hot, p_hot = key_of("hot")
    cold, p_cold = key_of("cold")
    await prefetcher.handle(p_hot, record(fill(hot, T0), hit(hot, T0 + 100, T0 + TTL)))
    await prefetcher.handle(p_cold, record(fill(cold, T0)))
    await run_until(prefetcher, clock, sent, T0 + TTL - 1_000)
    assert len(sent.prefetches) == 1
    key, request = sent.prefetches[0]
    assert key == request_limit_key("acme", hot.hex(), 6).encode()
    assert (request.prefetch, request.priority, request.params) == (True, 0, {"id": "1"})
    assert request.deadline_at_ms == T0 + TTL + CONFIG.lead_ms
    assert sample(metrics, "callstream_prefetcher_prefetches_total") == 1
    assert sample(metrics, "callstream_prefetcher_decisions_total", verdict="refresh") == 1
    assert sample(metrics, "callstream_prefetcher_decisions_total", verdict="skip") == 1
    assert sample(metrics, "callstream_prefetcher_keys") == 2
    # Any number of further ticks and duplicate records: no second prefetch for that expiry.
    await prefetcher.handle(p_hot, record(hit(hot, T0 + 100, T0 + TTL)))
    await run_until(prefetcher, clock, sent, T0 + TTL + 5_000)
    assert len(sent.prefetches) == 1


async def test_a_restarted_prefetcher_keeps_its_decisions_and_schedule() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    first, _ = build(store, clock, sent)
    decided, p_decided = key_of("decided")
    later, p_later = key_of("later")
    await first.handle(p_decided, record(fill(decided, T0), hit(decided, T0 + 1, T0 + TTL)))
    accesses = record(fill(later, T0 + 10_000), hit(later, T0 + 10_001, T0 + 40_000))
    await first.handle(p_later, accesses)
    await run_until(first, clock, sent, T0 + TTL - 1_500)
    assert [request.params for _, request in sent.prefetches] == [{"id": "1"}]
    # A new process on the same table: the rebuilt heap holds the later key's decision and
    # no second one for the key already decided, even when its access is read again.
    second, metrics = build(store, clock, sent)
    await second.rebuild()
    assert second.ready
    assert sample(metrics, "callstream_prefetcher_keys") == 2
    await second.handle(p_decided, record(hit(decided, T0 + 1, T0 + TTL)))
    await run_until(second, clock, sent, T0 + 40_000)
    assert len(sent.prefetches) == 2
    state = KeyState.from_bytes(store[later])
    assert state is not None
    assert state.decided_ms == T0 + 40_000


async def test_labels_teach_the_partition_model_which_the_table_keeps() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    prefetcher, metrics = build(store, clock, sent)
    key, partition = key_of("k")
    await prefetcher.handle(partition, record(fill(key, T0), hit(key, T0 + 1, T0 + TTL)))
    await run_until(prefetcher, clock, sent, T0 + TTL)
    # A request inside the window after the expiry: the prefetch was used.
    await prefetcher.handle(partition, record(hit(key, T0 + TTL + 500, T0 + 2 * TTL)))
    labels = {"verdict": "refresh", "requested": "true"}
    assert sample(metrics, "callstream_prefetcher_labels_total", **labels) == 1
    assert sample(metrics, "callstream_prefetcher_model_updates_total") == 1
    stored = logit.LogitModel.from_bytes(store[model_key(partition)])
    assert stored is not None
    assert stored.seen == 1


async def test_an_idle_window_closes_on_a_tick_as_unused() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    prefetcher, metrics = build(store, clock, sent)
    key, partition = key_of("k")
    await prefetcher.handle(partition, record(fill(key, T0), hit(key, T0 + 1, T0 + TTL)))
    await run_until(prefetcher, clock, sent, T0 + 2 * TTL + 2_000)
    labels = {"verdict": "refresh", "requested": "false"}
    assert sample(metrics, "callstream_prefetcher_labels_total", **labels) == 1


async def test_the_model_decider_uses_the_stored_model() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    key, partition = key_of("k")
    # A model that has learnt "never requested": it predicts well under the threshold.
    never = logit.LogitModel.new()
    inputs = tuple(float(n) for n in range(len(never.weights)))
    for _ in range(200):
        never = logit.learn(never, inputs, False, logit.LogitConfig())
    store[model_key(partition)] = never.to_bytes()
    prefetcher, metrics = build(store, clock, sent, decider="model")
    await prefetcher.handle(partition, record(fill(key, T0), hit(key, T0 + 1, T0 + TTL)))
    await run_until(prefetcher, clock, sent, T0 + TTL)
    assert sent.prefetches == []
    assert sample(metrics, "callstream_prefetcher_decisions_total", verdict="skip") == 1


async def test_ticks_go_only_to_partitions_with_due_steps_and_are_not_repeated() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    prefetcher, metrics = build(store, clock, sent)
    key, partition = key_of("k")
    await prefetcher.handle(partition, record(fill(key, T0)))
    await prefetcher.tick()
    assert sent.ticks == []
    clock.ms = T0 + TTL - 2_000
    await prefetcher.tick()
    await prefetcher.tick()
    assert sent.ticks == [partition]
    clock.ms += 2_500  # unanswered for too long: sent again
    await prefetcher.tick()
    assert sent.ticks == [partition, partition]
    assert sample(metrics, "callstream_prefetcher_ticks_total") == 2


async def test_an_undecodable_record_is_counted_and_the_stream_goes_on() -> None:
    store: dict[bytes, bytes] = {}
    clock, sent = Clock(), Sent()
    prefetcher, metrics = build(store, clock, sent)
    await prefetcher.handle(0, b"not avro")
    await prefetcher.handle(0, None)
    assert sample(metrics, "callstream_prefetcher_undecodable_total", what="access_batch") == 2


async def test_revoked_partitions_leave_memory_and_a_rebuild_skips_models() -> None:
    store: dict[bytes, bytes] = {model_key(1): b"garbage"}
    clock, sent = Clock(), Sent()
    prefetcher, _ = build(store, clock, sent)
    key, partition = key_of("k")
    await prefetcher.handle(partition, record(fill(key, T0)))
    prefetcher.revoke([partition])
    assert not prefetcher.ready
    assert "partitions=[]" in repr(prefetcher)
    await prefetcher.rebuild()
    assert f"partitions=[{partition}]" in repr(prefetcher)
