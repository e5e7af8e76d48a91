"""The retry planner of a worker: a failed call's next attempt, or why there is none.

The pure cores decide (``policy.decide``: backoff, Retry-After, attempts, time budget,
deadline, idempotency; ``budget``: retries at most a share of first calls per limit key); this
wires them to the providers' declarations, the clock, the random draw and the metrics.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

from agents.retry.budget import BudgetPolicy, RetryBudget
from agents.retry.policy import Failure, GiveUp, RetryAt, RetryPolicy, decide
from providers.base import Provider
from providers.errors import ProviderError, RateLimited
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
            retry_after_s=error.retry_after_s if isinstance(error, RateLimited) else None,
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
        if isinstance(verdict, RetryAt) and not self._budget.allow_retry(key, now):
            verdict = GiveUp(
                "retry_budget_exceeded",
                f"retries to {key} are over their budget ({self._settings.budget_ratio:g} "
                "of first calls)",
            )
        if isinstance(verdict, GiveUp):
            self._refused[request.provider, verdict.reason].inc()
        else:
            self._retries[request.provider, error.reason].inc()
        return verdict

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
