"""OAuth2 client-credentials token flow as a generator: yields its request, receives the response.

Like httpx's ``auth_flow``: no client inside, so tests step it by hand and any client drives it
(``run_token_flow`` with an async fetch function, or the httpx adapter).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from providers.auth.config import OAuth2ClientCredentialsAuth
from providers.auth.request import PreparedRequest
from providers.errors import AuthFailed, InvalidResponse, ProviderUnavailable, RateLimited


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """What a fetch function returns: status, body, headers (case-insensitive if it can)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"TokenResponse(status={self.status}, body=<{len(self.body)} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class AccessToken:
    """A bearer token with the instants (same clock as ``now``) to refresh and to give up on it."""

    value: str
    expires_at: float | None
    refresh_at: float | None
    headers: Mapping[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per token, so signing a request is a dict merge.
        object.__setattr__(self, "headers", {"Authorization": f"Bearer {self.value}"})

    def needs_refresh(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at

    def __repr__(self) -> str:
        return f"AccessToken(expires_at={self.expires_at}, refresh_at={self.refresh_at})"


FetchToken = Callable[[PreparedRequest], Awaitable[TokenResponse]]
TokenFlow = Generator[PreparedRequest, TokenResponse, AccessToken]

# The longest wait a token endpoint's Retry-After may impose.
MAX_TOKEN_RETRY_AFTER_S = 3600.0
# RFC 6749 §5.2 error codes are short ASCII tokens; anything else is not echoed into messages.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


def build_token_request(config: OAuth2ClientCredentialsAuth, client_secret: str) -> PreparedRequest:
    """Return the token request of RFC 6749 §4.4.2 (built once per signer).

    Args:
        config: the grant's settings.
        client_secret: the resolved secret.

    Returns:
        A form-encoded POST to ``config.token_url``.
    """
    form = {"grant_type": "client_credentials"}
    if config.scope:
        form["scope"] = config.scope
    if config.audience:
        form["audience"] = config.audience
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    if config.client_auth == "basic":
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
        pair = f"{quote(config.client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = config.client_id
        form["client_secret"] = client_secret
    return PreparedRequest("POST", config.token_url, headers, urlencode(form).encode())


def client_credentials_flow(
    token_request: PreparedRequest, *, now: float, refresh_margin_s: float
) -> TokenFlow:
    """Yield the token request, receive its response, return the token.

    Args:
        token_request: from ``build_token_request``.
        now: epoch seconds when the request is sent; expiry counts from here (conservative).
        refresh_margin_s: refresh this long before expiry.

    Returns:
        The parsed token (as ``StopIteration.value`` when stepped by hand).

    Raises:
        AuthFailed, RateLimited, ProviderUnavailable, InvalidResponse: see ``parse_token_response``.
    """
    response = yield token_request
    return parse_token_response(response, now=now, refresh_margin_s=refresh_margin_s)


def parse_token_response(
    response: TokenResponse, *, now: float, refresh_margin_s: float
) -> AccessToken:
    """Turn a token endpoint response into an ``AccessToken`` or a provider error.

    Raises:
        AuthFailed: 400/401/403, e.g. ``invalid_client`` (permanent: fix the credentials).
        RateLimited: 429, with ``retry_after_s`` from ``Retry-After``.
        ProviderUnavailable: 5xx and other statuses (retriable).
        InvalidResponse: 2xx without a usable bearer token.
    """
    status = response.status
    if status in (400, 401, 403):
        raise AuthFailed(
            f"token endpoint refused the client credentials ({_error_code(response.body)})",
            http_status=status,
        )
    if status == 429:
        raise RateLimited(
            "token endpoint rate-limited the client",
            retry_after_s=_retry_after_s(response.headers),
        )
    if not 200 <= status < 300:
        raise ProviderUnavailable(f"token endpoint answered {status}", http_status=status)
    payload = _json_object(response.body)
    value = payload.get("access_token")
    if not isinstance(value, str) or not value:
        raise InvalidResponse("token response has no access_token", http_status=status)
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise InvalidResponse("token response is not a bearer token", http_status=status)
    expires_in = _expires_in(payload.get("expires_in"))
    if expires_in is None:
        # No lifetime given (RFC 6749 §5.1 makes it optional): keep it until a 401.
        return AccessToken(value, None, None)
    # Never refresh later than half-way, or a margin larger than the lifetime refreshes per call.
    refresh_in = max(expires_in - refresh_margin_s, expires_in / 2)
    return AccessToken(value, now + expires_in, now + refresh_in)


async def run_token_flow(flow: TokenFlow, fetch: FetchToken) -> AccessToken:
    """Drive a token flow with an async fetch function until it returns its token."""
    request = next(flow)
    while True:
        response = await fetch(request)
        try:
            request = flow.send(response)
        except StopIteration as done:
            token: AccessToken = done.value
            return token


def _json_object(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponse("token response is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidResponse("token response is not a JSON object")
    return payload


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "no error code"
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else "no error code"


def _expires_in(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):  # some servers send "3600"
        try:
            seconds = float(raw)
        except ValueError:
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None  # an HTTP-date; the caller's backoff applies
    # Bounded like a provider's own Retry-After (limits.max_retry_after_s' default): the
    # signer holds the failure this long, and the limiter may wait for it too.
    return min(max(0.0, seconds), MAX_TOKEN_RETRY_AFTER_S) if math.isfinite(seconds) else None
