"""Pydantic mirrors of the Avro wire contract in ``schemas/avro/*.avsc``.

The .avsc files are the contract; these models are how Python code reads and builds events.
A contract test checks that each model and its schema agree field by field. Times are epoch
milliseconds in ``*_ms`` fields (plain Avro ``long``), which keeps the hot path free of datetime
conversion.
"""

from __future__ import annotations

import enum
import time
import uuid

from pydantic import BaseModel, ConfigDict, Field


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of every ``*_ms`` field."""
    return time.time_ns() // 1_000_000


def new_request_id() -> str:
    return str(uuid.uuid4())


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Identifiers are sent as HTTP headers (X-Request-Id, Idempotency-Key), logged and printed by
# `results tail`: visible ASCII only, so no CR/LF, control or escape character gets that far.
_VISIBLE_ASCII = r"^[\x21-\x7e]*$"
# Tenant and provider names become parts of quota and limit keys ("tenant/provider"), metric
# labels and log fields: no "/" or "#" (key separators), no "*" (the quota wildcard).
_NAME = r"^[A-Za-z0-9._:@-]*$"
# As a provider declaration names its operations (providers/declaration.py).
_OPERATION = r"^[A-Za-z][A-Za-z0-9_.-]*$"
# Caps on the maps a request carries and on every string in it (map keys and values too):
# decoding and copying them (trace goes into every result) must stay cheap, whatever a
# publisher sends. Enforced by pydantic-core as it validates, with no Python per entry.
MAX_MAP_ENTRIES = 64
MAX_STRING_CHARS = 8192


class RequestEvent(_Event):
    """A request to call one operation of one provider, published by a service."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=MAX_STRING_CHARS)

    request_id: str = Field(
        default_factory=new_request_id, min_length=1, max_length=128, pattern=_VISIBLE_ASCII
    )
    # Sent to providers that honour one, so a retried or replayed call is not charged twice.
    idempotency_key: str = Field(default="", max_length=256, pattern=_VISIBLE_ASCII)
    tenant: str = Field(default="default", min_length=1, max_length=128, pattern=_NAME)
    provider: str = Field(min_length=1, max_length=128, pattern=_NAME)
    operation: str = Field(min_length=1, max_length=128, pattern=_OPERATION)
    # Path and query parameters, by the names the provider's operation declares.
    params: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    body: bytes | None = None
    # Control characters are refused when the request is built (not_allowed), like headers.
    content_type: str | None = None
    # Extra request headers; only names on the operation's allow-list are ever sent.
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    # 0 (lowest, prefetch) .. 9 (highest); 5 is normal traffic.
    priority: int = Field(default=5, ge=0, le=9)
    deadline_at_ms: int | None = None
    created_at_ms: int = Field(default_factory=now_ms)
    # Result topic for this request's outcome; the configured result topic when unset.
    reply_to: str | None = None
    # W3C trace context and similar propagation headers, carried through to the outcome.
    trace: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    attempt: int = Field(default=1, ge=1)
    # Set on a request a fallback made: "provider/operation" it stands in for, and why that
    # could not answer; its result is then `fallback` and names them (README, "Fallback").
    fallback_of: str | None = Field(default=None, max_length=257)
    fallback_reason: str | None = Field(default=None, max_length=64)
    # Set by the predictive cache (issue 24): refresh the cached entry on spare quota only;
    # nobody waits for it, so it publishes no result.
    prefetch: bool = False

    def effective_idempotency_key(self) -> str:
        return self.idempotency_key or self.request_id

    @property
    def deadline_s(self) -> float | None:
        """The deadline in epoch seconds (the limiter's clock), or None: the one conversion."""
        return self.deadline_at_ms / 1000 if self.deadline_at_ms is not None else None

    def deadline_passed(self, at_s: float) -> bool:
        """Whether the deadline is at or before ``at_s`` (epoch seconds); never without one."""
        deadline = self.deadline_s
        return deadline is not None and deadline <= at_s


class ResultStatus(enum.StrEnum):
    OK = "ok"
    CACHED = "cached"
    STALE = "stale"
    FALLBACK = "fallback"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"


class ResultEvent(_Event):
    """The one outcome of a request that did not become a dead letter."""

    request_id: str
    idempotency_key: str = ""
    tenant: str
    provider: str
    operation: str
    status: ResultStatus
    # The provider that actually answered (differs from ``provider`` after a fallback).
    provider_used: str | None = None
    http_status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    # Selected response headers (rate-limit, request id, caching), never auth material.
    headers: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    latency_ms: float = 0.0
    cost: float = 0.0
    # cached and stale results: the tier that answered (l1, l2, coalesced, revalidated) and
    # how old the answer is.
    cache_tier: str | None = None
    cache_age_ms: int | None = None
    # Machine-readable reason for expired/rejected/failed (e.g. "quota_exceeded", "timeout").
    reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    trace: dict[str, str] = Field(default_factory=dict)
    created_at_ms: int = 0
    completed_at_ms: int = Field(default_factory=now_ms)


class AttemptRecord(_Event):
    """One try at calling the provider, kept in a dead letter's history and a delayed request's."""

    attempt: int
    started_at_ms: int
    duration_ms: float
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    # How long the request waited before this attempt (0 for the first): its backoff, or the
    # provider's Retry-After.
    delay_ms: float = 0.0


class DeadLetterEvent(_Event):
    """A request the pipeline gave up on, with everything needed to inspect and replay it."""

    request_id: str | None = None
    # The original message value exactly as it arrived, even when it could not be decoded.
    original_raw: bytes
    original: RequestEvent | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    error_type: str
    error_message: str
    retriable: bool = False
    attempts: list[AttemptRecord] = Field(default_factory=list)
    first_failure_at_ms: int
    last_failure_at_ms: int
    # The stage that gave up: "decode", "admission", "caller", "retry".
    stage: str
    # original_raw holds only the message's first bytes: the letter was too large to publish
    # whole (original is None then too). Such a letter cannot be replayed.
    original_truncated: bool = False


class DelayedRequest(_Event):
    """A request waiting durably in its partition's timer table: a retry, or a quota window.

    Never on a public topic: it lives in the stage's changelogged timer table, and holds what
    taking the request up again needs after a crash or a handover, or dead-lettering it.
    """

    # The request as it will be sent next: ``attempt`` is the next attempt's number.
    request: RequestEvent
    # Why it waits: "retry" (after a retriable failure) or "quota" (its tenant's window is full).
    kind: str
    attempts: list[AttemptRecord] = Field(default_factory=list)
    source_topic: str
    source_partition: int
    source_offset: int
    delayed_at_ms: int


class AccessKind(enum.StrEnum):
    HIT = "hit"
    FILL = "fill"
    PREFETCH = "prefetch"


class AccessEvent(_Event):
    """One access of one cache key, as the response cache saw it (for the predictive cache)."""

    key: bytes
    at_ms: int
    kind: AccessKind
    # When the entry stops being fresh, after this access.
    expires_at_ms: int
    # On fills: the request's record bytes, which a prefetch of the key sends again.
    request: bytes | None = None


class AccessBatch(_Event):
    """A worker's accesses of the keys of one access-topic partition (one record, many)."""

    events: list[AccessEvent] = Field(default_factory=list)


def dead_letter_key(letter: DeadLetterEvent) -> str:
    """What makes two dead-letter records the same letter (outcomes are written at least once).

    The request id when the original was decoded, else the original record's position.
    """
    if letter.request_id:
        return letter.request_id
    return f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"
