"""Per-key features of a cached key's traffic, updated online from access events (issue 24).

One ``KeyFeatures`` per key, as the predictive-cache agent keeps it in its Faust table: each
access event (a request that hit or missed) and each refresh (a prefetch that refilled the
entry) returns a new value, and ``vector(now)`` gives the model its inputs at decision time.
Everything is O(1) per event: two decayed counters, an EWMA of the log inter-arrival gap and
of its variance, and a few counts; no history is kept.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

__all__ = [
    "FEATURE_NAMES",
    "FORMAT_VERSION",
    "GAP_ALPHA",
    "HALF_LIVES_S",
    "KeyFeatures",
    "decayed",
]

# The decayed request counts' half-lives: about a TTL (what is hot now) and an hour (what
# is warm over the day). Not tied to any one TTL, so one state serves every operation.
HALF_LIVES_S = (300.0, 3600.0)
# Weight of the newest gap in the EWMAs: about the last 4-8 gaps count (a key's rhythm
# changes within minutes on a web log, so a long memory would lag).
GAP_ALPHA = 0.25
FORMAT_VERSION = 1

_LN2 = math.log(2.0)
_FAST_RATE = _LN2 / HALF_LIVES_S[0]
_SLOW_RATE = _LN2 / HALF_LIVES_S[1]
_TAU = 2.0 * math.pi
# version, last_s, fetched_s, expires_s, fast, slow, gap_mean, gap_var,
# requests, reads, fetches: 69 bytes.
_LAYOUT = struct.Struct("<B7d3I")
_MAX_COUNT = 2**32 - 1

FEATURE_NAMES = (
    "log_count_fast",  # log1p of the request count decayed with HALF_LIVES_S[0]
    "log_count_slow",  # ... with HALF_LIVES_S[1]
    "log_recency",  # log1p of the seconds since the last request
    "gap_mean",  # EWMA of log1p(gap s); log_recency while fewer than two requests
    "gap_std",  # the square root of the gaps' EWMA variance
    "log_reads",  # log1p of the requests served since the last fetch
    "read_since_fetch",  # 1.0 if any: the static rule as an input
    "log_fetches",  # log1p of the fetches (misses and refreshes)
    "log_requests",  # log1p of every request seen
    "hour_sin",  # the UTC hour bucket of ``now`` on the unit circle
    "hour_cos",
)


def decayed(count: float, elapsed_s: float, half_life_s: float) -> float:
    """``count`` after ``elapsed_s`` of exponential decay with ``half_life_s`` (none for a
    clock gone back)."""
    return count * math.exp(-_LN2 * max(0.0, elapsed_s) / half_life_s)


class KeyFeatures(NamedTuple):
    """One key's traffic summary (a NamedTuple: one is built per access event, and a tuple is
    the cheapest immutable value to build). Times are epoch seconds."""

    last_s: float = 0.0  # the last request (meaningless while requests == 0)
    fetched_s: float = 0.0  # the last fetch: a miss's call or a refresh
    expires_s: float = 0.0  # the entry's expiry as last reported (0.0: none known)
    fast: float = 0.0  # request count decayed with HALF_LIVES_S[0], as of last_s
    slow: float = 0.0  # ... with HALF_LIVES_S[1]
    gap_mean: float = 0.0  # EWMA of log1p(inter-arrival gap s)
    gap_var: float = 0.0  # EWMA variance of the same
    requests: int = 0
    reads: int = 0  # requests served from the entry since its last fetch
    fetches: int = 0

    def observe(self, now: float, *, hit: bool, expires_s: float) -> KeyFeatures:
        """The state after a request at ``now``.

        Args:
            now: when the request reached the cache.
            hit: served from the entry; a miss means the caller fetched it (a new entry).
            expires_s: the entry's expiry after the request (a miss's fetch sets a new one).

        Returns:
            The new state (this one is unchanged).
        """
        if self.requests:
            elapsed = now - self.last_s
            if elapsed < 0.0:  # a clock gone back (the Apache log is ordered by minute only)
                elapsed = 0.0
            fast = self.fast * math.exp(-_FAST_RATE * elapsed) + 1.0
            slow = self.slow * math.exp(-_SLOW_RATE * elapsed) + 1.0
            gap = math.log1p(elapsed)
            if self.requests == 1:
                gap_mean, gap_var = gap, 0.0
            else:
                # The EWMA of the mean and of the variance, in one pass (T. Finch,
                # "Incremental calculation of weighted mean and variance", 2009, section 9).
                delta = gap - self.gap_mean
                gap_mean = self.gap_mean + GAP_ALPHA * delta
                gap_var = (1.0 - GAP_ALPHA) * (self.gap_var + GAP_ALPHA * delta * delta)
        else:
            fast = slow = 1.0
            gap_mean = gap_var = 0.0
        if hit:
            return KeyFeatures(
                now, self.fetched_s, expires_s, fast, slow, gap_mean, gap_var,
                self.requests + 1, self.reads + 1, self.fetches,
            )  # fmt: skip
        return KeyFeatures(
            now, now, expires_s, fast, slow, gap_mean, gap_var,
            self.requests + 1, 0, self.fetches + 1,
        )  # fmt: skip

    def refreshed(self, now: float, *, expires_s: float) -> KeyFeatures:
        """The state after a prefetch refilled the entry at ``now`` (no request: the counts
        of requests stay, and reads since the fetch start again from 0)."""
        return self._replace(fetched_s=now, expires_s=expires_s, reads=0, fetches=self.fetches + 1)

    def count_at(self, now: float) -> tuple[float, float]:
        """The decayed request counts (one per ``HALF_LIVES_S``) as of ``now``."""
        elapsed = max(0.0, now - self.last_s)
        return (
            self.fast * math.exp(-_FAST_RATE * elapsed),
            self.slow * math.exp(-_SLOW_RATE * elapsed),
        )

    def vector(self, now: float) -> tuple[float, ...]:
        """The model's inputs at ``now``, in ``FEATURE_NAMES`` order (all finite)."""
        fast, slow = self.count_at(now) if self.requests else (0.0, 0.0)
        recency = math.log1p(max(0.0, now - self.last_s)) if self.requests else 0.0
        # With one request the gap is only known to exceed the time since it (censored).
        gap_mean = self.gap_mean if self.requests > 1 else recency
        angle = _TAU * ((now // 3600.0) % 24.0) / 24.0
        return (
            math.log1p(fast),
            math.log1p(slow),
            recency,
            gap_mean,
            math.sqrt(self.gap_var),
            math.log1p(self.reads),
            1.0 if self.reads else 0.0,
            math.log1p(self.fetches),
            math.log1p(self.requests),
            math.sin(angle),
            math.cos(angle),
        )

    def to_bytes(self) -> bytes:
        """A compact, versioned encoding (69 bytes) for the agent's table; counts saturate
        at 2**32 - 1."""
        return _LAYOUT.pack(
            FORMAT_VERSION, *self[:7],
            min(self.requests, _MAX_COUNT), min(self.reads, _MAX_COUNT),
            min(self.fetches, _MAX_COUNT),
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyFeatures | None:
        """The state ``to_bytes`` encoded, or None for bytes that are not one (another
        version, a truncation, garbage): the agent then starts the key afresh, which costs at
        most a prefetch the rule would also have made or skipped."""
        if len(data) != _LAYOUT.size or data[0] != FORMAT_VERSION:
            return None
        _v, last, fetched, expires, fast, slow, mean, var, requests, reads, fetches = (
            _LAYOUT.unpack(data)
        )
        if not math.isfinite(last + fetched + expires + fast + slow + mean + var):
            return None  # NaN or inf in any field (a sum too large to be finite is garbage too)
        if min(fast, slow, mean, var) < 0.0 or reads > requests:  # counts, EWMAs of log1p
            return None
        return cls(last, fetched, expires, fast, slow, mean, var, requests, reads, fetches)
