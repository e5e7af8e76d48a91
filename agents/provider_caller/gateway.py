"""The gateway from a request event to its provider: the shared HTTP client plus call metrics."""

from __future__ import annotations

from collections.abc import Mapping

from providers.auth.request import PreparedRequest
from providers.base import Provider
from providers.errors import ProviderError, UnknownProvider
from providers.http import ProviderClient
from providers.response import ProviderReply
from schemas.models import RequestEvent
from streams.metrics import LabelledCache, Metrics


class HttpGateway:
    """Looks up the active provider, calls it, and counts the call; the reply passes unchanged."""

    def __init__(
        self, providers: Mapping[str, Provider], client: ProviderClient, metrics: Metrics
    ) -> None:
        self._providers = dict(providers)
        self._names = frozenset(self._providers)
        self._client = client
        # A plain count read at scrape time: a gauge's inc() and dec() take a lock each, twice
        # per call on the hot path.
        self._in_flight = 0
        metrics.calls_in_flight.set_function(lambda: self._in_flight)
        self._ok_calls = LabelledCache(metrics.provider_calls, "ok")  # by provider
        self._failed_calls = LabelledCache(metrics.provider_calls)  # by (provider, reason)
        self._call_seconds = LabelledCache(metrics.provider_call_seconds)  # by provider

    @property
    def provider_names(self) -> frozenset[str]:
        return self._names

    def build(self, request: RequestEvent) -> PreparedRequest:
        """The unsigned request (pure, no I/O), or the PermanentError that refuses it."""
        return self._client.build(self._provider(request), request)

    async def call(
        self, request: RequestEvent, prepared: PreparedRequest | None = None
    ) -> ProviderReply:
        """Sign and send ``prepared`` (from ``build``; built here when None), and classify."""
        provider = self._provider(request)
        self._in_flight += 1
        try:
            reply = await self._client.call(provider, request, prepared=prepared)
        except ProviderError as exc:
            self._failed_calls[provider.name, exc.reason].inc()
            raise
        finally:
            self._in_flight -= 1
        self._ok_calls[provider.name].inc()
        self._call_seconds[provider.name].observe(reply.latency_s)
        return reply

    def _provider(self, request: RequestEvent) -> Provider:
        provider = self._providers.get(request.provider)
        if provider is None:
            raise UnknownProvider(f"provider {request.provider!r} is not configured")
        return provider

    async def close(self) -> None:
        await self._client.close()
