"""The sliding window a breaker judges by: the last N calls, or the calls of the last N seconds."""

# As resilience4j's two sliding windows. A count window is two shift registers (Python ints),
# one bit per call with the newest in bit 0: a new call shifts in and the call N back falls
# off the mask, so the whole state is three ints. A time window keeps one bucket per epoch
# second that saw calls, oldest first and at most `size` of them, plus running totals: each
# bucket is added once and subtracted once when it expires, so the Python-level work per call
# is O(1) amortised and the memory O(size). (Immutability costs one tuple copy per call, a
# C-level copy of `size` pointers: 10 by default.) Nothing here knows the breaker's policy;
# the size is passed in, so a state written under another size is read under the new one.

from __future__ import annotations

import itertools
import math
import struct
from typing import Literal, NamedTuple, TypeAlias

__all__ = [
    "MAX_SIZE",
    "Bucket",
    "CountWindow",
    "Counts",
    "InvalidBreakerState",
    "TimeWindow",
    "Window",
    "WindowKind",
    "add",
    "counts",
    "empty",
    "for_kind",
    "pack",
    "unpack",
]

WindowKind: TypeAlias = Literal["count", "time"]

# Calls for a count window, seconds for a time window. Bounds the encoded state: 2.5 kB of
# bits, or 72 kB of buckets for an hour (a breaker judging by a longer window reacts too late).
MAX_SIZE: dict[WindowKind, int] = {"count": 10_000, "time": 3_600}

_HEAD = struct.Struct(">BH")  # kind, then calls held (count) or buckets (time)
_BUCKET = struct.Struct(">qIII")  # epoch second, calls, failures, slow calls
_COUNT, _TIME = 0, 1


class InvalidBreakerState(ValueError):
    """Bytes that are not a breaker state this version wrote.

    Operator action: the record was written by a newer version or is corrupt. Delete the key
    from the breaker-state topic or table; the breaker then starts closed with an empty window.
    """


class Counts(NamedTuple):
    """Calls in a window, and how many of them failed or were slow (a call may be both)."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class CountWindow(NamedTuple):
    """The last `calls` outcomes (at most the window size), one bit each, newest in bit 0."""

    calls: int = 0
    failure_bits: int = 0
    slow_bits: int = 0

    def __repr__(self) -> str:
        f, s = self.failure_bits.bit_count(), self.slow_bits.bit_count()
        return f"CountWindow(calls={self.calls}, failures={f}, slow={s})"


class Bucket(NamedTuple):
    """The calls that finished during one epoch second."""

    second: int
    counts: Counts


class TimeWindow(NamedTuple):
    """Buckets by ascending second, and their sum (expired buckets not yet dropped included)."""

    buckets: tuple[Bucket, ...] = ()
    total: Counts = Counts()

    def __repr__(self) -> str:
        c = self.total
        return f"TimeWindow({len(self.buckets)} s, calls={c.calls}, failures={c.failures})"


Window: TypeAlias = CountWindow | TimeWindow


def empty(kind: WindowKind) -> Window:
    return CountWindow() if kind == "count" else TimeWindow()


def for_kind(window: Window, kind: WindowKind) -> Window:
    """`window` if it is of `kind`, else an empty one: a policy change of kind starts afresh."""
    return window if isinstance(window, CountWindow) == (kind == "count") else empty(kind)


def add(
    window: Window, *, failed: bool, slow: bool, now: float, size: int, calls: int = 1
) -> Window:
    """The window with ``calls`` more calls (all alike) that finished at `now`."""
    if isinstance(window, CountWindow):
        mask = (1 << size) - 1
        shift = min(calls, size)
        ones = (1 << shift) - 1
        return CountWindow(
            min(window.calls + calls, size),
            ((window.failure_bits << shift) | (ones if failed else 0)) & mask,
            ((window.slow_bits << shift) | (ones if slow else 0)) & mask,
        )
    one = Counts(calls, calls if failed else 0, calls if slow else 0)
    second = math.floor(now)
    live = _live(window, second, size)
    buckets = live.buckets
    if buckets and buckets[-1].second >= second:
        # The same second, or a clock that stepped back: no time has passed.
        buckets = (*buckets[:-1], Bucket(buckets[-1].second, _plus(buckets[-1].counts, one)))
    else:
        buckets = (*buckets, Bucket(second, one))
    return TimeWindow(buckets, _plus(live.total, one))


def counts(window: Window, *, now: float, size: int) -> Counts:
    """The calls the window holds at `now` under a window of `size`."""
    if isinstance(window, CountWindow):
        calls = min(window.calls, size)
        mask = (1 << calls) - 1
        return Counts(
            calls, (window.failure_bits & mask).bit_count(), (window.slow_bits & mask).bit_count()
        )
    return _live(window, math.floor(now), size).total


def _live(window: TimeWindow, second: int, size: int) -> TimeWindow:
    """Without the buckets of seconds before the last `size` (the current one included).

    So a call counts for between `size - 1` and `size` seconds, by where in its second it fell.
    """
    total, cut = window.total, 0
    while cut < len(window.buckets) and window.buckets[cut].second <= second - size:
        total = _minus(total, window.buckets[cut].counts)
        cut += 1
    return window if cut == 0 else TimeWindow(window.buckets[cut:], total)


def _plus(a: Counts, b: Counts) -> Counts:
    return Counts(a.calls + b.calls, a.failures + b.failures, a.slow + b.slow)


def _minus(a: Counts, b: Counts) -> Counts:
    return Counts(a.calls - b.calls, a.failures - b.failures, a.slow - b.slow)


def pack(window: Window) -> bytes:
    """Encode: kind and length, then the bits (count) or the buckets (time)."""
    if isinstance(window, CountWindow):
        n = (window.calls + 7) // 8
        bits = window.failure_bits.to_bytes(n, "big") + window.slow_bits.to_bytes(n, "big")
        return _HEAD.pack(_COUNT, window.calls) + bits
    parts = (_BUCKET.pack(b.second, *b.counts) for b in window.buckets)
    return _HEAD.pack(_TIME, len(window.buckets)) + b"".join(parts)


def unpack(raw: bytes) -> Window:
    """Decode what `pack` wrote, checking every invariant; raise InvalidBreakerState if not."""
    if len(raw) < _HEAD.size:
        raise InvalidBreakerState(f"window truncated: {raw!r}")
    kind, n = _HEAD.unpack_from(raw)
    body = raw[_HEAD.size :]
    if kind == _COUNT and n <= MAX_SIZE["count"] and len(body) == 2 * ((n + 7) // 8):
        half = len(body) // 2
        fail, slow = int.from_bytes(body[:half], "big"), int.from_bytes(body[half:], "big")
        if fail >> n == 0 and slow >> n == 0:
            return CountWindow(n, fail, slow)
    elif kind == _TIME and n <= MAX_SIZE["time"] and len(body) == n * _BUCKET.size:
        rows = (_BUCKET.unpack_from(body, i * _BUCKET.size) for i in range(n))
        buckets = tuple(Bucket(s, Counts(c, f, w)) for s, c, f, w in rows)
        if all(_sane(b) for b in buckets) and _ascending(buckets):
            return TimeWindow(
                buckets, Counts(*map(sum, zip(*(b.counts for b in buckets), strict=True)))
            )
    raise InvalidBreakerState(f"not a valid window: kind {kind}, length {n}, {len(body)} bytes")


def _sane(b: Bucket) -> bool:
    return b.counts.calls >= 1 and max(b.counts.failures, b.counts.slow) <= b.counts.calls


def _ascending(buckets: tuple[Bucket, ...]) -> bool:
    return all(a.second < b.second for a, b in itertools.pairwise(buckets))
