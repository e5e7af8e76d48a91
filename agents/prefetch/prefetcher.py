"""The predictive-cache agent's work without Faust (issue 24): apply access batches to the keys'
states, fire due steps, publish prefetches and ticks, rebuild the schedule after a rebalance.

Faust writes a table only while an event is processed (the write goes to the event's changelog
partition), so every table write happens in :meth:`Prefetcher.handle`, called by the agent for
each record of the access topic. Due steps wait in an in-memory heap per partition; a timer
(:meth:`Prefetcher.tick`) that finds one due sends an empty ``AccessBatch`` (a tick) to that
partition, and handling any record of the partition, a tick or real accesses, fires its due
steps. A decision, its table write and its prefetch thus move with the partition and its
committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol

from agents.prefetch import model as logit
from agents.prefetch import rule
from agents.prefetch.features import FEATURE_NAMES, KeyFeatures
from agents.prefetch.metrics import PrefetchMetrics
from agents.prefetch.planner import (
    Decide,
    Due,
    DueHeap,
    KeyState,
    PlannerConfig,
    Resolved,
    Verdict,
    fire,
    observe,
    pending,
    prefetch_key,
    prefetch_request,
    schedule,
)
from schemas.codec import Codecs
from schemas.errors import DecodeError, SchemaError
from schemas.models import AccessBatch, AccessEvent
from streams.metrics import LabelledCache

__all__ = [
    "TICK_RESEND_MS",
    "Prefetcher",
    "SendPrefetch",
    "SendTick",
    "StateStore",
    "model_key",
]

log = logging.getLogger(__name__)

# Per-partition model state shares the table with the keys: cache keys start with the provider's
# name, never with a NUL byte.
_MODEL_PREFIX = b"\x00model/"
# A tick not answered by then (lost in a rebalance, a slow broker) is sent again.
TICK_RESEND_MS = 2_000
# Keys the heap rebuild reads between yields to the event loop (heartbeats must go on).
_REBUILD_SLICE = 2_000

# Sends one prefetch record: (message key, value).
SendPrefetch = Callable[[bytes, bytes], Awaitable[object]]
# Sends one tick record to a partition of the access topic: (partition, value).
SendTick = Callable[[int, bytes], Awaitable[object]]


def model_key(partition: int) -> bytes:
    """The table key of a partition's model (written by that partition's events only)."""
    return _MODEL_PREFIX + str(partition).encode()


class StateStore(Protocol):
    """The table, as the agent uses it (a Faust ``Table`` of bytes, or a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


class Prefetcher:
    """The agent's work, without Faust: apply access batches, fire due steps, publish."""

    def __init__(
        self,
        store: StateStore,
        *,
        send_prefetch: SendPrefetch,
        send_tick: SendTick,
        metrics: PrefetchMetrics,
        config: PlannerConfig,
        partitions: int,
        decider: Literal["rule", "model"] = "rule",
        shards: Mapping[str, int] | None = None,
        model_config: logit.LogitConfig | None = None,
        codecs: Codecs | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        store: the table (bytes to bytes).
        send_prefetch: publishes a prefetch request to the requests topic.
        send_tick: publishes a tick to a partition of the access topic.
        metrics: the prefetcher's metrics.
        config: lead, label grace, idle time before a key is forgotten.
        partitions: the access topic's partition count (a key's partition is
            ``crc32(key) % partitions``, as the worker sends it).
        decider: "rule" (refresh if read since the last fetch) or "model" (the online model).
        shards: each provider's limit shards (``providers.<name>.shards``); 1 when absent.
        model_config: the online model's settings.
        codecs: the event codecs.
        clock: epoch seconds.
        """
        self._store = store
        self._send_prefetch = send_prefetch
        self._send_tick = send_tick
        self._metrics = metrics
        self._config = config
        self._partitions = partitions
        self._decider = decider
        self._shards = dict(shards or {})
        self._model_config = model_config or logit.LogitConfig()
        self._codecs = codecs or Codecs()
        self._clock = clock
        self._tick = self._codecs.access.encode(AccessBatch())
        self._heaps: dict[int, DueHeap] = {}
        self._keys: dict[int, int] = {}
        self._models: dict[int, logit.LogitModel] = {}
        self._dirty: set[int] = set()
        self._ticked: dict[int, int] = {}  # partition -> when its unanswered tick was sent
        self._events = LabelledCache(metrics.events)
        self._decisions = LabelledCache(metrics.decisions)
        self._labels = LabelledCache(metrics.labels)
        self.ready = False

    def __repr__(self) -> str:
        steps = sum(len(heap) for heap in self._heaps.values())
        return (
            f"Prefetcher(decider={self._decider}, partitions={sorted(self._heaps)}, "
            f"keys={sum(self._keys.values())}, steps={steps}, ready={self.ready})"
        )

    async def handle(self, partition: int, raw: bytes | None) -> None:
        """Process one record of the access topic (inside the agent: table writes go to
        ``partition``): apply its accesses, then fire the partition's due steps."""
        self._ticked.pop(partition, None)
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heaps[partition] = DueHeap()
        try:
            batch = self._codecs.access.decode(raw or b"")
        except DecodeError:
            self._metrics.undecodable.labels("access_batch").inc()
        else:
            self._observe(partition, heap, batch.events)
        await self._fire_due(partition, heap, self._now_ms())
        if partition in self._dirty:
            self._dirty.discard(partition)
            self._store[model_key(partition)] = self._model(partition).to_bytes()
        self._metrics.keys.set(sum(self._keys.values()))

    async def tick(self) -> None:
        """Send a tick to each partition with a due step (a timer)."""
        now = self._now_ms()
        for partition, heap in list(self._heaps.items()):
            due = heap.next_at()
            if due is None or due > now:
                continue
            sent = self._ticked.get(partition)
            if sent is not None and now - sent < TICK_RESEND_MS:
                continue
            self._ticked[partition] = now
            try:
                await self._send_tick(partition, self._tick)
            except Exception as exc:  # the broker is away: the next timer round sends again
                log.warning("prefetcher: tick to partition %d not sent: %r", partition, exc)
                continue
            self._metrics.ticks.inc()

    async def rebuild(self) -> None:
        """Rebuild every heap from the table's keys (after a rebalance's recovery, before the
        stream resumes)."""
        steps: dict[int, list[Due]] = {}
        keys: Tally[int] = Tally()
        for count, (key, raw) in enumerate(self._store.items(), start=1):
            if count % _REBUILD_SLICE == 0:
                await asyncio.sleep(0)
            if key.startswith(_MODEL_PREFIX[:1]):
                continue
            state = KeyState.from_bytes(raw)
            if state is None:
                continue
            partition = zlib.crc32(key) % self._partitions
            steps.setdefault(partition, []).extend(pending(key, state, self._config))
            keys[partition] += 1
        self._heaps = {partition: DueHeap(items) for partition, items in steps.items()}
        self._keys = dict(keys)
        self._models.clear()
        self._dirty.clear()
        self._ticked.clear()
        self._metrics.keys.set(sum(self._keys.values()))
        self.ready = True
        log.info("prefetcher: %d keys in %d partitions scheduled", keys.total(), len(steps))

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget what is held in memory for partitions given up (their table goes with them)."""
        for partition in partitions:
            self._heaps.pop(partition, None)
            self._keys.pop(partition, None)
            self._models.pop(partition, None)
            self._ticked.pop(partition, None)
            self._dirty.discard(partition)
        self.ready = False

    def _observe(self, partition: int, heap: DueHeap, events: Sequence[AccessEvent]) -> None:
        kinds: Tally[str] = Tally()
        for key, accesses in _by_key(events):
            raw = self._store.get(key)
            before = KeyState.from_bytes(raw) if raw is not None else None
            state = before or KeyState()
            for event in accesses:
                kinds[event.kind.value] += 1
                state, resolved = observe(state, event)
                if resolved is not None:
                    self._learn(partition, resolved)
            self._store[key] = state.to_bytes()
            for step in schedule(key, before, state, self._config):
                heap.push(step)
            if raw is None:
                self._keys[partition] = self._keys.get(partition, 0) + 1
        for kind, count in kinds.items():
            self._events[kind].inc(count)

    async def _fire_due(self, partition: int, heap: DueHeap, now_ms: int) -> None:
        decide = self._decide_for(partition)
        for step in heap.pop_due(now_ms):
            raw = self._store.get(step.key)
            state = KeyState.from_bytes(raw) if raw is not None else None
            if state is None:
                continue  # forgotten already (a stale step), or unreadable
            fired = fire(state, step, now_ms=now_ms, decide=decide, config=self._config)
            if fired.state is None:
                del self._store[step.key]
                self._keys[partition] = max(0, self._keys.get(partition, 1) - 1)
            elif fired.state is not state:
                self._store[step.key] = fired.state.to_bytes()
            for follow in fired.follow:
                heap.push(follow)
            if fired.resolved is not None:
                self._learn(partition, fired.resolved)
            if fired.verdict is not None:
                self._decisions[fired.verdict.value].inc()
            if fired.verdict is Verdict.REFRESH:
                await self._publish(step.key, state, expiry_ms=step.mark_ms, now_ms=now_ms)

    async def _publish(self, key: bytes, state: KeyState, *, expiry_ms: int, now_ms: int) -> None:
        try:
            template = self._codecs.request.decode(state.template)
        except SchemaError:
            self._metrics.undecodable.labels("template").inc()
            return
        request = prefetch_request(
            template, expiry_ms=expiry_ms, now_ms=now_ms, lead_ms=self._config.lead_ms
        )
        shards = self._shards.get(request.provider, 1)
        await self._send_prefetch(
            prefetch_key(request.provider, key, shards), self._codecs.request.encode(request)
        )
        self._metrics.prefetches.inc()

    def _decide_for(self, partition: int) -> Decide:
        if self._decider == "rule":
            return _rule

        def by_model(features: KeyFeatures, inputs: tuple[float, ...]) -> bool:
            return logit.should_refresh(self._model(partition), inputs, self._model_config)

        return by_model

    def _learn(self, partition: int, resolved: Resolved) -> None:
        label = resolved.label
        verdict = Verdict.REFRESH if label.refreshed else Verdict.SKIP
        self._labels[verdict.value, "true" if resolved.requested else "false"].inc()
        if len(label.inputs) != len(FEATURE_NAMES):
            return  # decided by an older feature set: nothing to learn from
        model = self._model(partition)
        self._models[partition] = logit.learn(
            model, label.inputs, resolved.requested, self._model_config
        )
        self._dirty.add(partition)
        self._metrics.model_updates.inc()

    def _model(self, partition: int) -> logit.LogitModel:
        model = self._models.get(partition)
        if model is None:
            raw = self._store.get(model_key(partition))
            loaded = logit.LogitModel.from_bytes(raw) if raw is not None else None
            model = self._models[partition] = loaded or logit.LogitModel.new()
        return model

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _rule(features: KeyFeatures, inputs: tuple[float, ...]) -> bool:
    return rule.should_refresh(features)


def _by_key(events: Sequence[AccessEvent]) -> Iterator[tuple[bytes, list[AccessEvent]]]:
    """A batch's events grouped by key, each key's in order: one table read and write per key
    and batch, however many requests hit it."""
    grouped: dict[bytes, list[AccessEvent]] = {}
    for event in events:
        accesses = grouped.get(event.key)
        if accesses is None:
            grouped[event.key] = [event]
        else:
            accesses.append(event)
    return iter(grouped.items())
