"""Reference checks for the tests: what a provider enforcing a limit strictly would accept."""

from __future__ import annotations

import math
from collections.abc import Iterable

# Waits under bucket.EPSILON_S count as "now", and epoch-scale floats carry ~0.24 us of
# rounding; anything within this of conformant is conformant.
TOLERANCE_S = 3e-6

Event = tuple[float, int]  # (time, cost)


def strict_provider_accepts(
    events: Iterable[Event], *, burst: int, rate_per_s: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """A token bucket (burst, rate) checking each arrival, written as a GCRA, independently."""
    interval = 1.0 / rate_per_s
    full_at = -math.inf
    for t, cost in sorted(events):
        full_at = max(full_at, t) + cost * interval
        if full_at - burst * interval > t + tolerance_s:
            return False
    return True


def worst_window_excess(
    events: Iterable[Event], *, burst: int, rate_per_s: float, tolerance_s: float = TOLERANCE_S
) -> float:
    """Max over windows [t_i, t_j] of admitted - (burst + rate * w); <= 0 means within limit."""
    ordered = sorted(events)
    worst = -math.inf
    for i, (start, _) in enumerate(ordered):
        admitted = 0
        for end, cost in ordered[i:]:
            admitted += cost
            allowed = burst + rate_per_s * (end - start + tolerance_s)
            worst = max(worst, admitted - allowed)
    return worst
