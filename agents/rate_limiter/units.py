"""Limits on units (tokens, records) per window: reserve an estimate, then settle the actual.

A call to a provider that limits units (OpenAI's tokens per minute) does not know its cost
until the answer says it (``usage.total_tokens``). So it reserves an estimate on the key's GCRA
bucket (bucket.py) before it is sent, and settles once the answer is read: the units it spent
beyond the reservation are charged (a debt later callers wait out), the units it did not spend
are refunded. Pure functions and one small learner; no I/O, no clock.

Refunds are where the care goes: our bucket holds each call's reservation, the provider's holds
only what the call spent, so the provider's may run full while ours does not, and tokens do not
pile up beyond a full bucket. A refund is safe only up to the part of the reservation's slot
still ahead of ``now`` (the rest may already have refilled a full bucket at the provider), and
that slot moves earlier with every refund made since: hence ``UnitsBucket.refunded_s``.
Without it (found by the property tests): burst 87 units at 1/s; A reserves 87 at t=1 (slot
to 88), C 45 at t=47 (slot to 133); A spent 13 and refunds 22 at t=66; D reserves 87 at t=111,
our bucket just full; C spent 18 and, against its old slot end, would refund 16 at t=117, so
E would go 16 s before the provider has the units. C's slot really ended at 111.

Reservations only go now (no ``max_wait_s`` as in ``take``): a reservation that waits holds a
slot in the future, and a refund cannot safely be passed to callers behind it. Burst 1 unit at
1/s: B reserves 1 at t=0; A waits for the slot at t=1; B settles at 0.5 having spent nothing;
a refund would let C take the slot at 1.5, and the provider sees A and C (2 units) within half
a second. The waiting room waits instead (``BucketGate`` never reserves ahead either).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from agents.rate_limiter.bucket import DEFAULT_JITTER_S, EPSILON_S, Bucket, LimitPolicy
from providers.declaration import OperationSpec, ProviderSpec, UnitLimitSpec
from providers.errors import InvalidResponse
from providers.response import ProviderReply, json_at, load_json

__all__ = [
    "UNITS_RATE_MARGIN",
    "OperationKey",
    "Reservation",
    "UnitEstimator",
    "UnitsBucket",
    "UnitsReader",
    "UnitsSeen",
    "observe_headers",
    "reserve",
    "settle",
    "units_policy",
]

# (provider, operation): units are estimated per operation, whose calls look alike.
OperationKey = tuple[str, str]

_STATE = struct.Struct(">Bdd")
_STATE_VERSION = 1


# ---- reserve and settle ---------------------------------------------------------------------

# Our units bucket runs this much below the declared rate. Without a margin a backlog keeps the
# provider's bucket as empty as ours, and each call whose estimate fell short (about 1 in 20)
# finds too few tokens there: replaying the Azure trace's sizes, backlogged at 30,000 TPM,
# 8% of calls were refused with answers in 0.5 s, 2.5% in 2 s (more calls in flight hold more
# over-reserved slack). Sent below the limit (settling charges every shortfall, so what is sent
# is what the policy allows), the provider's bucket keeps a slack that absorbs shortfalls: at
# 2%, none refused and 97-98% of the limit used (answers in 0.1-15 s); at 1%, 4 in 670.
UNITS_RATE_MARGIN = 0.02


def units_policy(
    limit: UnitLimitSpec, *, jitter_s: float = DEFAULT_JITTER_S, margin: float = UNITS_RATE_MARGIN
) -> LimitPolicy:
    """The policy of a declared units limit: its rate less ``margin``, its whole burst."""
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    return LimitPolicy(limit.per_s * (1 - margin), limit.capacity, jitter_s)


@dataclass(frozen=True, slots=True)
class UnitsBucket:
    """A GCRA bucket of units (``full_at`` as in ``Bucket``) and the seconds refunded into it so
    far, which only grows: a reservation's slot has moved earlier by the refunds made since."""

    full_at: float = -math.inf
    refunded_s: float = 0.0

    def __post_init__(self) -> None:
        if math.isnan(self.full_at) or not (
            math.isfinite(self.refunded_s) and self.refunded_s >= 0
        ):
            raise ValueError(f"not a units bucket: {self.full_at}, {self.refunded_s}")

    def __repr__(self) -> str:
        return f"UnitsBucket(full_at={self.full_at:.6f}, refunded_s={self.refunded_s:.6f})"

    @property
    def bucket(self) -> Bucket:
        """The plain GCRA state, for bucket.py's functions (``available``, handovers, headers)."""
        return Bucket(self.full_at)

    def with_bucket(self, b: Bucket) -> UnitsBucket:
        """This state with ``full_at`` from ``b`` (what bucket.py's functions returned); the
        refund count is kept, so reservations made before still settle safely."""
        return self if b.full_at == self.full_at else UnitsBucket(b.full_at, self.refunded_s)

    def to_bytes(self) -> bytes:
        """Serialise as 17 bytes: a version byte and two big-endian doubles."""
        return _STATE.pack(_STATE_VERSION, self.full_at, self.refunded_s)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnitsBucket:
        """Read what ``to_bytes`` wrote; raise ValueError for anything else."""
        if len(data) != _STATE.size or data[0] != _STATE_VERSION:
            raise ValueError(f"not a v{_STATE_VERSION} UnitsBucket: {data!r}")
        _, full_at, refunded_s = _STATE.unpack(data)
        return cls(full_at, refunded_s)


class Reservation(NamedTuple):
    """Units a call holds on a bucket until its answer settles them."""

    # Reserved: the estimate, clamped to the effective burst.
    units: float
    # The bucket's full_at right after reserving: the end of this reservation's slot...
    ends_at: float
    # ...less the refunds made since this count (the bucket's refunded_s then).
    refunded_s: float
    # The estimate asked for; more than ``units`` when it was clamped.
    requested: float

    @property
    def clamped(self) -> bool:
        """The estimate exceeded the effective burst: a call that large can never conform, so
        it reserved a full bucket and will settle the rest as a debt."""
        return self.units < self.requested


def reserve(
    state: UnitsBucket, *, now: float, policy: LimitPolicy, units: float
) -> tuple[UnitsBucket, float, Reservation | None]:
    """Reserve ``units`` if the call can go now.

    Args:
        state: the key's units bucket.
        now: the current time, epoch seconds.
        policy: the units limit (a "token" of it is one unit). Its jitter margin covers
            fractional units when the burst exceeds rate * jitter (always, for limits per
            minute); below that LimitPolicy stretches the interval, safe for whole calls only.
        units: the call's estimate; fractions allowed, ``math.inf`` (nothing known yet) or
            anything above the effective burst reserves the effective burst: a full bucket.
            0 reserves nothing, but still waits out a debt.

    Returns:
        ``(state, 0.0, reservation)`` when it goes now, or ``(state, wait_s, None)`` unchanged:
        nothing reserved, and the wait until it could go (with no other caller in between).

    Raises:
        ValueError: ``units`` is negative or NaN.
    """
    if not units >= 0:  # also NaN
        raise ValueError(f"units must be >= 0, got {units}")
    cost = min(units, float(policy.effective_burst))
    full_at = max(state.full_at, now) + cost * policy.interval_s
    wait = full_at - policy.capacity_s - now
    if wait >= EPSILON_S:
        return state, wait, None
    held = Reservation(cost, full_at, state.refunded_s, units)
    return UnitsBucket(full_at, state.refunded_s), 0.0, held


def settle(
    state: UnitsBucket,
    reservation: Reservation,
    *,
    actual: float,
    now: float,
    policy: LimitPolicy,
) -> UnitsBucket:
    """The bucket once a call that reserved ``reservation`` turned out to spend ``actual``.

    More than reserved: the difference is charged, pushing ``full_at`` further, past a whole
    bucket if need be (a debt later callers wait out; the provider has already counted it).
    Less: the difference is refunded, but only the part of the reservation's slot still ahead
    of ``now`` (see the module's doc), never past a full bucket, and never more than was
    reserved. Call it once per reservation; a call that was never sent settles with
    ``actual=0``.

    The bound is conservative: it ignores the reservations made since, which keep the slot
    ahead in a backlog. A call settling L s after it was sent gets its refund while
    L * (reserved / spent) stays under the bucket's capacity (60 s for a limit per minute:
    calls up to about 20 s at the estimator's 2.8 on the Azure trace); slower calls get part.

    Raises:
        ValueError: ``actual`` is negative, NaN or infinite.
    """
    if not (math.isfinite(actual) and actual >= 0):
        raise ValueError(f"actual units must be finite and >= 0, got {actual}")
    extra = actual - reservation.units
    if extra > 0:
        return UnitsBucket(state.full_at + extra * policy.interval_s, state.refunded_s)
    slot_end = reservation.ends_at - (state.refunded_s - reservation.refunded_s)
    refund_s = min(-extra * policy.interval_s, slot_end - now)
    if refund_s <= 0:
        return state
    full_at = max(state.full_at - refund_s, min(state.full_at, now))
    if full_at >= state.full_at:
        return state
    return UnitsBucket(full_at, state.refunded_s + (state.full_at - full_at))


def observe_headers(
    state: UnitsBucket,
    *,
    remaining: float | None,
    reset_s: float | None,
    now: float,
    policy: LimitPolicy,
    in_flight: float = 0.0,
) -> UnitsBucket:
    """The bucket once an answer reported the provider's units: never fuller than the provider
    says, never fuller than before (a header only ever lowers our own accounting).

    Args:
        state: the key's units bucket.
        remaining: the units the provider says remain (``x-ratelimit-remaining-tokens``; a
            shard's share of them), if it said. Less ``in_flight`` and the policy's safety
            margin, at most that many are available from ``now``; fewer is a debt, as a
            shortfall is. The debt is what keeps refunds safe: the calls in flight settle
            later, and each gives back its unspent reservation, which must not lift the bucket
            above the provider's count.
        reset_s: seconds until the provider's bucket is full again (OpenAI's
            ``x-ratelimit-reset-tokens``: a token bucket refilling continuously, not a fixed
            window), if it said: ours is not full before then.
        now: when the answer arrived, epoch seconds.
        policy: the key's units policy.
        in_flight: units our calls to the key not back yet have reserved: the provider has
            not counted those it has not received, and charges them when they arrive. Those
            it has counted are subtracted twice, the price of not knowing which they are.
    """
    full_at = state.full_at
    if remaining is not None:
        units = remaining - in_flight - policy.safety_margin
        full_at = max(full_at, now + (policy.effective_burst - units) * policy.interval_s)
    if reset_s is not None:
        full_at = max(full_at, now + reset_s)
    return state if full_at <= state.full_at else UnitsBucket(full_at, state.refunded_s)


# ---- estimates ------------------------------------------------------------------------------

# The learner is the one TCP uses for its retransmission timeout (Jacobson/Karels, RFC 6298):
# an EWMA of the value, an EWMA of its absolute deviation, and the estimate their sum with the
# deviation weighted K. It needs no samples kept and no sorting, and K * deviation stretches
# with the spread: a fixed margin (mean * 1.2) is too much for steady sizes and too little for
# skewed ones. Reserving too much costs little (settle refunds it); too little costs a debt and,
# when the provider's bucket is short, a 429. So the estimate aims high: with K = 3 it covered
# 95.2% of the calls of the Azure conversation trace (tokens per call: mean 1,366, p95 4,136),
# reserving 2.8 times their tokens (no constant reaches p95 for less: 4,136 / 1,366 = 3.0); 95%
# of exponential sizes, 94% of lognormal (sigma 1 and 1.5) and Pareto ones. K = 3.5 would cover
# 95-97% for 10% more reserved. The gains are slower than TCP's 1/8 and 1/4: sizes of one
# operation drift slowly, and a heavy tail is noise to average.
MEAN_GAIN = 1 / 16
DEVIATION_GAIN = 1 / 8
DEVIATION_WEIGHT = 3.0


@dataclass(slots=True)
class _Ewma:
    mean: float
    deviation: float

    @classmethod
    def first(cls, value: float) -> _Ewma:
        # RFC 6298 starts the deviation at half the first sample: the first estimate is then
        # mean + K/2 * mean, generous while one sample says little.
        return cls(value, value / 2)

    def add(self, value: float, mean_gain: float, deviation_gain: float) -> None:
        self.deviation += deviation_gain * (abs(value - self.mean) - self.deviation)
        self.mean += mean_gain * (value - self.mean)

    def high(self, weight: float) -> float:
        return self.mean + weight * self.deviation


@dataclass(slots=True)
class _Operation:
    declared: float | None = None
    # The bound a request gives covers only part of the units; the rest is learned apart.
    bound_is_partial: bool = False
    units: _Ewma | None = None
    unbounded: _Ewma | None = None
    # The unbounded part per byte of the request body: a prompt's tokens grow with its text,
    # and one call's own size says more than the operation's average (replaying the Azure
    # trace against an empty provider bucket, the average left 10 calls in 100 short, the
    # 2,000-token prompts by up to 1,240 tokens, and the provider refused them).
    unbounded_per_byte: _Ewma | None = None


class UnitEstimator:
    """Units a call of each operation will spend, estimated high enough to rarely fall short.

    Per operation: the declared estimate until answers are observed, then a learned high
    estimate (see DEVIATION_WEIGHT), capped by the request's own bound when it gives one.
    With a partial bound (``units_unbounded_from``: the bound is ``max_tokens``, the units are
    prompt plus completion) the estimate is the bound plus a high estimate of the unbounded
    part: per byte of the request's body when its size is known, else per call.
    Nothing known and no bound: ``math.inf``, which ``reserve`` clamps to a full bucket, so calls
    go one at a time until the first answer. In memory only: a restarted worker relearns.
    """

    __slots__ = ("_deviation_gain", "_mean_gain", "_operations", "_weight")

    def __init__(
        self,
        *,
        mean_gain: float = MEAN_GAIN,
        deviation_gain: float = DEVIATION_GAIN,
        deviation_weight: float = DEVIATION_WEIGHT,
    ) -> None:
        for name, gain in (("mean_gain", mean_gain), ("deviation_gain", deviation_gain)):
            if not 0 < gain <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {gain}")
        if not (math.isfinite(deviation_weight) and deviation_weight >= 0):
            raise ValueError(f"deviation_weight must be >= 0 and finite, got {deviation_weight}")
        self._mean_gain = mean_gain
        self._deviation_gain = deviation_gain
        self._weight = deviation_weight
        self._operations: dict[OperationKey, _Operation] = {}

    def __repr__(self) -> str:
        return f"UnitEstimator(operations={len(self._operations)})"

    @classmethod
    def for_providers(cls, specs: Mapping[str, ProviderSpec], **tuning: float) -> UnitEstimator:
        """An estimator declaring every operation of ``specs`` (by provider name) that spends
        units; ``tuning`` as the constructor's keywords."""
        estimator = cls(**tuning)
        for provider, spec in specs.items():
            for name, op in spec.operations.items():
                if op.spends_units:
                    estimator.declare((provider, name), op)
        return estimator

    def declare(self, key: OperationKey, op: OperationSpec) -> None:
        """Take an operation's declared estimate and bound shape; learned values are kept."""
        entry = self._operations.setdefault(key, _Operation())
        entry.declared = None if op.units_estimate is None else float(op.units_estimate)
        entry.bound_is_partial = op.units_unbounded_from is not None

    def estimate(
        self, key: OperationKey, *, bound: float | None = None, body_bytes: int = 0
    ) -> float:
        """Units to reserve for a call of ``key``; ``bound`` is what its request allows (the
        value at ``units_from_request``), if it says; ``body_bytes`` the size of its body.
        ``math.inf`` when nothing is known."""
        entry = self._operations.get(key)
        if entry is None:
            return math.inf if bound is None else bound
        if entry.units is not None:
            guess = max(0.0, entry.units.high(self._weight))
        else:
            guess = entry.declared if entry.declared is not None else math.inf
        if bound is None:
            return guess
        if not entry.bound_is_partial:
            return min(guess, bound)
        if entry.unbounded_per_byte is not None and body_bytes > 0:
            per_byte = max(0.0, entry.unbounded_per_byte.high(self._weight))
            return bound + per_byte * body_bytes  # this call's own size, not the average's
        if entry.unbounded is None:
            return guess
        return min(guess, bound + max(0.0, entry.unbounded.high(self._weight)))

    def observe(
        self,
        key: OperationKey,
        units: float,
        *,
        unbounded: float | None = None,
        body_bytes: int = 0,
    ) -> None:
        """Learn from one answer: the units it spent, and the part no request bound covers
        (``units_unbounded_from``) when read, per call and per byte of the request's body
        (``body_bytes``). Negative or non-finite values are ignored."""
        entry = self._operations.setdefault(key, _Operation())
        if math.isfinite(units) and units >= 0:
            entry.units = self._add(entry.units, units)
        if unbounded is not None and math.isfinite(unbounded) and unbounded >= 0:
            entry.unbounded = self._add(entry.unbounded, unbounded)
            if body_bytes > 0:
                ratio = unbounded / body_bytes
                entry.unbounded_per_byte = self._add(entry.unbounded_per_byte, ratio)

    def learned(self, key: OperationKey) -> float | None:
        """The learned high estimate, uncapped; None before the first answer (for metrics)."""
        entry = self._operations.get(key)
        return None if entry is None or entry.units is None else entry.units.high(self._weight)

    def _add(self, stats: _Ewma | None, value: float) -> _Ewma:
        if stats is None:
            return _Ewma.first(value)
        stats.add(value, self._mean_gain, self._deviation_gain)
        return stats


# ---- reading units --------------------------------------------------------------------------


class UnitsSeen(NamedTuple):
    """What an answer says of its units; None where it says nothing usable."""

    actual: float | None = None
    # The part of them no request bound covers (``units_unbounded_from``: the prompt).
    unbounded: float | None = None


_NOTHING = UnitsSeen()


class UnitsReader:
    """Reads one operation's units from its answers, and their bound from its requests.

    Never raises: a body that is not JSON, a path that is missing, a value that is not a
    non-negative finite number (or is a boolean) all read as None.
    """

    __slots__ = ("_actual", "_bound", "_unbounded")

    def __init__(
        self,
        units_from: str | None,
        *,
        bound_from: str | None = None,
        unbounded_from: str | None = None,
    ) -> None:
        self._actual = _split(units_from)
        self._bound = _split(bound_from)
        self._unbounded = _split(unbounded_from)

    def __repr__(self) -> str:
        return f"UnitsReader(units_from={'.'.join(self._actual or ()) or None!r})"

    @classmethod
    def for_operation(cls, op: OperationSpec) -> UnitsReader:
        return cls(
            op.units_from, bound_from=op.units_from_request, unbounded_from=op.units_unbounded_from
        )

    @property
    def reads_answers(self) -> bool:
        """Whether answers carry the units (else the reservation is final)."""
        return self._actual is not None

    def read(self, reply: ProviderReply) -> UnitsSeen:
        """The units in a reply's JSON body."""
        if self._actual is None:
            return _NOTHING
        return self.read_json(_parse(reply.body))

    def read_json(self, data: Any) -> UnitsSeen:
        """The units in an already parsed body."""
        if self._actual is None:
            return _NOTHING
        actual = _number(json_at(data, self._actual))
        unbounded = None if self._unbounded is None else _number(json_at(data, self._unbounded))
        return UnitsSeen(actual, unbounded)

    def bound(self, request_body: bytes | None) -> float | None:
        """The request's own bound on the units (``max_tokens``), if declared and given."""
        if self._bound is None or not request_body:
            return None
        return _number(json_at(_parse(request_body), self._bound))


def _split(path: str | None) -> tuple[str, ...] | None:
    return None if path is None else tuple(path.split("."))


def _parse(body: bytes) -> Any:
    try:
        return load_json(body)
    except InvalidResponse:  # nested too deeply
        return None


def _number(value: Any) -> float | None:
    # bool is an int in Python, but ``true`` is no count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double
        return None
    return number if math.isfinite(number) and number >= 0 else None
