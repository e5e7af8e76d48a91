"""Which limit and which quota a request falls under (pure, built once from settings)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from agents.rate_limiter.adaptive import Mode, RateControl
from agents.rate_limiter.bucket import LimitPolicy, shard
from agents.rate_limiter.quota import QuotaPolicy
from schemas.keys import parse_limit_key, request_limit_key


class QuotaRuleLike(Protocol):
    """A quota rule as settings give it (``streams.settings.QuotaRule`` fits)."""

    @property
    def tenant(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def per_second(self) -> int | None: ...
    @property
    def per_minute(self) -> int | None: ...
    @property
    def per_day(self) -> int | None: ...
    @property
    def on_exceed(self) -> Literal["reject", "queue"]: ...


@dataclass(frozen=True, slots=True)
class ProviderLimit:
    """A provider's declared limit, and how many shards share it."""

    rate_per_s: float
    burst: int
    shards: int = 1


class LimitBook:
    """Limit keys, per-key policies and per-tenant quotas, for the providers a worker serves."""

    def __init__(
        self,
        limits: Mapping[str, ProviderLimit],
        quotas: Iterable[QuotaRuleLike] = (),
        *,
        jitter_s: float = 0.05,
        weights: Mapping[str, float] | None = None,
        adaptive: RateControl | None = None,
    ) -> None:
        """Args:
        adaptive: how limit keys learn their real rate (its ``declared_per_s`` is replaced by
            each key's); None enforces the declared rates.
        """
        self._limits = dict(limits)
        self._adaptive = adaptive or RateControl(Mode.OFF, 1.0)
        self._controls: dict[str, RateControl] = {}
        # Tenant -> fair-share weight in the waiting room; a tenant not named weighs 1.
        self._weights = dict(weights or {})
        self._policies = {
            name: shard(LimitPolicy(limit.rate_per_s, limit.burst, jitter_s=jitter_s), limit.shards)
            for name, limit in self._limits.items()
        }
        # An unsharded provider's key is its name: built (and validated) once, not per request.
        self._unsharded = {
            name: request_limit_key(name, "", 1)
            for name, limit in self._limits.items()
            if limit.shards <= 1
        }
        # Limit key -> policy, filled on first use: keys are few (providers x credentials x
        # shards) and parsing one costs more than the token it decides on.
        self._key_policies: dict[str, LimitPolicy] = {}
        # Most specific first: exact tenant and provider, then either one, then neither.
        self._quotas = sorted(quotas, key=lambda rule: (rule.tenant == "*", rule.provider == "*"))

    def limit_key(self, provider: str, request_id: str) -> str:
        """The key a request spends tokens from (``provider`` or ``provider#shard``)."""
        key = self._unsharded.get(provider)
        if key is not None:
            return key
        return request_limit_key(provider, request_id, self.shards(provider))

    def shards(self, provider: str) -> int:
        limit = self._limits.get(provider)
        return limit.shards if limit else 1

    def policy_for(self, key: str) -> LimitPolicy:
        """The per-shard policy of a limit key."""
        policy = self._key_policies.get(key)
        if policy is None:
            policy = self._key_policies[key] = self._policies[parse_limit_key(key).provider]
        return policy

    def control_for(self, key: str) -> RateControl:
        """How the rate of a limit key may move around its declared (per-shard) rate."""
        control = self._controls.get(key)
        if control is None:
            declared = self.policy_for(key).rate_per_s
            control = self._controls[key] = replace(self._adaptive, declared_per_s=declared)
        return control

    def weight_for(self, tenant: str) -> float:
        """The tenant's share of a limit key's calls when several tenants wait on it."""
        return self._weights.get(tenant, 1.0)

    def quota_for(self, tenant: str, provider: str) -> QuotaPolicy | None:
        """The most specific quota rule matching the tenant and provider, split per shard."""
        for rule in self._quotas:
            if rule.tenant in ("*", tenant) and rule.provider in ("*", provider):
                return _per_shard(rule, self.shards(provider))
        return None


def _per_shard(rule: QuotaRuleLike, shards: int) -> QuotaPolicy:
    # Each shard has its own owner, so each enforces its share; flooring keeps the sum within
    # the quota (a quota smaller than the shard count leaves some shards with none).
    def share(limit: int | None) -> int | None:
        return None if limit is None else math.floor(limit / shards)

    return QuotaPolicy(
        per_second=share(rule.per_second),
        per_minute=share(rule.per_minute),
        per_day=share(rule.per_day),
        on_exceed=rule.on_exceed,
    )
