"""What a stage reads and what it decides: the source record, its outcome, a forward or a delay;
and the reduced forms of an outcome too large to publish (issue 19)."""

from __future__ import annotations

from typing import NamedTuple

from schemas.models import DeadLetterEvent, ResultEvent, ResultStatus

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


class Settled(NamedTuple):
    """Not an outcome: the record needed none (a prefetch request: nobody waits for it, what it
    did is in metrics). The record counts as finished."""

    # What became of it: a metric label, so a small fixed set.
    how: str


class Delay(NamedTuple):
    """Not an outcome yet: the stage decides again at ``due_ms`` (a retry, a quota window).

    The loop keeps it durably in the partition's timer table (``streams.stage.delays``) before
    the record counts as finished, and hands ``payload`` back to the handler's ``resume`` once
    it is due, on whichever worker owns the partition then.
    """

    # One delay per key (the request id): delaying a key again replaces its delay.
    key: bytes
    due_ms: int
    # The stage's own encoding of what it needs to go on; the engine never reads it.
    payload: bytes
    # Why it waits ("retry", "quota"): a metric label, so a small fixed set.
    kind: str


# How much of an error message a fully reduced outcome keeps.
_SHORT_MESSAGE_CHARS = 200


def reduce_once(
    event: ResultEvent | DeadLetterEvent, size: int, limit: int
) -> ResultEvent | DeadLetterEvent | None:
    """The next smaller form of ``event``, whose encoding is ``size`` bytes, over ``limit``;
    None when nothing is left to drop. The contract a consumer relies on is in the README
    ("Outcome"): a result loses its body first, a dead letter its decoded ``original``, then
    its ``original_raw`` is cut to fit.
    """
    if isinstance(event, DeadLetterEvent):
        return _smaller_letter(event, size, limit)
    return _smaller_result(event, size, limit)


def _smaller_result(event: ResultEvent, size: int, limit: int) -> ResultEvent | None:
    if event.body is not None:
        message = (
            f"{event.status} result of {size} bytes over max_outcome_bytes {limit}: its "
            f"response body of {len(event.body)} bytes was dropped"
        )
        return event.model_copy(
            update={
                "status": ResultStatus.FAILED,
                "reason": "body_too_large",
                "error_type": "OutcomeTooLarge",
                "error_message": message,
                "body": None,
                "content_type": None,
            }
        )
    if event.trace or event.headers or len(event.error_message or "") > _SHORT_MESSAGE_CHARS:
        short = event.error_message[:_SHORT_MESSAGE_CHARS] if event.error_message else None
        return event.model_copy(update={"trace": {}, "headers": {}, "error_message": short})
    return None


def _smaller_letter(letter: DeadLetterEvent, size: int, limit: int) -> DeadLetterEvent | None:
    if letter.original is not None:
        return letter.model_copy(update={"original": None})  # original_raw still holds it
    raw = letter.original_raw
    # Everything but the raw bytes takes ``size - len(raw)`` (plus its length varint, which
    # only shrinks with it), so this many raw bytes fit.
    keep = limit - (size - len(raw))
    if 0 < keep < len(raw):
        return letter.model_copy(update={"original_raw": raw[:keep], "original_truncated": True})
    if raw or letter.attempts or len(letter.error_message) > _SHORT_MESSAGE_CHARS:
        return letter.model_copy(
            update={
                "original_raw": b"",
                "original_truncated": letter.original_truncated or bool(raw),
                "attempts": [],
                "error_message": letter.error_message[:_SHORT_MESSAGE_CHARS],
            }
        )
    return None


def replacement(
    source: SourceRecord,
    error: BaseException,
    *,
    stage: str,
    now_ms: int,
    request_id: str | None = None,
) -> DeadLetterEvent:
    """The dead letter published instead of an outcome that could not be published, or for a
    record whose handler failed: the record's raw bytes and the error, reason
    ``internal_error``. It may need :func:`reduce_once` in turn."""
    return DeadLetterEvent(
        request_id=request_id,
        original_raw=source.value,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        reason="internal_error",
        error_type=type(error).__name__,
        error_message=(str(error) or repr(error))[:2000],
        first_failure_at_ms=now_ms,
        last_failure_at_ms=now_ms,
        stage=stage,
    )
