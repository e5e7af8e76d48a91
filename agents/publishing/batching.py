"""Records sent to Kafka in batches of our own making: one batch per partition and linger.

Why not ``AIOKafkaProducer.send()`` per record: it costs ~20 µs of Python per record
(partitioner, metadata checks, a delivery future and accumulator bookkeeping each). Appending
to aiokafka's C record builder and sending the whole batch with ``send_batch()`` costs about
half: measured 24-29 µs against 14-15 µs per 165-byte record on one core, which is ~2% of a
busy worker's CPU per request.

The contract stays the one ``send()`` has: every record gets its own future, resolved once
the broker has acknowledged the batch that holds it (or failed with the batch's error), so a
caller still commits a request's offset only after its outcome is on its topic.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Protocol

from streams.routing import partition_for

log = logging.getLogger(__name__)


class RecordBatch(Protocol):
    """The part of aiokafka's ``BatchBuilder`` used here."""

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None) -> Any:
        """Metadata when the record fits, None when the batch is full."""

    def close(self) -> None: ...


class BatchProducer(Protocol):
    """The part of ``AIOKafkaProducer`` used here."""

    def create_batch(self) -> RecordBatch: ...

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class _OpenBatch:
    __slots__ = ("builder", "waiters")

    def __init__(self, builder: RecordBatch) -> None:
        self.builder = builder
        self.waiters: list[asyncio.Future[None]] = []


class BatchingSender:
    """``send()`` appends to the open batch of the record's partition; a batch goes out
    ``linger_s`` after its first record, or as soon as it is full.

    Keys are partitioned with Kafka's murmur2 (``streams.routing``), exactly as the producer
    would: forwarded requests must land on the partition that owns their limit key.
    """

    def __init__(self, producer: BatchProducer, *, linger_s: float) -> None:
        self._producer = producer
        self._linger_s = linger_s
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[None]:
        """Queue one record; the returned future resolves when the broker has it."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(
                await self._producer.partitions_for(topic)
            )
        partition = random.choice(partitions) if key is None else partition_for(key, partitions)
        where = (topic, partition)
        batch = self._open.get(where) or self._start(where)
        if batch.builder.append(timestamp=None, key=key, value=value) is None:
            # Full: send it, and start the next one with this record (a first record always
            # fits, whatever its size; the broker judges it).
            self._flush(where, batch)
            batch = self._start(where)
            if batch.builder.append(timestamp=None, key=key, value=value) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes fits no batch")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        return waiter

    def _start(self, where: tuple[str, int]) -> _OpenBatch:
        batch = self._open[where] = _OpenBatch(self._producer.create_batch())
        asyncio.get_running_loop().call_later(self._linger_s, self._flush, where, batch)
        return batch

    def _flush(self, where: tuple[str, int], batch: _OpenBatch) -> None:
        if self._open.get(where) is not batch:
            return  # already sent (it filled up before its linger ended)
        del self._open[where]
        task = asyncio.create_task(self._deliver(where, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, where: tuple[str, int], batch: _OpenBatch) -> None:
        topic, partition = where
        # Closed, so aiokafka sends it at once instead of lingering a second time, and so
        # nothing else can be appended to it.
        batch.builder.close()
        try:
            delivery = await self._producer.send_batch(batch.builder, topic, partition=partition)
            await delivery
        except asyncio.CancelledError:
            for waiter in batch.waiters:
                waiter.cancel()
            raise
        except Exception as exc:  # each waiter's caller decides: the publisher retries
            # The partition count may have changed (or the topic was re-created): read it
            # again for the next record.
            self._partitions.pop(topic, None)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in batch.waiters:
            if not waiter.done():  # its caller was cancelled meanwhile
                waiter.set_result(None)

    async def flush(self) -> None:
        """Send every open batch now and wait until all batches sent are settled."""
        for where, batch in list(self._open.items()):
            self._flush(where, batch)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
