"""Tenant x provider quotas over fixed UTC-aligned windows: a second, a minute, a day."""

# Fixed windows, not sliding ones: quotas are a business contract ("10,000 calls a day"),
# and tenants reason in calendar windows that reset at a known instant we can report.
# Epoch seconds carry no leap seconds, so floor(now / 86400) * 86400 is exactly UTC midnight.

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "QuotaDecision",
    "QuotaPolicy",
    "QuotaState",
    "Verdict",
    "Window",
    "WindowCount",
    "check_and_count",
]

_STATE = struct.Struct(">B" + "qQ" * 3)
_STATE_VERSION = 1


class Window(enum.IntEnum):
    """A quota window; its value is its length in seconds."""

    SECOND = 1
    MINUTE = 60
    DAY = 86_400

    def start(self, now: float) -> int:
        """The UTC-aligned start of the window that contains `now`."""
        return math.floor(now / self.value) * self.value


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    REJECT = "reject"
    QUEUE = "queue"  # over quota, but the policy says wait for the reset instead of failing


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """Limits per window (None = unlimited) and what to do with a call over any of them."""

    per_second: int | None = None
    per_minute: int | None = None
    per_day: int | None = None
    on_exceed: Literal["reject", "queue"] = "reject"

    def __post_init__(self) -> None:
        for window, limit in self.limits():
            if limit is not None and limit < 0:
                raise ValueError(f"quota per {window.name.lower()} must be >= 0, got {limit}")
        if self.on_exceed not in ("reject", "queue"):
            raise ValueError(f"on_exceed must be 'reject' or 'queue', got {self.on_exceed!r}")

    def limits(self) -> tuple[tuple[Window, int | None], ...]:
        return (
            (Window.SECOND, self.per_second),
            (Window.MINUTE, self.per_minute),
            (Window.DAY, self.per_day),
        )


@dataclass(frozen=True, slots=True)
class WindowCount:
    """Calls counted in the window that began at `start` (epoch seconds)."""

    start: int = 0
    count: int = 0

    def at(self, start: int) -> WindowCount:
        """This count as seen from the window beginning at `start`.

        A clock that steps back lands in an older window than the stored one; we keep the
        stored count rather than reset it, which can only be stricter.
        """
        return self if start <= self.start else WindowCount(start, 0)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """Counts for one tenant x provider, one per window, tracked even when unlimited."""

    second: WindowCount = WindowCount()
    minute: WindowCount = WindowCount()
    day: WindowCount = WindowCount()

    def __repr__(self) -> str:
        parts = (f"{w.name.lower()}={self[w].count}@{self[w].start}" for w in Window)
        return f"QuotaState({' '.join(parts)})"

    def __getitem__(self, window: Window) -> WindowCount:
        match window:
            case Window.SECOND:
                return self.second
            case Window.MINUTE:
                return self.minute
            case Window.DAY:
                return self.day

    def rolled(self, now: float) -> QuotaState:
        """The same counts, with each window moved on to the one containing `now`."""
        return QuotaState(*(self[w].at(w.start(now)) for w in Window))

    def counted(self, cost: int) -> QuotaState:
        return QuotaState(*(WindowCount(self[w].start, self[w].count + cost) for w in Window))

    def to_bytes(self) -> bytes:
        """Serialise as 49 bytes: a version byte, then (start, count) per window."""
        fields = (v for w in Window for v in (self[w].start, self[w].count))
        return _STATE.pack(_STATE_VERSION, *fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuotaState:
        """Read what `to_bytes` wrote; raise ValueError for anything else."""
        if len(data) != _STATE.size or data[0] != _STATE_VERSION:
            raise ValueError(f"not a v{_STATE_VERSION} QuotaState: {data!r}")
        v = _STATE.unpack(data)[1:]
        return cls(*(WindowCount(v[i], v[i + 1]) for i in range(0, len(v), 2)))


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """Allowed, or not with the window that refused and when it resets (inf: never fits)."""

    verdict: Verdict
    window: Window | None = None
    resets_at: float | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def retry_after_s(self, now: float) -> float:
        """Seconds until the refusing window resets; 0.0 when allowed."""
        return 0.0 if self.resets_at is None else max(0.0, self.resets_at - now)


_ALLOWED = QuotaDecision(Verdict.ALLOW)


def check_and_count(
    state: QuotaState, *, now: float, policy: QuotaPolicy, cost: int = 1
) -> tuple[QuotaState, QuotaDecision]:
    """Count a call if every window has room for it; otherwise refuse and count nothing.

    Args:
        state: the tenant x provider counts.
        now: the current time, epoch seconds (UTC).
        policy: the quota.
        cost: units the call spends in every window.

    Returns:
        `(state, decision)`. A refusal names the longest exceeded window, since the call fits
        only once that one resets; `state` then comes back as the very object passed in, so the
        caller can skip the table write.
    """
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost}")
    current = state.rolled(now)
    exceeded = [w for w, limit in policy.limits() if _over(current[w], limit, cost)]
    if not exceeded:
        return current.counted(cost), _ALLOWED
    window = max(exceeded)
    limit = dict(policy.limits())[window]
    resets_at = math.inf if limit is not None and cost > limit else current[window].start + window
    verdict = Verdict.QUEUE if policy.on_exceed == "queue" else Verdict.REJECT
    return state, QuotaDecision(verdict, window, float(resets_at))


def _over(count: WindowCount, limit: int | None, cost: int) -> bool:
    return limit is not None and count.count + cost > limit
