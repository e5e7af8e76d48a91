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

from agents.rate_limiter.book import LimitBook
from agents.rate_limiter.bucket import Bucket, available, observe_provider_headers
from agents.rate_limiter.gate import BucketGate
from agents.rate_limiter.quota import QuotaPolicy, QuotaState, Verdict, check_and_count
from agents.rate_limiter.waiting_room import WaitingRoom
from providers.response import RateLimitInfo
from schemas.models import RequestEvent
from streams.metrics import LabelledCache, Metrics

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
        """Wait until ``key`` has a token for the request, or its deadline passes.

        Args:
            not_before: hold the request in the waiting room until then (a quota reset).
        """
        now = self._clock()
        # Nobody waits for this key: no order to keep, take the token straight away.
        idle = not_before is None and not self._waiting.count(key)
        if idle and self._gate.try_take(key, 1, now) == 0.0:
            return Admission.GO
        ticket: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._waiting.push(
            ticket,
            key=key,
            priority=request.priority,
            deadline_at=request.deadline_s,
            enqueued_at=now,
            not_before=not_before,
        )
        self._wake.set()
        return await ticket

    def observe(self, key: str, *, remaining: int, reset_s: float | None) -> None:
        """The provider's word on ``key``: ``remaining`` calls before ``reset_s`` (None: unsaid).

        Only ever lowers our estimate (``observe_provider_headers``).
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets[key] = observe_provider_headers(
                bucket,
                remaining=remaining,
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
        # By provider; bounded: admit only sees configured providers.
        self._wait_histograms = LabelledCache(metrics.limiter_wait_seconds)

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
        resets_at = None
        if quota is not None:
            refusal, resets_at = await self._count(request, partition, key, quota, now=started)
            if refusal is not None:
                return refusal
        # A queued quota waits in the waiting room until the reset (not_before), like any wait.
        admission = await limiter.acquire(request, key, not_before=resets_at)
        while admission is Admission.GO and quota is not None and resets_at is not None:
            # Counted when it goes; if others filled the new window first, it queues again.
            now = self._clock()
            refusal, resets_at = await self._count(request, partition, key, quota, now=now)
            if refusal is not None:
                return refusal
            if resets_at is not None:
                if self._partitions.get(partition) is not limiter:
                    raise asyncio.CancelledError  # revoked while it waited
                admission = await limiter.acquire(request, key, not_before=resets_at)
        waited = self._clock() - started
        self._wait_histograms[request.provider].observe(waited)
        if admission is not Admission.GO:
            reason = "deadline_passed" if admission is Admission.EXPIRED else "over_burst"
            self._metrics.limiter_refusals.labels(request.provider, reason).inc()
            return Decision(admission, reason, key, waited)
        return Decision(Admission.GO, None, key, waited)

    async def _count(
        self, request: RequestEvent, partition: int, key: str, quota: QuotaPolicy, *, now: float
    ) -> tuple[Decision | None, float | None]:
        """Count the request against its quota.

        Returns:
            ``(None, None)``: counted; ``(refusal, None)``: rejected or expired;
            ``(None, resets_at)``: queued, to go (and be counted) once the window resets.
        """
        quota_key = f"{request.tenant}/{key}".encode()
        raw = self._quotas.get(partition, quota_key)
        state = QuotaState.from_bytes(raw) if raw else QuotaState()
        state_after, decision = check_and_count(state, now=now, policy=quota)
        if decision.verdict is Verdict.REJECT:
            self._metrics.limiter_refusals.labels(request.provider, "quota_exceeded").inc()
            retry_after_s = decision.retry_after_s(now)
            return Decision(Admission.REJECTED, "quota_exceeded", key, 0.0, retry_after_s), None
        if decision.verdict is Verdict.QUEUE:
            resets_at = decision.resets_at or 0.0
            if request.deadline_passed(resets_at):  # would expire while queued: say so now
                self._metrics.limiter_refusals.labels(request.provider, "deadline_passed").inc()
                return Decision(Admission.EXPIRED, "deadline_passed", key), None
            return None, resets_at
        await self._quotas.put(partition, quota_key, state_after.to_bytes())
        return None, None

    def observe(self, request: RequestEvent, partition: int, info: RateLimitInfo | None) -> None:
        """A successful reply's rate-limit headers (its primary dimension): lower the key's
        bucket to the calls the provider says remain, if it said.

        The reset is not passed on: ``observe_provider_headers`` reads it as the end of a fixed
        window and places the remaining calls just before it, which holds the key back for
        most of the window (a token-bucket provider's "seconds until full", rounded up to a
        second, held every key for a second after every reply). A 429 still holds the key
        for the provider's wait (``observe_rate_limited``).
        """
        if info is None or info.remaining is None:
            return
        limiter = self._partitions.get(partition)
        if limiter is not None:
            limiter.observe(self.limit_key(request), remaining=info.remaining, reset_s=None)

    def observe_rate_limited(
        self, request: RequestEvent, partition: int, retry_after_s: float | None
    ) -> None:
        """A 429 (or an exhausted limit header): hold the key back for the provider's wait."""
        limiter = self._partitions.get(partition)
        if limiter is not None:
            limiter.observe(self.limit_key(request), remaining=0, reset_s=retry_after_s or 1.0)

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
