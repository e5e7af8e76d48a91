"""`callstream bench delays`: durable delays in a timer table against delay-tier topics.

Both designs keep a delayed request (a retry, a quota-queued call) across SIGKILL and
rebalances; this measures what each costs on one real broker, one after the other:

* **timer table**: :class:`~streams.state.table.ChangelogTable` holds ``key -> due_ms + payload``
  per partition, mirrored to a compacted changelog; the owner keeps a heap of due times, and
  firing reads the value, hands the payload back in-process and deletes the key (a tombstone).
* **delay topics**: the retry-topic pattern. A request goes to the largest tier topic whose
  delay fits its remaining delay, its due time in a header; a relay consumer holds each tier
  partition (paused) while its head is not due, then re-produces the head to the requests
  topic, or to a smaller tier when still not due, and commits after the acknowledgement.

Each variant runs two rounds of ``count`` requests. The *steady* round schedules while the
firing loop runs (lateness, CPU of a whole cycle). The *restore* round schedules with the loop
stopped (scheduling CPU alone), drops all in-memory state, times the way back to "ready to fire"
(table: a full changelog replay into an empty directory; topics: a new consumer joining the
group and fetching) and then fires everything. Every key must fire exactly once over both.
The topic design lives here only: it is the measured alternative, not product code.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import shutil
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from rich.console import Console
from rich.table import Table

from streams.cli.dev.throughput import ProcessCpu
from streams.kafka import consumer_options, producer_options, reader, started
from streams.settings import KafkaSettings
from streams.state.table import ChangelogTable
from streams.state.topic import ensure_changelog_topic
from streams.topics import TopicSpec, ensure_topics

TIERS_S: tuple[float, ...] = (1, 5, 30, 300)
DELAY_MIN_MS, DELAY_MAX_MS = 1_000, 5_000
# Scheduling requests awaiting their broker acknowledgement at once (both variants).
SCHEDULE_IN_FLIGHT = 256
# Longest sleep of a firing loop: how often it notices it is done.
_IDLE_S = 0.1
_JOIN_TIMEOUT_S = 60.0
_DUE = struct.Struct(">q")
_DUE_HEADER = "due_ms"

Progress = Callable[[str], None]


def _now_ms() -> float:
    # Wall-clock: a due time outlives the process that wrote it.
    return time.time() * 1000


class _Fired:
    """Every hand-back: how often each key fired, and how late (ms) in the round measured."""

    def __init__(self) -> None:
        self.counts: Counter[bytes] = Counter()
        self.lateness_ms: list[float] = []
        self.total = 0  # kept, not summed: the loops check it on every turn

    def record(self, key: bytes, due_ms: float, payload: bytes, payload_bytes: int) -> None:
        if len(payload) != payload_bytes:
            raise RuntimeError(f"{key!r} came back with {len(payload)} bytes")
        self.lateness_ms.append(_now_ms() - due_ms)
        self.counts[key] += 1
        self.total += 1


class _CountingProducer:
    """The producer both variants write through, counting the Kafka records they write."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.records = 0

    async def send(
        self,
        topic: str,
        *,
        key: bytes,
        value: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        self.records += 1
        delivery: asyncio.Future[Any] = await self._producer.send(
            topic, key=key, value=value, partition=partition, headers=headers
        )
        return delivery

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic``, once the producer's metadata has it."""
        partitions: set[int] = await self._producer.partitions_for(topic)
        return partitions


class _Plan:
    """The requests of one round: keys, partitions, delays spread 1-5 s in random order."""

    def __init__(self, label: str, count: int, partitions: int, payload_bytes: int) -> None:
        delays = [
            DELAY_MIN_MS + (DELAY_MAX_MS - DELAY_MIN_MS) * index / count for index in range(count)
        ]
        random.Random(label).shuffle(delays)
        self.requests = [
            (f"{label}-{index}".encode(), index % partitions, delay)
            for index, delay in enumerate(delays)
        ]
        self.payload = bytes(index % 251 for index in range(payload_bytes))

    @property
    def keys(self) -> set[bytes]:
        return {key for key, _, _ in self.requests}


async def _schedule_all(
    plan: _Plan, schedule: Callable[[bytes, int, float, bytes], Awaitable[None]]
) -> None:
    """Schedule every request (due = now + its delay), each acknowledged before it counts."""
    slots = asyncio.Semaphore(SCHEDULE_IN_FLIGHT)

    async def one(key: bytes, partition: int, delay_ms: float) -> None:
        async with slots:
            await schedule(key, partition, _now_ms() + delay_ms, plan.payload)

    await asyncio.gather(*(one(*request) for request in plan.requests))


# --- variant 1: the timer table --------------------------------------------------------------


class _TimerOwner:
    """The owner of a timer table's partitions: an in-memory heap of due times over the table."""

    def __init__(
        self, table: ChangelogTable, fired: _Fired, payload_bytes: int, tick_ms: float
    ) -> None:
        self._table = table
        self._fired = fired
        self._payload_bytes = payload_bytes
        # Firing passes at least this far apart: timers due close together fire (and their
        # tombstones go out) together, for up to this much lateness. 0: each at its due time.
        self._tick_ms = tick_ms
        self._heap: list[tuple[float, int, bytes]] = []
        # The firing loop's sleep, and when it ends: an earlier due time cuts it short.
        self._sleep: asyncio.Future[None] | None = None
        self._sleep_until_ms = 0.0

    async def schedule(self, key: bytes, partition: int, due_ms: float, payload: bytes) -> None:
        await self._table.put(partition, key, _DUE.pack(round(due_ms)) + payload)
        heapq.heappush(self._heap, (due_ms, partition, key))
        if self._sleep is not None and due_ms < self._sleep_until_ms:
            _wake(self._sleep)

    def rebuild(self) -> None:
        """The heap from a full scan of the table (after a restart or a handover)."""
        for partition in self._table.partitions:
            for key, value in self._table.items(partition):
                self._heap.append((_DUE.unpack_from(value)[0], partition, key))
        heapq.heapify(self._heap)

    async def run(self, until: Callable[[], bool], deadline: float) -> None:
        deletes: list[asyncio.Future[Any]] = []
        while not until() and time.monotonic() < deadline:
            now = _now_ms()
            due: list[Awaitable[None]] = []
            while self._heap and self._heap[0][0] <= now:
                due_ms, partition, key = heapq.heappop(self._heap)
                value = self._table.get(partition, key)
                if value is None:
                    continue  # already fired
                self._fired.record(key, due_ms, value[_DUE.size :], self._payload_bytes)
                due.append(self._table.delete(partition, key))
            if due:  # the tombstones go out together, without holding up the next timer
                deletes.append(asyncio.ensure_future(asyncio.gather(*due)))
            idle_ms = now + _IDLE_S * 1000
            next_ms = min(self._heap[0][0], idle_ms) if self._heap else idle_ms
            await self._sleep_until(max(next_ms, now + self._tick_ms))
        await asyncio.gather(*deletes)

    async def _sleep_until(self, wake_ms: float) -> None:
        loop = asyncio.get_running_loop()
        self._sleep, self._sleep_until_ms = loop.create_future(), wake_ms
        timer = loop.call_later(max(0.0, wake_ms - _now_ms()) / 1000, _wake, self._sleep)
        try:
            await self._sleep
        finally:
            timer.cancel()
            self._sleep = None


def _wake(sleep: asyncio.Future[None]) -> None:
    if not sleep.done():
        sleep.set_result(None)


async def _timer_table(
    kafka: KafkaSettings,
    counting: _CountingProducer,
    plans: tuple[_Plan, _Plan],
    *,
    prefix: str,
    partitions: int,
    data_dir: Path,
    tick_ms: float,
    progress: Progress,
    broker_pids: Sequence[int],
) -> dict[str, Any]:
    changelog = f"{prefix}timers-changelog"
    await ensure_changelog_topic(kafka, changelog, partitions, 1)
    fired = _Fired()
    payload_bytes = len(plans[0].payload)

    async def open_owner(directory: Path) -> tuple[ChangelogTable, _TimerOwner, float, int]:
        started_at = time.monotonic()
        table = ChangelogTable(
            "timers", changelog_topic=changelog, directory=directory, producer=counting, kafka=kafka
        )
        replayed = (await table.assign(range(partitions))).records
        owner = _TimerOwner(table, fired, payload_bytes, tick_ms)
        owner.rebuild()
        return table, owner, time.monotonic() - started_at, replayed

    steady, restored = plans
    table, owner, _, _ = await open_owner(data_dir / "a")

    async def steady_round() -> None:
        loop = asyncio.ensure_future(
            owner.run(lambda: fired.total >= len(steady.requests), _deadline())
        )
        await _schedule_all(steady, owner.schedule)
        await loop

    progress("timer table: steady round (scheduling while the owner fires)")
    figures = await _steady(steady, counting, fired, broker_pids, steady_round)

    progress("timer table: restore round (schedule, drop the store, replay the changelog)")
    fired.lateness_ms = []
    cpu = time.process_time()
    await _schedule_all(restored, owner.schedule)
    figures["schedule_cpu_ms"] = _per(time.process_time() - cpu, restored)
    table.close()
    shutil.rmtree(data_dir / "a")  # a full replay, as on a machine that never held the partition
    table, owner, restore_s, replayed = await open_owner(data_dir / "b")
    try:
        pending = sum(1 for p in table.partitions for _ in table.items(p))
        await owner.run(lambda: fired.total >= 2 * len(restored.requests), _deadline())
        left = sum(1 for p in table.partitions for _ in table.items(p))
    finally:
        table.close()
    return _finish(
        figures,
        fired,
        plans,
        restore_s=restore_s,
        restore_records=replayed,
        pending_at_restore=pending,
        left_pending=left,
        extra_topics=1,
        extra_partitions=partitions,
        tick_ms=tick_ms,
    )


# --- variant 2: delay-tier topics ------------------------------------------------------------


def _tier_topic(prefix: str, tier_s: float) -> str:
    return f"{prefix}delay.{tier_s:g}s"


class _Tiers:
    """Where a request waits: the largest tier not longer than its remaining delay."""

    def __init__(self, prefix: str, requests_topic: str, tiers_s: Sequence[float]) -> None:
        self.delay_ms = {_tier_topic(prefix, tier): tier * 1000 for tier in sorted(tiers_s)}
        self.requests_topic = requests_topic

    def topic_for(self, remaining_ms: float) -> str:
        fitting = [topic for topic, delay in self.delay_ms.items() if delay <= remaining_ms]
        # Under the smallest tier: wait there until due (the tier's head may hold up the rest).
        return fitting[-1] if fitting else next(iter(self.delay_ms))


class _DropBuffers(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, buffers: dict[TopicPartition, deque[Any]], assigned: asyncio.Event) -> None:
        self._buffers = buffers
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:  # uncommitted: the next owner reads them again
            self._buffers.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._assigned.set()


class _TierRelay:
    """Reads every tier partition in order; a not-yet-due head pauses its partition.

    The records fetched behind a paused head stay in memory (not committed), so a partition
    is fetched again only once its buffer is empty. Due heads are re-produced, and the offsets
    committed once the broker has acknowledged those writes: a crash repeats, never loses.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        producer: _CountingProducer,
        tiers: _Tiers,
        fired: _Fired,
        payload_bytes: int,
        group: str,
    ) -> None:
        self._kafka = kafka
        self._producer = producer
        self._tiers = tiers
        self._fired = fired
        self._payload_bytes = payload_bytes
        self._group = group
        self._buffers: dict[TopicPartition, deque[Any]] = {}
        self.assigned = asyncio.Event()

    def _wake_ms(self, record: Any) -> tuple[float, float]:
        due_ms = float(_DUE.unpack(dict(record.headers)[_DUE_HEADER])[0])
        return due_ms, min(due_ms, record.timestamp + self._tiers.delay_ms[record.topic])

    async def run(self, until: Callable[[], bool], deadline: float) -> float:
        """Relay until ``until()``; returns the seconds from start to the first fetched batch."""
        started_at, ready_s = time.monotonic(), -1.0
        consumer = AIOKafkaConsumer(**consumer_options(self._kafka, group_id=self._group))
        async with started(consumer, self._kafka):
            consumer.subscribe(
                list(self._tiers.delay_ms), listener=_DropBuffers(self._buffers, self.assigned)
            )
            wait_ms = int(_IDLE_S * 1000)
            while not until() and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=wait_ms)
                if batches and ready_s < 0:
                    ready_s = time.monotonic() - started_at
                for tp, records in batches.items():
                    self._buffers.setdefault(tp, deque()).extend(records)
                    consumer.pause(tp)
                wait_ms = await self._relay_due(consumer)
        return ready_s

    async def _relay_due(self, consumer: AIOKafkaConsumer) -> int:
        """Re-produce every due head, then commit; returns the ms until the next head is due."""
        now = _now_ms()
        next_wake = now + _IDLE_S * 1000
        sends: list[asyncio.Future[Any]] = []
        handed_back: list[tuple[bytes, float, bytes]] = []
        commits: dict[TopicPartition, int] = {}
        for tp, buffer in list(self._buffers.items()):
            while buffer:
                due_ms, wake_ms = self._wake_ms(buffer[0])
                if wake_ms > now:
                    next_wake = min(next_wake, wake_ms)
                    break
                record = buffer.popleft()
                remaining_ms = due_ms - now
                topic = (
                    self._tiers.requests_topic
                    if remaining_ms <= 0
                    else self._tiers.topic_for(remaining_ms)
                )
                if topic == self._tiers.requests_topic:
                    handed_back.append((record.key, due_ms, record.value))
                sends.append(await self._send(topic, record, tp.partition))
                commits[tp] = record.offset + 1
            if not buffer:
                del self._buffers[tp]
                consumer.resume(tp)
        if sends:
            await asyncio.gather(*sends)
            for key, due_ms, value in handed_back:
                self._fired.record(key, due_ms, value, self._payload_bytes)
            await consumer.commit(commits)
        return max(1, int(next_wake - _now_ms()))

    async def _send(self, topic: str, record: Any, partition: int) -> asyncio.Future[Any]:
        return await self._producer.send(
            topic,
            key=record.key,
            value=record.value,
            partition=partition,
            headers=list(record.headers),
        )


async def _delay_topics(
    kafka: KafkaSettings,
    counting: _CountingProducer,
    plans: tuple[_Plan, _Plan],
    *,
    prefix: str,
    partitions: int,
    tiers_s: Sequence[float],
    progress: Progress,
    broker_pids: Sequence[int],
) -> dict[str, Any]:
    tiers = _Tiers(prefix, f"{prefix}requests", tiers_s)
    await ensure_topics(
        kafka,
        [TopicSpec(name, partitions, 1, {}) for name in (*tiers.delay_ms, tiers.requests_topic)],
        create=True,
    )
    for topic in tiers.delay_ms:  # known to the brokers before the relay subscribes
        await counting.partitions_for(topic)
    fired = _Fired()
    payload_bytes = len(plans[0].payload)

    async def schedule(key: bytes, partition: int, due_ms: float, payload: bytes) -> None:
        headers = [(_DUE_HEADER, _DUE.pack(round(due_ms)))]
        topic = tiers.topic_for(due_ms - _now_ms())
        await (
            await counting.send(topic, key=key, value=payload, partition=partition, headers=headers)
        )

    def relay() -> _TierRelay:  # a new one holds nothing in memory: a restart
        return _TierRelay(kafka, counting, tiers, fired, payload_bytes, f"{prefix}relay")

    steady, restored = plans
    progress("delay topics: steady round (scheduling while the relay runs)")
    # The relay is running before the first request, as the table's owner is.
    running = relay()
    loop = asyncio.ensure_future(
        running.run(lambda: fired.total >= len(steady.requests), _deadline())
    )
    await asyncio.wait_for(running.assigned.wait(), _JOIN_TIMEOUT_S)

    async def steady_round() -> None:
        await _schedule_all(steady, schedule)
        await loop

    figures = await _steady(steady, counting, fired, broker_pids, steady_round)

    progress("delay topics: restore round (schedule, new relay joins and fetches)")
    fired.lateness_ms = []
    cpu = time.process_time()
    await _schedule_all(restored, schedule)
    figures["schedule_cpu_ms"] = _per(time.process_time() - cpu, restored)
    restore_s = await relay().run(lambda: fired.total >= 2 * len(restored.requests), _deadline())
    progress("delay topics: reading the requests topic back")
    counts = await _read_keys(kafka, tiers.requests_topic, partitions)
    fired.counts = counts  # what reached the requests topic, not what the relay believed
    return _finish(
        figures,
        fired,
        plans,
        restore_s=restore_s,
        restore_records=None,  # the relay reads only what follows the committed offsets
        pending_at_restore=len(restored.requests),
        left_pending=None,
        extra_topics=len(tiers.delay_ms),
        extra_partitions=len(tiers.delay_ms) * partitions,
        tiers_s=sorted(tiers_s),
    )


async def _read_keys(kafka: KafkaSettings, topic: str, partitions: int) -> Counter[bytes]:
    """How often each key is in ``topic``, read whole."""
    counts: Counter[bytes] = Counter()
    async with reader(kafka) as consumer:
        tps = [TopicPartition(topic, partition) for partition in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        behind = set(tps)
        while behind:
            for records in (await consumer.getmany(*behind, timeout_ms=500)).values():
                counts.update(record.key for record in records)
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
    return counts


# --- shared measurement ----------------------------------------------------------------------


def _deadline(budget_s: float = 60.0) -> float:
    """The monotonic deadline of a firing loop: the longest delay plus ``budget_s``."""
    return time.monotonic() + DELAY_MAX_MS / 1000 + budget_s


def _per(seconds: float, plan: _Plan) -> float:
    return round(seconds * 1000 / len(plan.requests), 4)


async def _steady(
    plan: _Plan,
    counting: _CountingProducer,
    fired: _Fired,
    broker_pids: Sequence[int],
    cycle: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    records, cpu = counting.records, time.process_time()
    broker = ProcessCpu({"broker": broker_pids})
    await cycle()
    cycle_cpu_ms = _per(time.process_time() - cpu, plan)
    broker_s = broker.spent().get("broker")
    lateness = sorted(fired.lateness_ms)
    return {
        "cycle_cpu_ms": cycle_cpu_ms,
        "broker_cpu_ms": None if broker_s is None else _per(broker_s, plan),
        "records_per_request": round((counting.records - records) / len(plan.requests), 3),
        "lateness_p50_ms": _quantile(lateness, 0.5),
        "lateness_p99_ms": _quantile(lateness, 0.99),
        "lateness_max_ms": round(lateness[-1], 1) if lateness else None,
    }


def _finish(
    figures: dict[str, Any], fired: _Fired, plans: tuple[_Plan, _Plan], **more: Any
) -> dict[str, Any]:
    expected = plans[0].keys | plans[1].keys
    seen = {key for key in fired.counts if key in expected}
    figures["fire_cpu_ms"] = round(figures["cycle_cpu_ms"] - figures["schedule_cpu_ms"], 4)
    return {
        "requests": len(expected),
        **figures,
        "restore_s": round(more.pop("restore_s"), 3),
        **more,
        "lost": len(expected - seen),
        "duplicates": sum(fired.counts[key] - 1 for key in seen),
        "strays": sum(1 for key in fired.counts if key not in expected),
    }


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def run_delays_bench(
    kafka: KafkaSettings,
    *,
    count: int,
    data_dir: Path,
    warm_up: int = 0,
    payload_bytes: int = 600,
    partitions: int = 6,
    tick_ms: float = 0.0,
    tiers_s: Sequence[float] = TIERS_S,
    broker_pids: Sequence[int] = (),
    progress: Progress = lambda _: None,
) -> dict[str, dict[str, Any]]:
    """Measure both variants, the table first, each with its own topics and ``2 * count`` keys.

    Args:
        warm_up: requests per round of an uncounted run of both variants first: a new
            broker's JIT compiler would otherwise charge its work to the variant run first.

    Returns:
        ``{"timer_table": {...}, "delay_topics": {...}}``: CPU in ms per request of this
        process (``schedule``, ``fire`` and the whole steady ``cycle``) and of the broker when
        its pids are given, lateness percentiles, ``restore_s``, records written per request,
        topics and partitions each needs beyond the requests topic, lost and duplicated keys.
    """
    stamp = int(time.time() * 1000)
    producer = AIOKafkaProducer(**producer_options(kafka))
    async with started(producer, kafka):
        counting = _CountingProducer(producer)

        async def both(run: str, count: int, progress: Progress) -> dict[str, dict[str, Any]]:
            prefix = f"bench-delays-{stamp}.{run}."
            table = await _timer_table(
                kafka,
                counting,
                _plans("t", count, partitions, payload_bytes),
                prefix=prefix,
                partitions=partitions,
                data_dir=data_dir / run,
                tick_ms=tick_ms,
                progress=progress,
                broker_pids=broker_pids,
            )
            topics = await _delay_topics(
                kafka,
                counting,
                _plans("d", count, partitions, payload_bytes),
                prefix=prefix,
                partitions=partitions,
                tiers_s=tiers_s,
                progress=progress,
                broker_pids=broker_pids,
            )
            return {"timer_table": table, "delay_topics": topics}

        if warm_up:
            await both("warm", warm_up, lambda step: progress(f"warm-up, not counted: {step}"))
        return await both("run", count, progress)


def _plans(label: str, count: int, partitions: int, payload_bytes: int) -> tuple[_Plan, _Plan]:
    return (
        _Plan(f"{label}-steady", count, partitions, payload_bytes),
        _Plan(f"{label}-restore", count, partitions, payload_bytes),
    )


# --- report ----------------------------------------------------------------------------------

_ROWS = (
    ("schedule CPU ms/req", "schedule_cpu_ms", True),
    ("fire CPU ms/req", "fire_cpu_ms", True),
    ("cycle CPU ms/req", "cycle_cpu_ms", True),
    ("broker CPU ms/req", "broker_cpu_ms", True),
    ("records/req", "records_per_request", True),
    ("lateness p50 ms", "lateness_p50_ms", False),
    ("lateness p99 ms", "lateness_p99_ms", False),
    ("lateness max ms", "lateness_max_ms", False),
    ("restore s", "restore_s", True),
    ("extra topics", "extra_topics", False),
    ("extra partitions", "extra_partitions", False),
    ("lost", "lost", False),
    ("duplicates", "duplicates", False),
)


def print_delays(console: Console, figures: dict[str, dict[str, Any]]) -> None:
    """One row per figure, the two designs side by side, and topics/table where it means."""
    table_fig, topic_fig = figures["timer_table"], figures["delay_topics"]
    table = Table(
        title=f"durable delays: 2 rounds of {table_fig['requests'] // 2} requests per design, "
        f"delays 1-5 s; table ticks {table_fig['tick_ms']:g} ms, topic tiers "
        f"{', '.join(f'{tier:g}' for tier in topic_fig['tiers_s'])} s",
        caption="CPU: this process unless named; cycle = schedule + fire in the steady round. "
        "Fired: table = payload back in the owner's process; topics = re-produce to the "
        "requests topic acknowledged (a worker still has to fetch it).",
    )
    for column in ("figure", "timer table", "delay topics", "topics/table"):
        table.add_column(column, justify="right")
    for label, key, ratio in _ROWS:
        left, right = table_fig.get(key), topic_fig.get(key)
        table.add_row(label, _cell(left), _cell(right), _ratio(left, right) if ratio else "")
    console.print(table)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _ratio(left: Any, right: Any) -> str:
    if not left or right is None:
        return "-"
    return f"{right / left:.2f}"
