"""Request coalescing: concurrent misses of one cache key make one provider call (issue 23).

The first miss of a key leads a flight: it calls the provider and lands the flight with the
outcome. Misses of the same key while it is in the air join it and get that outcome, each
then making its own result (request id, status). A flight lands once; later misses lead anew.

    flight = flights.lead(key)
    if flight is None:
        outcome = await flights.join(key)     # the leader's reply, error, or None
    else:
        with flight:                          # lands None if the call raises or is cancelled
            reply = await call()
            flight.land(reply)

A waiter that gets None (the leader did not call: refused, delayed past its deadline,
cancelled) goes on its own, and so may lead the next flight. ``join`` has no timeout of its
own: a waiter with a deadline wraps it in ``asyncio.timeout``, which leaves the flight alone.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TypeAlias

from providers.response import ProviderReply

__all__ = ["Flight", "Flights", "Outcome"]

# What a flight lands with: the provider's reply, the call's error, or None (no call made).
Outcome: TypeAlias = ProviderReply | BaseException | None


class Flight:
    """One provider call in the air for a key; its leader must land it (``land``, or ``with``)."""

    __slots__ = ("_flights", "_future", "_waiting", "key", "landed")

    def __init__(self, flights: dict[bytes, Flight], key: bytes) -> None:
        self._flights = flights
        self.key = key
        self.landed = False
        # One future shared by every waiter, made by the first (most flights have none).
        self._future: asyncio.Future[Outcome] | None = None
        self._waiting = 0

    def __repr__(self) -> str:
        state = "landed" if self.landed else "in the air"
        return f"Flight(key={self.key!r}, {state}, waiting={self._waiting})"

    def land(self, outcome: Outcome) -> None:
        """End the flight: every waiter gets ``outcome``; a second landing is a no-op."""
        if self.landed:
            return
        self.landed = True
        if self._flights.get(self.key) is self:
            del self._flights[self.key]  # the next miss of the key leads a new flight
        if self._future is not None and not self._future.done():
            self._future.set_result(outcome)

    def __enter__(self) -> Flight:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A leader that raised, was cancelled or forgot: waiters must not wait forever, and
        # must not take the leader's own failure (a bug, a cancellation) as the provider's.
        self.land(None)

    def _wait(self) -> asyncio.Future[Outcome]:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future


class Flights:
    """The flights in the air, by cache key. One per event loop; not thread-safe."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[bytes, Flight] = {}

    def __len__(self) -> int:
        """Flights in the air."""
        return len(self._flights)

    def __repr__(self) -> str:
        return f"Flights(in_air={len(self._flights)})"

    def lead(self, key: bytes) -> Flight | None:
        """A new flight for ``key``, which the caller then leads; None when one is in the air."""
        if key in self._flights:
            return None
        flight = self._flights[key] = Flight(self._flights, key)
        return flight

    async def join(self, key: bytes) -> Outcome:
        """The outcome of the flight in the air for ``key`` (None at once when there is none).

        Shielded: cancelling a waiter cancels neither the flight nor the other waiters.
        """
        flight = self._flights.get(key)
        if flight is None:
            return None
        flight._waiting += 1
        try:
            return await asyncio.shield(flight._wait())
        finally:
            flight._waiting -= 1

    def waiting(self, key: bytes) -> int:
        """Waiters on the flight in the air for ``key`` (0 when there is none)."""
        flight = self._flights.get(key)
        return 0 if flight is None else flight._waiting
