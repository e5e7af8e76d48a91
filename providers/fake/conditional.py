"""Validators of the fake's items and conditional GET (RFC 9110 8.8, 13.1.2, 13.1.3; issue 23).

An item's ``ETag`` and ``Last-Modified`` derive from its id and the configured content
version only (no hashing of bodies: the item route serves benchmarks), so a test changes every
item at once by raising ``content_version``.
"""

from __future__ import annotations

import zlib
from email.utils import formatdate, mktime_tz, parsedate_tz
from functools import lru_cache

# Last-Modified of version v is _EPOCH_S + v minutes, plus up to 59 s that depend on the item:
# later for every higher version (the If-Modified-Since path sees a change), and in the past
# for any version the config accepts (2020-01-01 plus 10**6 minutes is late 2021).
_EPOCH_S = 1_577_836_800
_VERSION_STEP_S = 60


def validators(item_id: str, version: int) -> tuple[str, int]:
    """The strong ETag and the Last-Modified (Unix seconds) of one item at one version.

    Args:
        item_id: the item's id as routed (any text: it is reduced to a CRC, so the
            opaque tag holds only hex digits and ``-v``, valid for any id).
        version: the configured ``content_version``.

    Returns:
        ``('"<crc32 hex>-v<version>"', last_modified_s)``.
    """
    crc = zlib.crc32(item_id.encode())
    return f'"{crc:08x}-v{version}"', _EPOCH_S + version * _VERSION_STEP_S + crc % 60


@lru_cache(maxsize=1024)
def http_date(unix_s: int) -> str:
    """``Thu, 01 Jan 2020 00:01:00 GMT`` (IMF-fixdate); cached, items share few dates."""
    return formatdate(unix_s, usegmt=True)


def none_match(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` (RFC 9110 13.1.2).

    ``*`` matches any current representation; list members compare weakly (``W/`` ignored on
    either side). Splitting on commas is safe: our opaque tags hold none.
    """
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(member.strip().removeprefix("W/") == opaque for member in header.split(","))


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, last_modified_s: int
) -> bool:
    """Whether a GET with these request headers gets a 304 (RFC 9110 13.2.2, steps 3 and 4).

    If-None-Match decides when present; only without it does If-Modified-Since count, and an
    invalid date is ignored (the full answer is sent).
    """
    if if_none_match is not None:
        return none_match(if_none_match, etag)
    if if_modified_since is None:
        return False
    try:
        parsed = parsedate_tz(if_modified_since)
        return parsed is not None and mktime_tz(parsed) >= last_modified_s
    except (ValueError, IndexError, OverflowError):  # lenient parser, odd input: not a date
        return False
