"""A retry budget per limit key: retries at most a share of first calls, plus a small floor."""

# As Finagle's RetryBudget and Envoy's retry budgets: per-call limits (max_attempts) do not
# stop a retry storm, since every failing call retries its full allowance just when the
# provider is struggling. A budget caps retries per key to `ratio` of the first calls (0.5:
# at most 1.5 provider calls per request overall), plus `min_per_s` so a quiet key can still
# retry its rare failure. Deposits decay with time constant `window_s`, so only recent
# traffic earns retries. The state is a NamedTuple and every function takes `now`.

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["BudgetPolicy", "BudgetState", "RetryBudget", "deposit", "fresh", "try_withdraw"]


class BudgetState(NamedTuple):
    """Retries currently allowed for one key, as of `updated_at`."""

    balance: float  # retries currently allowed
    updated_at: float  # seconds on any monotonic-ish clock the caller passes


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """How many retries a key earns: `ratio` per first call, `min_per_s` from the floor."""

    ratio: float = 0.5  # retries per first call
    min_per_s: float = 1.0  # floor: retries per second allowed even with no traffic
    window_s: float = 10.0  # time constant of the decay: older deposits stop counting

    def __post_init__(self) -> None:
        for name in ("ratio", "min_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 and finite, got {value}")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be positive and finite, got {self.window_s}")

    @property
    def floor_cap(self) -> float:
        """The most the floor alone can bank: `min_per_s * window_s`."""
        return self.min_per_s * self.window_s


def fresh(*, now: float, policy: BudgetPolicy) -> BudgetState:
    """The state of a key seen for the first time.

    One retry, not zero and not the whole floor bank. Zero would refuse the retry of the first
    failure after a restart, the common transient case; the full bank would hand every key a
    burst of retries whenever a worker restarts or a partition moves, often just when the
    provider is struggling. Capped by `floor_cap`, so the floor never banks more than it may.
    """
    return BudgetState(min(1.0, policy.floor_cap), now)


def deposit(state: BudgetState, *, now: float, policy: BudgetPolicy) -> BudgetState:
    """A first call was made: earn `ratio` retries (after decay and floor accrual)."""
    balance, at = _accrued(state, now=now, policy=policy)
    return BudgetState(balance + policy.ratio, at)


def try_withdraw(
    state: BudgetState, *, now: float, policy: BudgetPolicy
) -> tuple[bool, BudgetState]:
    """A retry wants to go: allowed (and one spent) if at least one whole retry is banked."""
    current = _accrued(state, now=now, policy=policy)
    if current.balance >= 1.0:
        return True, BudgetState(current.balance - 1.0, current.updated_at)
    return False, current


def _accrued(state: BudgetState, *, now: float, policy: BudgetPolicy) -> BudgetState:
    """The state at `now`: decayed by exp(-dt/window), then the floor's share added.

    The floor tops the balance up to `floor_cap` at most and never trims what deposits earned.
    A clock that steps back counts as no time passing, which can only be stricter.
    """
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now}")
    dt = max(0.0, now - state.updated_at)
    decayed = state.balance * math.exp(-dt / policy.window_s)
    topped = min(decayed + policy.min_per_s * dt, policy.floor_cap)
    return BudgetState(max(decayed, topped), max(now, state.updated_at))


@dataclass(slots=True)
class RetryBudget:
    """The mutable per-key holder a caller keeps: one `BudgetState` per limit key.

    Memory is one small tuple per key ever seen, never evicted. That is bounded because keys
    are limit keys (provider x shard, from the configured providers), a small fixed set, not
    request or tenant ids.
    """

    policy: BudgetPolicy = field(default_factory=BudgetPolicy)
    _states: dict[str, BudgetState] = field(default_factory=dict, init=False, repr=False)

    def record_call(self, key: str, now: float) -> None:
        """Count a first call to `key`."""
        self._states[key] = deposit(self._state(key, now), now=now, policy=self.policy)

    def allow_retry(self, key: str, now: float) -> bool:
        """Whether a retry to `key` may go now; spends one retry of the budget if so."""
        allowed, self._states[key] = try_withdraw(
            self._state(key, now), now=now, policy=self.policy
        )
        return allowed

    def _state(self, key: str, now: float) -> BudgetState:
        state = self._states.get(key)
        return fresh(now=now, policy=self.policy) if state is None else state
