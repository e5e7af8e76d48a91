"""Server-side credential checks of the fake provider, one precomputed check per scheme."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from providers.auth.config import ApiKeyAuth, BasicAuth, BearerAuth, HmacAuth, NoAuth
from providers.auth.hmac_signing import verify_hmac
from providers.auth.secrets import resolve_secret
from providers.fake.config import FakeAuth, FakeOAuth2Auth
from providers.fake.tokens import TokenIssuer

# None: accepted. "missing": no credentials at all. "invalid": wrong, expired or badly signed.
Verdict = Literal["missing", "invalid"] | None
Check = Callable[[web.Request], Awaitable[Verdict]]


def build_check(
    auth: FakeAuth, *, issuer: TokenIssuer | None, basic_for_bearer: bool = False
) -> Check | None:
    """Return the check for ``auth`` (None: no auth demanded).

    Args:
        auth: what the server demands.
        issuer: the token issuer, for OAuth2.
        basic_for_bearer: also accept the bearer token as a Basic username (Stripe).
    """
    match auth:
        case NoAuth():
            return None
        case ApiKeyAuth():
            return _api_key_check(auth)
        case BearerAuth():
            token = resolve_secret(auth.token).get_secret_value()
            return _bearer_check(token, basic_for_bearer=basic_for_bearer)
        case BasicAuth():
            password = resolve_secret(auth.password).get_secret_value()
            return _basic_check(auth.username, password)
        case HmacAuth():
            return _hmac_check(auth)
        case FakeOAuth2Auth():
            assert issuer is not None
            return _oauth2_check(issuer)


def _same(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)


def _api_key_check(auth: ApiKeyAuth) -> Check:
    expected = resolve_secret(auth.key).get_secret_value().encode()
    name, in_query = auth.name, auth.in_ == "query"

    async def check(request: web.Request) -> Verdict:
        given = request.query.get(name) if in_query else request.headers.get(name)
        if given is None:
            return "missing"
        return None if _same(given, expected) else "invalid"

    return check


def _split_authorization(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    return scheme.lower(), credentials.strip()  # RFC 9110 §11.1: schemes are case-insensitive


def _decode_basic(credentials: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _bearer_check(token: str, *, basic_for_bearer: bool) -> Check:
    expected = token.encode()

    async def check(request: web.Request) -> Verdict:
        parts = _split_authorization(request)
        if parts is None:
            return "missing"
        scheme, credentials = parts
        if scheme == "bearer":
            return None if _same(credentials, expected) else "invalid"
        if scheme == "basic" and basic_for_bearer:
            pair = _decode_basic(credentials)
            return None if pair is not None and _same(pair[0], expected) else "invalid"
        return "invalid"

    return check


def _basic_check(username: str, password: str) -> Check:
    expected_user, expected_password = username.encode(), password.encode()

    async def check(request: web.Request) -> Verdict:
        parts = _split_authorization(request)
        if parts is None:
            return "missing"
        scheme, credentials = parts
        pair = _decode_basic(credentials) if scheme == "basic" else None
        if pair is None:
            return "invalid"
        user_ok = _same(pair[0], expected_user)
        return None if _same(pair[1], expected_password) and user_ok else "invalid"

    return check


def _hmac_check(auth: HmacAuth) -> Check:
    secret = resolve_secret(auth.secret).get_secret_value().encode()

    async def check(request: web.Request) -> Verdict:
        headers = request.headers
        signature = headers.get(auth.signature_header)
        if signature is None:
            return "missing"
        if headers.get(auth.key_id_header) != auth.key_id:
            return "invalid"
        body = await request.read() if request.body_exists else None
        ok = verify_hmac(
            secret,
            method=request.method,
            target=request.raw_path,
            body=body,
            signature=signature,
            timestamp=headers.get(auth.timestamp_header),
            now=time.time(),
            max_skew_s=auth.max_skew_s,
            algorithm=auth.algorithm,
            encoding=auth.encoding,
        )
        return None if ok else "invalid"

    return check


def _oauth2_check(issuer: TokenIssuer) -> Check:
    async def check(request: web.Request) -> Verdict:
        parts = _split_authorization(request)
        if parts is None:
            return "missing"
        scheme, token = parts
        if scheme != "bearer":
            return "invalid"
        return None if issuer.valid(token, time.monotonic()) else "invalid"

    return check
