"""Whether and when to retry one failed provider call: a pure decision, time passed in."""

# Full-jitter backoff (AWS Architecture Blog, "Exponential Backoff and Jitter"): the wait is
# drawn uniformly from [0, cap), so callers that failed together do not retry together. The
# random draw is an argument, as `now` is, so every decision can be replayed in a test.

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Failure", "GiveUp", "RetryAt", "RetryPolicy", "backoff_s", "decide"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one call: attempts, backoff and a wall-clock budget."""

    max_attempts: int = 7  # the first call included; 1 = never retry
    base_delay_s: float = 0.2  # full-jitter exponential backoff base
    max_delay_s: float = 30.0  # cap on one backoff
    time_budget_s: float = 120.0  # no attempt starts later than this after the first one started

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("base_delay_s", "max_delay_s", "time_budget_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if self.base_delay_s > self.max_delay_s:
            raise ValueError(
                f"base_delay_s {self.base_delay_s} must not exceed max_delay_s {self.max_delay_s}"
            )


class Failure(NamedTuple):
    """What the caller knows about one failed attempt."""

    reason: str  # e.g. "timeout", "unavailable", "rate_limited"
    retriable: bool
    may_have_reached: bool  # False when the provider surely did not act on it (refused, 429)
    retry_after_s: float | None  # the provider's wait (clamped by the provider layer), or None


class RetryAt(NamedTuple):
    """Try again after `delay_s` seconds from now."""

    delay_s: float


class GiveUp(NamedTuple):
    """Stop: `reason` is for code and metrics, `detail` one line for people."""

    # decide() gives "permanent" | "unsafe_to_retry" | "retries_exhausted"; a plain str so
    # callers can add their own (a retry budget's refusal) without a second type.
    reason: str
    detail: str


def backoff_s(attempt: int, policy: RetryPolicy, draw: float) -> float:
    """Full jitter: `draw * min(max_delay, base * 2**(attempt-1))`, with `draw` in [0, 1).

    The draw is passed in so the function stays pure; `attempt` is the attempt that failed.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    return draw * _ceiling(attempt - 1, policy)


def decide(
    failure: Failure,
    *,
    attempt: int,
    first_attempt_at_s: float,
    now_s: float,
    deadline_s: float | None,
    policy: RetryPolicy,
    safe_to_retry: bool,
    draw: float,
) -> RetryAt | GiveUp:
    """Retry after a delay, or give up and say why.

    Args:
        failure: what went wrong with attempt number `attempt` (1 = the first call).
        first_attempt_at_s: when attempt 1 started; the time budget counts from there.
        now_s: the current time, on the same clock as the other instants.
        deadline_s: when the result stops being useful, or None; no attempt starts at or after it.
        safe_to_retry: the call is idempotent (a GET, or a POST with an idempotency key).
        draw: a uniform random number in [0, 1) for the jitter.

    Returns:
        `RetryAt(delay_s)`, never sooner than the provider's Retry-After and never landing past
        the time budget or at the deadline; otherwise `GiveUp`.
    """
    if not failure.retriable:
        return GiveUp("permanent", f"{failure.reason} is not retriable")
    if failure.may_have_reached and not safe_to_retry:
        # A non-idempotent call the provider may have acted on: a retry could do it twice.
        return GiveUp("unsafe_to_retry", f"{failure.reason}: may have reached the provider")
    if attempt >= policy.max_attempts:
        detail = f"{attempt} attempts made (max_attempts {policy.max_attempts})"
        return GiveUp("retries_exhausted", detail)
    delay = max(backoff_s(attempt, policy, draw), _provider_wait(failure.retry_after_s))
    start = now_s + delay
    if start > first_attempt_at_s + policy.time_budget_s:
        budget = policy.time_budget_s
        detail = f"next attempt {start - first_attempt_at_s:.3f}s in, past time_budget_s {budget}"
        return GiveUp("retries_exhausted", detail)
    if deadline_s is not None and start >= deadline_s:
        detail = f"next attempt in {delay:.3f}s, deadline in {deadline_s - now_s:.3f}s"
        return GiveUp("retries_exhausted", detail)
    return RetryAt(delay)


def _ceiling(exponent: int, policy: RetryPolicy) -> float:
    """`min(max_delay, base * 2**exponent)`, exact and overflow-free for any exponent.

    frexp gives x = m * 2**e with m in [0.5, 1). Past `max_e - base_e` doublings the product is
    at least 2**max_e > max_delay, so the cap applies without computing it; below that,
    ldexp stays under 2**1024 and cannot overflow.
    """
    _, base_e = math.frexp(policy.base_delay_s)
    _, max_e = math.frexp(policy.max_delay_s)
    if exponent > max_e - base_e:
        return policy.max_delay_s
    return min(policy.max_delay_s, math.ldexp(policy.base_delay_s, exponent))


def _provider_wait(retry_after_s: float | None) -> float:
    """The provider's wait as a floor on ours: None, NaN and negatives mean no floor.

    +inf is kept: the provider said "not in any useful time", and the time budget then gives up.
    """
    if retry_after_s is None or math.isnan(retry_after_s) or retry_after_s < 0:
        return 0.0
    return retry_after_s
