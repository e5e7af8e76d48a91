"""The limiter of a worker: per owned partition, buckets, quotas and a waiting room.

A request over its limit waits here as a future, not in the stream: its record's task is
suspended while other keys' requests keep flowing, and its offset stays uncommitted until it
is done. When a partition is revoked its waiting requests are cancelled unsent, so the next
owner reads them again from the committed offset; the new owner starts with empty buckets
(``fresh_after_handover``), because the old owner may have spent tokens it never recorded.

Waiting is bounded (issue 20): per partition, at most ``max_waiting_per_key`` requests of a
limit key and ``max_waiting_per_tenant`` of a tenant wait; past either a request is rejected at
once (``queue_full``). A request without a deadline waits at most ``default_max_wait_s``
(then ``expired``, reason ``max_wait_exceeded``).

A request over a queueing quota (``on_exceed = "queue"``) does not wait here: admission says
``DELAYED`` until its tenant's next window, and the caller keeps it in the partition's timer
table (durable, holding no fetch capacity); when it is due it is admitted again from the start.

A quota counts a request when it goes, not when it starts waiting: one that expires or is
cancelled while waiting was never sent and is never charged. While it waits it holds a
reservation in memory, which admissions of its tenant count as if it were written, so a burst
of requests cannot all pass the check and then overrun the quota. The table is written once
per request sent, before the call: a crash after the write and before the commit charges the
request again when it is read again (at least once, never less than the calls made).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeVar

from agents.rate_limiter.adaptive import Mode, RateState
from agents.rate_limiter.book import LimitBook
from agents.rate_limiter.bucket import Bucket, available, observe_provider_headers
from agents.rate_limiter.gate import BucketGate
from agents.rate_limiter.learning import QuotaStore, RateLearning
from agents.rate_limiter.quota import (
    QuotaDecision,
    QuotaPolicy,
    QuotaState,
    Verdict,
    check_and_count,
)
from agents.rate_limiter.rates import KeyRates
from agents.rate_limiter.unit_limits import UnitLimits
from agents.rate_limiter.waiting_room import WaitingRoom
from providers.response import RateLimitInfo
from schemas.models import RequestEvent
from streams.metrics import LabelledCache, Metrics

log = logging.getLogger(__name__)

K = TypeVar("K")

# How often the adaptive rates probe upward and are written (``Limiter.control_forever``).
CONTROL_PERIOD_S = 0.25


class Admission(enum.Enum):
    GO = "go"
    EXPIRED = "expired"
    REJECTED = "rejected"
    # Over a queueing quota: wait durably ``retry_after_s`` for the tenant's next window and
    # ask again (the caller's timer table; it holds no place here meanwhile).
    DELAYED = "delayed"


class _Wait(enum.Enum):
    """How a wait in a partition's waiting room ended."""

    GO = "go"
    EXPIRED = "expired"
    OVER_BURST = "over_burst"  # costs more than the bucket holds: never servable
    QUEUE_FULL = "queue_full"  # not let in: its key or its tenant has as many waiting as allowed


class WaitCaps(NamedTuple):
    """Bounds on waiting (``LimiterSettings``), per partition's waiting room."""

    per_key: int = 10_000
    per_tenant: int = 5_000
    default_max_wait_s: float = 300.0


DEFAULT_CAPS = WaitCaps()


class Decision(NamedTuple):
    """What the limiter decided for one request (a NamedTuple: one per request)."""

    admission: Admission
    reason: str | None = None
    limit_key: str = ""
    waited_s: float = 0.0
    retry_after_s: float | None = None


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
        self,
        partition: int,
        book: LimitBook,
        metrics: Metrics,
        clock: Callable[[], float],
        caps: WaitCaps = DEFAULT_CAPS,
        load: Callable[[str], RateState | None] = lambda key: None,
    ) -> None:
        """Args:
        load: a key's adaptive state as a previous owner wrote it, if any.
        """
        self.partition = partition
        self._book = book
        self._metrics = metrics
        self._clock = clock
        self._caps = caps
        self._buckets: dict[str, Bucket] = {}
        self.rates = KeyRates(book.policy_for, book.control_for, load)
        self._gate = BucketGate(self._buckets, self.rates.policy_for)
        # Keys whose callers found no token since the last control tick: backlogged, so
        # their rate may probe upward (adaptive.grow).
        self._backlogged: set[str] = set()
        # Fair share among the tenants backlogged on one key, by their weights.
        self._waiting: WaitingRoom[asyncio.Future[_Wait]] = WaitingRoom(book.weight_for)
        # Our own counts of waiting requests, for the caps (the room orders, we bound).
        self._by_key: dict[str, int] = {}
        self._by_tenant: dict[str, int] = {}
        # Per quota key: requests the quota let through that have not gone yet (uncounted).
        self._reserved: dict[bytes, int] = {}
        self._wake = asyncio.Event()
        self._releaser = asyncio.create_task(self._release_forever())

    async def acquire(
        self,
        request: RequestEvent,
        key: str,
        *,
        deadline_at: float | None,
    ) -> _Wait:
        """Wait until ``key`` has a token for the request, or ``deadline_at`` passes.

        Args:
            deadline_at: the request's deadline, or the default maximum wait.
        """
        now = self._clock()
        # Nobody waits for this key: no order to keep, take the token straight away.
        idle = not self._waiting.count(key)
        if idle and self._gate.try_take(key, 1, now) == 0.0:
            return _Wait.GO
        self._backlogged.add(key)
        tenant = request.tenant
        by_key = self._by_key.get(key, 0)
        by_tenant = self._by_tenant.get(tenant, 0)
        if by_key >= self._caps.per_key or by_tenant >= self._caps.per_tenant:
            return _Wait.QUEUE_FULL
        ticket: asyncio.Future[_Wait] = asyncio.get_running_loop().create_future()
        self._waiting.push(
            ticket,
            key=key,
            priority=request.priority,
            deadline_at=deadline_at,
            enqueued_at=now,
            tenant=tenant,
        )
        self._by_key[key] = by_key + 1
        self._by_tenant[tenant] = by_tenant + 1
        self._wake.set()
        try:
            return await ticket
        finally:
            _decrement(self._by_key, key)
            _decrement(self._by_tenant, tenant)

    def take_spare(self, key: str) -> bool:
        """Take a token of ``key`` only if one is spare now and no request waits for one."""
        if self._waiting.count(key):
            return False
        return self._gate.try_take(key, 1, self._clock()) == 0.0

    def reserved(self, quota_key: bytes) -> int:
        return self._reserved.get(quota_key, 0)

    def reserve(self, quota_key: bytes) -> None:
        self._reserved[quota_key] = self._reserved.get(quota_key, 0) + 1

    def unreserve(self, quota_key: bytes) -> None:
        _decrement(self._reserved, quota_key)

    def observe(
        self, key: str, *, remaining: int, reset_s: float | None, in_flight: int = 0
    ) -> None:
        """The provider's word on ``key``: ``remaining`` calls before ``reset_s`` (None: unsaid),
        not counting our ``in_flight`` calls yet.

        Only ever lowers our estimate (``observe_provider_headers``); an adaptive key keeps no
        jitter margin below the provider's count (see there).
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets[key] = observe_provider_headers(
                bucket,
                remaining=remaining,
                reset_s=reset_s,
                now=self._clock(),
                policy=self.rates.policy_for(key),
                in_flight=in_flight,
                keep_margin=self.rates.state(key) is None,
            )

    def throttled(self, key: str, *, sent_at: float, hold_s: float | None) -> bool:
        """A 429 for a call sent at ``sent_at``: cut the key's rate (once per cut, see
        ``adaptive.throttled``) and empty its bucket, held ``hold_s`` if given. True if cut."""
        cut = self.rates.throttled(key, now=self._clock(), sent_at=sent_at)
        self.observe(key, remaining=0, reset_s=hold_s)
        return cut

    def control(self, elapsed_s: float) -> None:
        """One control tick: the keys backlogged since the last one probe upward by
        ``elapsed_s``."""
        backlogged = self._backlogged
        backlogged.update(self._by_key)  # still waiting: still backlogged
        self._backlogged = set()
        self.rates.grow(backlogged, elapsed_s)

    def waiting(self) -> dict[str, int]:
        return self._waiting.counts()

    def tokens(self, now: float) -> dict[str, float]:
        return {
            key: available(bucket, now=now, policy=self.rates.policy_for(key))
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
            _settle(release.ready, _Wait.GO)
            _settle(release.expired, _Wait.EXPIRED)
            _settle(release.unservable, _Wait.OVER_BURST)
            self._wake.clear()
            timeout = None
            if release.next_due_at is not None:
                timeout = max(0.0, release.next_due_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _settle(tickets: Iterable[asyncio.Future[_Wait]], end: _Wait) -> None:
    for ticket in tickets:
        if not ticket.done():  # a cancelled waiter's slot is simply dropped
            ticket.set_result(end)


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _expiry_reason(request: RequestEvent) -> str:
    """Its own deadline passed, or (without one) the default maximum wait."""
    return "deadline_passed" if request.deadline_at_ms is not None else "max_wait_exceeded"


class Limiter:
    """Quotas then rate limits, for every partition this worker owns."""

    def __init__(
        self,
        book: LimitBook,
        quotas: QuotaStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        caps: WaitCaps = DEFAULT_CAPS,
        hold_retry_after_over_s: float = 0.0,
        warn_below_ratio: float = 0.5,
        units: UnitLimits | None = None,
    ) -> None:
        """Args:
        caps: bounds on waiting per partition (``LimiterSettings``).
        hold_retry_after_over_s: with adaptive rates, a 429's Retry-After holds its whole key
            only when longer than this (``AdaptiveSettings``).
        warn_below_ratio: warn when a key's learned limit is below this share of its declared.
        units: units limits (tokens per minute) of the providers that declare them.
        """
        self._book = book
        self._quotas = quotas
        self._metrics = metrics
        self._clock = clock
        self._caps = caps
        self._hold_over_s = hold_retry_after_over_s
        self._learning = RateLearning(book, quotas, metrics, warn_below_ratio=warn_below_ratio)
        self.units = units if units else None  # None: no provider limits units
        self._partitions: dict[int, PartitionLimiter] = {}
        # By provider; bounded: admit only sees configured providers.
        self._wait_histograms = LabelledCache(metrics.limiter_wait_seconds)

    def limit_key(self, request: RequestEvent) -> str:
        return self._book.limit_key(request.provider, request.request_id)

    def limit_key_by(self, request: RequestEvent, basis: str) -> str:
        """The limit key with the shard picked by ``basis`` instead of the request id."""
        return self._book.limit_key(request.provider, basis)

    def assign(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        if self.units is not None:
            self.units.assign(partitions)
        for partition in partitions:
            if partition not in self._partitions:
                self._partitions[partition] = PartitionLimiter(
                    partition,
                    self._book,
                    self._metrics,
                    self._clock,
                    self._caps,
                    load=functools.partial(self._learning.load, partition),
                )

    def revoke(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        if self.units is not None:
            self.units.revoke(partitions)
        for partition in partitions:
            limiter = self._partitions.pop(partition, None)
            if limiter is not None:
                limiter.close()

    async def admit(
        self, request: RequestEvent, partition: int, key: str | None = None
    ) -> Decision:
        """Check the tenant's quota, wait for a token, and count the request if it goes.

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
        deadline_at = request.deadline_s
        if deadline_at is None:
            deadline_at = started + self._caps.default_max_wait_s
        quota = self._book.quota_for(request.tenant, request.provider)
        if quota is None:
            end = await limiter.acquire(request, key, deadline_at=deadline_at)
        else:
            quota_key = f"{request.tenant}/{key}".encode()
            admitted = await self._admit_quota(
                request, limiter, key, quota_key, quota, deadline_at=deadline_at, now=started
            )
            if isinstance(admitted, Decision):
                return admitted
            end = admitted
        waited = self._clock() - started
        self._wait_histograms[request.provider].observe(waited)
        if end is _Wait.GO:
            return Decision(Admission.GO, None, key, waited)
        if end is _Wait.EXPIRED:
            return self._refused(request, Admission.EXPIRED, _expiry_reason(request), key, waited)
        return self._refused(request, Admission.REJECTED, end.value, key, waited)

    def take_spare(self, partition: int, key: str) -> bool:
        """A token for a call no request waits for (a background cache refresh): only when
        ``key`` has one spare now and no request waits, so it never delays a request nor
        pushes the provider over its limit. It counts in no tenant's quota."""
        limiter = self._partitions.get(partition)
        return limiter is not None and limiter.take_spare(key)

    async def count_answered(
        self, request: RequestEvent, partition: int, key: str
    ) -> Decision | None:
        """Count a request answered without a call (from the cache) in its tenant's quota:
        None when it fits (or no quota applies), else its refusal. It never waits: over the
        quota it is rejected, whatever the quota's ``on_exceed``.

        Raises:
            asyncio.CancelledError: the partition was revoked.
        """
        quota = self._book.quota_for(request.tenant, request.provider)
        if quota is None:
            return None
        limiter = self._partitions.get(partition)
        if limiter is None:
            raise asyncio.CancelledError
        quota_key = f"{request.tenant}/{key}".encode()
        now = self._clock()
        decision = self._check(limiter, quota_key, quota, now=now)
        if decision.verdict is not Verdict.ALLOW:
            retry_after_s = decision.retry_after_s(now)
            return self._refused(
                request, Admission.REJECTED, "quota_exceeded", key, 0.0, retry_after_s
            )
        await self._charge(limiter, quota_key, now=now)
        return None

    async def _admit_quota(
        self,
        request: RequestEvent,
        limiter: PartitionLimiter,
        key: str,
        quota_key: bytes,
        quota: QuotaPolicy,
        *,
        deadline_at: float,
        now: float,
    ) -> _Wait | Decision:
        """The wait of a request under a quota: a refusal, or how its wait ended. A request
        that goes is counted in the quota table before its call (see the module docstring)."""
        decision = self._check(limiter, quota_key, quota, now=now)
        if decision.verdict is Verdict.REJECT:
            retry_after_s = decision.retry_after_s(now)
            return self._refused(
                request, Admission.REJECTED, "quota_exceeded", key, 0.0, retry_after_s
            )
        if decision.verdict is Verdict.QUEUE:
            resets_at = decision.resets_at or now
            if resets_at >= deadline_at:  # it would expire before its window: say so now
                return self._refused(request, Admission.EXPIRED, _expiry_reason(request), key)
            self._metrics.limiter_refusals.labels(request.provider, "quota_queued").inc()
            return Decision(Admission.DELAYED, "quota_queued", key, 0.0, resets_at - now)
        limiter.reserve(quota_key)
        try:
            end = await limiter.acquire(request, key, deadline_at=deadline_at)
        finally:
            limiter.unreserve(quota_key)  # counted below if it goes, else never
        if end is _Wait.GO:
            await self._charge(limiter, quota_key, now=self._clock())
        return end

    def _check(
        self, limiter: PartitionLimiter, quota_key: bytes, quota: QuotaPolicy, *, now: float
    ) -> QuotaDecision:
        """Whether one more request fits the quota, counting the written requests and those
        reserved (let through, not gone yet). Writes nothing."""
        state = self._read(limiter.partition, quota_key)
        reserved = limiter.reserved(quota_key)
        if reserved:
            state = state.rolled(now).counted(reserved)
        return check_and_count(state, now=now, policy=quota)[1]

    async def _charge(self, limiter: PartitionLimiter, quota_key: bytes, *, now: float) -> None:
        """Count one request sent now (read, count and stage with no await in between)."""
        self._still_owned(limiter)
        state = self._read(limiter.partition, quota_key).rolled(now).counted(1)
        await self._quotas.put(limiter.partition, quota_key, state.to_bytes())

    def _still_owned(self, limiter: PartitionLimiter) -> None:
        """Raise CancelledError if the partition was revoked since the request's token came:
        its quota table is gone, and the next owner reads the request again (uncounted)."""
        if self._partitions.get(limiter.partition) is not limiter:
            raise asyncio.CancelledError

    def _read(self, partition: int, quota_key: bytes) -> QuotaState:
        raw = self._quotas.get(partition, quota_key)
        return QuotaState.from_bytes(raw) if raw else QuotaState()

    def _refused(
        self,
        request: RequestEvent,
        admission: Admission,
        reason: str,
        key: str,
        waited: float = 0.0,
        retry_after_s: float | None = None,
    ) -> Decision:
        self._metrics.limiter_refusals.labels(request.provider, reason).inc()
        return Decision(admission, reason, key, waited, retry_after_s)

    def observe(
        self,
        request: RequestEvent,
        partition: int,
        limits: Mapping[str, RateLimitInfo],
        *,
        in_flight: int = 0,
        key: str | None = None,
    ) -> None:
        """A successful reply's rate-limit headers (``ProviderReply.rate_limits``) for the call
        of ``request`` on ``key`` (its limit key; by default from its request id).

        The primary dimension (the first declared, the units one aside) lowers the key's
        bucket to the calls the provider says remain, if it said; a limit with its window sets
        the key's adaptive ceiling. ``in_flight``: our other calls to the key not back yet,
        which the provider's count does not include. The dimension named as the provider's
        declared units limit (``limits.units.name``, e.g. ``tokens``) goes to the units bucket
        instead (``UnitLimits.observe``), which counts the units in flight itself.

        The primary's reset is not passed on: ``observe_provider_headers`` reads it as the end
        of a fixed window and places the remaining calls just before it, which holds the key
        back for most of the window (a token-bucket provider's "seconds until full", rounded up
        to a second, held every key for a second after every reply). A 429 still holds the key
        for the provider's wait (``observe_rate_limited``).
        """
        limiter = self._partitions.get(partition)
        if not limits or limiter is None:
            return
        key = key or self.limit_key(request)
        info: RateLimitInfo | None = None
        units = self.units
        dimension = units.dimension(request.provider) if units is not None else None
        if units is None or dimension is None:  # most: no units limit, the first is primary
            info = next(iter(limits.values()))
        else:
            for name, seen in limits.items():
                if name == dimension:
                    units.observe(request, partition, key, seen)
                elif info is None:
                    info = seen
            if info is None:
                return
        if info.limit is not None and info.window_s is not None:
            # The provider's limit is the whole key's; each of its shards enforces a share.
            shards = self._book.shards(request.provider)
            limiter.rates.headers(key, limit=info.limit, window_s=info.window_s * shards)
        if info.remaining is not None:
            limiter.observe(key, remaining=info.remaining, reset_s=None, in_flight=in_flight)

    def observe_rate_limited(
        self,
        request: RequestEvent,
        partition: int,
        retry_after_s: float | None,
        *,
        sent_at: float,
    ) -> None:
        """A 429 (or an exhausted limit header) for a call sent at ``sent_at``.

        With adaptive rates the key's rate is cut and its bucket emptied; the provider's
        Retry-After holds the whole key only when longer than ``hold_retry_after_over_s`` (the
        refused request itself waits it in any case: a retry). Without, the key is held for
        the provider's wait, as declared.
        """
        limiter = self._partitions.get(partition)
        if limiter is None:
            return
        key = self.limit_key(request)
        self._metrics.limiter_throttled.labels(key).inc()
        if self._book.control_for(key).mode is Mode.OFF:
            limiter.observe(key, remaining=0, reset_s=retry_after_s or 1.0)
            return
        hold = retry_after_s if retry_after_s and retry_after_s > self._hold_over_s else None
        if limiter.throttled(key, sent_at=sent_at, hold_s=hold):
            self._metrics.limiter_rate_cuts.labels(key).inc()
            state = limiter.rates.state(key)
            if state is not None:
                log.info(
                    "%s: 429, rate cut to %.1f/s (refused at %.1f/s)",
                    key, state.rate_per_s, state.refused_per_s,
                )  # fmt: skip

    async def control_forever(self) -> None:
        """Every ``CONTROL_PERIOD_S``: backlogged keys probe upward, learned rates are
        written to the quota table and exported (``RateLearning``)."""
        last = self._clock()
        while True:
            await asyncio.sleep(CONTROL_PERIOD_S)
            now = self._clock()
            elapsed, last = max(0.0, now - last), now
            for limiter in list(self._partitions.values()):
                limiter.control(elapsed)
                await self._learning.tick(
                    limiter.partition,
                    limiter.rates,
                    elapsed_s=elapsed,
                    now=now,
                    owned=functools.partial(self._owns, limiter),
                )

    def _owns(self, limiter: PartitionLimiter) -> bool:
        return self._partitions.get(limiter.partition) is limiter

    def update_gauges(self) -> None:
        """Waiting requests and available tokens per limit key, for /metrics."""
        now = self._clock()
        for limiter in self._partitions.values():
            for key, count in limiter.waiting().items():
                self._metrics.limiter_waiting.labels(key).set(count)
            for key, tokens in limiter.tokens(now).items():
                self._metrics.limiter_tokens.labels(key).set(tokens)
            for key, state in limiter.rates.states().items():
                self._learning.export(key, state)
        for operation, units in (self.units.estimates() if self.units else {}).items():
            self._metrics.units_estimate.labels(operation).set(units)

    def close(self) -> None:
        self.revoke(list(self._partitions))
