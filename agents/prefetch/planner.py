"""The predictive cache's per-key bookkeeping (issue 24): what the agent keeps per cache key, how
an access event changes it, which timed steps it schedules, and what each step does when due.

Pure: no Faust, no Kafka, no clock (``now_ms`` is an argument). The agent (``agent.py``) stores
``KeyState.to_bytes()`` in its table, keeps the ``Due`` steps in a ``DueHeap`` per partition and
acts on what ``fire`` returns (publish a prefetch, teach the model, delete the key).

Three timed steps per key:
- DECIDE at ``expires - lead``: the decider says whether to refresh the entry. Each expiry is
  decided once (``decided_ms``): a duplicate access event after a rebalance reschedules a step
  that then finds the expiry decided and does nothing.
- CLOSE a decision's label window ``[expiry, expiry + ttl)`` (plus a grace for access events
  still in flight): no request came, the label is 0. A request inside the window gives 1 at
  once; the next decision of the key closes a pending label as 0 (the window is cut there).
- FORGET a key idle for ``forget_after_ms``, so the table holds the keys that are still read.
"""

from __future__ import annotations

import enum
import heapq
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from agents.prefetch.features import KeyFeatures
from schemas.keys import request_limit_key
from schemas.models import AccessEvent, AccessKind, RequestEvent

__all__ = [
    "FORMAT_VERSION",
    "Decide",
    "Due",
    "DueHeap",
    "DueKind",
    "Fired",
    "KeyState",
    "Label",
    "PlannerConfig",
    "Resolved",
    "Verdict",
    "fire",
    "observe",
    "pending",
    "prefetch_key",
    "prefetch_request",
    "schedule",
]

FORMAT_VERSION = 1
# version, expires_ms, ttl_ms, seen_ms, decided_ms, has_label; then the features (69 bytes),
# the label if any, and the template request's bytes to the end.
_HEAD = struct.Struct("<BqqqqB")
_LABEL = struct.Struct("<qqBB")  # opens_ms, closes_ms, refreshed, inputs
_NO_FEATURES = KeyFeatures()
_FEATURES_SIZE = len(_NO_FEATURES.to_bytes())

# Whether to refresh, from the key's features and the model's inputs (``features.vector``).
Decide = Callable[[KeyFeatures, tuple[float, ...]], bool]


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Attributes:
    lead_ms: how long before an entry's expiry its key is decided (``prefetch.lead_s``); a
        prefetch's deadline is as long after the expiry.
    label_grace_ms: how long after a label window ends a request may still arrive (access
        events are batched by the worker and travel through Kafka) before the label is 0.
    forget_after_ms: a key with no access for this long leaves the table.
    """

    lead_ms: int
    label_grace_ms: int = 2_000
    forget_after_ms: int = 6 * 3600 * 1000


class Label(NamedTuple):
    """A decision waiting for its label: was the key requested in ``[opens_ms, closes_ms)``?"""

    opens_ms: int  # the expiry decided on
    closes_ms: int  # one entry lifetime later
    refreshed: bool  # a prefetch was sent: a request in the window means it was used
    inputs: tuple[float, ...]  # what the model saw, to learn from once the label is known


class Resolved(NamedTuple):
    """A label that became known."""

    label: Label
    requested: bool


@dataclass(frozen=True, slots=True)
class KeyState:
    """One cache key, as the agent's table keeps it. Times are epoch ms.

    Attributes:
        features: the key's traffic summary (``features.py``).
        expires_ms: when the entry stops being fresh, as last reported (only moves forward:
            a duplicate event carries an older expiry).
        ttl_ms: the entry's lifetime at its last fill or refresh: the label window's length.
        seen_ms: the latest access of any kind (the key is forgotten once idle long enough).
        decided_ms: the latest expiry decided on; never decided twice (dedupe).
        label: the latest decision's label, while unknown.
        template: the request record of the latest fill, which a prefetch sends again.
    """

    features: KeyFeatures = _NO_FEATURES
    expires_ms: int = 0
    ttl_ms: int = 0
    seen_ms: int = 0
    decided_ms: int = 0
    label: Label | None = None
    template: bytes = b""

    def __repr__(self) -> str:
        label = self.label
        pending = f", label=[{label.opens_ms}, {label.closes_ms})" if label else ""
        return (
            f"KeyState(expires_ms={self.expires_ms}, ttl_ms={self.ttl_ms}, "
            f"decided_ms={self.decided_ms}, reads={self.features.reads}, "
            f"requests={self.features.requests}{pending}, template={len(self.template)} B)"
        )

    def to_bytes(self) -> bytes:
        """A compact, versioned encoding for the agent's table."""
        label = self.label
        parts = [
            _HEAD.pack(
                FORMAT_VERSION, self.expires_ms, self.ttl_ms, self.seen_ms, self.decided_ms,
                1 if label else 0,
            ),
            self.features.to_bytes(),
        ]  # fmt: skip
        if label is not None:
            n = len(label.inputs)
            parts.append(_LABEL.pack(label.opens_ms, label.closes_ms, label.refreshed, n))
            parts.append(struct.pack(f"<{n}d", *label.inputs))
        parts.append(self.template)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyState | None:
        """The state ``to_bytes`` encoded, or None for bytes that are not one (the agent then
        starts the key afresh: at most one decision is lost or repeated)."""
        if len(data) < _HEAD.size + _FEATURES_SIZE or data[0] != FORMAT_VERSION:
            return None
        _, expires, ttl, seen, decided, has_label = _HEAD.unpack_from(data)
        at = _HEAD.size
        features = KeyFeatures.from_bytes(data[at : at + _FEATURES_SIZE])
        if features is None or has_label > 1:
            return None
        at += _FEATURES_SIZE
        label = None
        if has_label:
            if len(data) < at + _LABEL.size:
                return None
            opens, closes, refreshed, n = _LABEL.unpack_from(data, at)
            at += _LABEL.size
            if len(data) < at + 8 * n:
                return None
            inputs = struct.unpack_from(f"<{n}d", data, at)
            at += 8 * n
            if not all(math.isfinite(value) for value in inputs):
                return None
            label = Label(opens, closes, bool(refreshed), inputs)
        return cls(features, expires, ttl, seen, decided, label, data[at:])


class DueKind(enum.IntEnum):
    DECIDE = 0
    CLOSE = 1
    FORGET = 2


class Due(NamedTuple):
    """A timed step of one key. Steps are never removed when they go stale (a later fill, a
    decision taken): ``fire`` checks ``mark_ms`` against the state and ignores them."""

    at_ms: int
    key: bytes
    kind: DueKind
    mark_ms: int  # DECIDE: the expiry to decide on; CLOSE: the window's end; FORGET: 0


class DueHeap:
    """The steps of one partition's keys, earliest first (in memory: rebuilt from the table
    with ``pending`` after a rebalance)."""

    __slots__ = ("_heap",)

    def __init__(self, steps: list[Due] | None = None) -> None:
        self._heap = list(steps or ())
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"DueHeap({len(self._heap)} steps, next at {self.next_at()})"

    def push(self, step: Due) -> None:
        heapq.heappush(self._heap, step)

    def next_at(self) -> int | None:
        """When the earliest step is due (None: no step)."""
        return self._heap[0].at_ms if self._heap else None

    def pop_due(self, now_ms: int) -> list[Due]:
        """Remove and return the steps due at ``now_ms``, earliest first."""
        heap, due = self._heap, []
        while heap and heap[0].at_ms <= now_ms:
            due.append(heapq.heappop(heap))
        return due


def observe(state: KeyState, event: AccessEvent) -> tuple[KeyState, Resolved | None]:
    """The key's state after one access event, and the label the event settles, if any.

    A request (hit or fill) at or after a pending label's window opens settles it: 1 inside
    the window, 0 past it. A prefetch refresh is not a request: it settles nothing.
    """
    at_ms, expires_ms = event.at_ms, event.expires_at_ms
    features, label, resolved = state.features, state.label, None
    ttl_ms, template = state.ttl_ms, state.template
    if event.kind is AccessKind.PREFETCH:
        features = features.refreshed(at_ms / 1000, expires_s=expires_ms / 1000)
        ttl_ms = expires_ms - at_ms
    else:
        fill = event.kind is AccessKind.FILL
        features = features.observe(at_ms / 1000, hit=not fill, expires_s=expires_ms / 1000)
        if fill:
            ttl_ms = expires_ms - at_ms
            template = event.request or template
        if label is not None and at_ms >= label.opens_ms:
            resolved = Resolved(label, requested=at_ms < label.closes_ms)
            label = None
    new = replace(
        state,
        features=features,
        expires_ms=max(state.expires_ms, expires_ms),
        ttl_ms=ttl_ms if ttl_ms > 0 else state.ttl_ms,
        seen_ms=max(state.seen_ms, at_ms),
        label=label,
        template=template,
    )
    return new, resolved


def schedule(
    key: bytes, before: KeyState | None, after: KeyState, config: PlannerConfig
) -> list[Due]:
    """The steps an access schedules: FORGET for a new key, DECIDE for a new expiry."""
    steps = []
    if before is None:
        steps.append(Due(after.seen_ms + config.forget_after_ms, key, DueKind.FORGET, 0))
    expiry = after.expires_ms
    if expiry != (before.expires_ms if before else 0) and expiry > after.decided_ms:
        steps.append(Due(expiry - config.lead_ms, key, DueKind.DECIDE, expiry))
    return steps


def pending(key: bytes, state: KeyState, config: PlannerConfig) -> list[Due]:
    """Every step a stored key still needs (rebuilding the heap after a rebalance)."""
    steps = [Due(state.seen_ms + config.forget_after_ms, key, DueKind.FORGET, 0)]
    if state.expires_ms > state.decided_ms:
        steps.append(Due(state.expires_ms - config.lead_ms, key, DueKind.DECIDE, state.expires_ms))
    if state.label is not None:
        closes = state.label.closes_ms
        steps.append(Due(closes + config.label_grace_ms, key, DueKind.CLOSE, closes))
    return steps


class Verdict(enum.StrEnum):
    REFRESH = "refresh"  # publish a prefetch
    SKIP = "skip"  # the decider said no
    NO_TEMPLATE = "no_template"  # the decider said yes, but no fill was seen to copy
    LATE = "late"  # decided after the expiry (a backlog, a long rebalance): too late to help


class Fired(NamedTuple):
    """What a due step did.

    Attributes:
        state: the key's new state; None to delete the key.
        verdict: the decision taken, if the step was a decision.
        resolved: a label the step settled.
        follow: steps to schedule next.
    """

    state: KeyState | None
    verdict: Verdict | None = None
    resolved: Resolved | None = None
    follow: tuple[Due, ...] = ()


def fire(
    state: KeyState, step: Due, *, now_ms: int, decide: Decide, config: PlannerConfig
) -> Fired:
    """Carry out a due step of the key whose state is ``state``; a stale step changes nothing
    (``Fired(state)``)."""
    if step.kind is DueKind.FORGET:
        return _forget(state, step, now_ms, config)
    if step.kind is DueKind.CLOSE:
        label = state.label
        if label is None or label.closes_ms != step.mark_ms:
            return Fired(state)
        return Fired(replace(state, label=None), resolved=Resolved(label, requested=False))
    expiry = step.mark_ms
    if expiry != state.expires_ms or expiry <= state.decided_ms:
        return Fired(state)  # a later expiry came, or this one was decided (a duplicate)
    # A pending label's window ends at the next decision: no request came in it so far.
    resolved = Resolved(state.label, requested=False) if state.label else None
    if now_ms >= expiry:
        return Fired(replace(state, decided_ms=expiry, label=None), Verdict.LATE, resolved)
    inputs = state.features.vector(now_ms / 1000)
    if not decide(state.features, inputs):
        verdict = Verdict.SKIP
    else:
        verdict = Verdict.REFRESH if state.template else Verdict.NO_TEMPLATE
    label, follow = None, tuple[Due, ...]()
    if state.ttl_ms > 0:
        closes = expiry + state.ttl_ms
        label = Label(expiry, closes, verdict is Verdict.REFRESH, inputs)
        follow = (Due(closes + config.label_grace_ms, step.key, DueKind.CLOSE, closes),)
    return Fired(replace(state, decided_ms=expiry, label=label), verdict, resolved, follow)


def _forget(state: KeyState, step: Due, now_ms: int, config: PlannerConfig) -> Fired:
    idle_until = state.seen_ms + config.forget_after_ms
    if now_ms < idle_until:  # read since: look again then
        return Fired(state, follow=(Due(idle_until, step.key, DueKind.FORGET, 0),))
    resolved = Resolved(state.label, requested=False) if state.label else None
    return Fired(None, resolved=resolved)


def prefetch_request(
    template: RequestEvent, *, expiry_ms: int, now_ms: int, lead_ms: int
) -> RequestEvent:
    """The prefetch of an entry: the template's call, priority 0, a new request id, no reply
    wanted, a deadline ``lead_ms`` after the expiry (past it a refresh would be a plain miss)."""
    return RequestEvent(
        tenant=template.tenant,
        provider=template.provider,
        operation=template.operation,
        params=template.params,
        body=template.body,
        content_type=template.content_type,
        headers=template.headers,
        priority=0,
        prefetch=True,
        deadline_at_ms=expiry_ms + lead_ms,
        created_at_ms=now_ms,
    )


def prefetch_key(provider: str, cache_key: bytes, shards: int) -> bytes:
    """The prefetch's message key: its limit key, with the shard a sharded provider's worker
    picks for the entry (the cache key's hex, ``agents.cache.response_cache.Keyed``)."""
    try:
        return request_limit_key(provider, cache_key.hex(), shards).encode()
    except ValueError:  # not a valid provider name: the worker refuses it wherever it lands
        return provider.encode()
