"""A full changelog replay restores every record, and an up-to-date store replays none.

The replay rate and the longest event-loop stall are printed as figures, not asserted: speed
is for benchmarks, and a loaded CI machine must not fail a correct build.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.state.conftest import PARTITIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

RECORDS = 100_000
VALUE = b"x" * 100  # about the size of a per-tenant quota entry


async def fill(producer: AIOKafkaProducer, topic: str, partitions: list[int], records: int) -> None:
    """Write the changelog directly: the replay, not the puts, is what is measured here."""
    deliveries = []
    for i in range(records):
        partition = partitions[i % len(partitions)]
        key = f"tenant-{i % (records // 2):07d}".encode()  # half the keys are overwritten once
        deliveries.append(await producer.send(topic, key=key, value=VALUE, partition=partition))
    await asyncio.gather(*deliveries)


@pytest.mark.parametrize("partitions", [[0], list(range(PARTITIONS))], ids=["1p", "4p"])
async def test_full_replay_rate(table_factory, producer, changelog_topic, tmp_path, partitions):
    await fill(producer, changelog_topic, partitions, RECORDS)
    table = table_factory("worker-a")
    ticker = asyncio.create_task(longest_stall())
    full = await table.assign(partitions)
    ticker.cancel()
    stall_s = await ticker
    table.close()
    again = await table.assign(partitions)  # nothing after the checkpoint
    table.close()
    shutil.rmtree(tmp_path / "worker-a")
    print(
        f"\nfull replay, {len(partitions)} partition(s): {full.records} records in "
        f"{full.seconds:.2f} s = {full.records_per_s:,.0f} records/s; "
        f"re-assignment with nothing new: {again.seconds * 1000:.0f} ms; "
        f"longest event-loop stall during the replay: {stall_s * 1000:.1f} ms"
    )
    assert full.records == RECORDS
    assert again.records == 0


async def longest_stall() -> float:
    """The longest time the event loop did not run this task, until cancelled."""
    loop = asyncio.get_running_loop()
    longest, last = 0.0, loop.time()
    try:
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            longest, last = max(longest, now - last), now
    except asyncio.CancelledError:
        return longest
