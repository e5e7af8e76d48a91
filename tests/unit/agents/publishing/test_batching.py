"""BatchingSender: one batch per partition and linger, one future per record (fake producer:
the batching decisions are pure; the real producer is exercised by the integration suite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.publishing.batching import BatchingSender
from streams.routing import partition_for


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None) -> Any:
        if self.closed or (self.records and len(self.records) >= self.capacity):
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, partitions: int = 3, capacity: int = 100) -> None:
        self.partitions = set(range(partitions))
        self.capacity = capacity
        self.sent: list[tuple[str, int, FakeBatch]] = []
        self.acks: list[asyncio.Future[Any]] = []
        self.fail_with: Exception | None = None

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch must be closed before it is handed to aiokafka"
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((topic, partition, batch))
        ack = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions


async def test_records_of_one_partition_share_a_batch_sent_after_the_linger() -> None:
    producer = FakeProducer()
    sender = BatchingSender(producer, linger_s=0.01)
    key = b"request-1"
    waiters = [await sender.send("results", b"v%d" % i, key) for i in range(3)]
    assert producer.sent == []  # still lingering
    await asyncio.sleep(0.03)
    assert len(producer.sent) == 1
    topic, partition, batch = producer.sent[0]
    assert (topic, partition) == ("results", partition_for(key, [0, 1, 2]))
    assert batch.records == [(key, b"v0"), (key, b"v1"), (key, b"v2")]
    assert not any(waiter.done() for waiter in waiters)  # not acknowledged yet
    producer.acks[0].set_result(None)
    await asyncio.gather(*waiters)


async def test_a_full_batch_goes_at_once_and_the_record_starts_the_next() -> None:
    producer = FakeProducer(partitions=1, capacity=2)
    sender = BatchingSender(producer, linger_s=10.0)
    waiters = [await sender.send("results", b"v%d" % i, b"k") for i in range(3)]
    await asyncio.sleep(0)  # the full batch's delivery task runs
    assert [batch.records for _, _, batch in producer.sent] == [[(b"k", b"v0"), (b"k", b"v1")]]
    flushing = asyncio.create_task(sender.flush())  # the open one goes without its linger
    await asyncio.sleep(0.01)
    assert [len(batch.records) for _, _, batch in producer.sent] == [2, 1]
    producer.acks[1].set_result(None)
    await asyncio.sleep(0)
    assert [waiter.done() for waiter in waiters] == [False, False, True]
    assert not flushing.done()  # flush() waits for every batch sent to settle
    producer.acks[0].set_result(None)
    await flushing
    await asyncio.gather(*waiters)


async def test_a_failed_batch_fails_each_of_its_records() -> None:
    producer = FakeProducer()
    producer.fail_with = ConnectionError("broker gone")
    sender = BatchingSender(producer, linger_s=0.0)
    waiters = [await sender.send("results", b"v", b"k%d" % i) for i in range(4)]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    producer = FakeProducer(partitions=1)
    sender = BatchingSender(producer, linger_s=0.0)
    first = await sender.send("results", b"a", b"k")
    second = await sender.send("results", b"b", b"k")
    first.cancel()  # its task was cancelled while waiting
    await asyncio.sleep(0.01)
    producer.acks[0].set_result(None)
    await second
    assert first.cancelled()


async def test_unkeyed_records_go_to_a_known_partition() -> None:
    producer = FakeProducer(partitions=4)
    sender = BatchingSender(producer, linger_s=0.0)
    waiter = await sender.send("dead-letters", b"v", None)
    await asyncio.sleep(0.01)
    assert producer.sent[0][1] in producer.partitions
    producer.acks[0].set_result(None)
    await waiter


async def test_the_partition_count_is_read_again_after_a_failure() -> None:
    producer = FakeProducer(partitions=1)
    producer.fail_with = RuntimeError("unknown topic or partition")
    sender = BatchingSender(producer, linger_s=0.0)
    with pytest.raises(RuntimeError):
        await (await sender.send("results", b"v", b"k"))
    producer.fail_with = None
    producer.partitions = set(range(6))
    waiter = await sender.send("results", b"v", b"k")
    await asyncio.sleep(0.01)
    assert producer.sent[0][1] == partition_for(b"k", list(range(6)))
    producer.acks[0].set_result(None)
    await waiter
