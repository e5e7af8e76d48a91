"""Errors of provider calls, mapped once at the HTTP boundary (``providers/http.py``).

```
ProviderError
 ├─ RetriableError (retriable=True)
 │   ├─ ProviderTimeout        no answer within the operation's timeout
 │   ├─ ProviderUnavailable    connection refused/reset, 5xx (refused: ``may_have_reached`` False)
 │   ├─ RateLimited            429 (``retry_after_s`` from Retry-After / reset headers)
 │   └─ CircuitOpen            the breaker refused the call (later issue)
 └─ PermanentError (retriable=False)
     ├─ AuthFailed             401/403, or credentials that cannot be obtained
     ├─ BadRequest             4xx other than 401/403/404/429
     ├─ NotFound               404
     ├─ NotAllowed             the request asks for an undeclared host, path or header
     ├─ UnknownProvider        no provider of that name is configured
     ├─ UnknownOperation       the provider declares no such operation
     ├─ BodyTooLarge           request or response body over the configured limit
     ├─ EventTooLarge          a request record over ``caller.max_request_event_bytes``,
     │                         refused before decoding
     └─ InvalidResponse        the provider answered something we cannot parse
```
Each class has a ``reason``: the low-cardinality string used in results, dead letters and
metric labels.
"""

from __future__ import annotations


class ProviderError(Exception):
    retriable: bool = False
    reason: str = "provider_error"
    # Whether the provider may have acted on the request: retrying a call that is not
    # idempotent is safe only when it surely did not (a refused connection, a 429).
    may_have_reached: bool = True

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class RetriableError(ProviderError):
    retriable = True
    reason = "retriable_error"
    # The provider's own wait (Retry-After on a 429 or a 503, a rate-limit reset), clamped
    # by its declared limits.max_retry_after_s; None when it named none.
    retry_after_s: float | None = None


class ProviderTimeout(RetriableError):
    reason = "timeout"


class ProviderUnavailable(RetriableError):
    reason = "unavailable"

    @classmethod
    def unreached(cls, message: str) -> ProviderUnavailable:
        """No connection was made: the provider never saw the request."""
        error = cls(message)
        error.may_have_reached = False
        return error


class RateLimited(RetriableError):
    reason = "rate_limited"
    may_have_reached = False  # refused before it was processed

    def __init__(
        self, message: str, *, http_status: int | None = 429, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after_s = retry_after_s


class CircuitOpen(RetriableError):
    reason = "circuit_open"
    may_have_reached = False  # never sent


class PermanentError(ProviderError):
    retriable = False
    reason = "permanent_error"


class AuthFailed(PermanentError):
    reason = "auth_failed"


class BadRequest(PermanentError):
    reason = "bad_request"


class NotFound(PermanentError):
    reason = "not_found"


class NotAllowed(PermanentError):
    reason = "not_allowed"


class UnknownProvider(PermanentError):
    reason = "unknown_provider"


class UnknownOperation(PermanentError):
    reason = "unknown_operation"


class BodyTooLarge(PermanentError):
    reason = "body_too_large"


class EventTooLarge(PermanentError):
    reason = "too_large"


class InvalidResponse(PermanentError):
    reason = "invalid_response"
