"""The gateway from a request event to its provider over the shared HTTP client."""

from __future__ import annotations

from collections.abc import Mapping

from agents.provider_caller.caller import ProviderReply
from providers.base import Provider
from providers.errors import ProviderError, UnknownProvider
from providers.http import ProviderClient
from schemas.models import RequestEvent
from streams.metrics import Metrics


class HttpGateway:
    """Looks up the active provider, calls it, and counts the call for the metrics."""

    def __init__(
        self, providers: Mapping[str, Provider], client: ProviderClient, metrics: Metrics
    ) -> None:
        self._providers = dict(providers)
        self._names = frozenset(self._providers)
        self._client = client
        self._metrics = metrics
        # A plain count read at scrape time: a gauge's inc() and dec() take a lock each, twice
        # per call on the hot path.
        self._in_flight = 0
        metrics.calls_in_flight.set_function(lambda: self._in_flight)
        # Per provider, the labelled children used on every successful call: labels() is a
        # lock and a dict lookup each time.
        names = {provider.name for provider in self._providers.values()}
        self._ok_calls = {n: metrics.provider_calls.labels(n, "ok") for n in names}
        self._call_seconds = {n: metrics.provider_call_seconds.labels(n) for n in names}

    @property
    def provider_names(self) -> frozenset[str]:
        return self._names

    async def call(self, request: RequestEvent) -> ProviderReply:
        provider = self._providers.get(request.provider)
        if provider is None:
            raise UnknownProvider(f"provider {request.provider!r} is not configured")
        self._in_flight += 1
        try:
            result = await self._client.call(provider, request)
        except ProviderError as exc:
            self._metrics.provider_calls.labels(provider.name, exc.reason).inc()
            raise
        finally:
            self._in_flight -= 1
        response = result.response
        self._ok_calls[provider.name].inc()
        self._call_seconds[provider.name].observe(result.latency_s)
        return ProviderReply(
            http_status=response.status,
            body=response.body,
            content_type=response.content_type,
            headers=dict(response.headers),
            latency_s=result.latency_s,
            cost=response.cost,
            provider_used=provider.name,
        )

    async def close(self) -> None:
        await self._client.close()
