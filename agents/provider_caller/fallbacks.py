"""Fallbacks: what answers a request when its provider cannot (issue 21).

Tried in the order the operation declares them, when the provider's breaker is open or its
retries gave up: a static answer (a ``fallback`` result at once), or the same request sent to
an alternate provider, forwarded to the partition that owns the alternate's limit key, where it
is limited, called and retried like any request and answered in the original provider's name.
A fallback never calls the failing provider; a request that is itself a fallback takes only
static answers (no chains between alternates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agents.outcomes import result
from providers.declaration import AlternateCall, FallbackSpec, StaticAnswer
from providers.errors import ProviderError
from providers.response import ProviderReply
from schemas.models import RequestEvent, ResultStatus, now_ms
from streams.stage.records import Forward, Outcome

# The declared fallbacks of (provider, operation), in order.
Declared = Callable[[str, str], Sequence[FallbackSpec]]


class Fallbacks:
    """The fallbacks of a worker's providers."""

    def __init__(
        self,
        declared: Declared,
        *,
        check: Callable[[RequestEvent], object],
        limit_key: Callable[[RequestEvent], str],
        encode: Callable[[RequestEvent], bytes],
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        """Args:
        check: refuses (``ProviderError``) a request its provider would not take.
        limit_key: the key (and so the partition) of an alternate's request.
        encode: a request's bytes, to forward it.
        """
        self._declared = declared
        self._check = check
        self._limit_key = limit_key
        self._encode = encode
        self._clock_ms = clock_ms

    def answer(
        self, request: RequestEvent, reason: str, error_type: str, message: str
    ) -> Outcome | Forward | None:
        """The first usable fallback of the request's operation, or None.

        Args:
            reason, error_type, message: why the provider could not answer, kept in the result.
        """
        for fallback in self._declared(request.provider, request.operation):
            if fallback.static is not None:
                return self._static(request, fallback.static, reason, error_type, message)
            if fallback.call is not None and request.fallback_of is None:
                forward = self._alternate(request, fallback.call, reason)
                if forward is not None:
                    return forward
        return None

    def answered_for(self, request: RequestEvent, reply: ProviderReply) -> Outcome:
        """The result of an alternate's call, in the name of the provider it stands in for."""
        provider, _, operation = (request.fallback_of or "").partition("/")
        done = result(
            request,
            ResultStatus.FALLBACK,
            now_ms=self._clock_ms(),
            attempts=request.attempt,
            provider=provider,
            operation=operation,
            provider_used=request.provider,
            http_status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
            latency_ms=reply.latency_s * 1000,
            cost=reply.cost,
            reason=request.fallback_reason,
        )
        return Outcome(done, reply_to=request.reply_to)

    def _static(
        self,
        request: RequestEvent,
        answer: StaticAnswer,
        reason: str,
        error_type: str,
        message: str,
    ) -> Outcome:
        done = result(
            request,
            ResultStatus.FALLBACK,
            now_ms=self._clock_ms(),
            attempts=request.attempt,
            provider_used="static",
            http_status=answer.status,
            body=answer.body.encode(),
            content_type=answer.content_type,
            reason=reason,
            error_type=error_type,
            error_message=message[:500],
        )
        return Outcome(done, reply_to=request.reply_to)

    def _alternate(self, request: RequestEvent, call: AlternateCall, reason: str) -> Forward | None:
        """The request as the alternate provider's, keyed for its owner; None when the
        request lacks a parameter the alternate needs or the alternate would refuse it."""
        try:
            params = {name: value.format_map(request.params) for name, value in call.params.items()}
            alternate = request.model_copy(
                update={
                    "provider": call.provider,
                    "operation": call.operation,
                    "params": params,
                    "headers": {},  # allowed by the primary's operation, not the alternate's
                    "fallback_of": f"{request.provider}/{request.operation}",
                    "fallback_reason": reason,
                }
            )
            self._check(alternate)
        except (KeyError, ValueError, IndexError, ProviderError):
            return None
        return Forward(self._limit_key(alternate).encode(), self._encode(alternate))
