"""What the response cache saw, sent to the predictive cache in batches (issue 24).

Every hit, fill and prefetch refresh of a cache key is one ``AccessEvent``. On the call path it
costs a tuple appended to the batch of the key's access-topic partition; a background task
sends each partition's batch as one ``AccessBatch`` record every ``flush_s`` (sooner at
``max_batch`` events), so the agent reading them handles one record per batch, not per request.
Partitioning by the cache key keeps a key's accesses, and so its state in the agent's table, in
one partition.

Best effort by design: the predictive cache only tunes what is refreshed. A batch the broker
refuses is counted and dropped, and so are events past ``max_buffered`` while the broker is away
(the oldest first), so a slow broker never grows the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from schemas.models import AccessBatch, AccessEvent, AccessKind
from streams.metrics import Metrics

log = logging.getLogger(__name__)

# Sends one record: (partition, value).
Send = Callable[[int, bytes], Awaitable[object]]


class _Access(NamedTuple):
    key: bytes
    at_ms: int
    kind: AccessKind
    expires_at_ms: int
    request: bytes | None


class AccessLog:
    """Collects accesses per access-topic partition and sends them in batches."""

    def __init__(
        self,
        send: Send,
        encode: Callable[[AccessBatch], bytes],
        metrics: Metrics,
        *,
        partitions: int,
        flush_s: float,
        max_batch: int,
        max_buffered: int | None = None,
    ) -> None:
        self._send = send
        self._encode = encode
        self._partitions = partitions
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._max_buffered = max_buffered or 20 * max_batch
        self._pending: dict[int, list[_Access]] = {}
        self._buffered = 0
        self._full = asyncio.Event()
        self._events = metrics.access_events
        self._batches = metrics.access_batches
        self._dropped = metrics.access_dropped

    def record(
        self,
        key: bytes,
        kind: AccessKind,
        *,
        at_ms: int,
        expires_at_ms: int,
        request: bytes | None = None,
    ) -> None:
        """Note one access (hot path: no I/O, no model built)."""
        partition = zlib.crc32(key) % self._partitions
        batch = self._pending.get(partition)
        if batch is None:
            batch = self._pending[partition] = []
        batch.append(_Access(key, at_ms, kind, expires_at_ms, request))
        self._buffered += 1
        if len(batch) >= self._max_batch:
            self._full.set()
        if self._buffered > self._max_buffered:
            self._drop_oldest(batch)

    async def run_forever(self) -> None:
        """Flush every ``flush_s``, or as soon as a batch is full (a background task)."""
        while True:
            with contextlib.suppress(TimeoutError):  # the flush interval passed
                await asyncio.wait_for(self._full.wait(), timeout=self._flush_s)
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send every pending batch (one record per partition)."""
        pending, self._pending, self._buffered = self._pending, {}, 0
        for partition, accesses in pending.items():
            for start in range(0, len(accesses), self._max_batch):
                chunk = accesses[start : start + self._max_batch]
                await self._send_batch(partition, chunk)

    async def _send_batch(self, partition: int, accesses: list[_Access]) -> None:
        events = [
            AccessEvent.model_construct(
                key=a.key,
                at_ms=a.at_ms,
                kind=a.kind,
                expires_at_ms=a.expires_at_ms,
                request=a.request,
            )
            for a in accesses
        ]
        try:
            await self._send(partition, self._encode(AccessBatch.model_construct(events=events)))
        except Exception as exc:  # the broker refused or is away: these accesses are lost
            self._dropped.inc(len(accesses))
            log.warning("access events: a batch of %d was not sent: %r", len(accesses), exc)
            return
        self._events.inc(len(accesses))
        self._batches.inc()

    def _drop_oldest(self, batch: list[_Access]) -> None:
        """Past the buffer's bound: drop the oldest half of the batch that just grew."""
        dropped = len(batch) // 2 or 1
        del batch[:dropped]
        self._buffered -= dropped
        self._dropped.inc(dropped)
