"""The one shared HTTP client: pooled aiohttp session, size caps, errors mapped at one boundary."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import NamedTuple

import aiohttp
from yarl import URL

from providers.auth.oauth2_flow import TokenResponse
from providers.auth.request import PreparedRequest
from providers.base import Provider
from providers.errors import BodyTooLarge, ProviderError, ProviderTimeout, ProviderUnavailable
from providers.network import PublicOnlyConnector
from providers.operation import InputLimits
from providers.response import ProviderReply
from schemas.models import RequestEvent

log = logging.getLogger(__name__)

# Their str() can contain the request URL, whose query may hold an API key (OpenWeatherMap).
_URL_BEARING = (aiohttp.ClientResponseError, aiohttp.InvalidURL)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Pool and safety settings of the shared session."""

    limit: int = 512
    # 0 = no per-host cap; the rate limiter, not the pool, paces each provider.
    limit_per_host: int = 0
    ttl_dns_cache_s: int = 300
    keepalive_timeout_s: float = 30.0
    # A ceiling over every provider's own max_response_bytes.
    max_response_bytes: int | None = None
    # A ceiling over every provider's own max_request_bytes (request bodies).
    max_request_bytes: int | None = None
    # Caps on one path or query parameter value and one header value a request event sets.
    max_param_chars: int = 2048
    max_header_value_chars: int = 8192
    # Proxies from HTTP(S)_PROXY; off so a stray variable cannot reroute provider traffic.
    trust_env: bool = False
    # Refuse loopback, private, link-local, multicast and unspecified addresses, checked on
    # resolved addresses at connect time (providers/network.py). Off: aiohttp's own connector.
    deny_private_networks: bool = False


class RawResponse(NamedTuple):
    """What came back, before classification (``headers`` are case-insensitive).

    A NamedTuple: built once per send, and a frozen dataclass costs about three times as much.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    latency_s: float

    def __repr__(self) -> str:
        return f"RawResponse(status={self.status}, body=<{len(self.body)} bytes>)"


# What a failed exchange can raise besides our own errors (asyncio's and aiohttp's timeouts
# both derive from TimeoutError, an OSError).
_EXCHANGE_ERRORS = (aiohttp.ClientError, OSError)


def exchange_error(exc: BaseException) -> ProviderError:
    """The ProviderTimeout or ProviderUnavailable that a client or socket error means."""
    if isinstance(exc, TimeoutError):
        return ProviderTimeout("no answer within the timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):  # no connection: nothing was sent
        return ProviderUnavailable.unreached(_describe(exc))
    return ProviderUnavailable(_describe(exc))


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    return name if isinstance(exc, _URL_BEARING) else f"{name}: {exc}"


class ProviderClient:
    """Sends prepared requests over one pooled session per worker; create it inside the loop."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config = config or ClientConfig()
        self._session: aiohttp.ClientSession | None = None
        self.input_limits = InputLimits(
            config.max_param_chars, config.max_header_value_chars, config.max_request_bytes
        )

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use (it binds to the running loop)."""
        if self._session is None or self._session.closed:
            config = self.config
            connector_type = (
                PublicOnlyConnector if config.deny_private_networks else aiohttp.TCPConnector
            )
            connector = connector_type(
                limit=config.limit,
                limit_per_host=config.limit_per_host,
                ttl_dns_cache=config.ttl_dns_cache_s,
                keepalive_timeout=config.keepalive_timeout_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Cookies from one provider must never ride along to the next call.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=config.trust_env,
            )
        return self._session

    async def send(
        self,
        prepared: PreparedRequest,
        *,
        timeout_s: float,
        max_response_bytes: int,
        ssl: SSLContext | None = None,
    ) -> RawResponse:
        """Send exactly ``prepared`` (no redirects followed) and read at most the cap.

        Raises:
            ProviderTimeout, ProviderUnavailable: the exchange failed; BodyTooLarge: over cap.
        """
        cap = min(max_response_bytes, self.config.max_response_bytes or max_response_bytes)
        started = time.perf_counter()
        # A plain try, not a context manager: this runs once per call on the hot path.
        try:
            async with self.session.request(
                prepared.method,
                _url(prepared.url),
                headers=prepared.headers,
                data=prepared.body,
                # A redirect could point anywhere; only declared URLs are ever called.
                allow_redirects=False,
                timeout=_timeout(timeout_s),
                ssl=ssl if ssl is not None else True,
            ) as response:
                body = await _read_capped(response, cap)
                return RawResponse(
                    response.status, response.headers, body, time.perf_counter() - started
                )
        except ProviderError:
            raise
        except _EXCHANGE_ERRORS as exc:
            raise exchange_error(exc) from None

    async def fetch_token(self, request: PreparedRequest) -> TokenResponse:
        """OAuth2 token requests over the shared session (``FetchToken`` for auth signers)."""
        raw = await self.send(request, timeout_s=10.0, max_response_bytes=64 << 10)
        return TokenResponse(raw.status, raw.body, raw.headers)

    def build(self, provider: Provider, event: RequestEvent) -> PreparedRequest:
        """The provider's unsigned request for ``event`` under this client's input limits.

        Pure and cheap: run it before admission, so a bad request spends nothing, and hand the
        result to ``call``.

        Raises:
            PermanentError: the request is invalid (undeclared, not allowed, too large).
        """
        return provider.build_request(event, self.input_limits)

    async def call(
        self,
        provider: Provider,
        event: RequestEvent,
        *,
        now: float | None = None,
        prepared: PreparedRequest | None = None,
    ) -> ProviderReply:
        """Send the provider's signed request, as often as its auth flow asks, and classify.

        Args:
            now: wall-clock epoch seconds for signing and reset headers; ``time.time()`` if None.
            prepared: ``build(provider, event)`` when already built; built here when None.

        Raises:
            ProviderError: any subclass; nothing else escapes for a failed call.
        """
        wall = time.time() if now is None else now
        if prepared is None:
            prepared = self.build(provider, event)
        out = await provider.prepare(event, now=wall, unsigned=prepared)
        sent, latency_s, sends = out.request, 0.0, 0
        while True:
            raw = await self.send(
                sent,
                timeout_s=out.timeout_s,
                max_response_bytes=out.max_response_bytes,
                ssl=out.ssl,
            )
            latency_s, sends = latency_s + raw.latency_s, sends + 1
            again = provider.auth.then(out.unsigned, sent, raw.status, sends=sends, now=wall)
            if again is None:
                break
            sent = await again
        log.debug("%s.%s: HTTP %s in %.3f s", provider.name, event.operation, raw.status, latency_s)
        return provider.classify(
            raw.status,
            raw.headers,
            raw.body,
            operation=event.operation,
            now=now,  # None: the arrival time, for epoch reset headers
            latency_s=latency_s,
            sends=sends,
        )


@functools.lru_cache(maxsize=4096)
def _url(url: str) -> URL:
    """The URL object for a built URL, sent byte for byte (``encoded=True``: the URL goes out
    as built and signed). URLs repeat (the same resources, again and again) and yarl's URL is
    immutable, so parsing is skipped for those seen recently."""
    return URL(url, encoded=True)


@functools.lru_cache(maxsize=64)
def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    """One ClientTimeout per distinct timeout (they are immutable), not one per request."""
    return aiohttp.ClientTimeout(total=total_s)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    length = response.content_length
    encoded = "Content-Encoding" in response.headers
    if length is not None and length > cap:
        response.close()  # not reading the rest: the connection cannot be reused
        raise BodyTooLarge(f"response of {length} bytes over {cap}", http_status=response.status)
    if length is not None and not encoded:
        return await response.read()  # the fast path: size known and within the cap
    # Unknown or compressed size: count decoded bytes, so a small gzip bomb is stopped too.
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > cap:
            response.close()
            raise BodyTooLarge(f"response over {cap} bytes", http_status=response.status)
    return bytes(body)
