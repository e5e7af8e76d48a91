"""Wiring of the limiter into a worker: limits from providers, quota table, partition hooks."""

from __future__ import annotations

from collections.abc import Mapping

from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter
from providers.base import Provider
from streams.settings import Settings
from streams.state.table import ChangelogTable


def limit_book(settings: Settings, providers: Mapping[str, Provider]) -> LimitBook:
    """Each provider's declared limit (settings may override it) and the tenant quotas."""
    limits = {}
    for name, provider in providers.items():
        overrides = settings.providers.get(name)
        limits[name] = ProviderLimit(
            rate_per_s=provider.spec.limits.rate_per_s,
            burst=provider.spec.limits.burst,
            shards=overrides.shards if overrides else 1,
        )
    return LimitBook(limits, settings.limiter.quotas, jitter_s=settings.limiter.jitter_s)


class LimiterPartitions:
    """Follows the caller's assignment: recover quota counts, then open the waiting rooms."""

    def __init__(self, limiter: Limiter, quota_table: ChangelogTable | None) -> None:
        self._limiter = limiter
        self._quota_table = quota_table

    async def assigned(self, partitions: set[int]) -> None:
        if self._quota_table is not None:
            await self._quota_table.assign(partitions)
        self._limiter.assign(partitions)

    async def revoked(self, partitions: set[int]) -> None:
        self._limiter.revoke(partitions)
        if self._quota_table is not None:
            self._quota_table.revoke(partitions)
