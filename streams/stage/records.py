"""What a stage reads and what it decides: the source record, its outcome, or a forward."""

from __future__ import annotations

from typing import NamedTuple

from schemas.models import DeadLetterEvent, ResultEvent

# The value types built once per request are NamedTuples: immutable like frozen dataclasses,
# and about three times cheaper to build (a frozen dataclass sets each field through
# object.__setattr__), which counts on a call path that makes several per request.


class SourceRecord(NamedTuple):
    """Where a request event came from: enough to find it again and to dead-letter it."""

    topic: str
    partition: int
    offset: int
    value: bytes


class Outcome(NamedTuple):
    """What the caller decided for one record; the publisher writes it to its topic."""

    event: ResultEvent | DeadLetterEvent
    # The result topic for this outcome; None for dead letters (they go to the DLQ topic).
    reply_to: str | None = None

    @property
    def is_dead_letter(self) -> bool:
        return isinstance(self.event, DeadLetterEvent)

    @property
    def status(self) -> str:
        return "dead_letter" if isinstance(self.event, DeadLetterEvent) else self.event.status

    @property
    def provider(self) -> str:
        if isinstance(self.event, DeadLetterEvent):
            return self.event.original.provider if self.event.original else "unknown"
        return self.event.provider


class Forward(NamedTuple):
    """Not an outcome: the request arrived on a partition that does not own its limit key, so
    it is re-published with the right key (publishers that key by anything else still get
    exact limits, at the cost of one more hop)."""

    key: bytes
    value: bytes
