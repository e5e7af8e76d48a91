"""The breaker's state machine, closed, open and half-open: pure functions, time passed in."""

# As resilience4j's CircuitBreaker (issue 21). Closed: calls go and fill the window; once it
# holds `minimum_calls` and the failure or slow-call rate reaches its threshold, the breaker
# opens. Open: every call is refused until `opened_at + wait_in_open_s`; the next `permit`
# then moves to half-open. Half-open: `half_open_calls` probes go; the breaker reopens (with a
# new `opened_at`) as soon as the probes' failure or slow count alone reaches the threshold
# share of `half_open_calls` (so the rest cannot bring it back under), and closes, with an
# empty window, once all of them reported without that. With 3 probes and a 0.5 threshold,
# two failed probes reopen it and one is tolerated.
#
# Results that arrive after the mode changed. A call was let through in one mode and may report
# in another: a closed-mode call finishing after the breaker opened, a probe finishing after
# another probe reopened it. The rule: a non-probe result counts only while closed, a probe
# result only while half-open with probes in flight; anything else is dropped. Dropping is
# always safe for a non-probe result (one sample fewer) and never leaves a probe slot taken.
# Two stragglers are still counted: a closed-mode call outlasting a whole open and half-open
# cycle lands in the new window, and a probe outlasting `wait_in_open_s` counts in the next
# half-open round; both must outlast the wait in open, far past any provider timeout.
#
# Every permitted PROBE must be recorded exactly once (a cancelled one as IGNORED, which frees
# its slot), or half-open waits for it. A new owner after a handover calls `after_handover`.

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias, TypedDict

from agents.breaker.window import (
    MAX_SIZE,
    Counts,
    InvalidBreakerState,
    TimeWindow,
    Window,
    WindowKind,
    add,
    counts,
    empty,
    for_kind,
    pack,
    unpack,
)

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "CallResult",
    "InvalidBreakerState",
    "Mode",
    "Permit",
    "PermitKind",
    "Snapshot",
    "after_handover",
    "from_bytes",
    "permit",
    "record",
    "record_successes",
    "snapshot",
    "to_bytes",
    "transition",
]

Mode: TypeAlias = Literal["closed", "open", "half_open"]
_MODES: tuple[Mode, ...] = ("closed", "open", "half_open")
_HEAD = struct.Struct(">BBdHHHH")  # version, mode, opened_at, then the four probe counters
_VERSION = 1
_MAX_PROBES = 1_000  # fits the encoding; a half-open round that long is a closed breaker


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens, how long it stays open, and how it probes its way back.

    resilience4j's defaults, and why ours differ: failureRateThreshold 50 % and
    slowCallRateThreshold 100 % (ours the same); slowCallDurationThreshold 60 s (ours 5 s: our
    provider timeouts are ~10 s, so 60 s would never fire); slidingWindow COUNT_BASED 100 with
    minimumNumberOfCalls 100 (ours a 10 s TIME window and 20 calls: a pipeline sends hundreds of
    calls a second per provider, where 100 calls are a fraction of a second of noise, while a
    10 s window reacts within one window to an outage at any rate, and 20 calls still fill it
    for a quiet key); waitDurationInOpenState 60 s (ours 30 s: refused requests wait durably,
    so a shorter wait shortens recovery, and costs only the probes);
    permittedNumberOfCallsInHalfOpenState 10 (ours 3: fewer calls to a provider that may still
    be down, and still more than one, so one fluke does not decide).
    """

    window: WindowKind = "time"
    window_size: int = 10  # calls ("count") or one-second buckets ("time")
    minimum_calls: int = 20  # no opening below this many calls in the window
    failure_rate_threshold: float = 0.5  # open at >= this share of failed calls
    slow_call_threshold_s: float = 5.0  # a call longer than this is slow; math.inf: never
    slow_call_rate_threshold: float = 1.0  # open at >= this share of slow calls (1.0: all)
    wait_in_open_s: float = 30.0  # then half-open
    half_open_calls: int = 3  # probes let through in half-open

    def __post_init__(self) -> None:
        if self.window not in MAX_SIZE:
            raise ValueError(f"window must be 'count' or 'time', got {self.window!r}")
        if not 1 <= self.window_size <= MAX_SIZE[self.window]:
            limit = MAX_SIZE[self.window]
            raise ValueError(f"window_size must be in 1..{limit}, got {self.window_size}")
        if self.minimum_calls < 1:
            raise ValueError(f"minimum_calls must be at least 1, got {self.minimum_calls}")
        if self.window == "count" and self.minimum_calls > self.window_size:
            raise ValueError(
                f"minimum_calls {self.minimum_calls} must not exceed a count window's "
                f"window_size {self.window_size}: the breaker could never open"
            )
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.slow_call_threshold_s > 0.0:
            raise ValueError(f"slow_call_threshold_s must be > 0, got {self.slow_call_threshold_s}")
        if not (math.isfinite(self.wait_in_open_s) and self.wait_in_open_s > 0.0):
            raise ValueError(
                f"wait_in_open_s must be positive and finite, got {self.wait_in_open_s}"
            )
        if not 1 <= self.half_open_calls <= _MAX_PROBES:
            raise ValueError(
                f"half_open_calls must be in 1..{_MAX_PROBES}, got {self.half_open_calls}"
            )


class CallResult(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # 5xx, timeout, connection error
    IGNORED = "ignored"  # a 4xx the caller caused, or a cancelled call: not counted at all


class PermitKind(enum.StrEnum):
    CALL = "call"  # closed: go, and record with probe=False
    PROBE = "probe"  # half-open: go, and record with probe=True, exactly once
    REFUSE = "refuse"


class Permit(NamedTuple):
    """Go or not; when refused, `retry_at` says when to ask again (epoch seconds).

    `retry_at` is None when allowed, and when refused in half-open with every probe out: the
    breaker then waits on the probes, so no time is known; ask again after a poll interval.
    """

    kind: PermitKind
    retry_at: float | None = None

    @property
    def allowed(self) -> bool:
        return self.kind is not PermitKind.REFUSE


class BreakerState(NamedTuple):
    """One breaker. `BreakerState()` is the initial state: closed, empty window, never opened.

    The window is filled only while closed; the probe counters only while half-open.
    """

    mode: Mode = "closed"
    window: Window = TimeWindow()
    opened_at: float = -math.inf  # when it last opened; -inf: never
    probes_in_flight: int = 0
    probes_done: int = 0  # reported, success or failure (IGNORED frees the slot instead)
    probes_failed: int = 0
    probes_slow: int = 0


class Snapshot(TypedDict):
    """What `callstream breakers` and the metrics show for one breaker."""

    mode: Mode
    calls: int  # closed: calls in the window; half-open: probes reported; open: 0
    failure_rate: float
    slow_rate: float
    probes_in_flight: int
    seconds_until_half_open: float | None  # open only: 0.0 once the next permit may probe


_CALL = Permit(PermitKind.CALL)
_PROBE = Permit(PermitKind.PROBE)
_WAIT_FOR_PROBES = Permit(PermitKind.REFUSE)


def permit(
    state: BreakerState, *, now: float, policy: BreakerPolicy
) -> tuple[Permit, BreakerState]:
    """May a call go now? Returns the permit and the new state (a probe is counted out).

    Args:
        state: the breaker.
        now: epoch seconds (the state may move between owners, so not a monotonic clock).
        policy: the breaker's thresholds and waits.

    Returns:
        `(Permit, state)`: CALL when closed; REFUSE with `retry_at = opened_at + wait` while
        open, then PROBE (moving to half-open); in half-open PROBE until `half_open_calls` are
        out or reported, then REFUSE with no `retry_at`.
    """
    _check_now(now)
    if state.mode == "closed":
        return _CALL, state
    if state.mode == "open":
        until = state.opened_at + policy.wait_in_open_s
        if now < until:
            return Permit(PermitKind.REFUSE, until), state
        state = BreakerState("half_open", empty(policy.window), state.opened_at)
    if state.probes_in_flight + state.probes_done >= policy.half_open_calls:
        return _WAIT_FOR_PROBES, state
    return _PROBE, state._replace(probes_in_flight=state.probes_in_flight + 1)


def record(
    state: BreakerState,
    result: CallResult,
    *,
    duration_s: float,
    now: float,
    policy: BreakerPolicy,
    probe: bool,
) -> BreakerState:
    """Count the outcome of a permitted call; may open, reopen or close the breaker.

    Args:
        result: SUCCESS, FAILURE, or IGNORED (not counted; an ignored probe frees its slot).
        duration_s: how long the call took; slow when above `slow_call_threshold_s`.
        now: when it finished, epoch seconds.
        probe: the permit was a PROBE (else a CALL).

    Returns:
        The new state; compare `.mode` (or use `transition`) to log and count transitions.
        A result from before the mode changed is dropped (see the module notes).
    """
    _check_now(now)
    if not duration_s >= 0.0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    failed, slow = result is CallResult.FAILURE, duration_s > policy.slow_call_threshold_s
    if probe:
        if state.mode != "half_open" or state.probes_in_flight == 0:
            return state  # a straggler: its round is over
        if result is CallResult.IGNORED:
            return state._replace(probes_in_flight=state.probes_in_flight - 1)
        return _record_probe(state, failed=failed, slow=slow, now=now, policy=policy)
    if state.mode != "closed" or result is CallResult.IGNORED:
        return state
    size = policy.window_size
    window = add(
        for_kind(state.window, policy.window), failed=failed, slow=slow, now=now, size=size
    )
    c = counts(window, now=now, size=size)
    if c.calls >= policy.minimum_calls and _tripped(c, policy):
        return BreakerState("open", empty(policy.window), now)
    return state._replace(window=window)


def record_successes(
    state: BreakerState, count: int, *, at: float, policy: BreakerPolicy
) -> BreakerState:
    """``count`` successful calls, none slow, that finished in the second of ``at``, counted at
    once: what ``record`` would make of them one by one while closed (successes never open a
    breaker), for a caller that tallies them on its hot path. Dropped unless closed."""
    if state.mode != "closed" or count <= 0:
        return state
    window = add(
        for_kind(state.window, policy.window),
        failed=False,
        slow=False,
        now=at,
        size=policy.window_size,
        calls=count,
    )
    return state._replace(window=window)


def _record_probe(
    state: BreakerState, *, failed: bool, slow: bool, now: float, policy: BreakerPolicy
) -> BreakerState:
    done = state.probes_done + 1
    failures, slows = state.probes_failed + failed, state.probes_slow + slow
    # Judged against every probe the round lets through: the rest can only add to these.
    if _tripped(Counts(policy.half_open_calls, failures, slows), policy):
        return BreakerState("open", empty(policy.window), now)
    if done >= policy.half_open_calls:
        return BreakerState("closed", empty(policy.window), state.opened_at)
    return state._replace(
        probes_in_flight=state.probes_in_flight - 1,
        probes_done=done,
        probes_failed=failures,
        probes_slow=slows,
    )


def _tripped(c: Counts, policy: BreakerPolicy) -> bool:
    return (
        c.failure_rate >= policy.failure_rate_threshold
        or c.slow_rate >= policy.slow_call_rate_threshold
    )


def _check_now(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now}")


def transition(before: BreakerState, after: BreakerState) -> tuple[Mode, Mode] | None:
    """`(from, to)` when the mode changed between two states, else None: for logs and metrics."""
    return None if before.mode == after.mode else (before.mode, after.mode)


def after_handover(state: BreakerState) -> BreakerState:
    """The state a new owner continues from after a partition moved to it.

    Probes the old owner let through report to the old owner, never here; forgetting them lets
    this owner send its own. An open breaker stays open until its `opened_at + wait_in_open_s`.
    """
    return state._replace(probes_in_flight=0) if state.probes_in_flight else state


def snapshot(state: BreakerState, *, now: float, policy: BreakerPolicy) -> Snapshot:
    """The breaker as an operator sees it at `now`."""
    if state.mode == "closed":
        c = counts(for_kind(state.window, policy.window), now=now, size=policy.window_size)
    elif state.mode == "half_open":
        c = Counts(state.probes_done, state.probes_failed, state.probes_slow)
    else:
        c = Counts()
    until = state.opened_at + policy.wait_in_open_s - now
    return Snapshot(
        mode=state.mode,
        calls=c.calls,
        failure_rate=c.failure_rate,
        slow_rate=c.slow_rate,
        probes_in_flight=state.probes_in_flight,
        seconds_until_half_open=max(0.0, until) if state.mode == "open" else None,
    )


def to_bytes(state: BreakerState) -> bytes:
    """Encode for a compacted topic or table: an 18-byte versioned header, then the window."""
    probes = (state.probes_in_flight, state.probes_done, state.probes_failed, state.probes_slow)
    head = _HEAD.pack(_VERSION, _MODES.index(state.mode), state.opened_at, *probes)
    return head + pack(state.window)


def from_bytes(raw: bytes) -> BreakerState:
    """Decode what `to_bytes` wrote; raise InvalidBreakerState (a ValueError) for anything else.

    Times are epoch seconds, so a decoded open breaker refuses calls until `opened_at +
    wait_in_open_s` on its new owner too. A new owner should also call `after_handover`.
    """
    if len(raw) < _HEAD.size or raw[0] != _VERSION:
        raise InvalidBreakerState(f"not a v{_VERSION} breaker state: {raw[: _HEAD.size]!r}")
    _, mode, opened_at, in_flight, done, failed, slow = _HEAD.unpack_from(raw)
    # opened_at may be -inf (never opened), not NaN or +inf (open forever); probe counters
    # are nonzero in half-open only.
    sane = mode < len(_MODES) and opened_at < math.inf and max(failed, slow) <= done
    if not sane or (in_flight + done > 0 and _MODES[mode] != "half_open"):
        raise InvalidBreakerState(f"inconsistent breaker state: {raw[: _HEAD.size]!r}")
    window = unpack(raw[_HEAD.size :])
    return BreakerState(_MODES[mode], window, opened_at, in_flight, done, failed, slow)
