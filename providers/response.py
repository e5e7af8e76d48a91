"""A classified provider answer, and the header and JSON parsing behind it."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from providers.declaration import RateLimitHeaders, rate_limit_dimensions
from providers.errors import InvalidResponse
from providers.rate_limit_styles import (
    GITHUB_RESOURCE_HEADER,
    GITHUB_WINDOWS_S,
    IETF_FIELD,
    IETF_POLICY_FIELD,
    NOTHING,
    RateLimitStyle,
    read_ietf,
)

log = logging.getLogger(__name__)

# Kept on a response for results and caching; never auth material (no set-cookie).
_KEPT_HEADERS = frozenset(
    {"content-type", "etag", "last-modified", "cache-control", "age", "expires", "retry-after"}
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RateLimitInfo(NamedTuple):
    """One rate-limit dimension as the provider reported it; None where it said nothing.

    A NamedTuple: built for every response, and a tuple is several times cheaper to make than
    a frozen dataclass.
    """

    limit: int | None = None
    remaining: int | None = None
    reset_after_s: float | None = None
    # The length of the provider's window, when known (IETF policy "w", GitHub's hour, or the
    # declaration's window_s): with ``limit`` it gives the provider's rate.
    window_s: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0


# Shared by every reply of a provider that declares no rate-limit headers (most): no dict each.
_NO_LIMITS: Mapping[str, RateLimitInfo] = MappingProxyType({})


class ProviderReply(NamedTuple):
    """A successful (2xx, not an app-level error) answer of one call, classified: the one reply
    type from the provider's classification to the ``Caller`` (a NamedTuple, like
    RateLimitInfo: one per call)."""

    status: int
    body: bytes
    # Selected headers, names lower-cased: content and caching, rate limits, request ids.
    headers: Mapping[str, str] = _NO_HEADERS
    cost: float = 0.0
    # Dimension ("requests", "tokens") → info, in the order the spec declares them.
    rate_limits: Mapping[str, RateLimitInfo] = _NO_LIMITS
    response_type: str = "json"
    # Request sent to response read, over every send of the call.
    latency_s: float = 0.0
    provider: str = ""
    # 2 when the auth flow sent the request once more (a 401 with refreshable credentials).
    sends: int = 1
    # The provider's Retry-After, when a successful answer carried one.
    retry_after_s: float | None = None

    def __repr__(self) -> str:
        return (
            f"ProviderReply(status={self.status}, body=<{len(self.body)} bytes>, "
            f"headers={dict(self.headers)!r}, cost={self.cost!r}, "
            f"rate_limits={dict(self.rate_limits)!r}, response_type={self.response_type!r}, "
            f"latency_s={self.latency_s!r}, provider={self.provider!r}, sends={self.sends})"
        )

    @property
    def rate_limit(self) -> RateLimitInfo | None:
        """The primary (first declared) dimension, if the provider reported it."""
        return next(iter(self.rate_limits.values()), None)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased (plain dicts and multidicts; a repeated name keeps one value)."""
    return {name.lower(): value for name, value in headers.items()}


def kept_headers(headers: Mapping[str, str], keep: frozenset[str]) -> dict[str, str]:
    """The lower-cased ``headers`` worth carrying into a result: ``keep`` and request ids."""
    return {k: v for k, v in headers.items() if k in keep or k.endswith("request-id")}


def headers_to_keep(declared: frozenset[str]) -> frozenset[str]:
    """Content, caching and retry headers, plus a provider's declared rate-limit headers."""
    return _KEPT_HEADERS | declared


class WaitCeiling:
    """The longest wait a provider's answer may impose on us (Retry-After, reset headers).

    A provider's word is trusted only up to ``max_s``: one ``Retry-After: 999999999`` (or an
    epoch reset declared as ``delta_s``) must not freeze a limit key for years. A clamp is
    logged as a warning at most once per ``log_every_s``, so a misbehaving provider cannot
    flood the log.
    """

    __slots__ = ("_last_log", "_log_every_s", "max_s", "provider")

    def __init__(self, provider: str, max_s: float, *, log_every_s: float = 60.0) -> None:
        self.provider = provider
        self.max_s = max_s
        self._log_every_s = log_every_s
        self._last_log = -math.inf

    def __call__(self, seconds: float | None, source: str) -> float | None:
        """``seconds`` (None passes through), or ``max_s`` when it is longer.

        Args:
            seconds: the wait the provider asked for.
            source: what asked for it, for the warning (``retry-after``, a header name).
        """
        if seconds is None or seconds <= self.max_s:
            return seconds
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            self._last_log = now
            log.warning(
                "%s: %s asked for a wait of %.0f s; clamped to %.0f s (limits.max_retry_after_s)",
                self.provider, source, seconds, self.max_s,
            )  # fmt: skip
        return self.max_s


class RateLimitReader:
    """Reads a provider's rate-limit headers, one observation per declared dimension.

    Built once per provider: styles are resolved and names lower-cased here, so ``read`` (on
    every response) only looks headers up.
    """

    __slots__ = ("_dimensions", "names")

    def __init__(
        self,
        declared: Mapping[str, RateLimitHeaders],
        *,
        style: RateLimitStyle | None = None,
        ceiling: WaitCeiling | None = None,
    ) -> None:
        """Args:
        declared: dimension name -> how it is read (``rate_limit_headers``).
        style: the provider-wide ``rate_limit_style``.
        ceiling: clamps reset waits; None trusts them unbounded.

        Raises:
            ValueError: a declared style has no dimension for its entry.
        """
        resolved = rate_limit_dimensions(style, declared)
        self._dimensions = tuple(_Dimension(name, h, ceiling) for name, h in resolved.items())
        self.names = frozenset(n for d in self._dimensions for n in d.names if n)

    def read(self, headers: Mapping[str, str], *, now: float) -> Mapping[str, RateLimitInfo]:
        """Each declared dimension found in lower-cased ``headers``, in declaration order."""
        if not self._dimensions:
            return _NO_LIMITS
        out: dict[str, RateLimitInfo] = {}
        for dimension in self._dimensions:
            info = dimension.read(headers, now)
            if info is not None:
                out[dimension.name] = info
        return out


class _Dimension:
    """One dimension's reading: its header names (lower-cased), plus the style's extras."""

    __slots__ = ("_ceiling", "_ietf", "_kind", "_resource", "_window_s", "limit", "name",
                 "remaining", "reset")  # fmt: skip

    def __init__(self, name: str, declared: RateLimitHeaders, ceiling: WaitCeiling | None) -> None:
        self.name = name
        self.limit = (declared.limit or "").lower()
        self.remaining = (declared.remaining or "").lower()
        self.reset = (declared.reset or "").lower()
        self._kind = declared.reset_kind
        self._window_s = declared.window_s
        self._ceiling = ceiling
        self._ietf = declared.style == "ietf"
        # GitHub names the resource an answer counted against; the search API's is a minute.
        self._resource = GITHUB_RESOURCE_HEADER if declared.style == "github" else ""

    @property
    def names(self) -> tuple[str, ...]:
        """The headers read (kept on replies)."""
        extra = (IETF_FIELD, IETF_POLICY_FIELD) if self._ietf else (self._resource,)
        return (self.limit, self.remaining, self.reset, *extra)

    def read(self, headers: Mapping[str, str], now: float) -> RateLimitInfo | None:
        """This dimension's observation, or None when the answer says nothing of it."""
        if self._ietf:
            return self._read_ietf(headers, now)
        values = headers.get(self.limit), headers.get(self.remaining), headers.get(self.reset)
        if values == (None, None, None):
            return None
        window_s = self._window_s
        if self._resource:
            window_s = GITHUB_WINDOWS_S.get(headers.get(self._resource, ""), window_s)
        reset_after = self._clamp(_reset_after(values[2], self._kind, now), self.reset)
        return RateLimitInfo(_count(values[0]), _count(values[1]), reset_after, window_s)

    def _read_ietf(self, headers: Mapping[str, str], now: float) -> RateLimitInfo | None:
        # The current draft's structured fields win; the older draft's separate ones fill gaps.
        field, policy = headers.get(IETF_FIELD), headers.get(IETF_POLICY_FIELD)
        seen = read_ietf(field, policy) if field is not None or policy is not None else NOTHING
        limit = seen.limit if seen.limit is not None else _count(headers.get(self.limit))
        remaining = seen.remaining
        if remaining is None:
            remaining = _count(headers.get(self.remaining))
        reset_after, source = seen.reset_after_s, IETF_FIELD
        if reset_after is None:
            reset_after = _reset_after(headers.get(self.reset), self._kind, now)
            source = self.reset
        if limit is None and remaining is None and reset_after is None:
            return None
        window_s = seen.window_s if seen.window_s is not None else self._window_s
        return RateLimitInfo(limit, remaining, self._clamp(reset_after, source), window_s)

    def _clamp(self, reset_after: float | None, source: str) -> float | None:
        if self._ceiling is None or reset_after is None:
            return reset_after
        return self._ceiling(reset_after, source)


def retry_after_s(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date), if present."""
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _float(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def parse_duration(value: str) -> float | None:
    """Seconds in a Go-style duration such as ``1m30s``, ``6m0s`` or ``250ms``."""
    value = value.strip()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return _float(value)  # a bare number is seconds
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def json_at(data: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path (already split) in parsed JSON, or None when absent."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


def load_json(body: bytes) -> Any:
    """Parsed JSON, or None when the body is empty or not JSON.

    Raises:
        InvalidResponse: JSON nested too deeply to parse (``"[" * 100_000``): the parser's
            RecursionError is no ValueError, and must not end as an internal error.
    """
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    except RecursionError:
        raise InvalidResponse(f"JSON body of {len(body)} bytes nested too deeply") from None


def _reset_after(value: str | None, kind: str, now: float) -> float | None:
    if value is None:
        return None
    if kind == "duration":
        seconds = parse_duration(value)
        return None if seconds is None else max(0.0, seconds)
    seconds = _float(value)
    if seconds is None:
        return None
    return max(0.0, seconds - now) if kind == "epoch_s" else max(0.0, seconds)


def _count(value: str | None) -> int | None:
    """A limit or remaining count; a negative one is malformed, and ignored."""
    number = _float(value)
    return int(number) if number is not None and number >= 0 else None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
