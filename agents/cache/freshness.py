"""How long a cached answer may be used: the operation's TTL, as the provider's headers
shorten it (RFC 9111), and the stale windows after it (RFC 5861; issue 23).

Everything here is pure and takes ``now`` (epoch seconds) as an argument. ``lifetime`` runs once
per answer stored; ``freshness`` on every hit, so it is three comparisons.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from email.utils import mktime_tz, parsedate_tz
from typing import NamedTuple

from providers.declaration import CacheSpec

__all__ = [
    "Directives",
    "Freshness",
    "Lifetime",
    "conditional_headers",
    "freshness",
    "lifetime",
    "parse_cache_control",
]

# A longer Cache-Control is parsed up to here (bounded work per answer; real ones are < 100
# characters); past it only the directives that restrict are looked for (``_restrictions``).
MAX_PARSED_CHARS = 1024
# RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31 (68 years).
_MAX_DELTA_S = 2**31

# A directive: a token, then optionally "=" and a token or a quoted string (RFC 9111 5.2). Not
# anchored: characters that fit no directive (garbage) are skipped over by ``finditer``.
_DIRECTIVE = re.compile(
    r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,;"]*))?"""
)
# Directives without an argument (a qualified ``no-cache="field"`` or ``private="field"`` is
# taken as unqualified: RFC 9111 5.2.2.4 and 5.2.2.7 allow it; we keep whole answers only).
_FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
}
_SECONDS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}
_RESTRICTIVE = ("no-store", "no-cache", "private", "must-revalidate", "proxy-revalidate")
_LONGEST_NAME = max(map(len, _FLAGS))


class Directives(NamedTuple):
    """The Cache-Control directives of a response that the cache acts on.

    Seconds are None when absent; a directive present with an invalid argument (``max-age=x``,
    ``max-age=1.5``) is 0.0: RFC 9111 4.2.1 encourages taking such an answer as stale.
    ``proxy_revalidate`` is beyond the issue's list: it binds shared caches only.
    """

    max_age: float | None = None
    s_maxage: float | None = None
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None
    proxy_revalidate: bool = False


_NOTHING = Directives()


def parse_cache_control(value: str | None) -> Directives:
    """The directives of a ``Cache-Control`` value; never raises.

    Names are case-insensitive, arguments may be quoted, unknown directives and garbage are
    ignored. A directive given twice keeps its most restrictive argument (the smallest).
    Only the first ``MAX_PARSED_CHARS`` characters are parsed; in the rest a restrictive
    directive's name (``no-store``, ``private``...) is still honoured, found by a substring
    search, so cutting a long value can only make it stricter.
    """
    if not value:
        return _NOTHING
    found: dict[str, float | bool] = {}
    for match in _DIRECTIVE.finditer(value, 0, MAX_PARSED_CHARS):
        name = match[1].lower()
        flag = _FLAGS.get(name)
        if flag is not None:
            found[flag] = True
            continue
        field = _SECONDS.get(name)
        if field is not None:
            seconds = _delta_seconds(match[2])
            found[field] = min(seconds, found.get(field, seconds))
    if len(value) > MAX_PARSED_CHARS:
        found.update(_restrictions(value[MAX_PARSED_CHARS - _LONGEST_NAME :]))
    return Directives(**found) if found else _NOTHING  # type: ignore[arg-type]


def _restrictions(rest: str) -> dict[str, bool]:
    rest = rest.lower()
    return {_FLAGS[name]: True for name in _RESTRICTIVE if name in rest}


def _delta_seconds(argument: str | None) -> float:
    """A delta-seconds argument (quoted or not), 0.0 when missing or invalid."""
    if argument is None:
        return 0.0
    if argument.startswith('"'):
        argument = argument[1:-1]
    seconds = _digits_s(argument)
    return 0.0 if seconds is None else seconds


def _digits_s(text: str) -> float | None:
    """Seconds in a string of ASCII digits (capped at 2^31), None when it is anything else."""
    if not (text.isascii() and text.isdigit()):
        return None
    # Past 10 digits it is over the cap anyway; int() would refuse 4300.
    return float(_MAX_DELTA_S if len(text) > 10 else min(int(text), _MAX_DELTA_S))


class Lifetime(NamedTuple):
    """Until when (epoch seconds) an entry answers: fresh, then stale while one call
    revalidates it, then stale only when the provider fails. Always
    ``fresh_until <= revalidate_until <= if_error_until``."""

    fresh_until: float
    revalidate_until: float
    if_error_until: float


def lifetime(cache: CacheSpec, headers: Mapping[str, str], *, now: float) -> Lifetime | None:
    """How long an answer that arrives at ``now`` may be used; None: it may not be stored.

    Not stored: ``no-store``, and ``private`` in a ``shared`` entry (read by every tenant). The
    fresh time is ``cache.ttl_s``, shortened (never lengthened) by the provider's own lifetime
    less the ``Age`` the answer already had upstream (RFC 9111 4.2.3): ``s-maxage`` for a shared
    entry, else ``max-age``, else ``Expires`` minus ``Date``. ``no-cache``: stored, fresh 0 s
    (revalidated before every use). ``Age`` counts against the provider's lifetime only:
    ``ttl_s`` is ours, measured from arrival (CacheSpec), and an old copy from a CDN that has
    not expired there is as new as a call would get.

    The stale windows are the operation's, each capped by the answer's own
    ``stale-while-revalidate`` / ``stale-if-error``; ``must-revalidate`` and ``no-cache`` close
    both, and so, in a shared entry, do ``proxy-revalidate`` and ``s-maxage`` (which implies
    it, RFC 9111 5.2.2.10). A stale-if-error window shorter than the stale-while-revalidate one
    adds nothing: an entry usable without error is usable on one.

    Args:
        cache: the operation's cache declaration.
        headers: the answer's headers, names lower-cased.
        now: epoch seconds the answer arrived (or was revalidated).
    """
    cc = parse_cache_control(headers.get("cache-control"))
    if cc.no_store or (cc.private and cache.shared):
        return None
    fresh_s = 0.0 if cc.no_cache else min(cache.ttl_s, _provider_s(cc, headers, cache.shared, now))
    closed = cc.no_cache or cc.must_revalidate
    if cache.shared:
        closed = closed or cc.proxy_revalidate or cc.s_maxage is not None
    fresh_until = now + fresh_s
    if closed:
        return Lifetime(fresh_until, fresh_until, fresh_until)
    revalidate_s = _capped(cache.stale_while_revalidate_s, cc.stale_while_revalidate)
    if_error_s = _capped(cache.stale_if_error_s, cc.stale_if_error)
    return Lifetime(
        fresh_until, fresh_until + revalidate_s, fresh_until + max(revalidate_s, if_error_s)
    )


def _provider_s(cc: Directives, headers: Mapping[str, str], shared: bool, now: float) -> float:
    """The seconds of freshness the provider gives the answer (inf: it says nothing)."""
    if shared and cc.s_maxage is not None:
        given = cc.s_maxage
    elif cc.max_age is not None:
        given = cc.max_age
    elif "expires" in headers:
        given = _expires_s(headers, now)
    else:
        return math.inf
    return max(0.0, given - _age_s(headers.get("age")))


def _expires_s(headers: Mapping[str, str], now: float) -> float:
    """``Expires`` minus ``Date`` (or now, without a valid Date); an invalid Expires (``0``)
    means already expired (RFC 9111 5.3)."""
    expires = _http_date(headers["expires"])
    if expires is None:
        return 0.0
    date = _http_date(headers.get("date"))
    return expires - (now if date is None else date)


def _http_date(value: str | None) -> float | None:
    """Epoch seconds of an HTTP date (any of RFC 9110 5.6.7's three forms), None if invalid."""
    if value is None:
        return None
    try:
        parsed = parsedate_tz(value)
        return None if parsed is None else float(mktime_tz(parsed))
    except (TypeError, ValueError, IndexError, OverflowError):  # garbage in odd shapes
        return None


def _age_s(value: str | None) -> float:
    """The ``Age`` header: the first member of a list, ignored when invalid (RFC 9111 5.1)."""
    if value is None:
        return 0.0
    seconds = _digits_s(value.split(",", 1)[0].strip())
    return 0.0 if seconds is None else seconds


def _capped(ours_s: float, theirs_s: float | None) -> float:
    return ours_s if theirs_s is None else min(ours_s, theirs_s)


class Freshness(enum.Enum):
    """What an entry is good for at a moment."""

    FRESH = "fresh"  # answer from it
    STALE_REVALIDATE = "stale_revalidate"  # answer from it, and refresh it in the background
    STALE_IF_ERROR = "stale_if_error"  # answer from it only if the provider cannot
    EXPIRED = "expired"  # not an answer (its validators may still save a body: a 304)


def freshness(life: Lifetime, now: float) -> Freshness:
    """Where ``now`` (epoch seconds) falls in ``life``."""
    if now < life.fresh_until:
        return Freshness.FRESH
    if now < life.revalidate_until:
        return Freshness.STALE_REVALIDATE
    if now < life.if_error_until:
        return Freshness.STALE_IF_ERROR
    return Freshness.EXPIRED


def conditional_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The validators to revalidate a stored answer with (lower-cased ``headers``): a 304 to
    them refreshes the entry without sending its body again (RFC 9110 13.1)."""
    validators: dict[str, str] = {}
    etag = headers.get("etag")
    if etag is not None:
        validators["If-None-Match"] = etag
    last_modified = headers.get("last-modified")
    if last_modified is not None:
        validators["If-Modified-Since"] = last_modified
    return validators
