"""The retry planner of a worker: a failed call's next attempt, or why there is none.

The pure cores decide (``policy.decide``: backoff, Retry-After, attempts, time budget,
deadline, idempotency; ``budget``: retries at most a share of first calls per limit key); this
wires them to the providers' declarations, the clock, the random draw and the metrics.

The budget is spent when a retry is about to be sent (``spend``), not when it is planned: a
retry over the budget is deferred, behind the others of its key already deferred, to when the
budget's floor (``retry.budget_min_per_s``) earns it a place, and gives up
(``retry_budget_exceeded``) only when that is past its time budget or deadline. So a failing
provider sees retries at no more than the budget's rate, and a burst of failures that the
provider asks to retry later (503 + Retry-After) is retried in full, spread out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

from agents.retry.budget import BudgetPolicy, RetryBudget
from agents.retry.policy import Failure, GiveUp, RetryAt, RetryPolicy, decide
from providers.base import Provider
from providers.errors import ProviderError, RetriableError
from schemas.models import AttemptRecord, RequestEvent
from streams.metrics import LabelledCache, Metrics
from streams.settings import RetrySettings

__all__ = ["GiveUp", "RetryAt", "RetryPlanner"]


class RetryPlanner:
    """Plans retries for the providers a worker serves."""

    def __init__(
        self,
        settings: RetrySettings,
        providers: Mapping[str, Provider],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self._clock = clock
        self._draw = draw
        self._budget = RetryBudget(
            BudgetPolicy(ratio=settings.budget_ratio, min_per_s=settings.budget_min_per_s)
        )
        # Per (provider, operation): the policy and whether a retry is safe once the call may
        # have reached the provider. Bounded by the declared operations.
        self._policies: dict[tuple[str, str], tuple[RetryPolicy, bool]] = {}
        self._retries = LabelledCache(metrics.retries)  # by (provider, reason)
        self._refused = LabelledCache(metrics.retries_refused)  # by (provider, reason)
        # Per limit key: retries deferred by the budget and not yet back (an estimate: a
        # handover or a crash forgets them, which only makes the next deferrals shorter).
        self._deferred: dict[str, int] = {}

    def first_call(self, key: str) -> None:
        """A first attempt goes to limit key ``key``: it earns the key a share of a retry."""
        self._budget.record_call(key, self._clock())

    def plan(
        self,
        request: RequestEvent,
        error: ProviderError,
        attempts: Sequence[AttemptRecord],
        key: str,
    ) -> RetryAt | GiveUp:
        """When to try ``request`` again after ``error``, or why not.

        Args:
            attempts: this run's attempts, the failed one last (a replayed dead letter starts
                a new run: its request's ``attempt`` keeps counting, the history does not).
            key: the request's limit key, whose retry budget pays for the retry.
        """
        policy, safe = self._policy_for(request)
        now = self._clock()
        failure = Failure(
            reason=error.reason,
            retriable=error.retriable,
            may_have_reached=error.may_have_reached,
            retry_after_s=error.retry_after_s if isinstance(error, RetriableError) else None,
        )
        first_at = attempts[0].started_at_ms / 1000 if attempts else now
        verdict = decide(
            failure,
            attempt=max(1, len(attempts)),
            first_attempt_at_s=first_at,
            now_s=now,
            deadline_s=request.deadline_s,
            policy=policy,
            safe_to_retry=safe,
            draw=self._draw(),
        )
        if isinstance(verdict, GiveUp):
            self._refused[request.provider, verdict.reason].inc()
        else:
            self._retries[request.provider, error.reason].inc()
        return verdict

    def spend(
        self,
        request: RequestEvent,
        attempts: Sequence[AttemptRecord],
        key: str,
        *,
        was_deferred: bool,
    ) -> RetryAt | GiveUp | None:
        """A retry of ``key`` is due: None when the budget lets it go now; else when to ask
        again (deferred), or ``GiveUp`` when that would be past its time budget or deadline.

        Args:
            was_deferred: it comes back from a deferral by this method.
        """
        if was_deferred:
            _decrement(self._deferred, key)
        now = self._clock()
        if self._budget.allow_retry(key, now):
            return None
        rate = self._settings.budget_min_per_s
        behind = self._deferred.get(key, 0)
        # Where the floor will have earned this retry a place, spread so the deferred ones of
        # a key do not all come back at once.
        wait = (behind + 1) / rate * (0.5 + self._draw()) if rate > 0 else None
        policy, _ = self._policy_for(request)
        first_at = attempts[0].started_at_ms / 1000 if attempts else now
        deadline = request.deadline_s
        if (
            wait is None
            or now + wait > first_at + policy.time_budget_s
            or (deadline is not None and now + wait >= deadline)
        ):
            self._refused[request.provider, "retry_budget_exceeded"].inc()
            return GiveUp(
                "retry_budget_exceeded",
                f"retries to {key} are over their budget ({self._settings.budget_ratio:g} of "
                f"first calls + {rate:g}/s) until past the request's time budget or deadline",
            )
        self._deferred[key] = behind + 1
        self._refused[request.provider, "retry_budget_deferred"].inc()
        return RetryAt(wait)

    def _policy_for(self, request: RequestEvent) -> tuple[RetryPolicy, bool]:
        found = self._policies.get((request.provider, request.operation))
        if found is None:
            found = self._build(request.provider, request.operation)
            self._policies[request.provider, request.operation] = found
        return found

    def _build(self, provider_name: str, operation: str) -> tuple[RetryPolicy, bool]:
        settings = self._settings
        provider = self._providers.get(provider_name)
        spec = provider.spec.operations.get(operation) if provider is not None else None
        policy = RetryPolicy(
            max_attempts=(spec.max_attempts if spec and spec.max_attempts else None)
            or settings.max_attempts,
            base_delay_s=settings.base_delay_s,
            max_delay_s=settings.max_delay_s,
            time_budget_s=(spec.retry_time_budget_s if spec else None) or settings.time_budget_s,
        )
        # Safe to repeat once it may have reached the provider: idempotent by method or by
        # declaration, or sent with an idempotency key the provider honours.
        honours_key = provider is not None and provider.spec.idempotency_header is not None
        safe = spec is not None and (spec.is_idempotent or honours_key)
        return policy, safe


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
