"""Signers as ``httpx.Auth``, for code that talks to providers through httpx (not the hot path)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator

import httpx

from providers.auth.config import AuthConfig, MtlsAuth, OAuth2ClientCredentialsAuth
from providers.auth.factory import build_signer
from providers.auth.flow import AuthFlow
from providers.auth.hmac_signing import HmacSigner
from providers.auth.oauth2_flow import (
    AccessToken,
    TokenResponse,
    build_token_request,
    client_credentials_flow,
)
from providers.auth.request import PreparedRequest
from providers.auth.secrets import resolve_secret
from providers.auth.signer import NoAuthSigner, Signer, SyncSigner

Clock = Callable[[], float]
TokenSteps = Generator[httpx.Request, httpx.Response, AccessToken]


def to_prepared(request: httpx.Request, *, with_body: bool) -> PreparedRequest:
    """View an httpx request as a ``PreparedRequest`` (body only when already read)."""
    body = request.content if with_body else None
    return PreparedRequest(request.method, str(request.url), dict(request.headers), body)


def to_httpx(request: PreparedRequest) -> httpx.Request:
    return httpx.Request(
        request.method, request.url, headers=dict(request.headers), content=request.body
    )


def apply_signed(request: httpx.Request, before: PreparedRequest, signed: PreparedRequest) -> None:
    """Copy what a signer changed (headers, query) back onto the httpx request."""
    if signed.url != before.url:
        request.url = httpx.URL(signed.url)
    for name, value in signed.headers.items():
        if before.headers.get(name) != value:
            request.headers[name] = value


class SignerAuth(httpx.Auth):
    """Any ``Signer`` as ``httpx.Auth``; sync clients need a ``SyncSigner`` (all but OAuth2).

    A 401 is handled by the signer's ``AuthFlow``, as on the hot path: token credentials are
    dropped and the request is re-signed and sent once more; static ones cannot change.
    """

    def __init__(self, signer: Signer, *, clock: Clock = time.time) -> None:
        self._signer = signer
        self._flow = AuthFlow(signer)
        self._clock = clock
        # Only HMAC signs the body; reading it for the others would defeat streaming uploads.
        self.requires_request_body = isinstance(signer, HmacSigner)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if not isinstance(self._signer, SyncSigner):
            raise TypeError(f"{self._signer!r} needs I/O to sign; use an async httpx client")
        if self.requires_request_body:
            request.read()
        before = to_prepared(request, with_body=self.requires_request_body)
        apply_signed(request, before, self._signer.apply(before, now=self._clock()))
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.requires_request_body:
            await request.aread()
        before = to_prepared(request, with_body=self.requires_request_body)
        signed = await self._flow.first(before, now=self._clock())
        apply_signed(request, before, signed)
        response = yield request
        again = self._flow.then(before, signed, response.status_code, sends=1, now=self._clock())
        if again is not None:
            apply_signed(request, signed, await again)
            yield request


class OAuth2ClientCredentialsHttpxAuth(httpx.Auth):
    """OAuth2 client credentials driven by httpx itself: the token request goes through the
    same client (its transport, proxies, mocks), one fetch at a time per auth object."""

    def __init__(
        self, config: OAuth2ClientCredentialsAuth, *, client_secret: str, clock: Clock = time.time
    ) -> None:
        self._token_request = build_token_request(config, client_secret)
        self._margin_s = config.refresh_margin_s
        self._clock = clock
        self._token: AccessToken | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    @property
    def token(self) -> AccessToken | None:
        return self._token

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        for attempt in range(2):  # the second pass only after a 401 dropped the token
            with self._thread_lock:  # threads sharing a client fetch one token between them
                if self._stale():
                    self._token = yield from self._read_sync(self._fetch_steps())
            response = yield self._authorize(request)
            if attempt or response.status_code != 401:
                return
            self._invalidate(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        for attempt in range(2):
            async with self._async_lock:  # waiters find the token the first caller fetched
                if self._stale():
                    # No `yield from` in async generators: step the token flow by hand.
                    steps = self._fetch_steps()
                    step = next(steps)
                    while True:
                        reply = yield step
                        await reply.aread()
                        try:
                            step = steps.send(reply)
                        except StopIteration as done:
                            self._token = done.value
                            break
            response = yield self._authorize(request)
            if attempt or response.status_code != 401:
                return
            self._invalidate(request)

    def _stale(self) -> bool:
        return self._token is None or self._token.needs_refresh(self._clock())

    def _authorize(self, request: httpx.Request) -> httpx.Request:
        assert self._token is not None
        request.headers["Authorization"] = self._token.headers["Authorization"]
        return request

    def _invalidate(self, request: httpx.Request) -> None:
        """Drop the token the 401 was for, unless another request already replaced it."""
        token = self._token
        if (
            token is not None
            and request.headers.get("Authorization") == token.headers["Authorization"]
        ):
            self._token = None

    def _fetch_steps(self) -> TokenSteps:
        flow = client_credentials_flow(
            self._token_request, now=self._clock(), refresh_margin_s=self._margin_s
        )
        prepared = next(flow)
        while True:
            response = yield to_httpx(prepared)
            try:
                prepared = flow.send(
                    TokenResponse(response.status_code, response.content, response.headers)
                )
            except StopIteration as done:
                token: AccessToken = done.value
                return token

    @staticmethod
    def _read_sync(steps: TokenSteps) -> TokenSteps:
        step = next(steps)
        while True:
            reply = yield step
            reply.read()
            try:
                step = steps.send(reply)
            except StopIteration as done:
                token: AccessToken = done.value
                return token

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentialsHttpxAuth(token_url={self._token_request.url!r})"


def build_httpx_auth(config: AuthConfig, *, clock: Clock = time.time) -> httpx.Auth:
    """Return an ``httpx.Auth`` for ``config``.

    Args:
        config: any ``AuthConfig`` member.
        clock: epoch seconds, injectable for tests.

    Returns:
        For OAuth2 an auth whose token requests go through the same httpx client; for mTLS a
        pass-through (give the client ``verify=ssl_context_for(config)``); else ``SignerAuth``.
    """
    if isinstance(config, OAuth2ClientCredentialsAuth):
        secret = resolve_secret(config.client_secret).get_secret_value()
        return OAuth2ClientCredentialsHttpxAuth(config, client_secret=secret, clock=clock)
    if isinstance(config, MtlsAuth):
        return SignerAuth(NoAuthSigner(), clock=clock)
    return SignerAuth(build_signer(config), clock=clock)
