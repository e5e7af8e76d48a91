"""Building the one outcome of a request: a ResultEvent or a DeadLetterEvent (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.models import AttemptRecord, DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus


@dataclass(frozen=True)
class SourceRecord:
    """Where a request event came from: enough to find it again and to dead-letter it."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Outcome:
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


@dataclass(frozen=True)
class Forward:
    """Not an outcome: the request arrived on a partition that does not own its limit key, so
    it is re-published with the right key (publishers that key by anything else still get
    exact limits, at the cost of one more hop)."""

    key: bytes
    value: bytes


def result(
    request: RequestEvent,
    status: ResultStatus,
    *,
    now_ms: int,
    attempts: int = 0,
    **fields: object,
) -> ResultEvent:
    """A result for ``request``, carrying its identity and trace context through.

    Built without re-validation (``model_construct``): every field comes from a validated
    request or from our own code, and the Avro encoder still type-checks what it writes. This
    runs once per request on the hot path.
    """
    return ResultEvent.model_construct(
        **{
            "request_id": request.request_id,
            "idempotency_key": request.idempotency_key,
            "tenant": request.tenant,
            "provider": request.provider,
            "operation": request.operation,
            "status": status,
            "attempts": attempts,
            "trace": request.trace,
            "created_at_ms": request.created_at_ms,
            "completed_at_ms": now_ms,
            **fields,
        }
    )


def dead_letter(
    source: SourceRecord,
    *,
    reason: str,
    error: BaseException | str,
    stage: str,
    now_ms: int,
    request: RequestEvent | None = None,
    attempts: tuple[AttemptRecord, ...] = (),
    retriable: bool = False,
) -> DeadLetterEvent:
    """A dead letter keeping the raw bytes, so nothing is lost even when they were garbage."""
    error_type = error if isinstance(error, str) else type(error).__name__
    message = str(error) if not isinstance(error, str) else error
    first_failure = attempts[0].started_at_ms if attempts else now_ms
    return DeadLetterEvent(
        request_id=request.request_id if request else None,
        original_raw=source.value,
        original=request,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        reason=reason,
        error_type=error_type,
        error_message=message[:2000],
        retriable=retriable,
        attempts=list(attempts),
        first_failure_at_ms=first_failure,
        last_failure_at_ms=now_ms,
        stage=stage,
    )
