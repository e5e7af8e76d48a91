"""The fake's OAuth2 token endpoint: client-credentials grant, tokens with enforced expiry."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from urllib.parse import unquote

from aiohttp import web

from providers.auth.secrets import resolve_secret
from providers.fake.config import FakeOAuth2Auth


class TokenIssuer:
    """Issues random bearer tokens to one client and remembers them until they expire."""

    __slots__ = ("_client_id", "_client_secret", "_scope", "_tokens", "expires_in_s", "requests")

    def __init__(self, auth: FakeOAuth2Auth) -> None:
        self._client_id = auth.client_id.encode()
        self._client_secret = resolve_secret(auth.client_secret).get_secret_value().encode()
        self._scope = auth.scope
        self.expires_in_s = auth.token_expires_in_s
        self._tokens: dict[str, float] = {}
        self.requests = 0

    def issue(self, now: float) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.expires_in_s
        return token

    def valid(self, token: str, now: float) -> bool:
        expires_at = self._tokens.get(token)
        return expires_at is not None and now < expires_at

    def adopt(self, previous: TokenIssuer) -> None:
        """Keep the tokens a previous issuer handed out (the config changed, not the client)."""
        self._tokens.update(previous._tokens)

    def revoke_all(self) -> None:
        self._tokens.clear()

    @property
    def issued(self) -> int:
        return len(self._tokens)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /oauth/token`` (RFC 6749 §4.4): client auth by Basic header or form body."""
        self.requests += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type")
        client = _client_from_basic(request.headers.get("Authorization"))
        if client is None:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            if isinstance(client_id, str) and isinstance(client_secret, str):
                client = (client_id.encode(), client_secret.encode())
        if client is None or not self._matches(*client):
            # RFC 6749 §5.2: invalid_client is a 401 (with a challenge when Basic was tried).
            return _error(401, "invalid_client", {"WWW-Authenticate": 'Basic realm="fake"'})
        if self._scope is not None and form.get("scope") != self._scope:
            return _error(400, "invalid_scope")
        token = self.issue(time.monotonic())
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in_s}
        # RFC 6749 §5.1: token responses must not be cached.
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _matches(self, client_id: bytes, client_secret: bytes) -> bool:
        same_id = hmac.compare_digest(client_id, self._client_id)
        return hmac.compare_digest(client_secret, self._client_secret) and same_id


def _client_from_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 §2.3.1: both parts were form-urlencoded before Basic encoding.
    return unquote(client_id).encode(), unquote(client_secret).encode()


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": code}).encode(),
        content_type="application/json",
        headers=headers,
    )
