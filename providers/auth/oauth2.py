"""OAuth2 client-credentials signer: one cached token, single-flight refresh, 401 invalidation."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
from yarl import URL

from providers.auth.config import OAuth2ClientCredentialsAuth
from providers.auth.oauth2_flow import (
    AccessToken,
    FetchToken,
    TokenResponse,
    build_token_request,
    client_credentials_flow,
    run_token_flow,
)
from providers.auth.request import PreparedRequest
from providers.auth.signer import redact_values, secret_forms
from providers.errors import ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited

# After a failed fetch, callers fail fast this long instead of hammering a broken endpoint.
FAILURE_HOLD_S = 1.0


class OAuth2ClientCredentialsSigner:
    """Adds ``Authorization: Bearer <token>``, fetching the token at most once at a time.

    Every caller that finds no valid token awaits the same fetch task (shielded, so a cancelled
    caller does not cancel it for the others): 100 concurrent ``sign`` calls cost one request.
    """

    __slots__ = (
        "_failure", "_fetch", "_forms", "_inflight", "_margin_s", "_old_token", "_token",
        "_token_request",
    )  # fmt: skip

    def __init__(
        self,
        *,
        token_request: PreparedRequest,
        refresh_margin_s: float,
        fetch_token: FetchToken,
        client_secret: str = "",
    ) -> None:
        self._token_request = token_request
        self._margin_s = refresh_margin_s
        self._fetch = fetch_token
        # The client secret, in the form and the Basic header the token request carries it.
        client_auth = token_request.headers.get("Authorization", "").removeprefix("Basic ")
        self._forms = secret_forms(client_secret, client_auth)
        self._token: AccessToken | None = None
        # The token before the current one: a 401 that echoes it can arrive after a refresh.
        self._old_token: AccessToken | None = None
        self._inflight: asyncio.Task[AccessToken] | None = None
        self._failure: tuple[ProviderError, float] | None = None

    @classmethod
    def from_config(
        cls, config: OAuth2ClientCredentialsAuth, *, client_secret: str, fetch_token: FetchToken
    ) -> OAuth2ClientCredentialsSigner:
        return cls(
            token_request=build_token_request(config, client_secret),
            refresh_margin_s=config.refresh_margin_s,
            fetch_token=fetch_token,
            client_secret=client_secret,
        )

    @property
    def token(self) -> AccessToken | None:
        """The cached token, if any (for tests and diagnostics; its repr hides the value)."""
        return self._token

    async def sign(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        token = self._token
        if token is None or token.needs_refresh(now):
            token = await self._refresh(now)
        return request.with_headers(token.headers)

    def on_unauthorized(self, request: PreparedRequest | None = None) -> None:
        """Drop the cached token so the next ``sign`` fetches one; the caller retries once.

        Args:
            request: the request that got the 401. When given, the token is dropped only if
                that request carried the current one: a burst of 401s for an old token must
                not discard the fresh token fetched after the first of them.
        """
        token = self._token
        if token is None:
            return
        if (
            request is not None
            and request.headers.get("Authorization") != token.headers["Authorization"]
        ):
            return
        self._old_token = token  # still redacted: the answer to it may echo it
        self._token = None

    def redact(self, text: str) -> str:
        """``text`` with the client secret and the access tokens replaced by ``[redacted]``."""
        tokens = [t.value for t in (self._token, self._old_token) if t is not None]
        return redact_values(text, (*secret_forms(*tokens), *self._forms))

    async def aclose(self) -> None:
        """Cancel a fetch in flight (at shutdown)."""
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh(self, now: float) -> AccessToken:
        if self._failure is not None:
            error, until = self._failure
            if now < until:
                raise error
            self._failure = None
        task = self._inflight
        if task is None:
            task = asyncio.create_task(self._fetch_token(now))
            task.add_done_callback(self._settle)
            self._inflight = task
        return await asyncio.shield(task)

    async def _fetch_token(self, now: float) -> AccessToken:
        try:
            flow = client_credentials_flow(
                self._token_request, now=now, refresh_margin_s=self._margin_s
            )
            token = await run_token_flow(flow, self._fetch)
        except ProviderError as error:
            hold_s = FAILURE_HOLD_S
            if isinstance(error, RateLimited) and error.retry_after_s:
                hold_s = error.retry_after_s
            self._failure = (error, now + hold_s)
            raise
        # Stored here, not in a callback, so callers resuming after the await see it.
        self._old_token = self._token or self._old_token
        self._token = token
        return token

    def _settle(self, task: asyncio.Task[AccessToken]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: all waiters may have been cancelled

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentialsSigner(token_url={self._token_request.url!r})"


def aiohttp_token_fetcher(
    session: aiohttp.ClientSession,
    *,
    timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchToken:
    """Return a fetch function that sends token requests with a shared aiohttp session.

    Args:
        session: the process's client session.
        timeout_s: total time allowed for one token request.
        ssl_context: for token endpoints that need a client certificate or private CA.

    Returns:
        An async function mapping client failures to ``ProviderTimeout``/``ProviderUnavailable``.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    ssl_arg: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def fetch(request: PreparedRequest) -> TokenResponse:
        try:
            async with session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=dict(request.headers),
                data=request.body,
                timeout=timeout,
                ssl=ssl_arg,
            ) as response:
                body = await response.read()
                return TokenResponse(response.status, body, response.headers)
        except TimeoutError:
            raise ProviderTimeout(f"token endpoint did not answer within {timeout_s} s") from None
        except aiohttp.ClientError as error:
            # The class name is enough; messages of some client errors echo request details.
            raise ProviderUnavailable(
                f"token endpoint unreachable ({type(error).__name__})"
            ) from None

    return fetch
