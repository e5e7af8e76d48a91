"""Turns one request record into exactly one outcome, whatever happens on the way.

Every failure becomes data: undecodable bytes and permanent provider errors become dead letters,
a passed deadline an ``expired`` result. A retriable failure is retried after a durable delay
(``Delay``: the stage loop keeps it in the partition's timer table and hands it back to
``resume`` when due), as the retry planner decides, until it succeeds or the planner gives up
(a dead letter of stage ``retry``). A request over a queueing quota waits durably the same way
for its tenant's next window, and one whose provider's breaker is open waits for it to
half-open (or ends ``circuit_open``). Where the operation declares fallbacks, a provider that
cannot answer is answered for (``fallbacks.py``); a call holds its provider's bulkhead
(``bulkhead.py``). Only a bug in our own code is logged as such, and even that ends as a dead
letter so the partition keeps moving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import NamedTuple, Protocol

from agents.breaker.board import BreakerBoard
from agents.breaker.state import CallResult, PermitKind
from agents.cache.flights import Flight
from agents.cache.freshness import Freshness
from agents.cache.response_cache import REVALIDATED, Keyed, Lookup, ResponseCache
from agents.outcomes import dead_letter, result
from agents.provider_caller.bulkhead import Bulkheads
from agents.provider_caller.concurrency import ConcurrencyLimits
from agents.provider_caller.fallbacks import Fallbacks
from agents.provider_caller.prefetch_budget import PrefetchBudget
from agents.provider_caller.tenancy import TenantGate
from agents.rate_limiter.limiter import Admission, Limiter
from agents.rate_limiter.unit_limits import UnitLimits
from agents.retry.planner import GiveUp, RetryPlanner
from providers.auth.request import PreparedRequest
from providers.errors import (
    EventTooLarge,
    InvalidResponse,
    NotAllowed,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownProvider,
)
from providers.response import ProviderReply
from schemas.errors import DecodeError
from schemas.models import AttemptRecord, DelayedRequest, RequestEvent, ResultStatus, now_ms
from streams.stage.no_return import PointOfNoReturn
from streams.stage.records import Delay, Forward, Outcome, Settled, SourceRecord

log = logging.getLogger(__name__)


class ProviderGateway(Protocol):
    """Calls the provider a request names; raises a ``ProviderError`` subclass on failure.

    ``build`` is pure (no I/O) and refuses a bad request; ``call`` signs and sends what it
    built. The reply comes back as the provider classified it, rate-limit headers included.
    """

    def build(self, request: RequestEvent) -> PreparedRequest: ...

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply: ...

    @property
    def provider_names(self) -> frozenset[str]: ...


class RequestDecoder(Protocol):
    def decode(self, raw: bytes) -> RequestEvent: ...


class DelayCodec(Protocol):
    def encode(self, event: DelayedRequest) -> bytes: ...
    def decode(self, raw: bytes) -> DelayedRequest: ...


class RequestEncoder(Protocol):
    def __call__(self, event: RequestEvent) -> bytes: ...


class _Resumed(NamedTuple):
    """What a request taken up from a delay brings along."""

    attempts: tuple[AttemptRecord, ...]
    kind: str


_FRESH = _Resumed((), "")


class _Cached(NamedTuple):
    """A cacheable request on its way to the provider: what the cache holds for it, and the
    flight it leads (the requests for the same key that wait for its answer)."""

    look: Lookup
    flight: Flight


# The kind of a retry the retry budget deferred (beside "retry" and "quota").
_BUDGET = "retry_budget"
# The failures that count against a provider's breaker: its own (5xx, timeouts, connections,
# answers it should not give), not a caller's 4xx nor its rate limit (the limiter's business).
_BREAKER_FAILURES = (ProviderTimeout, ProviderUnavailable, InvalidResponse)
# How soon a request refused by a half-open breaker (its probes all out) asks again.
_HALF_OPEN_POLL_MS = 1000


class Caller:
    """Decode, check, call, and decide the outcome of one request record."""

    def __init__(
        self,
        gateway: ProviderGateway,
        decoder: RequestDecoder,
        *,
        reply_topics: Collection[str] = (),
        limiter: Limiter | None = None,
        owner_of: Callable[[str], int | None] | None = None,
        max_in_flight: int = 512,
        max_event_bytes: int | None = None,
        no_return: PointOfNoReturn | None = None,
        clock_ms: Callable[[], int] = now_ms,
        tenancy: TenantGate | None = None,
        retries: RetryPlanner | None = None,
        delays: DelayCodec | None = None,
        encode_request: RequestEncoder | None = None,
        quota_jitter_ms: int = 50,
        breakers: BreakerBoard | None = None,
        max_wait_s: float = 300.0,
        bulkheads: Bulkheads | None = None,
        fallbacks: Fallbacks | None = None,
        concurrency: ConcurrencyLimits | None = None,
        cache: ResponseCache | None = None,
        cache_hits_count_toward_quota: bool = False,
        prefetch_budget: PrefetchBudget | None = None,
    ) -> None:
        """Args:
        gateway: calls providers.
        decoder: bytes to RequestEvent.
        reply_topics: topics a request may name as ``reply_to``.
        limiter: quotas and rate limits; None calls without limits.
        owner_of: the partition that owns a limit key (None when unknown yet).
        max_in_flight: provider calls at once; waiting for a token holds no call slot.
        max_event_bytes: records larger than this are refused before decoding (None: none).
        no_return: shared with the loop, which cancels requests that have not called yet.
        clock_ms: epoch milliseconds, injectable for tests.
        tenancy: binds tenants to topics, caps priority, applies allow-lists (None: requests
            are taken at their word, as without ``[tenants.*]``).
        retries: decides whether and when a retriable failure is retried (None: it ends as a
            ``failed`` result at once).
        delays: encodes what a delayed request needs to go on; required with ``retries`` or
            a queueing quota.
        encode_request: a request's bytes, for the dead letter of a request taken up from a
            delay (its original record is long committed).
        quota_jitter_ms: spread of the requests queued for one quota window over its start.
        breakers: circuit breakers by limit key (None: no breaker).
        max_wait_s: how long a request without a deadline may wait for an open breaker.
        bulkheads: calls at once per provider or operation (None: only ``max_in_flight``).
        fallbacks: answers when a provider cannot (None: no fallbacks).
        concurrency: adaptive calls-in-flight limits per limit key (None: none).
        cache: answers cacheable operations from their entries (None: no cache).
        cache_hits_count_toward_quota: a request answered from the cache counts toward its
            tenant's quota (it never takes a rate-limit token).
        prefetch_budget: how many prefetch calls each limit key may make (None: prefetch
            requests are not served).
        """
        self._gateway = gateway
        self._decoder = decoder
        self._reply_topics = frozenset(reply_topics)
        self._limiter = limiter
        self._owner_of = owner_of
        self._call_slots = asyncio.Semaphore(max_in_flight)
        self._max_event_bytes = max_event_bytes
        self._no_return = no_return or PointOfNoReturn()
        self._clock_ms = clock_ms
        self._tenancy = tenancy
        self._retries = retries
        self._delays = delays
        self._encode_request = encode_request
        self._quota_jitter_ms = quota_jitter_ms
        self._breakers = breakers
        self._max_wait_ms = int(max_wait_s * 1000)
        self._bulkheads = bulkheads
        self._fallbacks = fallbacks
        self._concurrency = concurrency
        self._cache = cache
        self._hits_count = cache_hits_count_toward_quota and limiter is not None
        # Background refreshes of entries within stale-while-revalidate (kept from collection).
        self._refreshes: set[asyncio.Task[None]] = set()
        self._prefetch_budget = prefetch_budget

    async def handle(self, source: SourceRecord) -> Outcome | Forward | Delay | Settled:
        """The outcome of one record. Never raises, except CancelledError when the record's
        partition is revoked while it waits for a token (it was not called, and will be read
        again by the partition's next owner)."""
        size, cap = len(source.value), self._max_event_bytes
        if cap is not None and size > cap:  # decoding it would cost more than it is worth
            error = EventTooLarge(f"request record of {size} bytes over {cap}")
            return self._dead(source, reason=error.reason, error=error, stage="decode")
        try:
            request = self._decoder.decode(source.value)
        except DecodeError as exc:
            return self._dead(source, reason=exc.reason, error=exc, stage="decode")
        try:
            if self._tenancy is not None:  # the topic's tenant, its allow-list, its priority cap
                bound = self._tenancy.bind(source, request)
                if isinstance(bound, NotAllowed):
                    return self._dead(
                        source, reason=bound.reason, error=bound, stage="admission", request=request
                    )
                source, request = bound
            return await self._handle_request(source, request)
        except Exception as exc:  # a bug of ours must not stop the partition
            self._unless_revoked(exc)
            log.exception("unexpected error handling request %s", request.request_id)
            return self._dead(
                source, reason="internal_error", error=exc, stage="caller", request=request
            )

    async def resume(self, partition: int, payload: bytes) -> Outcome | Delay | Forward | Settled:
        """Take up a request whose delay is due (a retry, a quota window): decided like a new
        record, on the partition that owns its limit key (a ``Forward`` only for a fallback to
        another provider). Never raises, like ``handle``."""
        try:
            delayed = self._delay_codec().decode(payload)
        except DecodeError as exc:
            source = SourceRecord("<timer table>", partition, -1, payload)
            return self._dead(source, reason=exc.reason, error=exc, stage="retry")
        request = delayed.request
        raw = self._encode_request(request) if self._encode_request is not None else b""
        source = SourceRecord(
            delayed.source_topic, delayed.source_partition, delayed.source_offset, raw
        )
        resumed = _Resumed(tuple(delayed.attempts), delayed.kind)
        try:
            outcome = await self._handle_request(source, request, resumed)
        except Exception as exc:  # a bug of ours must not stop the partition
            self._unless_revoked(exc)
            log.exception("unexpected error resuming request %s", request.request_id)
            return self._dead(
                source, reason="internal_error", error=exc, stage="retry", request=request
            )
        return outcome

    def _unless_revoked(self, exc: Exception) -> None:
        """Raise CancelledError instead of ``exc`` when the request's partition was revoked
        before its call: it stays unfinished, and the next owner calls it once."""
        if self._no_return.cancelled_before_call():
            log.warning("error while a revoked request unwound, left to the next owner: %r", exc)
            raise asyncio.CancelledError from exc

    async def _handle_request(
        self, source: SourceRecord, request: RequestEvent, resumed: _Resumed = _FRESH
    ) -> Outcome | Forward | Delay | Settled:
        refusal = self._refusal(request)
        if refusal is not None:
            return self._refused(source, request, refusal)
        try:  # before admission: a request that cannot be sent spends no token or quota
            prepared = self._gateway.build(request)
        except ProviderError as exc:
            return self._refused(source, request, exc)
        if request.deadline_passed(self._clock_ms() / 1000):
            if request.prefetch:  # nobody waits for its result
                return self._prefetch_skipped(request, "expired")
            return self._ended(request, ResultStatus.EXPIRED, "deadline_passed")
        keyed = self._cache.key_of(request) if self._cache is not None else None
        key = self._limit_key(request, keyed)
        if resumed is _FRESH:
            owner = self._owner_of(key) if self._owner_of else None
            if owner is not None and owner != source.partition:
                return Forward(key.encode(), source.value)
        if request.prefetch:
            return await self._prefetch(source, request, prepared, key, keyed)
        if keyed is None:
            return await self._go(source, request, prepared, key, resumed)
        assert self._cache is not None
        look = self._cache.lookup(request, source.partition, keyed)
        return await self._cached(source, request, prepared, key, resumed, look)

    async def _prefetch(
        self,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        keyed: Keyed | None,
    ) -> Settled:
        """Refresh a cached entry for the predictive cache, only on spare capacity: within
        the key's prefetch budget, on a token nobody waits for, while the breaker is closed
        and no call of the key is under way. Nobody waits for it: it publishes nothing."""
        cache, budget = self._cache, self._prefetch_budget
        if cache is None or keyed is None or budget is None:
            return self._prefetch_skipped(request, "not_cacheable")
        refused = self._no_spare_call(request)
        if refused is not None:
            return self._prefetch_skipped(request, refused)
        if not budget.allows(key):
            return self._prefetch_skipped(request, "budget")
        flight = cache.flights.lead(keyed.key)
        if flight is None:
            return self._prefetch_skipped(request, "in_flight")
        with flight:  # lands None unless the call lands: requests waiting on it go on alone
            if self._limiter is not None and not self._limiter.take_spare(source.partition, key):
                return self._prefetch_skipped(request, "quota")
            budget.spend(key)
            look = cache.peek(source.partition, keyed)
            calls = self._metrics_prefetch_calls(request)
            try:
                reply = await self._send(request, cache.conditional(look, prepared), key)
            except ProviderError as exc:
                flight.land(exc)
                calls("failed")
                return Settled("failed")
            cache.keep(request, source.partition, look, reply)
            flight.land(reply)
            calls("not_modified" if reply.status == 304 else "refreshed")
        return Settled("refreshed")

    def _no_spare_call(self, request: RequestEvent) -> str | None:
        """Why a call nobody waits for (a background refresh, a prefetch) may not go, before
        its token: ``breaker`` (open), ``quota`` (its units are reserved by requests only);
        None when it may."""
        if self._breakers is not None:
            breaker = self._breakers.key_for(request.provider, request.operation)
            if self._breakers.is_open(breaker) is not None:
                return "breaker"
        units = self._limiter.units if self._limiter is not None else None
        if units is not None and units.spends(request):
            return "quota"
        return None

    def _metrics_prefetch_calls(self, request: RequestEvent) -> Callable[[str], None]:
        assert self._cache is not None
        return functools.partial(self._cache.prefetch_called, request.provider)

    def _prefetch_skipped(self, request: RequestEvent, reason: str) -> Settled:
        if self._cache is not None:
            self._cache.prefetch_skipped(request.provider, reason)
        return Settled(reason)

    def _limit_key(self, request: RequestEvent, keyed: Keyed | None) -> str:
        """The request's limit key. A cacheable request of a sharded provider goes to the
        shard of its cache key, so one partition owns each entry and its coalesced calls."""
        if self._limiter is None:
            return request.provider
        if keyed is None:
            return self._limiter.limit_key(request)
        return self._limiter.limit_key_by(request, keyed.shard_basis)

    async def _go(
        self,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        resumed: _Resumed,
        cached: _Cached | None = None,
    ) -> Outcome | Forward | Delay:
        """Past the cache: the retry budget and the breaker, a token, the call."""
        held = self._held_back(source, request, key, resumed, cached)
        if held is not None:
            return held
        if self._limiter is not None:
            refused = await self._admit(self._limiter, source, request, key, resumed)
            if refused is not None:
                return refused
        units = self._limiter.units if self._limiter is not None else None
        if units is not None and units.spends(request):
            return await self._call_with_units(
                units, source, request, prepared, key, resumed, cached
            )
        return await self._call(source, request, prepared, key, resumed, cached)

    async def _cached(
        self,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        resumed: _Resumed,
        look: Lookup,
    ) -> Outcome | Forward | Delay:
        """A cacheable request: answered from its entry, from another request's call of the
        same key, or by its own call (which the others then wait for)."""
        assert self._cache is not None
        entry = look.entry
        if entry is not None and look.state is Freshness.FRESH:
            return await self._from_cache(source, request, key, look, ResultStatus.CACHED)
        if entry is not None and look.state is Freshness.STALE_REVALIDATE:
            self._refresh_later(source.partition, request, prepared, key, look)
            return await self._from_cache(source, request, key, look, ResultStatus.STALE)
        flight = self._cache.flights.lead(look.key)
        if flight is None:  # another request of this key is calling: wait for its answer
            return await self._join(source, request, prepared, key, resumed, look)
        try:
            return await self._go(source, request, prepared, key, resumed, _Cached(look, flight))
        finally:
            flight.land(None)  # no call made (or landed already): the waiters go on their own

    async def _from_cache(
        self,
        source: SourceRecord,
        request: RequestEvent,
        key: str,
        look: Lookup,
        status: ResultStatus,
    ) -> Outcome:
        assert self._cache is not None
        assert look.entry is not None
        assert look.tier is not None
        if self._hits_count:  # the tenant's quota counts answers, not only calls
            assert self._limiter is not None
            refused = await self._limiter.count_answered(request, source.partition, key)
            if refused is not None:
                return self._ended(request, ResultStatus.REJECTED, refused.reason)
        answer = self._cache.answer(
            request, look.entry, key=look.key, tier=look.tier, status=status
        )
        return Outcome(answer, reply_to=request.reply_to)

    async def _join(
        self,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        resumed: _Resumed,
        look: Lookup,
    ) -> Outcome | Forward | Delay:
        """Wait for the call another request of the same key is making, and take its answer
        as this request's own outcome."""
        assert self._cache is not None
        self._cache.coalesced(request.provider)
        landed = await self._cache.flights.join(look.key)
        if landed is None or not isinstance(landed, ProviderReply | ProviderError):
            # It made no call after all (refused, delayed): decide afresh.
            again = self._cache.lookup(request, source.partition, Keyed(look.key, look.spec))
            return await self._cached(source, request, prepared, key, resumed, again)
        if isinstance(landed, ProviderError):
            if look.usable_if_error:
                return self._stale_if_error(request, look, landed)
            attempt = _attempt(request, landed, self._clock_ms(), 0.0, resumed.attempts)
            return self._failed(source, request, landed, (*resumed.attempts, attempt), key)
        answer = self._cache.shared_answer(request, source.partition, look, landed)
        return Outcome(answer, reply_to=request.reply_to)

    def _stale_if_error(
        self, request: RequestEvent, look: Lookup, error: ProviderError | str
    ) -> Outcome:
        """The expired entry answers for a provider that cannot (within stale-if-error)."""
        assert self._cache is not None
        assert look.entry is not None
        assert look.tier is not None
        reason = error if isinstance(error, str) else error.reason
        answer = self._cache.answer(
            request,
            look.entry,
            key=look.key,
            tier=look.tier,
            status=ResultStatus.STALE,
            reason=reason,
        )
        return Outcome(answer, reply_to=request.reply_to)

    def _refresh_later(
        self,
        partition: int,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        look: Lookup,
    ) -> None:
        """Refresh an entry answered stale (stale-while-revalidate) with one call in the
        background, made only on a spare token and while its breaker lets calls through;
        else the entry stays as it is until a request finds it past the window and calls."""
        assert self._cache is not None
        if self._no_spare_call(request) is not None:
            return
        flight = self._cache.flights.lead(look.key)
        if flight is None:
            return  # being refreshed already
        if self._limiter is not None and not self._limiter.take_spare(partition, key):
            flight.land(None)
            return
        refresh = self._refresh(partition, request, prepared, key, look, flight)
        task = asyncio.create_task(refresh)
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh(
        self,
        partition: int,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        look: Lookup,
        flight: Flight,
    ) -> None:
        assert self._cache is not None
        with flight:  # lands None if anything below fails: its waiters then call themselves
            try:
                reply = await self._send(request, self._cache.conditional(look, prepared), key)
            except ProviderError as exc:
                self._cache.refresh_failed(request.provider)
                flight.land(exc)
                return
            self._cache.keep(request, partition, look, reply)
            flight.land(reply)

    def _held_back(
        self,
        source: SourceRecord,
        request: RequestEvent,
        key: str,
        resumed: _Resumed,
        cached: _Cached | None = None,
    ) -> Outcome | Forward | Delay | None:
        """What stops a request before it waits for a token: its retry is over the budget,
        or its key's breaker is open."""
        if resumed.attempts and self._retries is not None:  # a retry: within the budget?
            held = self._over_retry_budget(source, request, key, resumed)
            if held is not None:
                return held
        if self._breakers is not None:  # open: no token, no quota, no call
            breaker = self._breakers.key_for(request.provider, request.operation)
            open_until = self._breakers.is_open(breaker)
            if open_until is not None:
                if cached is not None and cached.look.usable_if_error:
                    return self._stale_if_error(request, cached.look, "circuit_open")
                return self._circuit_open(source, request, int(open_until * 1000), resumed)
        return None

    async def _admit(
        self,
        limiter: Limiter,
        source: SourceRecord,
        request: RequestEvent,
        key: str,
        resumed: _Resumed,
    ) -> Outcome | Delay | None:
        """Wait for the quota and a token: None to go, else the request's end or delay."""
        decision = await limiter.admit(request, source.partition, key)
        if decision.admission is Admission.EXPIRED:
            return self._ended(request, ResultStatus.EXPIRED, decision.reason)
        if decision.admission is Admission.REJECTED:
            return self._ended(request, ResultStatus.REJECTED, decision.reason)
        if decision.admission is Admission.DELAYED:  # its tenant's next quota window
            wait_ms = int((decision.retry_after_s or 0.0) * 1000)
            spread = random.randrange(self._quota_jitter_ms + 1)
            return self._delayed(source, request, "quota", wait_ms + spread, resumed.attempts)
        return None

    def _over_retry_budget(
        self, source: SourceRecord, request: RequestEvent, key: str, resumed: _Resumed
    ) -> Outcome | Delay | Forward | None:
        """None when the retry may go now; else its deferral or, past its time, its end."""
        assert self._retries is not None
        verdict = self._retries.spend(
            request, resumed.attempts, key, was_deferred=resumed.kind == _BUDGET
        )
        if verdict is None:
            return None
        if isinstance(verdict, GiveUp):
            last = resumed.attempts[-1]
            why = f"{verdict.detail}; last failure: {last.error_message}"
            answered = self._fallback(request, verdict.reason, last.error_type or "", why)
            if answered is not None:
                return answered
            return self._dead(
                source,
                reason=verdict.reason,
                error=last.error_type or "RetriableError",
                message=f"{verdict.detail}; last failure: {last.error_message}",
                stage="retry",
                request=request,
                attempts=resumed.attempts,
                retriable=True,
            )
        wait_ms = int(verdict.delay_s * 1000)
        return self._delayed(source, request, _BUDGET, wait_ms, resumed.attempts)

    def _circuit_open(
        self, source: SourceRecord, request: RequestEvent, retry_at_ms: int, resumed: _Resumed
    ) -> Outcome | Delay | Forward:
        """The key's breaker refuses calls until ``retry_at_ms``: wait durably for it if the
        request's deadline (or, without one, ``max_wait_s`` from its creation) allows, spread
        over a second so the backlog does not come back at once; else end ``circuit_open``."""
        now = self._clock_ms()
        waited = f"the breaker of {request.provider}.{request.operation} refuses calls for "
        waited += f"{max(0, retry_at_ms - now) / 1000:.1f} s more"
        answered = self._fallback(request, "circuit_open", "CircuitOpen", waited)
        if answered is not None:
            return answered
        due = retry_at_ms + random.randrange(1000)
        deadline = request.deadline_at_ms
        if deadline is None:
            deadline = request.created_at_ms + self._max_wait_ms
        if due < deadline:
            return self._delayed(source, request, "breaker", due - now, resumed.attempts)
        return self._dead(
            source,
            reason="circuit_open",
            error="CircuitOpen",
            message=f"{waited}, past the request's deadline",
            stage="breaker",
            request=request,
            attempts=resumed.attempts,
            retriable=True,
        )

    def _fallback(
        self, request: RequestEvent, reason: str, error_type: str, message: str
    ) -> Outcome | Forward | None:
        if self._fallbacks is None:
            return None
        return self._fallbacks.answer(request, reason, error_type, message)

    def _refusal(self, request: RequestEvent) -> ProviderError | None:
        """Why a request may not be made at all, checked before it spends anything."""
        if request.provider not in self._gateway.provider_names:
            return UnknownProvider(f"provider {request.provider!r} is not configured")
        if request.reply_to is not None and request.reply_to not in self._reply_topics:
            return NotAllowed(f"reply_to topic {request.reply_to!r} is not an allowed reply topic")
        return None

    def _refused(self, source: SourceRecord, request: RequestEvent, exc: ProviderError) -> Outcome:
        return self._dead(source, reason=exc.reason, error=exc, stage="admission", request=request)

    def _ended(self, request: RequestEvent, status: ResultStatus, reason: str | None) -> Outcome:
        ended = result(request, status, now_ms=self._clock_ms(), reason=reason)
        return Outcome(ended, reply_to=request.reply_to)

    async def _call_with_units(
        self,
        units: UnitLimits,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        resumed: _Resumed,
        cached: _Cached | None = None,
    ) -> Outcome | Delay | Forward:
        """Reserve the call's units estimate (its provider limits units), then call; the
        reservation is settled by the answer, or given back when no call reached the
        provider (refused by the breaker, cancelled)."""
        deadline_at = request.deadline_s
        max_wait_at = self._clock_ms() / 1000 + self._max_wait_ms / 1000
        if not await units.acquire(
            request, source.partition, key, deadline_at=deadline_at or max_wait_at
        ):
            reason = "deadline_passed" if deadline_at is not None else "max_wait_exceeded"
            return self._ended(request, ResultStatus.EXPIRED, reason)
        try:
            return await self._call(source, request, prepared, key, resumed, cached)
        finally:
            units.settle(request, None, reached=False)  # unless settled by an answer below

    async def _call(
        self,
        source: SourceRecord,
        request: RequestEvent,
        prepared: PreparedRequest,
        key: str,
        resumed: _Resumed,
        cached: _Cached | None = None,
    ) -> Outcome | Delay | Forward:
        probe = False
        if self._breakers is not None:
            permitted = self._permit(self._breakers, source, request, resumed)
            if not isinstance(permitted, bool):
                if cached is not None and cached.look.usable_if_error:
                    return self._stale_if_error(request, cached.look, "circuit_open")
                return permitted
            probe = permitted
        if cached is not None and self._cache is not None:
            prepared = self._cache.conditional(cached.look, prepared)
        started_ms = self._clock_ms()
        started = time.perf_counter()
        if self._retries is not None and not resumed.attempts:
            self._retries.first_call(key)  # the retry budget grows with first calls
        if self._prefetch_budget is not None:
            self._prefetch_budget.called(key)  # and so does the prefetch budget, with every call
        try:
            reply = await self._send(request, prepared, key)
        except ProviderError as exc:
            duration_s = time.perf_counter() - started
            return self._unanswered(
                source, request, exc, key, resumed, cached, probe, started_ms, duration_s
            )
        except BaseException:  # cancelled while waiting for a call slot: free the probe's place
            if probe and self._breakers is not None:
                breaker = self._breakers.key_for(request.provider, request.operation)
                self._breakers.record(breaker, CallResult.IGNORED, 0.0, probe=True)
            raise
        return self._succeeded(source, request, reply, probe, key, cached)

    def _unanswered(
        self,
        source: SourceRecord,
        request: RequestEvent,
        exc: ProviderError,
        key: str,
        resumed: _Resumed,
        cached: _Cached | None,
        probe: bool,
        started_ms: int,
        duration_s: float,
    ) -> Outcome | Delay | Forward:
        """A call that failed: tell the units, the breaker and the limiter, then decide."""
        if self._limiter is not None and self._limiter.units is not None:
            self._limiter.units.settle(request, None, reached=exc.may_have_reached)
        if self._breakers is not None:
            judged = CallResult.FAILURE if isinstance(exc, _BREAKER_FAILURES) else None
            breaker = self._breakers.key_for(request.provider, request.operation)
            self._breakers.record(breaker, judged or CallResult.IGNORED, duration_s, probe=probe)
        if isinstance(exc, RateLimited) and self._limiter is not None:
            self._limiter.observe_rate_limited(
                request, source.partition, exc.retry_after_s, sent_at=started_ms / 1000
            )
        attempt = _attempt(request, exc, started_ms, duration_s, resumed.attempts)
        if cached is not None:
            cached.flight.land(exc)  # the requests waiting for this call decide alike
            if exc.retriable and cached.look.usable_if_error:
                return self._stale_if_error(request, cached.look, exc)
        return self._failed(source, request, exc, (*resumed.attempts, attempt), key)

    def _succeeded(
        self,
        source: SourceRecord,
        request: RequestEvent,
        reply: ProviderReply,
        probe: bool,
        key: str,
        cached: _Cached | None = None,
    ) -> Outcome:
        if self._breakers is not None:
            breaker = self._breakers.key_for(request.provider, request.operation)
            self._breakers.record(breaker, CallResult.SUCCESS, reply.latency_s, probe=probe)
        if self._limiter is not None and self._limiter.units is not None:
            self._limiter.units.settle(request, reply, reached=True)
        if reply.rate_limits and self._limiter is not None:  # most providers send none
            in_flight = self._concurrency[key].in_flight if self._concurrency else 0
            self._limiter.observe(
                request, source.partition, reply.rate_limits, in_flight=in_flight, key=key
            )
        if cached is not None and self._cache is not None:
            look = cached.look
            refreshed = self._cache.keep(request, source.partition, look, reply, raw=source.value)
            cached.flight.land(reply)
            if refreshed is not None:  # a 304: the entry, confirmed, is the answer
                answer = self._cache.answer(request, refreshed, key=look.key, tier=REVALIDATED)
                return Outcome(answer, reply_to=request.reply_to)
        if request.fallback_of is not None and self._fallbacks is not None:  # an alternate's
            return self._fallbacks.answered_for(request, reply)
        done = result(
            request,
            ResultStatus.OK,
            now_ms=self._clock_ms(),
            attempts=request.attempt,
            provider_used=reply.provider or request.provider,
            http_status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
            latency_ms=reply.latency_s * 1000,
            cost=reply.cost,
        )
        return Outcome(done, reply_to=request.reply_to)

    async def _send(
        self, request: RequestEvent, prepared: PreparedRequest, key: str
    ) -> ProviderReply:
        """Take a place under the key's adaptive concurrency limit, then the provider's
        bulkhead, then a call slot, and call: the point of no return."""
        if self._concurrency is None:
            return await self._send_now(request, prepared)
        limit = self._concurrency[key]
        if not limit.try_acquire():  # the common case takes its place without a coroutine
            await limit.acquire()
        started = time.perf_counter()
        latency_s: float | None = None
        try:
            reply = await self._send_now(request, prepared)
            latency_s = reply.latency_s
            return reply
        except ProviderTimeout:
            latency_s = time.perf_counter() - started  # slowness is what it learns from
            raise
        finally:
            limit.release(latency_s)  # other failures say nothing about the queue

    async def _send_now(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        bulkhead = None
        if self._bulkheads is not None:
            bulkhead = self._bulkheads.slot(request.provider, request.operation)
        if bulkhead is None:
            async with self._call_slots:
                self._no_return.mark_passed()  # from here on, a revocation waits for this call
                return await self._gateway.call(request, prepared)
        async with bulkhead, self._call_slots:
            self._no_return.mark_passed()
            return await self._gateway.call(request, prepared)

    def _permit(
        self,
        breakers: BreakerBoard,
        source: SourceRecord,
        request: RequestEvent,
        resumed: _Resumed,
    ) -> bool | Outcome | Delay | Forward:
        """Whether the call goes as a probe (True) or a plain call (False), or, when the
        breaker opened while the request waited or is half-open with its probes out, the
        request's wait or end."""
        granted = breakers.permit(breakers.key_for(request.provider, request.operation))
        if granted.allowed:
            return granted.kind is PermitKind.PROBE
        retry_at_ms = self._clock_ms() + _HALF_OPEN_POLL_MS
        if granted.retry_at is not None:
            retry_at_ms = int(granted.retry_at * 1000)
        return self._circuit_open(source, request, retry_at_ms, resumed)

    def _failed(
        self,
        source: SourceRecord,
        request: RequestEvent,
        exc: ProviderError,
        attempts: tuple[AttemptRecord, ...],
        key: str,
    ) -> Outcome | Delay | Forward:
        if not exc.retriable:
            return self._dead(
                source,
                reason=exc.reason,
                error=exc,
                stage="caller",
                request=request,
                attempts=attempts,
            )
        if self._retries is not None:
            plan = self._retries.plan(request, exc, attempts, key)
            if isinstance(plan, GiveUp):
                why = f"{plan.detail}; last failure: {exc.reason}: {exc}"
                answered = self._fallback(request, plan.reason, type(exc).__name__, why)
                if answered is not None:
                    return answered
                return self._dead(
                    source,
                    reason=plan.reason,
                    error=exc,
                    message=f"{plan.detail}; last failure: {exc.reason}: {exc}",
                    stage="retry",
                    request=request,
                    attempts=attempts,
                    retriable=True,
                )
            again = request.model_copy(update={"attempt": request.attempt + 1})
            return self._delayed(source, again, "retry", int(plan.delay_s * 1000), attempts)
        attempt = attempts[-1]
        failed = result(
            request,
            ResultStatus.FAILED,
            now_ms=self._clock_ms(),
            attempts=request.attempt,
            http_status=exc.http_status,
            reason=exc.reason,
            error_type=type(exc).__name__,
            error_message=str(exc)[:500],
            latency_ms=attempt.duration_ms,
        )
        return Outcome(failed, reply_to=request.reply_to)

    def _delayed(
        self,
        source: SourceRecord,
        request: RequestEvent,
        kind: str,
        wait_ms: int,
        attempts: tuple[AttemptRecord, ...],
    ) -> Delay:
        now = self._clock_ms()
        delayed = DelayedRequest(
            request=request,
            kind=kind,
            attempts=list(attempts),
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            delayed_at_ms=now,
        )
        payload = self._delay_codec().encode(delayed)
        return Delay(request.request_id.encode(), now + max(0, wait_ms), payload, kind)

    def _delay_codec(self) -> DelayCodec:
        if self._delays is None:
            raise RuntimeError("a delay needs the caller's delay codec (composition)")
        return self._delays

    def _dead(
        self,
        source: SourceRecord,
        *,
        reason: str,
        error: BaseException | str,
        stage: str,
        request: RequestEvent | None = None,
        attempts: tuple[AttemptRecord, ...] = (),
        retriable: bool = False,
        message: str | None = None,
    ) -> Outcome:
        letter = dead_letter(
            source,
            reason=reason,
            error=error,
            stage=stage,
            now_ms=self._clock_ms(),
            request=request,
            attempts=attempts,
            retriable=retriable,
            message=message,
        )
        return Outcome(letter)


def _since_last(attempts: tuple[AttemptRecord, ...], started_ms: int) -> float:
    """The wait before an attempt starting at ``started_ms``: since the previous one ended."""
    if not attempts:
        return 0.0
    last = attempts[-1]
    return max(0.0, started_ms - last.started_at_ms - last.duration_ms)


def _attempt(
    request: RequestEvent,
    exc: ProviderError,
    started_ms: int,
    duration_s: float,
    before: tuple[AttemptRecord, ...],
) -> AttemptRecord:
    return AttemptRecord(
        attempt=request.attempt,
        started_at_ms=started_ms,
        duration_ms=duration_s * 1000,
        http_status=exc.http_status,
        error_type=type(exc).__name__,
        error_message=str(exc)[:500],
        delay_ms=_since_last(before, started_ms),
    )
