"""The waiting room's gate over a mapping of buckets: spend a token only when a call can go now."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from agents.rate_limiter.bucket import Bucket, LimitPolicy, fresh_after_handover, take

__all__ = ["BucketGate"]


class BucketGate:
    """Adapts `bucket.take` to `waiting_room.Gate` for any mapping of limit key to Bucket.

    The mapping may be a dict in tests or the partition's table in the runtime. The gate never
    reserves ahead: the waiting room holds the waiting calls and decides their order, so a slot
    is spent only at the moment a call is released.
    """

    def __init__(
        self,
        buckets: MutableMapping[str, Bucket],
        policy_for: Callable[[str], LimitPolicy],
    ) -> None:
        self._buckets = buckets
        self._policy_for = policy_for

    def __repr__(self) -> str:
        return f"BucketGate(keys={len(self._buckets)})"

    def try_take(self, key: str, cost: int, now: float) -> float:
        """Spend `cost` tokens and return 0.0, or spend nothing and return the wait."""
        policy = self._policy_for(key)
        bucket = self._buckets.get(key)
        if bucket is None:
            # No record on this owner: it may have just taken the key over, so start empty,
            # and keep that start, or every later try would restart the refill.
            bucket = self._buckets[key] = fresh_after_handover(now=now, policy=policy)
        new, wait = take(bucket, now=now, policy=policy, cost=cost, max_wait_s=0.0)
        if new is not bucket:
            self._buckets[key] = new
        return wait
