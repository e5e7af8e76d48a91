"""Turns one request record into exactly one outcome, whatever happens on the way.

Every failure becomes data: undecodable bytes and permanent provider errors become dead letters,
retriable ones a ``failed`` result (the retry stage takes those over in a later version), a
passed deadline an ``expired`` result. Only a bug in our own code is logged as such, and even
that ends as a dead letter so the partition keeps moving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Protocol

from agents.outcomes import dead_letter, result
from agents.provider_caller.tenancy import TenantGate
from agents.rate_limiter.limiter import Admission, Limiter
from providers.auth.request import PreparedRequest
from providers.errors import (
    EventTooLarge,
    NotAllowed,
    ProviderError,
    RateLimited,
    UnknownProvider,
)
from providers.response import ProviderReply
from schemas.errors import DecodeError
from schemas.models import AttemptRecord, RequestEvent, ResultStatus, now_ms
from streams.stage.no_return import PointOfNoReturn
from streams.stage.records import Forward, Outcome, SourceRecord

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

    async def handle(self, source: SourceRecord) -> Outcome | Forward:
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
            log.exception("unexpected error handling request %s", request.request_id)
            return self._dead(
                source, reason="internal_error", error=exc, stage="caller", request=request
            )

    async def _handle_request(
        self, source: SourceRecord, request: RequestEvent
    ) -> Outcome | Forward:
        refusal = self._refusal(request)
        if refusal is not None:
            return self._refused(source, request, refusal)
        try:  # before admission: a request that cannot be sent spends no token or quota
            prepared = self._gateway.build(request)
        except ProviderError as exc:
            return self._refused(source, request, exc)
        if request.deadline_passed(self._clock_ms() / 1000):
            return self._ended(request, ResultStatus.EXPIRED, "deadline_passed")
        if self._limiter is None:
            return await self._call(source, request, prepared)
        key = self._limiter.limit_key(request)
        owner = self._owner_of(key) if self._owner_of else None
        if owner is not None and owner != source.partition:
            return Forward(key.encode(), source.value)
        decision = await self._limiter.admit(request, source.partition, key)
        if decision.admission is Admission.EXPIRED:
            return self._ended(request, ResultStatus.EXPIRED, decision.reason)
        if decision.admission is Admission.REJECTED:
            return self._ended(request, ResultStatus.REJECTED, decision.reason)
        return await self._call(source, request, prepared)

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

    async def _call(
        self, source: SourceRecord, request: RequestEvent, prepared: PreparedRequest
    ) -> Outcome:
        started_ms = self._clock_ms()
        started = time.perf_counter()
        try:
            async with self._call_slots:
                self._no_return.mark_passed()  # from here on, a revocation waits for this call
                reply = await self._gateway.call(request, prepared)
        except ProviderError as exc:
            if isinstance(exc, RateLimited) and self._limiter is not None:
                self._limiter.observe_rate_limited(request, source.partition, exc.retry_after_s)
            attempt = AttemptRecord(
                attempt=request.attempt,
                started_at_ms=started_ms,
                duration_ms=(time.perf_counter() - started) * 1000,
                http_status=exc.http_status,
                error_type=type(exc).__name__,
                error_message=str(exc)[:500],
            )
            return self._failed(source, request, exc, attempt)
        if reply.rate_limits and self._limiter is not None:  # most providers send none
            self._limiter.observe(request, source.partition, reply.rate_limit)
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

    def _failed(
        self,
        source: SourceRecord,
        request: RequestEvent,
        exc: ProviderError,
        attempt: AttemptRecord,
    ) -> Outcome:
        if not exc.retriable:
            return self._dead(
                source,
                reason=exc.reason,
                error=exc,
                stage="caller",
                request=request,
                attempts=(attempt,),
            )
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

    def _dead(
        self,
        source: SourceRecord,
        *,
        reason: str,
        error: BaseException,
        stage: str,
        request: RequestEvent | None = None,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> Outcome:
        letter = dead_letter(
            source,
            reason=reason,
            error=error,
            stage=stage,
            now_ms=self._clock_ms(),
            request=request,
            attempts=attempts,
        )
        return Outcome(letter)
