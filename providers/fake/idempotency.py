"""Stored responses of POSTs by Idempotency-Key, replayed on repeats (Stripe semantics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredResponse:
    # Hash of method, target and body: a key reused with other parameters is a conflict.
    fingerprint: int
    status: int
    body: bytes
    content_type: str


class IdempotencyStore:
    """Completed 2xx responses by key, plus the keys whose first request is still running."""

    __slots__ = ("in_flight", "responses")

    def __init__(self) -> None:
        self.responses: dict[str, StoredResponse] = {}
        self.in_flight: set[str] = set()

    def clear(self) -> None:
        self.responses.clear()
        self.in_flight.clear()
