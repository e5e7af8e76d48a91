"""A discrete-event simulation of one backlogged limit key against a provider's hidden limit.

Our side is the real code: the key's GCRA bucket (``bucket.take``) at the rate ``KeyRates``
enforces, a 429 cutting it (``KeyRates.throttled``) and emptying the bucket, and growth credited
every control tick while backlogged, as ``Limiter.control_forever`` does. The provider is a
strict token bucket whose rate changes by phase; every call takes ``latency_s`` each way.
Deterministic and fast: it chooses the controller's defaults and checks them in tests, while
``callstream bench adaptive`` measures the same on the real pipeline.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from agents.rate_limiter.adaptive import Mode, RateControl
from agents.rate_limiter.bucket import Bucket, LimitPolicy, observe_provider_headers, take
from agents.rate_limiter.limiter import CONTROL_PERIOD_S
from agents.rate_limiter.rates import KeyRates

KEY = "p"


@dataclass(frozen=True)
class Phase:
    real_per_s: float
    seconds: float


@dataclass(frozen=True)
class Run:
    accepted: int
    refused: int
    allowed: float  # calls the real limit allowed over the run
    # Per phase, seconds from its start until the enforced rate stayed within the band of the
    # real limit to the phase's end (None: never).
    settle_s: tuple[float | None, ...]

    @property
    def utilization(self) -> float:
        return self.accepted / self.allowed

    @property
    def refused_share(self) -> float:
        return self.refused / (self.accepted + self.refused)


def simulate(
    control: RateControl,
    phases: Sequence[Phase],
    *,
    burst: int = 10,
    latency_s: float = 0.02,
    real_burst: int = 5,
    band: float = 0.1,
) -> Run:
    base = LimitPolicy(control.declared_per_s, burst)
    rates = KeyRates(lambda key: base, lambda key: control, lambda key: None)
    edges = _edges(phases)
    bucket = Bucket(base.capacity_s)  # a new owner's: empty, refilling from 0
    provider = _ProviderBucket(real_burst)
    refusals: list[tuple[float, float]] = []  # (arrives back, sent at)
    rate_log: list[tuple[float, float]] = []
    next_tick, now, accepted, refused = CONTROL_PERIOD_S, 0.0, 0, 0
    end = edges[-1]
    while now < end:
        new, wait = take(bucket, now=now, policy=rates.policy_for(KEY), max_wait_s=math.inf)
        send_at = now + wait
        if refusals and refusals[0][0] <= min(send_at, next_tick):
            back, sent_at = heapq.heappop(refusals)
            rates.throttled(KEY, now=back, sent_at=sent_at)
            bucket = observe_provider_headers(
                bucket, remaining=0, now=back, policy=rates.policy_for(KEY)
            )
            now = back
        elif next_tick <= send_at:
            rates.grow([KEY], CONTROL_PERIOD_S)  # backlogged throughout
            state = rates.state(KEY)
            rate_log.append((next_tick, state.rate_per_s if state else base.rate_per_s))
            next_tick += CONTROL_PERIOD_S
        else:
            bucket, now = new, send_at
            arrives = now + latency_s
            if provider.admit(arrives, _real_at(phases, edges, arrives)):
                accepted += 1
            else:
                refused += 1
                heapq.heappush(refusals, (arrives + latency_s, now))
    allowed = sum(p.real_per_s * p.seconds for p in phases)
    settle = tuple(
        _settled(rate_log, start, stop, phase.real_per_s, band)
        for phase, start, stop in zip(phases, (0.0, *edges), edges, strict=False)
    )
    return Run(accepted, refused, allowed, settle)


class _ProviderBucket:
    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.tokens = float(burst)
        self.at = 0.0

    def admit(self, now: float, rate: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _edges(phases: Sequence[Phase]) -> list[float]:
    edges, total = [], 0.0
    for phase in phases:
        total += phase.seconds
        edges.append(total)
    return edges


def _real_at(phases: Sequence[Phase], edges: Sequence[float], at: float) -> float:
    for phase, edge in zip(phases, edges, strict=True):
        if at < edge:
            return phase.real_per_s
    return phases[-1].real_per_s


def _settled(
    log: Sequence[tuple[float, float]], start: float, stop: float, real: float, band: float
) -> float | None:
    points = [(at, rate) for at, rate in log if start <= at < stop]
    settled_at = None
    for at, rate in points:
        if abs(rate - real) > band * real:
            settled_at = None
        elif settled_at is None:
            settled_at = at
    return None if settled_at is None else settled_at - start


def default_control(mode: Mode = Mode.CUBIC, declared_per_s: float = 100.0) -> RateControl:
    from streams.settings import AdaptiveSettings

    adaptive = AdaptiveSettings()
    return RateControl(
        mode,
        declared_per_s,
        decrease=adaptive.decrease,
        floor_ratio=adaptive.floor_ratio,
        max_ceiling_ratio=adaptive.max_ceiling_ratio,
        recovery_s=adaptive.recovery_s,
    )
