"""ChangelogTable's write path against a fake producer: what the store keeps on each outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.errors import ConfigurationError
from streams.settings import KafkaSettings
from streams.state.table import ChangelogTable, PartitionNotAssignedError

TOPIC = "quotas-changelog"


@dataclass(frozen=True)
class Metadata:
    offset: int


class FakeProducer:
    """Hands out delivery futures that the test resolves, like a broker answering later."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.deliveries: list[asyncio.Future[Metadata]] = []
        self.fail_send: Exception | None = None

    async def send(self, topic, *, key, value, partition):
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append((topic, key, value, partition))
        delivery: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def ack_all(self) -> None:
        for offset, delivery in enumerate(self.deliveries):
            if not delivery.done():
                delivery.set_result(Metadata(offset))


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
async def table(
    tmp_path: Path, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChangelogTable]:
    async def nothing_to_replay(self, stores):
        return ()

    async def topic_exists(self, partitions):
        return None

    # No broker here: recovery is covered by tests/integration/state.
    monkeypatch.setattr(ChangelogTable, "_replay", nothing_to_replay)
    monkeypatch.setattr(ChangelogTable, "_check_changelog", topic_exists)
    table = ChangelogTable(
        "quotas",
        changelog_topic=TOPIC,
        directory=tmp_path,
        producer=producer,
        kafka=KafkaSettings(),
    )
    await table.assign([0, 2])
    yield table
    table.close()


async def settle_soon(producer: FakeProducer) -> None:
    await asyncio.sleep(0)
    producer.ack_all()


async def test_put_returns_after_the_ack_and_reads_its_own_write(table, producer):
    put = asyncio.create_task(table.put(0, b"k", b"v"))
    await asyncio.sleep(0)
    assert not put.done()  # waiting for the broker
    assert table.get(0, b"k") == b"v"
    producer.ack_all()
    await put
    assert producer.sent == [(TOPIC, b"k", b"v", 0)]
    assert table._stores[0].checkpoint == 0


async def test_delete_sends_a_tombstone(table, producer):
    await asyncio.gather(table.put(2, b"k", b"v"), settle_soon(producer))
    await asyncio.gather(table.delete(2, b"k"), settle_soon(producer))
    assert table.get(2, b"k") is None
    assert producer.sent[-1] == (TOPIC, b"k", None, 2)


async def test_failed_delivery_raises_and_keeps_the_last_acknowledged_value(table, producer):
    await asyncio.gather(table.put(0, b"k", b"old"), settle_soon(producer))
    put = asyncio.create_task(table.put(0, b"k", b"new"))
    await asyncio.sleep(0)
    producer.deliveries[-1].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await put
    assert table.get(0, b"k") == b"old"
    await asyncio.gather(table.put(0, b"j", b"v"), settle_soon(producer))
    assert table._stores[0].checkpoint == 0  # held before the uncertain record


async def test_send_refused_before_delivery_reverts(table, producer):
    producer.fail_send = KafkaTimeoutError()
    with pytest.raises(KafkaTimeoutError):
        await table.put(0, b"k", b"v")
    assert table.get(0, b"k") is None


async def test_cancelled_caller_does_not_cancel_the_delivery(table, producer):
    put = asyncio.create_task(table.put(0, b"k", b"v"))
    await asyncio.sleep(0)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    producer.ack_all()
    await asyncio.sleep(0)
    assert table._stores[0].checkpoint == 0
    assert table.get(0, b"k") == b"v"


async def test_revoke_during_a_delivery_is_harmless(table, producer):
    put = asyncio.create_task(table.put(0, b"k", b"v"))
    await asyncio.sleep(0)
    table.revoke([0])
    producer.ack_all()
    await put  # acknowledged: the next owner replays it from the changelog
    assert table.partitions == frozenset({2})


async def test_unassigned_partition_is_refused(table):
    with pytest.raises(PartitionNotAssignedError):
        table.get(1, b"k")
    with pytest.raises(PartitionNotAssignedError):
        await table.put(1, b"k", b"v")


async def test_assigning_held_partitions_again_replays_nothing(table):
    report = await table.assign([0, 2])
    assert report.partitions == ()
    assert table.store_path(2).name == "quotas-2"


def test_table_name_must_be_a_safe_path_part(tmp_path, producer):
    with pytest.raises(ConfigurationError):
        ChangelogTable(
            "../x",
            changelog_topic=TOPIC,
            directory=tmp_path,
            producer=producer,
            kafka=KafkaSettings(),
        )


async def test_reassignment_waits_for_writes_sent_before_the_revocation(table, producer):
    put = asyncio.create_task(table.put(0, b"k", b"v"))
    await asyncio.sleep(0)
    table.revoke([0])
    assign = asyncio.create_task(table.assign([0]))
    await asyncio.sleep(0.01)
    assert not assign.done()  # its replay must start after that record is in the log
    producer.ack_all()
    await asyncio.gather(put, assign)
    assert table.partitions == frozenset({0, 2})
