"""ChangelogTable: per-partition RocksDB state mirrored to a compacted changelog (Faust-like)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from streams.errors import CallstreamError, ConfigurationError
from streams.kafka import reader
from streams.settings import KafkaSettings
from streams.state.recovery import PartitionRecovery, RecoveryReport, replay
from streams.state.store import PartitionStore, Pending
from streams.state.topic import changelog_partitions

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_FETCH_BYTES_PER_PARTITION = 256 * 1024


class PartitionNotAssignedError(CallstreamError):
    """The table does not hold this partition (not assigned yet, or revoked)."""


class ChangelogProducer(Protocol):
    """The part of ``AIOKafkaProducer`` the table uses: ``send`` returns the delivery future."""

    async def send(
        self, topic: str, *, key: bytes, value: bytes | None, partition: int
    ) -> asyncio.Future[Any]: ...


class ChangelogTable:
    """One table (e.g. ``quotas``) over the partitions this worker owns.

    Partition ``p`` of the table lives in ``directory/<name>-<p>`` and in partition ``p`` of
    the changelog topic, so it moves with partition ``p`` of the source topic. Call
    :meth:`assign` and :meth:`revoke` from the consumer's rebalance callbacks, and
    :func:`~streams.state.topic.ensure_changelog_topic` once at start-up.

    Not safe for two writers of one key at once: as with Faust tables, updates of a partition
    must come from the one task that processes that partition, or be commutative per key.
    """

    def __init__(
        self,
        name: str,
        *,
        changelog_topic: str,
        directory: Path,
        producer: ChangelogProducer,
        kafka: KafkaSettings,
        stall_timeout_s: float = 30.0,
    ) -> None:
        if not _NAME.match(name):
            raise ConfigurationError(f"table name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.changelog_topic = changelog_topic
        self._directory = directory
        self._producer = producer
        self._kafka = kafka
        self._stall_timeout_s = stall_timeout_s
        self._stores: dict[int, PartitionStore] = {}
        # Deliveries per partition, kept across a revocation: see assign().
        self._deliveries: dict[int, set[asyncio.Future[Any]]] = {}

    def __repr__(self) -> str:
        return f"ChangelogTable({self.name!r}, partitions={sorted(self._stores)})"

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._stores)

    def store_path(self, partition: int) -> Path:
        return self._directory / f"{self.name}-{partition}"

    async def assign(self, partitions: Iterable[int]) -> RecoveryReport:
        """Open the stores of ``partitions`` and replay their changelog up to its end.

        A store is usable (``get``/``put``) only once this returns. Partitions already held
        are left alone.

        Returns:
            Records replayed per partition and the seconds taken.

        Raises:
            ConfigurationError: the changelog topic or one of the partitions does not exist.
            RecoveryError: the replay stalled.
        """
        started = time.monotonic()
        wanted = sorted(set(partitions) - self._stores.keys())
        if not wanted:
            return RecoveryReport(self.name, (), 0.0)
        await self._check_changelog(wanted)
        # aiokafka revokes every partition on each rebalance and often assigns the same ones
        # back. A write sent before the revocation and acknowledged after this replay read the
        # end offset would be in neither store: wait for such writes first.
        in_flight = [d for partition in wanted for d in self._deliveries.get(partition, ())]
        if in_flight:
            await asyncio.wait(in_flight)
        self._directory.mkdir(parents=True, exist_ok=True)
        opened: dict[int, PartitionStore] = {}
        try:
            for partition in wanted:
                opened[partition] = PartitionStore(self.store_path(partition))
                # rocksdict holds the GIL while it opens a store (30-80 ms measured here, in a
                # thread too): let other tasks run between stores.
                await asyncio.sleep(0)
            recovered = await self._replay(opened)
        except BaseException:
            # Each replayed batch was written with its checkpoint: what was replayed is kept.
            for store in opened.values():
                store.close()
            raise
        self._stores.update(opened)
        report = RecoveryReport(self.name, recovered, time.monotonic() - started)
        log.info(
            "table %s: assigned %s, replayed %d records in %.2f s",
            self.name,
            wanted,
            report.records,
            report.seconds,
        )
        return report

    def revoke(self, partitions: Iterable[int]) -> None:
        """Close the stores of ``partitions``; their files stay for a cheap re-assignment."""
        for partition in partitions:
            store = self._stores.pop(partition, None)
            if store is not None:
                store.close()

    def close(self) -> None:
        self.revoke(list(self._stores))

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key``, including this worker's writes still awaiting the broker."""
        return self._store(partition).get(key)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every acknowledged pair of ``partition``: a full scan, for tools and tests."""
        return self._store(partition).items()

    async def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Set ``key``; returns once the broker has acknowledged the changelog record.

        Raises:
            PartitionNotAssignedError: the partition is not held.
            KafkaError: the changelog write failed; the value is dropped locally. Do not
                acknowledge the event that caused it: reprocessing it writes it again.
        """
        await self._write(partition, key, value)

    async def delete(self, partition: int, key: bytes) -> None:
        """Delete ``key`` (a tombstone in the changelog); same guarantees as :meth:`put`."""
        await self._write(partition, key, None)

    async def _write(self, partition: int, key: bytes, value: bytes | None) -> None:
        store = self._store(partition)
        pending = store.stage(key, value)
        try:
            delivery = await self._producer.send(
                self.changelog_topic, key=key, value=value, partition=partition
            )
        except BaseException:
            store.discard(pending)
            raise
        delivery.add_done_callback(functools.partial(_settle, store, pending))
        deliveries = self._deliveries.setdefault(partition, set())
        deliveries.add(delivery)
        delivery.add_done_callback(deliveries.discard)
        # Shielded: cancelling the caller must not cancel the delivery, whose outcome
        # decides what the store keeps; the callback settles it either way.
        await asyncio.shield(delivery)

    def _store(self, partition: int) -> PartitionStore:
        try:
            return self._stores[partition]
        except KeyError:
            raise PartitionNotAssignedError(
                f"table {self.name} does not hold partition {partition}"
            ) from None

    async def _check_changelog(self, partitions: list[int]) -> None:
        # Assigning a missing topic would make a broker with auto.create.topics.enable create
        # it uncompacted with its default partition count; refuse instead.
        count = await changelog_partitions(self._kafka, self.changelog_topic)
        if count is None or partitions[-1] >= count:
            raise ConfigurationError(
                f"table {self.name}: changelog topic {self.changelog_topic} "
                f"{'does not exist' if count is None else f'has only {count} partitions'}. "
                "Operator action: create it with ensure_changelog_topic (start-up does)."
            )

    async def _replay(self, stores: Mapping[int, PartitionStore]) -> tuple[PartitionRecovery, ...]:
        # aiokafka parses a whole fetch response in one step of the loop: 1 MiB per partition
        # (the default) stalled it 120-150 ms with 4 partitions, 256 KiB 50-65 ms, at the same
        # replay rate (measured here, 100,000 records).
        async with reader(
            self._kafka, max_partition_fetch_bytes=_FETCH_BYTES_PER_PARTITION
        ) as consumer:
            return await replay(
                consumer, self.changelog_topic, stores, stall_timeout_s=self._stall_timeout_s
            )


def _settle(store: PartitionStore, pending: Pending, delivery: asyncio.Future[Any]) -> None:
    if store.closed:
        return  # revoked meanwhile: the next owner replays the record from the changelog
    if delivery.cancelled() or delivery.exception() is not None:
        store.discard(pending)
    else:
        store.settle(pending, delivery.result().offset)
