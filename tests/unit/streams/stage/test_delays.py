"""Durable delays: the timer table's order and bookkeeping, and the stage loop that fires them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics
from streams.stage.delays import CorruptDelay, DelayLine, frame, unframe
from streams.stage.loop import StageLoop
from streams.stage.no_return import PointOfNoReturn
from streams.stage.publisher import OutcomePublisher
from streams.stage.records import Delay, Outcome, SourceRecord
from streams.state.table import PartitionNotAssignedError

from .fakes import TP0, FakeConsumer, FakeEncoder, FakeSender, Limits, result, wait_until


class MemoryTable:
    """The ``ChangelogTable`` calls the delay line makes, on dicts (a changelog that outlives
    every worker: ``revoke`` closes the partition, its data stays for the next ``assign``)."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.open: set[int] = set()
        self.writes = 0

    async def assign(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.open.add(partition)
            self.data.setdefault(partition, {})

    def revoke(self, partitions: Iterable[int]) -> None:
        self.open -= set(partitions)

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._held(partition).get(key)

    def items(self, partition: int) -> list[tuple[bytes, bytes]]:
        return list(self._held(partition).items())

    async def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.writes += 1
        self._held(partition)[key] = value

    async def delete(self, partition: int, key: bytes) -> None:
        self.writes += 1
        self._held(partition).pop(key, None)

    def _held(self, partition: int) -> dict[bytes, bytes]:
        if partition not in self.open:
            raise PartitionNotAssignedError(f"partition {partition} not held")
        return self.data[partition]


def delay(key: str, due_ms: int, kind: str = "retry", payload: bytes = b"p") -> Delay:
    return Delay(key.encode(), due_ms, payload, kind)


def test_a_frame_round_trips_and_garbage_is_refused() -> None:
    assert unframe(frame(delay("r1", 123, "quota", b"xyz"))) == (123, "quota", b"xyz")
    with pytest.raises(CorruptDelay):
        unframe(b"\x00\x01")
    with pytest.raises(CorruptDelay):
        unframe(frame(delay("r1", 1, "retry"))[:10])


async def test_delays_come_out_due_and_in_due_order_at_most_the_room_given() -> None:
    line = DelayLine(MemoryTable())
    await line.assign([0, 1])
    await line.hold(0, delay("late", 300))
    await line.hold(0, delay("early", 100))
    await line.hold(1, delay("other", 200))
    assert line.next_due_ms() == 100
    assert line.take_due(99, {0: 10, 1: 10}) == []

    due = line.take_due(250, {0: 10, 1: 10})
    assert [(d.key, d.partition, d.payload) for d in due] == [
        (b"early", 0, b"p"),
        (b"other", 1, b"p"),
    ]
    assert line.next_due_ms() == 300

    assert line.take_due(400, {0: 0}) == [], "no room: it stays queued"
    assert [d.key for d in line.take_due(400, {0: 1})] == [b"late"]
    assert line.next_due_ms() is None


async def test_holding_a_key_again_replaces_its_delay() -> None:
    table = MemoryTable()
    line = DelayLine(table)
    await line.assign([0])
    await line.hold(0, delay("r1", 100))
    await line.hold(0, delay("r1", 500, payload=b"second"))
    assert line.take_due(200, {0: 5}) == [], "the first due time no longer holds"
    (due,) = line.take_due(600, {0: 5})
    assert (due.due_ms, due.payload) == (500, b"second")
    assert list(table.data[0]) == [b"r1"], "one entry per key in the table"


async def test_a_taken_delay_is_not_handed_out_twice_and_a_release_removes_it() -> None:
    table = MemoryTable()
    line = DelayLine(table)
    await line.assign([0])
    await line.hold(0, delay("r1", 100))
    assert len(line.take_due(100, {0: 5})) == 1
    assert line.take_due(100, {0: 5}) == []
    await line.release(0, b"r1")
    assert table.data[0] == {}


async def test_the_next_owner_finds_every_delay_in_the_table_and_counts_them_by_kind() -> None:
    table = MemoryTable()
    first = DelayLine(table)
    await first.assign([0, 1])
    await first.hold(0, delay("a", 100))
    await first.hold(1, delay("b", 200, "quota"))
    assert len(first.take_due(150, {0: 5, 1: 5})) == 1  # taken, never released: a crash
    first.revoke([0, 1])
    assert first.partitions == frozenset() and first.next_due_ms() is None

    second = DelayLine(table)
    assert await second.assign([0, 1]) == 2
    assert second.counts() == {"retry": 1, "quota": 1}
    assert sorted(d.key for d in second.take_due(1000, {0: 5, 1: 5})) == [b"a", b"b"]
    assert second.counts() == {"retry": 0, "quota": 0}, "kinds seen stay, at zero"


async def test_a_corrupt_value_is_skipped_on_assignment() -> None:
    table = MemoryTable()
    await table.assign([0])
    table.data[0] = {b"bad": b"\x01", b"good": frame(delay("good", 5))}
    line = DelayLine(table)
    assert await line.assign([0]) == 1
    assert [d.key for d in line.take_due(10, {0: 5})] == [b"good"]


# -- the stage loop fires them ------------------------------------------------------------


class DelayingHandler:
    """Delays each record once for ``wait_ms`` (payload: its offset), then answers ``ok``."""

    def __init__(self, wait_ms: int = 0, gate: asyncio.Event | None = None) -> None:
        self.wait_ms = wait_ms
        self.gate = gate
        self.resumed: list[bytes] = []
        self.no_return = PointOfNoReturn()

    async def handle(self, source: SourceRecord) -> Delay:
        due = time.time_ns() // 1_000_000 + self.wait_ms
        return Delay(f"r{source.offset}".encode(), due, str(source.offset).encode(), "retry")

    async def resume(self, partition: int, payload: bytes) -> Outcome:
        self.resumed.append(payload)
        if self.gate is not None:
            await self.gate.wait()  # like a request waiting for a token: not called yet
        return Outcome(result(f"r{payload.decode()}"))


def delay_stage(
    handler: DelayingHandler, table: MemoryTable
) -> tuple[StageLoop, FakeConsumer, FakeSender, Metrics]:
    consumer = FakeConsumer()
    sender = FakeSender()
    metrics = Metrics.create(CollectorRegistry())
    publisher = OutcomePublisher(
        sender,
        FakeEncoder(),
        metrics,
        results_topic="results",
        dead_letter_topic="dlq",
        known_providers=frozenset({"acme"}),
        retry_backoff_s=0.001,
    )
    loop = StageLoop(
        consumer,
        handler,
        publisher,
        metrics,
        Limits(),
        no_return=handler.no_return,
        delays=DelayLine(table),
    )
    return loop, consumer, sender, metrics


async def run_loop(loop: StageLoop, consumer: FakeConsumer) -> list[asyncio.Task[None]]:
    await loop.on_assigned(consumer.assignment())
    return [asyncio.create_task(loop.run()), asyncio.create_task(loop.run_delays())]


async def stop(loop: StageLoop, tasks: list[asyncio.Task[None]]) -> None:
    await loop.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_delayed_record_is_committed_once_held_and_its_outcome_follows_when_due() -> None:
    table = MemoryTable()
    handler = DelayingHandler(wait_ms=150)
    loop, consumer, sender, metrics = delay_stage(handler, table)
    tasks = await run_loop(loop, consumer)
    try:
        consumer.feed(TP0, range(3))
        await wait_until(lambda: len(table.data[0]) == 3)
        await loop.commit()
        assert consumer.committed_offset() == 3, "held durably: the records are finished"
        assert sender.sent == [] and handler.resumed == []

        await wait_until(lambda: len(sender.sent) == 3, timeout_s=2)
        assert sorted(value for _, value, _ in sender.sent) == [
            b"result:r0:ok",
            b"result:r1:ok",
            b"result:r2:ok",
        ]
        await wait_until(lambda: table.data[0] == {})
        fired = metrics.registry.get_sample_value(
            "callstream_delays_fired_total", {"kind": "retry"}
        )
        assert fired == 3
    finally:
        await stop(loop, tasks)


async def test_a_delay_waiting_when_its_partition_is_revoked_stays_for_the_next_owner() -> None:
    table = MemoryTable()
    gate = asyncio.Event()
    handler = DelayingHandler(wait_ms=0, gate=gate)
    loop, consumer, sender, _ = delay_stage(handler, table)
    tasks = await run_loop(loop, consumer)
    try:
        consumer.feed(TP0, [0])
        await wait_until(lambda: handler.resumed == [b"0"])
        await loop.on_revoked({TP0})  # it had not called: cancelled, not released
        assert sender.sent == []
        assert list(table.data[0]) == [b"r0"]

        gate.set()
        await loop.on_assigned({TP0})  # assigned back: the delay fires again
        await wait_until(lambda: sender.sent != [], timeout_s=2)
        assert sender.sent[0][1] == b"result:r0:ok"
        await wait_until(lambda: table.data[0] == {})
    finally:
        await stop(loop, tasks)
