"""Building the one outcome of a request: a ResultEvent or a DeadLetterEvent (pure, shared by
every stage)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.models import AttemptRecord, DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.stage.records import SourceRecord


def result(
    request: RequestEvent,
    status: ResultStatus,
    *,
    now_ms: int,
    attempts: int = 0,
    **fields: object,
) -> ResultEvent:
    """A result for ``request``, carrying its identity and trace context through.

    Built without re-validation, as ``model_construct`` would build it: every field comes from
    a validated request or from our own code, and the Avro encoder still type-checks what it
    writes. This runs once per request on the hot path.
    """
    given: dict[str, Any] = {
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
    return _result_event(given)


def _result_event(given: dict[str, Any]) -> ResultEvent:
    """What ``ResultEvent.model_construct(**given)`` returns (same values, field order and
    fields set), without its per-field loop: it cost about twice this on the hot path."""
    if not _RESULT_FIELDS.issuperset(given):
        return ResultEvent.model_construct(**given)  # let pydantic decide what a typo means
    values = {**_RESULT_DEFAULTS, **given}
    for name, factory in _RESULT_FACTORIES.items():
        if name not in given:
            values[name] = factory()  # a fresh default per event, never a shared dict
    event = ResultEvent.__new__(ResultEvent)
    _set = object.__setattr__
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(given))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


# Every ResultEvent field in declaration order (as model_construct orders them), with its
# default; None for required fields (result() always sets them) and for default factories.
_RESULT_DEFAULTS: dict[str, Any] = {
    name: None if info.is_required() else info.get_default(call_default_factory=False)
    for name, info in ResultEvent.model_fields.items()
}
_RESULT_FACTORIES: dict[str, Callable[[], Any]] = {
    name: info.default_factory  # type: ignore[misc]
    for name, info in ResultEvent.model_fields.items()
    if info.default_factory is not None
}
_RESULT_FIELDS = frozenset(_RESULT_DEFAULTS)


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
    message: str | None = None,
) -> DeadLetterEvent:
    """A dead letter keeping the raw bytes, so nothing is lost even when they were garbage.

    Args:
        error: the exception (or its type's name) that ended the request.
        message: the error message when it should say more than ``str(error)``.
    """
    error_type = error if isinstance(error, str) else type(error).__name__
    if message is None:
        message = str(error)
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
