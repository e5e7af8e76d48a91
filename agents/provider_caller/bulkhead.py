"""Bulkheads: at most so many calls at once per provider, or per operation that declares its own.

The caller's ``max_in_flight`` bounds calls in all; without bulkheads a provider whose latency
balloons from 50 ms to 5 s would soon hold every one of those slots, and every other provider
served by the worker would wait behind it (Little's law: at the same arrival rate it holds a
hundred times the calls). A bulkhead caps its share (resilience4j's semaphore Bulkhead).
A request waiting for its bulkhead has not called yet: a revocation cancels it unsent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streams.metrics import LabelledCache, Metrics

# The bulkhead of a request: its name ("provider" or "provider.operation") and its size.
BulkheadFor = Callable[[str, str], tuple[str, int]]


class Bulkheads:
    """One semaphore per bulkhead name, made on first use."""

    def __init__(
        self, bulkhead_for: BulkheadFor, metrics: Metrics, *, max_in_flight: int | None = None
    ) -> None:
        """Args:
        max_in_flight: the caller's bound on all calls: a bulkhead at least that large can
            never bind, and is skipped (no semaphore on the call's path).
        """
        self._bulkhead_for = bulkhead_for
        self._unbounded_at = max_in_flight
        self._by_call: dict[tuple[str, str], asyncio.Semaphore | None] = {}
        self._by_name: dict[str, asyncio.Semaphore] = {}
        self._waits = LabelledCache(metrics.bulkhead_waits)  # by bulkhead name
        self._names: dict[asyncio.Semaphore, str] = {}

    def slot(self, provider: str, operation: str) -> asyncio.Semaphore | None:
        """The semaphore a call of ``provider.operation`` holds while it runs; None when its
        bulkhead cannot bind."""
        call = (provider, operation)
        if call in self._by_call:
            found = self._by_call[call]
        else:
            found = self._by_call[call] = self._make(provider, operation)
        if found is None:
            return None
        if found.locked():  # full: this call waits for one of the provider's own to finish
            self._waits[self._names[found]].inc()
        return found

    def _make(self, provider: str, operation: str) -> asyncio.Semaphore | None:
        name, size = self._bulkhead_for(provider, operation)
        if self._unbounded_at is not None and size >= self._unbounded_at:
            return None
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = asyncio.Semaphore(size)
            self._names[found] = name
        return found
