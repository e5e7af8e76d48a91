"""The predictive-cache agent (issue 24): a Faust agent on the access topic that keeps each cache
key's state in a RocksDB table and publishes a prefetch request shortly before a hot entry
expires.

Here the agent, its table, its timer and its rebalance hooks are wired to a ``Prefetcher``
(``prefetcher.py``), which does the work. Decisions are taken inside the agent (the timer only
sends ticks), so a record processed twice after a rebalance finds its expiry decided
(``KeyState.decided_ms``) unless the first pass died before its changelog write, which costs at
most one extra prefetch. The heaps are rebuilt from the table after every rebalance (the
table's recovery callback), so state and schedule survive restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust

from agents.prefetch.metrics import PrefetchMetrics
from agents.prefetch.planner import PlannerConfig
from agents.prefetch.prefetcher import Prefetcher
from streams.settings import PrefetchSettings, TopicSettings

__all__ = ["TABLE_NAME", "TICK_S", "install", "planner_config"]

log = logging.getLogger(__name__)

TABLE_NAME = "prefetch-keys"
# How often the timer looks for due steps: a decision fires at most this late (plus a record's
# round trip through the broker), well inside any useful lead_s.
TICK_S = 0.2


def planner_config(prefetch: PrefetchSettings) -> PlannerConfig:
    """The planner's settings: a request may still be in the worker's access batch (flush_ms)
    and in flight when a label window ends, hence the grace."""
    return PlannerConfig(
        lead_ms=int(prefetch.lead_s * 1000), label_grace_ms=2 * prefetch.flush_ms + 1_000
    )


def install(
    app: faust.App,
    *,
    topics: TopicSettings,
    prefetch: PrefetchSettings,
    shards: Mapping[str, int],
    metrics: PrefetchMetrics,
) -> Prefetcher:
    """Declare the agent, its table, its timer and its rebalance hooks on ``app``.

    Args:
        app: a Faust app with its Kafka I/O on, and a store URL (``rocksdb://``).
        topics: the access topic (read, and written with ticks) and the requests topic.
        prefetch: lead, decider, the access batches' flush interval.
        shards: each provider's limit shards.
        metrics: the prefetcher's metrics.

    Returns:
        The prefetcher (its ``ready`` says whether the table is recovered).
    """
    partitions = topics.partitions
    # bytes keys and values are stored and changelogged raw (Faust picks "raw" for bytes).
    table = app.Table(TABLE_NAME, partitions=partitions, key_type=bytes, value_type=bytes)
    access = app.topic(
        topics.access,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    requests = app.topic(
        topics.requests,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def send_prefetch(key: bytes, value: bytes) -> object:
        return await requests.send(key=key, value=value)

    async def send_tick(partition: int, value: bytes) -> object:
        return await access.send(value=value, partition=partition)

    prefetcher = Prefetcher(
        table,
        send_prefetch=send_prefetch,
        send_tick=send_tick,
        metrics=metrics,
        config=planner_config(prefetch),
        partitions=partitions,
        decider=prefetch.decider,
        shards=shards,
    )

    async def refresh_hot_keys(stream: Any) -> None:
        async for event in stream.events():
            try:
                await prefetcher.handle(event.message.partition, event.value)
            except Exception:  # an escaping error would end this actor while the worker lives
                metrics.errors.inc()
                log.exception("prefetcher: a record of partition %d", event.message.partition)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        (revoked,) = args  # Faust sends the revoked topic partitions
        prefetcher.revoke(tp.partition for tp in revoked if tp.topic == topics.access)

    async def on_recovered() -> None:
        await prefetcher.rebuild()

    app.agent(access, name="prefetch.refresh_hot_keys")(refresh_hot_keys)
    app.timer(TICK_S, name="prefetch.tick")(prefetcher.tick)
    app.on_partitions_revoked.connect(on_revoked)
    table.on_recover(on_recovered)
    return prefetcher
