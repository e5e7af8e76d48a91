"""The limiter of a worker: per owned partition, buckets, quotas and a waiting room.

A request over its limit waits here as a future, not in the stream: its record's task is
suspended while other keys' requests keep flowing, and its offset stays uncommitted until it
is done. When a partition is revoked its waiting requests are cancelled unsent, so the next
owner reads them again from the committed offset; the new owner starts with empty buckets
(``fresh_after_handover``), because the old owner may have spent tokens it never recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from prometheus_client import Histogram

from agents.rate_limiter.book import LimitBook
from agents.rate_limiter.bucket import Bucket, available, observe_provider_headers
from agents.rate_limiter.gate import BucketGate
from agents.rate_limiter.quota import QuotaState, Verdict, check_and_count
from agents.rate_limiter.waiting_room import WaitingRoom
from schemas.models import RequestEvent
from streams.metrics import Metrics

log = logging.getLogger(__name__)


class Admission(enum.Enum):
    GO = "go"
    EXPIRED = "expired"
    REJECTED = "rejected"


class Decision(NamedTuple):
    """What the limiter decided for one request (a NamedTuple: one per request)."""

    admission: Admission
    reason: str | None = None
    limit_key: str = ""
    waited_s: float = 0.0
    retry_after_s: float | None = None


class QuotaStore(Protocol):
    """Where quota counts live: a changelog-backed table in workers, a dict in tests."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    async def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class MemoryQuotaStore:
    """Quota counts in memory: for tests and for workers without quotas."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, bytes], bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self._data.get((partition, key))

    async def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._data[(partition, key)] = value


class PartitionLimiter:
    """Buckets and the waiting room of one partition; one release loop wakes the waiters."""

    def __init__(
        self, partition: int, book: LimitBook, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.partition = partition
        self._book = book
        self._metrics = metrics
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._gate = BucketGate(self._buckets, book.policy_for)
        self._waiting: WaitingRoom[asyncio.Future[Admission]] = WaitingRoom()
        self._wake = asyncio.Event()
        self._releaser = asyncio.create_task(self._release_forever())

    async def acquire(
        self, request: RequestEvent, key: str, *, not_before: float | None = None
    ) -> Admission:
        """Wait until ``key`` has a token for the request, or its deadline passes."""
        now = self._clock()
        # Nobody waits for this key: no order to keep, take the token straight away.
        idle = not_before is None and not self._waiting.count(key)
        if idle and self._gate.try_take(key, 1, now) == 0.0:
            return Admission.GO
        ticket: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        deadline = request.deadline_at_ms / 1000 if request.deadline_at_ms is not None else None
        self._waiting.push(
            ticket,
            key=key,
            priority=request.priority,
            deadline_at=deadline,
            enqueued_at=now,
            not_before=not_before,
        )
        self._wake.set()
        return await ticket

    def observe_exhausted(self, key: str, *, reset_s: float) -> None:
        """The provider says the limit is used up for ``reset_s``: send nothing before then."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets[key] = observe_provider_headers(
                bucket,
                remaining=0,
                reset_s=reset_s,
                now=self._clock(),
                policy=self._book.policy_for(key),
            )

    def waiting(self) -> dict[str, int]:
        return self._waiting.counts()

    def tokens(self, now: float) -> dict[str, float]:
        return {
            key: available(bucket, now=now, policy=self._book.policy_for(key))
            for key, bucket in self._buckets.items()
        }

    def close(self) -> None:
        """Stop: waiting requests are cancelled unsent (the next owner reads them again)."""
        self._releaser.cancel()
        for ticket in self._waiting.clear():
            ticket.cancel()

    async def _release_forever(self) -> None:
        while True:
            release = self._waiting.release(self._clock(), self._gate)
            _settle(release.ready, Admission.GO)
            _settle(release.expired, Admission.EXPIRED)
            _settle(release.unservable, Admission.REJECTED)
            self._wake.clear()
            timeout = None
            if release.next_due_at is not None:
                timeout = max(0.0, release.next_due_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _settle(tickets: Iterable[asyncio.Future[Admission]], admission: Admission) -> None:
    for ticket in tickets:
        if not ticket.done():  # a cancelled waiter's slot is simply dropped
            ticket.set_result(admission)


class Limiter:
    """Quotas then rate limits, for every partition this worker owns."""

    def __init__(
        self,
        book: LimitBook,
        quotas: QuotaStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._book = book
        self._quotas = quotas
        self._metrics = metrics
        self._clock = clock
        self._partitions: dict[int, PartitionLimiter] = {}
        # provider -> its labelled wait histogram: labels() takes a lock on every call.
        self._wait_histograms: dict[str, Histogram] = {}

    def _wait_histogram(self, provider: str) -> Histogram:
        histogram = self._wait_histograms.get(provider)
        if histogram is None:  # bounded: admit only sees configured providers
            histogram = self._wait_histograms[provider] = self._metrics.limiter_wait_seconds.labels(
                provider
            )
        return histogram

    def limit_key(self, request: RequestEvent) -> str:
        return self._book.limit_key(request.provider, request.request_id)

    def assign(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            if partition not in self._partitions:
                self._partitions[partition] = PartitionLimiter(
                    partition, self._book, self._metrics, self._clock
                )

    def revoke(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            limiter = self._partitions.pop(partition, None)
            if limiter is not None:
                limiter.close()

    async def admit(
        self, request: RequestEvent, partition: int, key: str | None = None
    ) -> Decision:
        """Count the request against its tenant's quota, then wait for a token.

        Args:
            key: the request's limit key when the caller has it already.

        Raises:
            asyncio.CancelledError: the partition was revoked while the request waited.
        """
        key = key or self.limit_key(request)
        started = self._clock()
        limiter = self._partitions.get(partition)
        if limiter is None:  # revoked between fetch and admission
            raise asyncio.CancelledError
        quota = self._book.quota_for(request.tenant, request.provider)
        if quota is not None:
            quota_key = f"{request.tenant}/{key}".encode()
            raw = self._quotas.get(partition, quota_key)
            state = QuotaState.from_bytes(raw) if raw else QuotaState()
            state_after, decision = check_and_count(state, now=started, policy=quota)
            if decision.verdict is Verdict.REJECT:
                self._metrics.limiter_refusals.labels(request.provider, "quota_exceeded").inc()
                return Decision(
                    Admission.REJECTED,
                    "quota_exceeded",
                    key,
                    retry_after_s=decision.retry_after_s(started),
                )
            if decision.verdict is Verdict.QUEUE:
                # Counted when it goes: it comes back through admit after the reset.
                return await self._after_reset(request, partition, decision.resets_at or 0.0)
            await self._quotas.put(partition, quota_key, state_after.to_bytes())
        admission = await limiter.acquire(request, key)
        waited = self._clock() - started
        self._wait_histogram(request.provider).observe(waited)
        if admission is not Admission.GO:
            reason = "deadline_passed" if admission is Admission.EXPIRED else "over_burst"
            self._metrics.limiter_refusals.labels(request.provider, reason).inc()
            return Decision(admission, reason, key, waited)
        return Decision(Admission.GO, None, key, waited)

    async def _after_reset(
        self, request: RequestEvent, partition: int, resets_at: float
    ) -> Decision:
        deadline = request.deadline_at_ms / 1000 if request.deadline_at_ms is not None else None
        if deadline is not None and deadline <= resets_at:
            self._metrics.limiter_refusals.labels(request.provider, "deadline_passed").inc()
            return Decision(Admission.EXPIRED, "deadline_passed", self.limit_key(request))
        await asyncio.sleep(max(0.0, resets_at - self._clock()))
        return await self.admit(request, partition)

    def observe_rate_limited(
        self, request: RequestEvent, partition: int, retry_after_s: float | None
    ) -> None:
        """A 429 (or an exhausted limit header): hold the key back for the provider's wait."""
        limiter = self._partitions.get(partition)
        if limiter is not None:
            limiter.observe_exhausted(self.limit_key(request), reset_s=retry_after_s or 1.0)

    def update_gauges(self) -> None:
        """Waiting requests and available tokens per limit key, for /metrics."""
        now = self._clock()
        for limiter in self._partitions.values():
            for key, count in limiter.waiting().items():
                self._metrics.limiter_waiting.labels(key).set(count)
            for key, tokens in limiter.tokens(now).items():
                self._metrics.limiter_tokens.labels(key).set(tokens)

    def close(self) -> None:
        self.revoke(list(self._partitions))
