"""``Provider``: a declaration turned into pure request building and response classification."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

from providers.auth.factory import build_signer
from providers.auth.flow import AuthFlow
from providers.auth.oauth2_flow import FetchToken
from providers.auth.request import PreparedRequest
from providers.auth.signer import Signer
from providers.declaration import ProviderSpec
from providers.errors import (
    AuthFailed,
    BadRequest,
    BodyTooLarge,
    InvalidResponse,
    NotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetriableError,
    UnknownOperation,
)
from providers.operation import DEFAULT_INPUT_LIMITS, CompiledOperation, InputLimits
from providers.response import (
    ProviderReply,
    RateLimitInfo,
    RateLimitReader,
    WaitCeiling,
    headers_to_keep,
    json_at,
    kept_headers,
    load_json,
    lower_headers,
    retry_after_s,
)
from schemas.models import RequestEvent

_BY_REASON: dict[str, type[ProviderError]] = {
    cls.reason: cls
    for cls in (AuthFailed, BadRequest, InvalidResponse, NotFound, ProviderTimeout,
                ProviderUnavailable, RateLimited)
}  # fmt: skip
_MESSAGE_CHARS = 200
# How much of an error body is read for its message: enough that a secret inside the first
# _MESSAGE_CHARS is redacted whole, bounded so a huge body costs little.
_SCAN_CHARS = 4096


class SignedRequest(NamedTuple):
    """What a provider hands the client for one call: the signed request and how to send it
    (a NamedTuple: one per call)."""

    request: PreparedRequest
    timeout_s: float
    max_response_bytes: int
    ssl: ssl.SSLContext | None
    # Signed again if the auth flow asks to send once more.
    unsigned: PreparedRequest


class Provider:
    """One provider: builds requests for its declared operations and classifies answers.

    Code-defined providers subclass this, set ``default_spec`` and override ``build_request``
    or ``classify`` where data cannot say it; register the class by entry point.
    """

    default_spec: ClassVar[ProviderSpec | None] = None

    def __init__(
        self,
        spec: ProviderSpec | None = None,
        *,
        signer: Signer | None = None,
        fetch_token: FetchToken | None = None,
    ) -> None:
        """Args:
        spec: the declaration; ``default_spec`` when omitted.
        signer: credentials for ``spec.auth``; built (secrets resolved) when omitted.
        fetch_token: sends OAuth2 token requests when the signer is built here.

        Raises:
            AuthConfigError: the signer is built here and a secret does not resolve.
        """
        spec = spec or self.default_spec
        if spec is None:
            raise TypeError(f"{type(self).__name__} needs a spec")
        self.spec = spec
        self.name = spec.name
        self.signer = signer or build_signer(spec.auth, fetch_token=fetch_token)
        self.auth = AuthFlow(self.signer)
        context = getattr(self.signer, "ssl_context", None)
        # The TLS context the client must use (mTLS), or None for the default.
        self.ssl = context if isinstance(context, ssl.SSLContext) else None
        self._operations = {n: CompiledOperation(n, op, spec) for n, op in spec.operations.items()}
        self._units = {
            n: tuple((tuple(p.split(".")), price) for p, price in op.cost.per_unit.items())
            for n, op in spec.operations.items()
        }
        self._ceiling = WaitCeiling(self.name, spec.limits.max_retry_after_s)
        self._rate_limits = RateLimitReader(
            spec.rate_limit_headers, style=spec.rate_limit_style, ceiling=self._ceiling
        )
        self._keep = headers_to_keep(self._rate_limits.names)
        shape = spec.error_shape
        self._ok_path = tuple(shape.ok_field.split(".")) if shape.ok_field else None
        self._code_path = tuple(shape.code_field.split(".")) if shape.code_field else None
        self._message_path = tuple(shape.message_field.split(".")) if shape.message_field else None
        # Takes the signer's secrets out of a provider's error text (signers without one: none).
        self._redact: Callable[[str], str] | None = getattr(self.signer, "redact", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, operations={len(self._operations)})"

    def operation(self, name: str) -> CompiledOperation:
        """The compiled operation, or UnknownOperation."""
        try:
            return self._operations[name]
        except KeyError:
            raise UnknownOperation(f"{self.name} has no operation {name!r}") from None

    def build_request(
        self, event: RequestEvent, limits: InputLimits = DEFAULT_INPUT_LIMITS
    ) -> PreparedRequest:
        """The unsigned request for ``event``; pure, raises a PermanentError on bad input.

        Args:
            limits: caps on parameter and header values and on the body.
        """
        return self.operation(event.operation).build(event, limits)

    async def prepare(
        self, event: RequestEvent, *, now: float, unsigned: PreparedRequest | None = None
    ) -> SignedRequest:
        """The one signed request for ``event``, with its timeout, response cap and TLS context.

        Args:
            now: wall-clock epoch seconds, for signing.
            unsigned: ``build_request(event)`` when already built (the caller builds before
                admission, to refuse a bad request before it spends anything); built here
                when None.

        Raises:
            PermanentError: bad input (from ``build_request``); ProviderError: no credentials.
        """
        if unsigned is None:
            unsigned = self.build_request(event)
        signed = await self.auth.first(unsigned, now=now)
        timeout_s = self.operation(event.operation).timeout_s
        return SignedRequest(signed, timeout_s, self.spec.max_response_bytes, self.ssl, unsigned)

    def classify(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        operation: str,
        now: float | None = None,
        latency_s: float = 0.0,
        sends: int = 1,
    ) -> ProviderReply:
        """The successful reply, or the ProviderError subclass the answer means.

        Args:
            status: HTTP status; headers: response headers (any case); body: the raw body.
            operation: the operation called (response type and cost).
            now: wall-clock epoch seconds, for epoch reset headers; ``time.time()`` if None.
            latency_s, sends: how the call went, carried on the reply.
        """
        op = self.operation(operation)
        if len(body) > self.spec.max_response_bytes:
            raise BodyTooLarge(f"{self.name}: response of {len(body)} bytes", http_status=status)
        now = time.time() if now is None else now
        lowered = lower_headers(headers)
        limits = self._rate_limits.read(lowered, now=now)
        # 304 answers a conditional request (If-None-Match): the cached copy is still good.
        if not (200 <= status < 300 or status == 304):
            raise self.error_for(status, lowered, body, limits, now=now)
        data = load_json(body) if self._ok_path or self._units[operation] else None
        if self._ok_path and json_at(data, self._ok_path) is False:
            raise self.error_for(status, lowered, body, limits, now=now, data=data)
        retry_after = None
        if "retry-after" in lowered:
            retry_after = self._ceiling(retry_after_s(lowered, now=now), "retry-after")
        return ProviderReply(
            status,
            body,
            kept_headers(lowered, self._keep),
            self._cost(operation, data),
            limits,
            op.spec.response_type,
            latency_s,
            self.name,
            sends,
            retry_after,
        )

    def error_for(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        limits: Mapping[str, RateLimitInfo],
        *,
        now: float,
        data: Any = None,
    ) -> ProviderError:
        """The error an unsuccessful answer means (``headers`` lower-cased)."""
        if data is None and (self._code_path or self._message_path):
            data = load_json(body)
        code = json_at(data, self._code_path) if self._code_path else None
        message = f"{self.name}: HTTP {status}: {self._message(data, body, code)}"
        kind = self._retry_override(self._kind(status, headers, code, limits), headers)
        if kind is RateLimited:
            wait = self._ceiling(_retry_after(headers, limits, now=now), "retry-after")
            wait = self.spec.limits.retry_after_s if wait is None else wait
            return RateLimited(message, http_status=status, retry_after_s=wait)
        error = kind(message, http_status=status)
        if isinstance(error, RetriableError) and "retry-after" in headers:
            # RFC 9110: a 503 may say how long the outage lasts; a retry waits at least that.
            error.retry_after_s = self._ceiling(retry_after_s(headers, now=now), "retry-after")
        return error

    def _kind(
        self,
        status: int,
        headers: Mapping[str, str],
        code: Any,
        limits: Mapping[str, RateLimitInfo],
    ) -> type[ProviderError]:
        mapped = self.spec.error_shape.codes.get(code) if isinstance(code, str) else None
        if mapped is not None:
            return _BY_REASON[mapped]
        exhausted = any(info.exhausted for info in limits.values())
        if status == 429 or (status == 403 and (exhausted or "retry-after" in headers)):
            return RateLimited  # GitHub: 403 + X-RateLimit-Remaining: 0 is a rate limit
        if status in (401, 403):
            return AuthFailed
        if status == 404:
            return NotFound
        if 200 <= status < 300:
            return BadRequest  # an app-level error in a 2xx (Slack ok:false) with no mapping
        if status in self.spec.retryable_statuses:
            return ProviderUnavailable
        if 400 <= status < 500:
            return BadRequest
        return InvalidResponse  # 3xx (redirects are never followed), 1xx, undeclared 5xx

    def _retry_override(
        self, kind: type[ProviderError], headers: Mapping[str, str]
    ) -> type[ProviderError]:
        """The provider's own word on retrying beats our reading of the status."""
        name = self.spec.error_shape.retry_header
        verdict = headers.get(name.lower()) if name else None
        if verdict == "true" and not kind.retriable:
            return ProviderUnavailable
        if verdict == "false" and kind.retriable:
            return BadRequest
        return kind

    def _message(self, data: Any, body: bytes, code: Any) -> str:
        """The provider's error text, one line, bounded, without the signer's secrets."""
        text = json_at(data, self._message_path) if self._message_path else None
        cut = False
        if not isinstance(text, str):
            text = body[:_SCAN_CHARS].decode("utf-8", errors="replace")
            cut = len(body) > _SCAN_CHARS
        if code is not None:
            text = f"{code}: {text}"
        if len(text) > _SCAN_CHARS:
            text, cut = text[:_SCAN_CHARS], True
        words = text.split()
        if cut:
            words = words[:-1]  # the last word may be a secret cut in half: never redacted
        text = " ".join(words)
        if self._redact is not None:
            text = self._redact(text)  # before the cut below, so no secret is cut in half
        return text[:_MESSAGE_CHARS]

    def _cost(self, operation: str, data: Any) -> float:
        cost = self.spec.operations[operation].cost.per_call
        for path, price in self._units[operation]:
            units = json_at(data, path)
            if isinstance(units, int | float) and not isinstance(units, bool):
                cost += _amount(units, price)
        return cost


def _amount(units: float, price: float) -> float:
    """What ``units`` cost; 0.0 unless they are finite and zero or more (a provider's NaN,
    1e400 or -5 must not poison cost totals)."""
    try:
        amount = float(units) * price  # an int of 400 digits overflows a float
    except OverflowError:
        return 0.0
    return amount if units >= 0 and math.isfinite(amount) else 0.0


def _retry_after(
    headers: Mapping[str, str], limits: Mapping[str, RateLimitInfo], *, now: float
) -> float | None:
    """Retry-After first; else the reset of an exhausted dimension; else the primary reset."""
    wait = retry_after_s(headers, now=now)
    if wait is not None:
        return wait
    exhausted = [i.reset_after_s for i in limits.values() if i.exhausted and i.reset_after_s]
    if exhausted:
        return max(exhausted)
    primary = next(iter(limits.values()), None)
    return primary.reset_after_s if primary else None
