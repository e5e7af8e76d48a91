"""The enforced rate of each limit key a partition owns: its adaptive state and bucket policy.

The pure controller (``adaptive.py``) decides the rate; this keeps one ``RateState`` per key,
turns a changed rate into the ``LimitPolicy`` its bucket enforces, and says which states moved
enough to be written to the partition's quota table (so a restart or a new owner starts from
what was learned, not from the declared rate again).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace

from agents.rate_limiter.adaptive import (
    Mode,
    RateControl,
    RateState,
    grow,
    limit_from_headers,
    throttled,
)
from agents.rate_limiter.bucket import LimitPolicy

__all__ = ["RATE_KEY_PREFIX", "KeyRates", "rate_key"]

# Rate states share the quota table with quota counts (``tenant/limit_key``); a NUL cannot
# start a tenant name, so the two never collide.
RATE_KEY_PREFIX = b"\x00rate/"
# A policy is rebuilt when the rate moved more than this (a LimitPolicy is derived once, and
# the bucket's arithmetic runs per call).
_REBUILD_REL = 0.01
# A state is written again when its rate moved more than this since the last write, or on
# every decrease: a handover may lose up to this much of what was learned.
_PERSIST_REL = 0.05


def rate_key(key: str) -> bytes:
    return RATE_KEY_PREFIX + key.encode()


class KeyRates:
    """Per limit key of one partition: its rate state and the policy that enforces it."""

    def __init__(
        self,
        base_policy: Callable[[str], LimitPolicy],
        control_for: Callable[[str], RateControl],
        load: Callable[[str], RateState | None],
    ) -> None:
        """Args:
        base_policy: the key's declared (per-shard) policy.
        control_for: how the key's rate may move.
        load: the state a previous owner wrote for the key, if any.
        """
        self._base_policy = base_policy
        self._control_for = control_for
        self._load = load
        # Filled on a key's first use, so the hot path is one dict lookup.
        self._policies: dict[str, LimitPolicy] = {}
        self._states: dict[str, RateState] = {}
        self._persisted: dict[str, float] = {}

    def policy_for(self, key: str) -> LimitPolicy:
        policy = self._policies.get(key)
        if policy is None:
            policy = self._first_use(key)
        return policy

    def state(self, key: str) -> RateState | None:
        return self._states.get(key)

    def states(self) -> dict[str, RateState]:
        return dict(self._states)

    def throttled(self, key: str, *, now: float, sent_at: float) -> bool:
        """A 429 for a call sent at ``sent_at``; True when it cut the key's rate."""
        state = self._state(key)
        if state is None:
            return False
        new = throttled(state, self._control_for(key), now=now, sent_at=sent_at)
        return self._set(key, new) if new is not state else False

    def headers(self, key: str, *, limit: int, window_s: float) -> None:
        """The provider's own ``limit`` per ``window_s``: the key's ceiling."""
        state = self._state(key)
        if state is not None:
            self._set(key, limit_from_headers(state, self._control_for(key), limit=limit,
                                              window_s=window_s))  # fmt: skip

    def grow(self, keys: Iterable[str], backlogged_s: float) -> None:
        """The ``keys`` had calls waiting for ``backlogged_s`` seconds: probe upward."""
        for key in keys:
            state = self._state(key)
            if state is not None:
                self._set(key, grow(state, self._control_for(key), backlogged_s=backlogged_s))

    def to_persist(self) -> list[tuple[str, RateState]]:
        """States that moved enough since they were last written (then marked written)."""
        out = []
        for key, state in self._states.items():
            written = self._persisted.get(key)
            if written is None or not math.isclose(written, state.rate_per_s, rel_tol=_PERSIST_REL):
                self._persisted[key] = state.rate_per_s
                out.append((key, state))
        return out

    def _state(self, key: str) -> RateState | None:
        """The key's state (None when adaptation is off)."""
        state = self._states.get(key)
        if state is None:
            self.policy_for(key)
            state = self._states.get(key)
        return state

    def _first_use(self, key: str) -> LimitPolicy:
        base = self._base_policy(key)
        control = self._control_for(key)
        if control.mode is Mode.OFF:
            self._policies[key] = base
            return base
        restored = self._load(key)
        state = control.start() if restored is None else _within(restored, control)
        self._states[key] = state
        if restored is not None:
            self._persisted[key] = state.rate_per_s
        policy = self._policies[key] = _policy_at(base, state.rate_per_s)
        return policy

    def _set(self, key: str, state: RateState) -> bool:
        """Keep ``state``; rebuild the key's policy if its rate moved enough. True if a cut."""
        old = self._states[key]
        self._states[key] = state
        policy = self._policies[key]
        if not math.isclose(policy.rate_per_s, state.rate_per_s, rel_tol=_REBUILD_REL):
            self._policies[key] = _policy_at(self._base_policy(key), state.rate_per_s)
        if state.decreased_at != old.decreased_at:
            self._persisted.pop(key, None)  # a cut is always written
            return True
        return False


def _policy_at(base: LimitPolicy, rate_per_s: float) -> LimitPolicy:
    """The declared policy at another rate; its burst scaled alike (the provider's real burst
    is unknown, and a full declared burst at a learned lower rate would be refused)."""
    if rate_per_s == base.rate_per_s:
        return base
    burst = max(1, math.floor(base.burst * rate_per_s / base.rate_per_s))
    return LimitPolicy(rate_per_s, burst, base.jitter_s)


def _within(state: RateState, control: RateControl) -> RateState:
    """A restored state within today's bounds (the declared rate or settings may have changed)."""
    ceiling = min(max(state.ceiling_per_s, control.floor_per_s), control.highest_per_s)
    rate = min(max(state.rate_per_s, control.floor_per_s), ceiling)
    if (rate, ceiling) == (state.rate_per_s, state.ceiling_per_s):
        return state
    return replace(state, rate_per_s=rate, ceiling_per_s=ceiling)
