"""The response cache as the caller sees it: look a request up, answer from an entry, keep an
answer, coalesce concurrent misses (issue 23; README "Response cache").

A request is cacheable when its operation declares ``cache``. Its key (``key.py``) names the
provider, the operation and the canonical parameters, scoped by tenant unless the operation is
shared. The caller asks ``lookup`` once the request is valid and on the partition that owns its
limit key (that partition owns its entries too), before it spends anything:

- a fresh entry is the answer (``cached``): no token, no quota, no call;
- within stale-while-revalidate it is the answer too (``stale``), and one call refreshes it;
- otherwise the request calls, as one flight per key (``flights.py``): conditionally when the
  entry has validators (a ``304`` refreshes it without a body), and an entry still within
  stale-if-error answers (``stale``) if the provider cannot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from agents.cache.access import AccessLog
from agents.cache.entry import CachedResponse, from_reply
from agents.cache.flights import Flights
from agents.cache.freshness import (
    Freshness,
    Lifetime,
    conditional_headers,
    freshness,
    lifetime,
)
from agents.cache.key import cache_key
from agents.cache.tiers import CacheTiers
from agents.outcomes import result
from providers.auth.request import PreparedRequest
from providers.declaration import CacheSpec, OperationSpec
from providers.response import ProviderReply
from schemas.models import AccessKind, RequestEvent, ResultEvent, ResultStatus
from streams.metrics import LabelledCache, Metrics

# The tiers a result names beside l1 and l2.
COALESCED, REVALIDATED = "coalesced", "revalidated"


class Keyed(NamedTuple):
    """A cacheable request's key and its operation's cache declaration."""

    key: bytes
    spec: CacheSpec

    @property
    def shard_basis(self) -> str:
        """What picks the request's shard of a sharded provider: its key, so every request
        for one entry goes to the one partition that owns it."""
        return self.key.hex()


class Lookup(NamedTuple):
    """What the cache holds for one cacheable request."""

    key: bytes
    spec: CacheSpec
    entry: CachedResponse | None = None
    tier: str | None = None
    state: Freshness = Freshness.EXPIRED

    @property
    def usable_if_error(self) -> bool:
        """Whether the entry may answer when the provider cannot (within stale-if-error)."""
        return self.entry is not None and self.state is not Freshness.EXPIRED


class ResponseCache:
    """Lookups, answers and fills over the tiers; one per worker (one event loop)."""

    def __init__(
        self,
        operations: Mapping[tuple[str, str], OperationSpec],
        tiers: CacheTiers,
        metrics: Metrics,
        *,
        max_entry_bytes: int,
        clock: Callable[[], float] = time.time,
        access: AccessLog | None = None,
    ) -> None:
        """Args:
        operations: every active operation by (provider, operation); those declaring
            ``cache`` are cached.
        max_entry_bytes: answers larger than this are passed on, not kept.
        clock: epoch seconds.
        access: where hits, fills and prefetch refreshes are told to the predictive cache
            (None: nowhere).
        """
        self._cacheable = {
            name: (op, op.cache) for name, op in operations.items() if op.cache is not None
        }
        self.tiers = tiers
        self.flights = Flights()
        self._max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._hits = {
            tier: LabelledCache(metrics.cache_lookups, tier, "hit") for tier in ("l1", "l2")
        }
        self._misses = {
            tier: LabelledCache(metrics.cache_lookups, tier, "miss") for tier in ("l1", "l2")
        }
        self._metrics = metrics
        self._access = access
        # Keys a prefetch refreshed that no request has read since: used or wasted.
        self._unread_prefetches: set[bytes] = set()

    def key_of(self, request: RequestEvent) -> Keyed | None:
        """The request's cache key; None when its operation is not cacheable."""
        declared = self._cacheable.get((request.provider, request.operation))
        if declared is None:
            return None
        operation, spec = declared
        return Keyed(cache_key(request, operation, spec), spec)

    def lookup(self, request: RequestEvent, partition: int, keyed: Keyed) -> Lookup:
        """What the tiers hold for the request (``partition`` owns its key)."""
        key, spec = keyed
        found = self.tiers.get(partition, key)
        provider = request.provider
        if found is None:
            self._misses["l1"][provider].inc()
            if self.tiers.has_l2:
                self._misses["l2"][provider].inc()
            return Lookup(key, spec)
        entry, tier = found
        state = freshness(entry.life, self._clock())
        if tier == "l2":
            self._misses["l1"][provider].inc()
        if state is Freshness.FRESH or state is Freshness.STALE_REVALIDATE:
            self._hits[tier][provider].inc()
        else:
            self._misses[tier][provider].inc()
        return Lookup(key, spec, entry, tier, state)

    def peek(self, partition: int, keyed: Keyed) -> Lookup:
        """What the tiers hold, for a prefetch: counted nowhere, not a use of the entry."""
        found = self.tiers.peek(partition, keyed.key)
        if found is None:
            return Lookup(keyed.key, keyed.spec)
        entry, tier = found
        return Lookup(keyed.key, keyed.spec, entry, tier, freshness(entry.life, self._clock()))

    def answer(
        self,
        request: RequestEvent,
        entry: CachedResponse,
        *,
        key: bytes,
        tier: str,
        status: ResultStatus = ResultStatus.CACHED,
        reason: str | None = None,
    ) -> ResultEvent:
        """The request's result from ``entry`` (``cached``, or ``stale`` with the reason)."""
        now = self._clock()
        if status is ResultStatus.STALE:
            why = "revalidate" if reason is None else "error"
            self._metrics.cache_stale.labels(request.provider, why).inc()
        if self._unread_prefetches and key in self._unread_prefetches:
            self._unread_prefetches.discard(key)
            self._metrics.prefetch_used.labels(request.provider).inc()
        # A revalidated answer is the request's own fetch (its fill is told already), not a
        # read of what an earlier fetch brought: the predictive cache must not see it twice.
        if self._access is not None and tier != REVALIDATED:
            expires_ms = int(entry.life.fresh_until * 1000)
            self._access.record(
                key, AccessKind.HIT, at_ms=int(now * 1000), expires_at_ms=expires_ms
            )
        return result(
            request,
            status,
            now_ms=int(now * 1000),
            provider_used=entry.provider,
            http_status=entry.status,
            body=entry.body,
            content_type=entry.headers.get("content-type"),
            headers=entry.headers,
            cache_tier=tier,
            cache_age_ms=int(entry.age_s(now) * 1000),
            reason=reason,
        )

    def conditional(self, look: Lookup, prepared: PreparedRequest) -> PreparedRequest:
        """The request with ``If-None-Match`` / ``If-Modified-Since`` from the entry's
        validators, so an unchanged answer comes back as a bodiless ``304``."""
        if look.entry is None:
            return prepared
        validators = conditional_headers(look.entry.headers)
        return prepared.with_headers(validators) if validators else prepared

    def keep(
        self,
        request: RequestEvent,
        partition: int,
        look: Lookup,
        reply: ProviderReply,
        *,
        raw: bytes | None = None,
    ) -> CachedResponse | None:
        """Keep the provider's answer (or refresh the entry on a 304); the entry that answers
        the request now, or None when the answer is not cached (then answer from ``reply``).

        Args:
            raw: the request's record bytes, told to the predictive cache with the fill (what
                a prefetch sends again); a prefetch's own passes None.
        """
        now = self._clock()
        provider = request.provider
        if reply.status == 304:
            if look.entry is None:  # the caller's own conditional request: not ours to keep
                return None
            life = lifetime(look.spec, {**look.entry.headers, **reply.headers}, now=now)
            if life is None:  # the provider forbids keeping it now: answer once, then forget
                self.tiers.drop(partition, look.key)
                self._not_stored(provider, "no_store")
                return look.entry.revalidated(reply.headers, look.entry.life, now)
            self._metrics.cache_revalidations.labels(provider, "not_modified").inc()
            entry = look.entry.revalidated(reply.headers, life, now)
            self._store(request, partition, look.key, entry, raw)
            return entry
        if look.entry is not None and "if-none-match" not in request.headers:
            self._metrics.cache_revalidations.labels(provider, "modified").inc()
        if reply.status != 200:
            self._not_stored(provider, "status")
            return None
        life = lifetime(look.spec, reply.headers, now=now)
        if life is None:
            self.tiers.drop(partition, look.key)
            reason = "private" if look.spec.shared and _private(reply.headers) else "no_store"
            self._not_stored(provider, reason)
            return None
        entry = from_reply(reply, life, now)
        if entry.size > self._max_entry_bytes:
            self._not_stored(provider, "too_large")
            return None
        self._store(request, partition, look.key, entry, raw)
        return None

    def _store(
        self,
        request: RequestEvent,
        partition: int,
        key: bytes,
        entry: CachedResponse,
        raw: bytes | None,
    ) -> None:
        self.tiers.put(partition, key, entry)
        unread = self._unread_prefetches
        if key in unread:  # refreshed again before anyone read the prefetched copy
            unread.discard(key)
            self._metrics.prefetch_wasted.labels(request.provider).inc()
        if request.prefetch:
            unread.add(key)
        if self._access is not None:
            kind = AccessKind.PREFETCH if request.prefetch else AccessKind.FILL
            at_ms, expires_ms = int(entry.stored_at * 1000), int(entry.life.fresh_until * 1000)
            self._access.record(key, kind, at_ms=at_ms, expires_at_ms=expires_ms, request=raw)

    def shared_answer(
        self, request: RequestEvent, partition: int, look: Lookup, reply: ProviderReply
    ) -> ResultEvent:
        """The result of a request that waited for another's call of its key: that call's
        answer (or, after a 304, the entry it confirmed), as this request's own."""
        now = self._clock()
        if reply.status == 304 and look.entry is not None:
            found = self.tiers.get(partition, look.key)
            entry = found[0] if found is not None else look.entry
        else:
            entry = from_reply(reply, Lifetime(now, now, now), now)
        return self.answer(request, entry, key=look.key, tier=COALESCED)

    def prefetch_called(self, provider: str, result: str) -> None:
        self._metrics.prefetch_calls.labels(provider, result).inc()

    def prefetch_skipped(self, provider: str, reason: str) -> None:
        self._metrics.prefetch_skipped.labels(provider, reason).inc()

    def refresh_failed(self, provider: str) -> None:
        self._metrics.cache_revalidations.labels(provider, "failed").inc()

    def coalesced(self, provider: str) -> None:
        self._metrics.cache_coalesced.labels(provider).inc()

    def _not_stored(self, provider: str, reason: str) -> None:
        self._metrics.cache_not_stored.labels(provider, reason).inc()


def _private(headers: Mapping[str, str]) -> bool:
    return "private" in headers.get("cache-control", "").lower()
