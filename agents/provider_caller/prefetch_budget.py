"""How many prefetch calls a limit key may make: a share of its calls for requests (issue 24).

A credit per limit key grows by ``share`` with each call made for a request and by
``min_per_s`` each second, up to ``burst``; a prefetch call spends one. So over any stretch the
prefetches of a key are at most ``share`` of its calls plus ``min_per_s`` a second, and a key
nobody asks for stops being refreshed. Like the retry budget (Envoy, Finagle), and for the same
reason: work nobody waits for must not crowd out work somebody does.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PrefetchBudget:
    """Credits per limit key; not thread-safe (one per worker loop)."""

    __slots__ = ("_burst", "_clock", "_credits", "_min_per_s", "_share")

    def __init__(
        self,
        share: float,
        min_per_s: float,
        *,
        burst: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._share = share
        self._min_per_s = min_per_s
        self._burst = max(1.0, burst)
        self._clock = clock
        # Limit key -> (credit, when it was last brought up to date).
        self._credits: dict[str, tuple[float, float]] = {}

    def called(self, key: str) -> None:
        """A call for a request was made: the key earns ``share``."""
        credit = self._current(key) + self._share
        self._credits[key] = (min(credit, self._burst), self._clock())

    def allows(self, key: str) -> bool:
        if key not in self._credits:  # the floor accrues from the key's first prefetch
            self._credits[key] = (0.0, self._clock())
        return self._current(key) >= 1.0

    def spend(self, key: str) -> None:
        self._credits[key] = (self._current(key) - 1.0, self._clock())

    def _current(self, key: str) -> float:
        credit, at = self._credits.get(key, (0.0, self._clock()))
        earned = (self._clock() - at) * self._min_per_s
        return min(credit + earned, self._burst)
