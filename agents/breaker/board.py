"""The breakers of a worker: one per limit key it serves, or per operation that declares its own.

The pure core (``state.py``) decides; this keeps each breaker's state, reads the clock, and
makes every change of mode a log line and a metric. A breaker belongs to the partition that
owns its limit key (issue 21): the owner of a key sees every call to it, so one state is right
for every request of the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from agents.breaker.state import (
    BreakerPolicy,
    BreakerState,
    CallResult,
    Permit,
    PermitKind,
    permit,
    record,
    snapshot,
)
from streams.metrics import Metrics

log = logging.getLogger(__name__)

_MODE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class BreakerBoard:
    """Breaker states by breaker key (``provider`` or ``provider#shard``, or a declared
    ``...:operation``), created closed on first use."""

    def __init__(
        self,
        policy_for: Callable[[str], BreakerPolicy],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        policy_for: the policy of a breaker key (memoized by the caller's composition).
        """
        self._policy_for = policy_for
        self._metrics = metrics
        self._clock = clock
        self._states: dict[str, BreakerState] = {}
        self._policies: dict[str, BreakerPolicy] = {}

    def permit(self, key: str) -> Permit:
        """Whether a call of ``key`` may go now (a CALL, or one of the half-open PROBEs);
        a refusal says when the breaker will let a call through (``retry_at``), if known."""
        state, policy = self._state(key)
        decided, after = permit(state, now=self._clock(), policy=policy)
        self._set(key, state, after)
        if decided.kind is PermitKind.REFUSE:
            self._metrics.breaker_refusals.labels(key).inc()
        return decided

    def is_open(self, key: str) -> float | None:
        """When an open breaker lets a call through again, or None when it is not open.

        A look that changes no state: refuse early, before a request waits for a token (a
        refusal, counted as such).
        """
        state = self._states.get(key)
        if state is None or state.mode != "open":
            return None
        until = state.opened_at + self._policy(key).wait_in_open_s
        if until <= self._clock():
            return None  # due to half-open: the next permit() lets a probe through
        self._metrics.breaker_refusals.labels(key).inc()
        return until

    def record(self, key: str, result: CallResult, duration_s: float, *, probe: bool) -> None:
        """The outcome of a call ``permit`` let through (every PROBE exactly once)."""
        state, policy = self._state(key)
        after = record(
            state, result, duration_s=duration_s, now=self._clock(), policy=policy, probe=probe
        )
        self._set(key, state, after)

    def snapshots(self) -> Iterator[tuple[str, dict[str, object]]]:
        """Every breaker as an operator sees it now."""
        now = self._clock()
        for key, state in sorted(self._states.items()):
            yield key, dict(snapshot(state, now=now, policy=self._policy(key)))

    def _state(self, key: str) -> tuple[BreakerState, BreakerPolicy]:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = BreakerState()
            self._metrics.breaker_state.labels(key).set(0)
        return state, self._policy(key)

    def _policy(self, key: str) -> BreakerPolicy:
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = self._policy_for(key)
        return policy

    def _set(self, key: str, before: BreakerState, after: BreakerState) -> None:
        if after is before:
            return
        self._states[key] = after
        if after.mode != before.mode:
            self._metrics.breaker_transitions.labels(key, after.mode).inc()
            self._metrics.breaker_state.labels(key).set(_MODE_VALUE[after.mode])
            level = logging.WARNING if after.mode == "open" else logging.INFO
            log.log(level, "breaker %s: %s -> %s", key, before.mode, after.mode)
