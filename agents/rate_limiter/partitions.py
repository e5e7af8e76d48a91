"""The limiter's partition state follows the stage's assignment: quota counts, waiting rooms."""

from __future__ import annotations

from agents.rate_limiter.limiter import Limiter
from streams.state.table import ChangelogTable


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
