"""A strict token bucket on arrival time: the fake provider's own rate limit (mutable)."""

from __future__ import annotations

import math


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; each admitted request spends one.

    Starts full. ``now`` is any monotonic clock in seconds.
    """

    __slots__ = ("burst", "rate_per_s", "tokens", "updated_at")

    def __init__(self, *, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated_at = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens if there are; return 0.0, else the seconds until there are."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate_per_s

    def remaining(self) -> int:
        return int(self.tokens)

    def seconds_until_full(self, now: float) -> float:
        self._refill(now)
        return (self.burst - self.tokens) / self.rate_per_s

    def reset(self, now: float) -> None:
        self.tokens = float(self.burst)
        self.updated_at = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated_at
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
            self.updated_at = now

    def __repr__(self) -> str:
        return f"TokenBucket(tokens={self.tokens:.3f}/{self.burst}, rate_per_s={self.rate_per_s})"


def whole_seconds(seconds: float) -> int:
    """Delay-seconds for Retry-After (RFC 9110 §10.2.3): rounded up, so waiting it suffices."""
    return max(1, math.ceil(seconds - 1e-9))
