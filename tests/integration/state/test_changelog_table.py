"""ChangelogTable on a real broker: rebuilds, incremental replays, handovers, tombstones."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.errors import ConfigurationError
from streams.state import ensure_changelog_topic
from tests.integration.state.conftest import PARTITIONS, keys, put_many, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_dropped_directory_is_rebuilt_identically_from_the_changelog(table_factory, tmp_path):
    table = table_factory("worker-a")
    await table.assign([0, 2])
    written = {0: keys("p0", 1000), 2: keys("p2", 1000)}
    await asyncio.gather(*(put_many(table, p, items) for p, items in written.items()))
    before = {p: dict(table.items(p)) for p in (0, 2)}
    assert before == written
    table.close()

    shutil.rmtree(tmp_path / "worker-a")
    again = table_factory("worker-a")
    report = await again.assign([0, 2])

    assert {p: dict(again.items(p)) for p in (0, 2)} == written
    assert [part.records for part in report.partitions] == [1000, 1000]
    assert all(part.rebuilt_because == "no local checkpoint" for part in report.partitions)
    assert report.records == 2000


async def test_reassignment_replays_only_the_records_after_the_checkpoint(table_factory):
    worker_a = table_factory("worker-a")
    await worker_a.assign([1])
    await put_many(worker_a, 1, keys("k", 500))
    worker_a.revoke([1])

    worker_b = table_factory("worker-b")
    first = await worker_b.assign([1])
    assert first.records == 500
    updates = keys("k", 30, version=1)
    await put_many(worker_b, 1, updates)
    worker_b.revoke([1])

    report = await worker_a.assign([1])  # its files are still there: only the tail replays
    (part,) = report.partitions
    assert (part.start_offset, part.end_offset, part.records) == (500, 530, 30)
    assert part.rebuilt_because is None
    assert dict(worker_a.items(1)) == keys("k", 500) | updates


async def test_another_instance_sees_the_latest_values_after_a_handover(table_factory):
    worker_a = table_factory("worker-a")
    await worker_a.assign([0, 3])
    await put_many(worker_a, 0, keys("a", 50))
    await put_many(worker_a, 0, keys("a", 10, version=2))  # overwrites
    await put_many(worker_a, 3, keys("b", 20))
    await worker_a.delete(3, b"b-00000")
    worker_a.revoke([0, 3])

    worker_b = table_factory("worker-b")
    await worker_b.assign([0, 3])
    assert worker_b.get(0, b"a-00003") == keys("a", 10, version=2)[b"a-00003"]
    assert worker_b.get(0, b"a-00042") == keys("a", 50)[b"a-00042"]
    assert worker_b.get(3, b"b-00000") is None
    assert len(dict(worker_b.items(3))) == 19


async def test_tombstones_delete_in_full_and_in_incremental_replay(table_factory):
    worker_a = table_factory("worker-a")
    await worker_a.assign([2])
    await put_many(worker_a, 2, {b"gone": b"1", b"kept": b"2", b"later": b"3"})
    await worker_a.delete(2, b"gone")
    assert worker_a.get(2, b"gone") is None
    worker_a.revoke([2])

    worker_b = table_factory("worker-b")  # full replay
    await worker_b.assign([2])
    assert dict(worker_b.items(2)) == {b"kept": b"2", b"later": b"3"}
    await worker_b.delete(2, b"later")
    worker_b.revoke([2])

    report = await worker_a.assign([2])  # incremental: the tombstone is the whole tail
    assert report.records == 1
    assert dict(worker_a.items(2)) == {b"kept": b"2"}


async def test_checkpoint_past_the_end_of_a_recreated_topic_rebuilds(
    table_factory, kafka, admin, changelog_topic
):
    worker_a = table_factory("worker-a")
    await worker_a.assign([0])
    await put_many(worker_a, 0, keys("old", 50))
    worker_a.revoke([0])

    await admin.delete_topics([changelog_topic])
    await wait_until_gone(admin, changelog_topic)
    await ensure_changelog_topic(kafka, changelog_topic, PARTITIONS, 1)
    worker_b = table_factory("worker-b")
    await worker_b.assign([0])
    await put_many(worker_b, 0, keys("new", 5))
    worker_b.revoke([0])

    report = await worker_a.assign([0])
    (part,) = report.partitions
    assert part.rebuilt_because is not None
    assert "past the changelog end" in part.rebuilt_because
    assert dict(worker_a.items(0)) == keys("new", 5)


async def test_missing_changelog_is_refused_and_not_auto_created(table_factory, admin):
    missing = unique("t-missing-changelog")
    table = table_factory("worker-a", topic=missing)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await table.assign([0])
    assert missing not in await admin.list_topics()
    assert table.partitions == frozenset()


async def test_partition_beyond_the_changelog_is_refused(table_factory):
    with pytest.raises(ConfigurationError, match=f"only {PARTITIONS} partitions"):
        await table_factory("worker-a").assign([PARTITIONS])


async def test_ensure_changelog_topic_is_idempotent_and_checks_what_exists(
    kafka, admin, changelog_topic
):
    await ensure_changelog_topic(kafka, changelog_topic, PARTITIONS, 1)
    with pytest.raises(ConfigurationError, match="has 4 partitions, the table needs 6"):
        await ensure_changelog_topic(kafka, changelog_topic, 6, 1)

    uncompacted = unique("t-uncompacted")
    await admin.create_topics([NewTopic(uncompacted, PARTITIONS, 1, topic_configs={})])
    with pytest.raises(ConfigurationError, match=r"cleanup\.policy=delete"):
        await ensure_changelog_topic(kafka, uncompacted, PARTITIONS, 1)


async def wait_until_gone(admin: AIOKafkaAdminClient, topic: str, attempts: int = 150) -> None:
    for _ in range(attempts):
        if topic not in await admin.list_topics():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"topic {topic} still listed after deletion")
