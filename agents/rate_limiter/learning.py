"""What the limit keys learned, kept and shown: written to the quota table, read back by the
next owner, exported, and warned about when far below the declared limit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Protocol

from agents.rate_limiter.adaptive import RateState, learned_rate
from agents.rate_limiter.book import LimitBook
from agents.rate_limiter.rates import KeyRates, rate_key
from streams.errors import CallstreamError
from streams.metrics import Metrics

__all__ = ["QuotaStore", "RateLearning"]

log = logging.getLogger(__name__)

# A learned limit far below the declared one is worth a warning, but once in a while per key.
_WARN_EVERY_S = 600.0


class QuotaStore(Protocol):
    """Where quota counts (and learned rates) live: a changelog-backed table in workers, a dict
    in tests."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    async def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class RateLearning:
    """Persistence, metrics and warnings of the adaptive rates of every partition."""

    def __init__(
        self, book: LimitBook, store: QuotaStore, metrics: Metrics, *, warn_below_ratio: float
    ) -> None:
        self._book = book
        self._store = store
        self._metrics = metrics
        self._warn_below = warn_below_ratio
        self._warned_at: dict[str, float] = {}

    def load(self, partition: int, key: str) -> RateState | None:
        """The state a previous owner wrote for ``key``, if any and readable."""
        raw = self._store.get(partition, rate_key(key))
        if raw is None:
            return None
        try:
            return RateState.from_bytes(raw)
        except ValueError as exc:
            log.warning("%s: unreadable rate state in the quota table, starting over: %s", key, exc)
            return None

    async def tick(
        self,
        partition: int,
        rates: KeyRates,
        *,
        elapsed_s: float,
        now: float,
        owned: Callable[[], bool],
    ) -> None:
        """After a control tick: count time at the bounds, export, write what moved."""
        for key, state in rates.states().items():
            self._account(key, state, elapsed_s, now)
            self.export(key, state)  # at once: the rate moves faster than /metrics is read
        for key, state in rates.to_persist():
            if not owned():
                return  # revoked meanwhile: the next owner starts from what was written before
            try:
                await self._store.put(partition, rate_key(key), state.to_bytes())
            except CallstreamError as exc:  # the table went with the partition
                log.debug("%s: rate state not written: %s", key, exc)

    def export(self, key: str, state: RateState) -> None:
        self._metrics.limiter_rate.labels(key).set(state.rate_per_s)
        self._metrics.limiter_learned_limit.labels(key).set(learned_rate(state))

    def _account(self, key: str, state: RateState, elapsed_s: float, now: float) -> None:
        control = self._book.control_for(key)
        if state.rate_per_s <= control.floor_per_s:
            self._metrics.limiter_bound_seconds.labels(key, "floor").inc(elapsed_s)
        elif state.rate_per_s >= state.ceiling_per_s:
            self._metrics.limiter_bound_seconds.labels(key, "ceiling").inc(elapsed_s)
        learned = learned_rate(state)
        far_below = learned < self._warn_below * control.declared_per_s
        if far_below and now - self._warned_at.get(key, -math.inf) >= _WARN_EVERY_S:
            self._warned_at[key] = now
            log.warning(
                "%s: the provider refuses above about %.1f/s, far below the declared "
                "%.1f/s: correct limits.rate_per_s in its declaration",
                key, learned, control.declared_per_s,
            )  # fmt: skip
