"""Adaptive concurrency per limit key: latency rising over its baseline lowers calls in flight.

A provider about to refuse often slows down first: its queue grows, and every call we add waits
in it. By Little's law the calls in flight are rate x latency, so at a steady rate rising
latency shows as more calls in flight; capping them before the provider starts answering 429
keeps its queue short. The limit follows the gradient of Netflix's concurrency-limits
(Gradient2): ``limit * min(1, tolerance * baseline / recent) + sqrt(limit)``, smoothed, where
``baseline`` is a slow average of latency and ``recent`` the mean of the last window of calls.
A tolerance of 2 means latency must double before the limit shrinks, so ordinary jitter never
binds. The limit grows only while the key uses at least half of it: a key with few calls in
flight says nothing about how many the provider can take.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from dataclasses import dataclass

__all__ = ["ConcurrencyLimit", "ConcurrencyLimits", "GradientLimit"]


@dataclass(slots=True)
class GradientLimit:
    """The pure estimator: feed it windows of latencies, read ``limit``."""

    limit: float
    min_limit: float = 2.0
    max_limit: float = 1000.0
    tolerance: float = 2.0
    smoothing: float = 0.2
    # Weight of a window in the baseline: slow, so a latency regime change takes a while to
    # become the new normal (and a brief spike never does).
    baseline_weight: float = 0.05
    baseline_s: float = math.nan

    def update(self, recent_s: float, in_flight: int) -> float:
        """One window's mean latency ``recent_s`` with ``in_flight`` calls out: the new limit."""
        if not recent_s > 0:
            return self.limit
        if math.isnan(self.baseline_s):
            self.baseline_s = recent_s
        else:
            self.baseline_s += self.baseline_weight * (recent_s - self.baseline_s)
            if self.baseline_s > 2 * recent_s:  # latency fell for good: forget the old level
                self.baseline_s = recent_s
        gradient = max(0.5, min(1.0, self.tolerance * self.baseline_s / recent_s))
        if gradient >= 1.0 and in_flight < self.limit / 2:
            return self.limit  # not using the limit: no evidence it could be higher
        target = self.limit * gradient + math.sqrt(self.limit)
        smoothed = self.limit * (1 - self.smoothing) + target * self.smoothing
        self.limit = min(self.max_limit, max(self.min_limit, smoothed))
        return self.limit


class ConcurrencyLimit:
    """Calls in flight for one key, under a limit that ``GradientLimit`` moves."""

    __slots__ = ("_estimator", "_in_flight", "_samples", "_sum_s", "_waiters", "window")

    def __init__(
        self, initial: int, *, window: int = 20, max_limit: int = 1000, tolerance: float = 2.0
    ) -> None:
        """Args:
        initial: the limit to start from.
        window: calls per latency sample.
        max_limit: the limit never grows past this.
        tolerance: how many times its baseline latency may grow before the limit shrinks.
        """
        self._estimator = GradientLimit(
            float(initial), max_limit=float(max_limit), tolerance=tolerance
        )
        self._in_flight = 0
        self._samples = 0
        self._sum_s = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.window = window

    @property
    def limit(self) -> int:
        return int(self._estimator.limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a place; a cancelled waiter takes none."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_place()  # granted as it was cancelled: hand it on
            else:
                # A release between its cancellation and now has already dropped it (it skips
                # cancelled waiters): a ValueError here would turn a revocation's cancel into
                # a handler failure, a dead letter for a request never called, committed.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, latency_s: float | None) -> None:
        """A call ended after ``latency_s`` (None: it ended without a latency worth learning
        from, e.g. refused before sending)."""
        if latency_s is not None:
            self._sum_s += latency_s
            self._samples += 1
            if self._samples >= self.window:
                self._estimator.update(self._sum_s / self._samples, self._in_flight)
                self._samples, self._sum_s = 0, 0.0
        self._release_place()

    def _release_place(self) -> None:
        self._in_flight -= 1
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)


class ConcurrencyLimits:
    """One ``ConcurrencyLimit`` per limit key, made on first use, all starting at ``initial``."""

    def __init__(self, initial: int, *, tolerance: float = 2.0) -> None:
        self._initial = initial
        self._tolerance = tolerance
        self._by_key: dict[str, ConcurrencyLimit] = {}

    def __getitem__(self, key: str) -> ConcurrencyLimit:
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = ConcurrencyLimit(
                self._initial, max_limit=self._initial, tolerance=self._tolerance
            )
        return found

    def limits(self) -> dict[str, int]:
        """Each key's limit now, for /metrics."""
        return {key: limit.limit for key, limit in self._by_key.items()}
