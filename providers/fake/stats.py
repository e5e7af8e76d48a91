"""What the fake provider saw, for test assertions: calls per key, duplicates, 429s, peak rate,
304s and body bytes."""

from __future__ import annotations

from collections import deque
from typing import Any


class FakeStats:
    """Counters updated on the server's hot path (plain attribute and dict increments).

    A request's key is its ``Idempotency-Key`` header, else its ``X-Request-Id``. A *call* is a
    request that passed the rate limit and auth, i.e. reached the operation (including injected
    errors and idempotent replays); rejected ones are counted apart. Every answer of an API
    route, rejections included, counts by status and adds its body's size to ``body_bytes``.
    """

    __slots__ = (
        "_window",
        "arrivals",
        "auth_failures",
        "body_bytes",
        "calls_by_key",
        "calls_total",
        "idempotent_replays",
        "max_rate_1s",
        "not_modified",
        "rate_limited",
        "status_counts",
        "timeouts",
        "token_requests",
        "unkeyed_calls",
    )

    def __init__(self) -> None:
        self._window: deque[float] = deque()
        self.arrivals = 0
        self.calls_total = 0
        self.unkeyed_calls = 0
        self.calls_by_key: dict[str, int] = {}
        self.rate_limited = 0
        self.auth_failures = 0
        self.token_requests = 0
        self.idempotent_replays = 0
        self.timeouts = 0
        self.max_rate_1s = 0
        self.status_counts: dict[int, int] = {}
        # 304 answers (a revalidation that transferred no body), also in status_counts.
        self.not_modified = 0
        # Response body bytes sent by API routes (a 304 adds none).
        self.body_bytes = 0

    def arrival(self, now: float) -> None:
        """Count an API request as it arrives (before any limit) and track the 1 s peak."""
        self.arrivals += 1
        window = self._window
        window.append(now)
        horizon = now - 1.0
        while window[0] <= horizon:
            window.popleft()
        # Windows ending at an arrival are enough: any 1 s window holds at most that many.
        if len(window) > self.max_rate_1s:
            self.max_rate_1s = len(window)

    def call(self, key: str | None) -> int:
        """Count a call; return how many calls ``key`` has had, this one included (0: no key)."""
        self.calls_total += 1
        if key is None:
            self.unkeyed_calls += 1
            return 0
        count = self.calls_by_key.get(key, 0) + 1
        self.calls_by_key[key] = count
        return count

    def status(self, status: int, body_bytes: int = 0) -> None:
        """Count an answer by status, with the size of the body it sends."""
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        self.body_bytes += body_bytes
        if status == 304:
            self.not_modified += 1

    def calls_for(self, key: str) -> int:
        return self.calls_by_key.get(key, 0)

    @property
    def duplicate_keys(self) -> dict[str, int]:
        """Keys called more than once, with their call counts."""
        return {key: n for key, n in self.calls_by_key.items() if n > 1}

    @property
    def duplicates(self) -> int:
        """How many keys were called more than once."""
        return sum(1 for n in self.calls_by_key.values() if n > 1)

    @property
    def duplicate_calls(self) -> int:
        """Calls beyond the first per key."""
        return sum(n - 1 for n in self.calls_by_key.values() if n > 1)

    def snapshot(self, *, with_keys: bool = False, max_keys: int = 1000) -> dict[str, Any]:
        """JSON-ready view (``GET /_fake/stats``; ``?keys=1`` adds every key's count)."""
        duplicate_keys = dict(list(self.duplicate_keys.items())[:max_keys])
        out: dict[str, Any] = {
            "calls_total": self.calls_total,
            "arrivals": self.arrivals,
            "unique_keys": len(self.calls_by_key),
            "unkeyed_calls": self.unkeyed_calls,
            "duplicates": self.duplicates,
            "duplicate_calls": self.duplicate_calls,
            "duplicate_keys": duplicate_keys,
            "rate_limited": self.rate_limited,
            "auth_failures": self.auth_failures,
            "max_rate_1s": self.max_rate_1s,
            "token_requests": self.token_requests,
            "idempotent_replays": self.idempotent_replays,
            "timeouts": self.timeouts,
            "not_modified": self.not_modified,
            "body_bytes": self.body_bytes,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
        }
        if with_keys:
            out["calls_by_key"] = dict(self.calls_by_key)
        return out
