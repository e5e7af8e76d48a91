"""GCRA rate limiting for one limit key: pure functions over a one-float frozen state."""

# Why GCRA (the Generic Cell Rate Algorithm, ITU-T I.371) rather than a classic token bucket:
# it is the same limit (`burst` at once, `rate_per_s` sustained) but the whole state is one
# instant, `full_at`, the moment the bucket would be full again. A token bucket needs two
# values (tokens, last refill) that must change together. One float is 9 bytes in the
# changelog, has no refill arithmetic to drift, and expresses reservations for free: a
# reserved slot simply pushes `full_at` further into the future, so queued callers wake one
# interval apart instead of all at once.

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_JITTER_S",
    "EPSILON_S",
    "Bucket",
    "LimitPolicy",
    "available",
    "fresh_after_handover",
    "observe_provider_headers",
    "peek",
    "shard",
    "take",
]

# Spread between our send time and the provider's arrival time (network, TLS, event-loop lag
# between taking a token and writing the request). 50 ms covers the tail of a healthy
# internet path; settings may override it per provider.
DEFAULT_JITTER_S = 0.05

# Waits shorter than this count as "go now". Epoch seconds as floats have a resolution of
# about 0.24 us, so exact conformance can compute as a wait of a few ulps; without this a
# caller would be told to wait 1e-7 s forever at a fixed `now`.
EPSILON_S = 1e-6

_STATE = struct.Struct(">Bd")
_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """A provider limit: at most `burst` calls at once and `rate_per_s` sustained.

    Safety margin. Suppose the provider enforces exactly this (burst B, interval T = 1/rate)
    on arrival times, and each call arrives between d and d + J after we send it (J =
    `jitter_s`). Arrivals inside a window of length w were sent inside a window of length
    w + J, so if we admit at most B' + (w + J)/T sends per window, the provider sees at most
    B' + J/T + w/T. That stays within B + w/T when B' <= B - J/T, hence
    `effective_burst = burst - ceil(rate * jitter)`: the margin is the tokens the jitter can
    squeeze into one window. When that leaves less than one token, we keep a burst of 1 and
    stretch the interval instead: the (B+1)-th arrival must come B*T' - J after the first,
    which needs T' = (T + J) / B.
    """

    rate_per_s: float
    burst: int
    jitter_s: float = DEFAULT_JITTER_S
    # Derived once: take() runs per call on the hot path.
    effective_burst: int = field(init=False, repr=False, compare=False)
    interval_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate_per_s must be positive and finite, got {self.rate_per_s}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if not (math.isfinite(self.jitter_s) and self.jitter_s >= 0):
            raise ValueError(f"jitter_s must be >= 0 and finite, got {self.jitter_s}")
        # Less a hair, so 10/s * 0.3 s = 3.0000000000000004 costs 3 tokens, not 4.
        margin = math.ceil(self.rate_per_s * self.jitter_s - 1e-9)
        base = 1.0 / self.rate_per_s
        if self.burst - margin >= 1:
            effective, interval = self.burst - margin, base
        else:
            effective, interval = 1, (base + self.jitter_s) / self.burst
        object.__setattr__(self, "effective_burst", effective)
        object.__setattr__(self, "interval_s", interval)

    @property
    def safety_margin(self) -> int:
        """Tokens of the provider's burst we never use, so jitter cannot cause a violation."""
        return self.burst - self.effective_burst

    @property
    def capacity_s(self) -> float:
        """Seconds an empty bucket takes to fill."""
        return self.effective_burst * self.interval_s


@dataclass(frozen=True, slots=True)
class Bucket:
    """GCRA state: `full_at` is when the bucket is full again (the theoretical arrival time).

    Tokens at `now` are `effective_burst - (full_at - now) / interval`; a `full_at` further
    ahead than one bucket's worth means slots are already reserved for waiting callers.
    """

    full_at: float = -math.inf

    def __post_init__(self) -> None:
        if math.isnan(self.full_at):
            raise ValueError("Bucket.full_at must not be NaN")

    def __repr__(self) -> str:
        return f"Bucket(full_at={self.full_at:.6f})"

    def to_bytes(self) -> bytes:
        """Serialise as 9 bytes: a version byte and a big-endian double."""
        return _STATE.pack(_STATE_VERSION, self.full_at)

    @classmethod
    def from_bytes(cls, data: bytes) -> Bucket:
        """Read what `to_bytes` wrote; raise ValueError for anything else."""
        if len(data) != _STATE.size or data[0] != _STATE_VERSION:
            raise ValueError(f"not a v{_STATE_VERSION} Bucket: {data!r}")
        _, full_at = _STATE.unpack(data)
        return cls(full_at)


def take(
    b: Bucket,
    *,
    now: float,
    policy: LimitPolicy,
    cost: int = 1,
    max_wait_s: float = math.inf,
) -> tuple[Bucket, float]:
    """Reserve `cost` tokens; return the new bucket and the wait in seconds (0.0 = go now).

    Args:
        b: the key's current state.
        now: the current time, epoch seconds.
        policy: the limit for this key.
        cost: tokens this call spends.
        max_wait_s: reserve only if the wait is at most this; 0.0 means "only if it can go
            now". Otherwise the bucket comes back unchanged with the wait it would need.

    Returns:
        `(bucket, wait_s)`. A caller that got a reservation may send at `now + wait_s` without
        asking again. `wait_s` is `math.inf` when `cost` exceeds the effective burst: that
        call can never conform and must be rejected.
    """
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost}")
    if cost > policy.effective_burst:
        return b, math.inf
    full_at = max(b.full_at, now) + cost * policy.interval_s
    wait = full_at - policy.capacity_s - now
    wait = 0.0 if wait < EPSILON_S else wait
    if wait > max_wait_s:
        return b, wait
    return Bucket(full_at), wait


def peek(b: Bucket, *, now: float, policy: LimitPolicy, cost: int = 1) -> float:
    """The wait before `cost` tokens could be taken, without reserving anything."""
    return take(b, now=now, policy=policy, cost=cost, max_wait_s=-1.0)[1]  # -1: never reserve


def available(b: Bucket, *, now: float, policy: LimitPolicy) -> float:
    """Tokens available at `now`, between 0 and the effective burst (fractions included)."""
    debt = max(0.0, b.full_at - now) / policy.interval_s
    return max(0.0, policy.effective_burst - debt)


def fresh_after_handover(
    *, now: float, policy: LimitPolicy, restored: Bucket | None = None
) -> Bucket:
    """The state a new owner starts from after a partition moves: empty, refilling from `now`.

    The old owner may have spent tokens that never reached the changelog, so the restored
    state can be too generous; an empty bucket is safe whatever it spent before revocation.
    A restored state that is stricter still (reservations ahead) wins. The old owner must stop
    sending at revocation; nothing here can fence a zombie.
    """
    empty = Bucket(now + policy.capacity_s)
    if restored is not None and restored.full_at > empty.full_at:
        return restored
    return empty


def observe_provider_headers(
    b: Bucket,
    *,
    remaining: int,
    reset_s: float | None = None,
    now: float,
    policy: LimitPolicy,
    in_flight: int = 0,
    keep_margin: bool = True,
) -> Bucket:
    """Lower our estimate to what the provider reports; never raise it.

    Args:
        b: our current state for the key.
        remaining: the provider's `X-RateLimit-Remaining` (or equivalent).
        reset_s: seconds until the provider's window resets, if it said. Read strictly, as a
            fixed window: at most `remaining` more calls before then.
        now: when the response arrived.
        policy: the limit for this key.
        in_flight: our calls to this key still outstanding; the provider has not counted
            them yet but will, and we already spent tokens for them.
        keep_margin: keep ``safety_margin`` below the provider's count, as ``take`` assumes
            of a rate that is the provider's own. An adaptive rate probes past the provider's
            anyway and learns from its 429s; there the margin (5 tokens at 100/s and 50 ms of
            jitter) only leaves a small provider burst unused (77% of a 50/s limit, measured).

    Returns:
        The stricter of `b` and the provider's view. The margin is subtracted too, so our
        bucket stays `safety_margin` below the provider's, as `take` assumes.
    """
    tokens = remaining - in_flight - (policy.safety_margin if keep_margin else 0)
    full_at = now + (policy.effective_burst - tokens) * policy.interval_s
    if reset_s is not None:
        # Place the (tokens + 1)-th call no earlier than the reset.
        spacing = (policy.effective_burst - 1 - tokens) * policy.interval_s
        full_at = max(full_at, now + max(0.0, reset_s) + spacing)
    return b if full_at <= b.full_at else Bucket(full_at)


def shard(policy: LimitPolicy, n: int) -> LimitPolicy:
    """One of `n` equal shards of `policy`: rate/n and burst//n, so the shards sum to at most it.

    Raises ValueError when `n` exceeds the burst: every shard needs a burst of at least 1, and
    n shards of 1 could send n > burst calls at once.
    """
    if not 1 <= n <= policy.burst:
        raise ValueError(f"can split burst {policy.burst} into 1..{policy.burst} shards, not {n}")
    rate = policy.rate_per_s / n
    if rate * n > policy.rate_per_s:  # float rounding must not hand out extra rate
        rate = math.nextafter(rate, 0.0)
    return LimitPolicy(rate, policy.burst // n, policy.jitter_s)
