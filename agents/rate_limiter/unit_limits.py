"""Units limits (tokens per minute) per limit key: reserve a call's estimate, settle its answer.

The pure core is ``units.py``; this holds one units bucket per limit key of each partition the
worker owns, the operations' estimators and readers, and the reservations of calls in flight.
A request that spends units waits here, after its request token, until its estimate fits the
key's units bucket (or its deadline passes); the caller settles the reservation with the units
the answer reports, or with none when the call never reached the provider.

Buckets live in memory, as the request buckets do: a new owner starts empty and refilling
(``fresh_after_handover``), since the old owner may have spent units it never wrote down.

An answer that reports the provider's remaining units (the rate-limit dimension named as the
declared ``limits.units``, e.g. ``tokens``: ``x-ratelimit-remaining-tokens``) lowers the key's
bucket to them, less what our calls in flight have reserved (``units.observe_headers``): units
another client of the same API key spent are then waited for, not refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping

from agents.rate_limiter.bucket import LimitPolicy, fresh_after_handover, shard
from agents.rate_limiter.units import (
    Reservation,
    UnitEstimator,
    UnitsBucket,
    UnitsReader,
    observe_headers,
    reserve,
    settle,
    units_policy,
)
from providers.declaration import ProviderSpec
from providers.response import ProviderReply, RateLimitInfo
from schemas.models import RequestEvent
from streams.metrics import Metrics

__all__ = ["UnitLimits"]


class UnitLimits:
    """Units buckets of the providers that declare ``limits.units``, per partition and key."""

    def __init__(
        self,
        specs: Mapping[str, ProviderSpec],
        shards_of: Callable[[str], int],
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        jitter_s: float = 0.05,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._policies: dict[str, LimitPolicy] = {}
        # Provider -> (its units' dimension name, the shards of its key): for ``observe``.
        self._dimensions: dict[str, tuple[str, int]] = {}
        self._readers: dict[tuple[str, str], UnitsReader] = {}
        for name, spec in specs.items():
            units = spec.limits.units
            if units is None:
                continue
            shards = shards_of(name)
            self._policies[name] = shard(units_policy(units, jitter_s=jitter_s), shards)
            self._dimensions[name] = (units.name, shards)
            for op_name, op in spec.operations.items():
                if op.spends_units:
                    self._readers[(name, op_name)] = UnitsReader.for_operation(op)
        self._estimator = UnitEstimator.for_providers(
            {name: spec for name, spec in specs.items() if name in self._policies}
        )
        self._buckets: dict[int, dict[str, UnitsBucket]] = {}
        # Request id -> (partition, key, reservation): calls between reserve and settle.
        self._held: dict[str, tuple[int, str, Reservation]] = {}
        # Per (partition, key): set when a settle gives units back, so that waiters look again
        # before the bucket's own refill would let them (a refund can make room at once).
        self._room: dict[tuple[int, str], asyncio.Event] = {}

    def __bool__(self) -> bool:
        """Whether any provider limits units (else the caller never asks)."""
        return bool(self._readers)

    def spends(self, request: RequestEvent) -> bool:
        return (request.provider, request.operation) in self._readers

    def assign(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._buckets.setdefault(partition, {})

    def revoke(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for partition in gone:
            self._buckets.pop(partition, None)
        for room_key in [k for k in self._room if k[0] in gone]:
            self._room.pop(room_key).set()  # waiters wake, find the partition gone, cancel
        for request_id in [r for r, (p, _, _) in self._held.items() if p in gone]:
            del self._held[request_id]

    async def acquire(
        self, request: RequestEvent, partition: int, key: str, *, deadline_at: float | None
    ) -> bool:
        """Wait until the call's estimate fits ``key``'s units bucket and reserve it; False
        when ``deadline_at`` passes first (nothing reserved).

        Raises:
            asyncio.CancelledError: the partition was revoked while the request waited.
        """
        operation = (request.provider, request.operation)
        reader = self._readers[operation]
        estimate = self._estimator.estimate(
            operation, bound=reader.bound(request.body), body_bytes=len(request.body or b"")
        )
        policy = self._policies[request.provider]
        waited = False
        while True:
            buckets = self._buckets.get(partition)
            if buckets is None:
                raise asyncio.CancelledError  # revoked: the next owner reads it again
            now = self._clock()
            state = buckets.get(key)
            if state is None:
                state = UnitsBucket().with_bucket(fresh_after_handover(now=now, policy=policy))
            new, wait, held = reserve(state, now=now, policy=policy, units=estimate)
            if held is not None:
                buckets[key] = new
                self._held[request.request_id] = (partition, key, held)
                self._metrics.units_reserved.labels(key).inc(held.units)
                return True
            buckets.setdefault(key, state)
            if not waited:
                self._metrics.units_waits.labels(key).inc()
                waited = True
            if deadline_at is not None and now + wait > deadline_at:
                return False
            room = self._room.setdefault((partition, key), asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), wait)

    def settle(self, request: RequestEvent, reply: ProviderReply | None, *, reached: bool) -> None:
        """The call of ``request`` ended: ``reply`` says what it spent; without one, a call
        that may have reached the provider keeps its reservation (it may have been counted),
        one that did not gives it back."""
        held = self._held.pop(request.request_id, None)
        if held is None:
            return
        partition, key, reservation = held
        operation = (request.provider, request.operation)
        actual = reservation.units if reached else 0.0
        if reply is not None:
            seen = self._readers[operation].read(reply)
            if seen.actual is not None:
                actual = seen.actual
                self._estimator.observe(
                    operation,
                    seen.actual,
                    unbounded=seen.unbounded,
                    body_bytes=len(request.body or b""),
                )
                self._metrics.units_spent.labels(key).inc(seen.actual)
        buckets = self._buckets.get(partition)
        state = buckets.get(key) if buckets is not None else None
        if buckets is None or state is None:
            return  # revoked meanwhile: the next owner starts empty anyway
        policy = self._policies[request.provider]
        settled = settle(state, reservation, actual=actual, now=self._clock(), policy=policy)
        buckets[key] = settled
        if settled.full_at < state.full_at:  # units came back: the waiters look again
            room = self._room.pop((partition, key), None)
            if room is not None:
                room.set()

    def dimension(self, provider: str) -> str | None:
        """The rate-limit dimension that reports ``provider``'s units: the declared units
        limit's name (``tokens``); None when it limits no units."""
        found = self._dimensions.get(provider)
        return None if found is None else found[0]

    def observe(self, request: RequestEvent, partition: int, key: str, info: RateLimitInfo) -> None:
        """An answer's report of the provider's units (its units dimension): lower ``key``'s
        bucket to the units it says remain, less those our calls to the key still in flight
        have reserved, and keep it from being full before the provider's reset. Never raises
        the bucket. The count is the whole API key's: each of ``n`` shards takes an n-th.

        Only answers of operations that spend the units count: OpenAI reports each model's
        limit, and an embeddings answer's tokens are not the chat model's.

        Call it after settling the call that brought the answer (its units are then counted
        in the provider's remaining, not as in flight).
        """
        if (request.provider, request.operation) not in self._readers:
            return
        buckets = self._buckets.get(partition)
        state = buckets.get(key) if buckets is not None else None
        if buckets is None or state is None:
            return  # revoked, or no call reserved yet: the first starts the bucket empty
        remaining, reset_s = info.remaining, info.reset_after_s
        if remaining is None and reset_s is None:
            return
        _, shards = self._dimensions[request.provider]
        held = self._held.values()
        in_flight = sum(r.units for p, k, r in held if k == key and p == partition)
        buckets[key] = observe_headers(
            state,
            remaining=None if remaining is None else remaining / shards,
            reset_s=reset_s,
            now=self._clock(),
            policy=self._policies[request.provider],
            in_flight=in_flight,
        )

    def estimates(self) -> dict[str, float]:
        """The learned units per call of each operation (None until an answer), for /metrics."""
        out = {}
        for operation in self._readers:
            learned = self._estimator.learned(operation)
            if learned is not None and math.isfinite(learned):
                out[".".join(operation)] = learned
        return out
