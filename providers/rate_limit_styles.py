"""Rate-limit header styles: the common shapes providers report their limits in, as presets.

A provider file names a style (``rate_limit_style = "openai"``) instead of spelling header
names. The presets here are plain data, so the declaration can validate against them without an
import cycle; ``providers.response`` reads the answers. The IETF style's structured fields
(``RateLimit``, ``RateLimit-Policy``) are parsed here with a small RFC 9651 list parser that
ignores a malformed field rather than raising: a provider's bad header must never fail a call.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

RateLimitStyle = Literal["github", "openai", "ietf", "stripe", "slack"]

# Preset field values of one dimension (names as RateLimitHeaders spells them).
Preset = Mapping[str, str | float]


def _openai(dimension: str) -> Preset:
    return {
        "limit": f"x-ratelimit-limit-{dimension}",
        "remaining": f"x-ratelimit-remaining-{dimension}",
        "reset": f"x-ratelimit-reset-{dimension}",
        "reset_kind": "duration",  # "6m0s", "120ms"
    }


# Style -> its dimensions in order (the first is the primary one) -> preset fields.
_PRESETS: Mapping[str, Mapping[str, Preset]] = MappingProxyType(
    {
        # GitHub's primary limit is per hour; the window is the search API's minute when
        # X-RateLimit-Resource says so (GITHUB_WINDOWS_S).
        "github": {
            "core": {
                "limit": "X-RateLimit-Limit",
                "remaining": "X-RateLimit-Remaining",
                "reset": "X-RateLimit-Reset",
                "reset_kind": "epoch_s",
                "window_s": 3600.0,
            }
        },
        "openai": {"requests": _openai("requests"), "tokens": _openai("tokens")},
        # The older draft's separate fields; the current draft's structured RateLimit and
        # RateLimit-Policy fields are read too, and win where both are sent.
        "ietf": {
            "requests": {
                "limit": "RateLimit-Limit",
                "remaining": "RateLimit-Remaining",
                "reset": "RateLimit-Reset",
                "reset_kind": "delta_s",
            }
        },
        # 429 and Retry-After only: the style says so explicitly and reads no dimension.
        "stripe": {},
        "slack": {},
    }
)

# Lower-cased, as response headers are looked up.
GITHUB_RESOURCE_HEADER = "x-ratelimit-resource"
# GitHub resources whose window is not the hour (docs: "rate limits for the REST API").
GITHUB_WINDOWS_S: Mapping[str, float] = MappingProxyType({"search": 60.0, "code_search": 60.0})
IETF_FIELD = "ratelimit"
IETF_POLICY_FIELD = "ratelimit-policy"


def style_dimensions(style: RateLimitStyle) -> Mapping[str, Preset]:
    """The style's dimensions in order, each with its preset fields (none for stripe, slack)."""
    return _PRESETS[style]


def preset_for(style: RateLimitStyle, dimension: str) -> Preset:
    """The preset a ``[rate_limit_headers.<dimension>]`` entry naming ``style`` starts from.

    The dimension of that name, or the style's only one under the entry's name.

    Raises:
        ValueError: one line: the style reads no dimension, or several and none of that name.
    """
    presets = _PRESETS[style]
    if dimension in presets:
        return presets[dimension]
    if len(presets) == 1:
        return next(iter(presets.values()))
    if not presets:
        raise ValueError(
            f"{dimension}: style {style!r} reads no rate-limit headers (its provider sends none, "
            f'only 429s); use rate_limit_style = "{style}" or name the headers'
        )
    raise ValueError(
        f"{dimension}: style {style!r} has dimensions {', '.join(presets)}; "
        "name the entry after one of them"
    )


# -- RFC 9651 structured field lists ------------------------------------------------------

BareItem = int | float | str | bytes | bool
Params = Mapping[str, BareItem]


class Item(NamedTuple):
    value: BareItem
    params: Params


class InnerList(NamedTuple):
    items: tuple[Item, ...]
    params: Params


# A field longer than this is ignored: the parse runs per response, its work must be bounded.
MAX_FIELD_CHARS = 4096
_OWS = " \t"
_NUMBER = re.compile(r"(-?)([0-9]+)(\.[0-9]*)?")
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_STRING_ESCAPE = re.compile(r"\\(.)")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")
_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class _Malformed(Exception):
    """Internal: the field is not a valid list; parse_list turns it into None."""


# A provider sends the same RateLimit-Policy on every answer: a hit costs a dict lookup instead
# of a parse. Bounded, so varying fields only churn it.
@functools.lru_cache(maxsize=64)
def parse_list(text: str) -> tuple[Item | InnerList, ...] | None:
    """The members of a structured-field List (RFC 9651 §4.2.1), or None when malformed.

    Never raises. Byte sequences are kept undecoded (as their base64 text): no reader needs
    their value. Display strings are not supported and make the field malformed. The result
    is shared between calls (cached): never mutate it.
    """
    if len(text) > MAX_FIELD_CHARS or not text.isascii():
        return None
    try:
        return tuple(_list(text.strip(" ")))
    except _Malformed:
        return None


def _list(text: str) -> list[Item | InnerList]:
    members: list[Item | InnerList] = []
    i, end = 0, len(text)
    while i < end:
        member, i = _inner_list(text, i) if text[i] == "(" else _item(text, i)
        members.append(member)
        i = _skip(text, i, _OWS)
        if i == end:
            return members
        if text[i] != ",":
            raise _Malformed
        i = _skip(text, i + 1, _OWS)
        if i == end:
            raise _Malformed  # a trailing comma
    return members


def _inner_list(text: str, i: int) -> tuple[InnerList, int]:
    items: list[Item] = []
    i += 1  # "("
    while i < len(text):
        i = _skip(text, i, " ")
        if i < len(text) and text[i] == ")":
            params, i = _params(text, i + 1)
            return InnerList(tuple(items), params), i
        item, i = _item(text, i)
        items.append(item)
        if i >= len(text) or text[i] not in " )":
            raise _Malformed
    raise _Malformed  # no closing ")"


def _item(text: str, i: int) -> tuple[Item, int]:
    value, i = _bare_item(text, i)
    params, i = _params(text, i)
    return Item(value, params), i


def _params(text: str, i: int) -> tuple[Params, int]:
    params: dict[str, BareItem] = {}
    while i < len(text) and text[i] == ";":
        i = _skip(text, i + 1, " ")
        match = _KEY.match(text, i)
        if match is None:
            raise _Malformed
        key, i = match.group(), match.end()
        value: BareItem = True  # a parameter without "=" is boolean true
        if i < len(text) and text[i] == "=":
            value, i = _bare_item(text, i + 1)
        params[key] = value  # a repeated key: the last one wins, as the RFC says
    return params, i


def _bare_item(text: str, i: int) -> tuple[BareItem, int]:
    if i >= len(text):
        raise _Malformed
    char = text[i]
    if char == "-" or char.isdigit():
        return _number(text, i)
    if char == '"':
        return _string(text, i)
    if char == "?" and text[i + 1 : i + 2] in ("0", "1"):
        return text[i + 1] == "1", i + 2
    if char == "@":  # a date: integer seconds since the epoch
        value, end = _number(text, i + 1)
        if isinstance(value, float):
            raise _Malformed
        return value, end
    match = (_BYTES if char == ":" else _TOKEN).match(text, i)
    if match is None:
        raise _Malformed
    return (match.group(1).encode() if char == ":" else match.group()), match.end()


def _number(text: str, i: int) -> tuple[int | float, int]:
    match = _NUMBER.match(text, i)
    if match is None:
        raise _Malformed
    sign, digits, fraction = match.groups()
    if fraction is None:
        if len(digits) > 15:
            raise _Malformed
        return int(sign + digits), match.end()
    if len(digits) > 12 or not 2 <= len(fraction) <= 4:  # "." and 1 to 3 digits
        raise _Malformed
    return float(sign + digits + fraction), match.end()


def _string(text: str, i: int) -> tuple[str, int]:
    match = _STRING.match(text, i)
    if match is None:
        raise _Malformed
    return _STRING_ESCAPE.sub(r"\1", match.group(1)), match.end()


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


# -- the IETF fields ----------------------------------------------------------------------


class IetfObservation(NamedTuple):
    """What the structured fields said; None where they said nothing usable."""

    limit: int | None
    remaining: int | None
    reset_after_s: float | None
    window_s: float | None


NOTHING = IetfObservation(None, None, None, None)


def read_ietf(field: str | None, policy: str | None) -> IetfObservation:
    """The first ``RateLimit`` item (``r`` remaining, ``t`` seconds to reset) and the
    ``RateLimit-Policy`` item of the same name (``q`` quota, ``w`` window in seconds).

    Unknown parameters, inner lists and malformed fields are ignored; never raises.
    """
    current = _first_item(parse_list(field)) if field is not None else None
    name = current.value if current is not None and isinstance(current.value, str) else None
    rule = _policy(parse_list(policy) if policy is not None else None, name)
    return IetfObservation(
        # An older draft's policy item is the quota itself ("100;w=60"): q falls back to it.
        _count(rule.params.get("q", rule.value)) if rule is not None else None,
        _count(current.params.get("r")) if current is not None else None,
        _seconds(current.params.get("t")) if current is not None else None,
        _window(rule.params.get("w")) if rule is not None else None,
    )


def _first_item(members: tuple[Item | InnerList, ...] | None) -> Item | None:
    first = members[0] if members else None
    return first if isinstance(first, Item) else None


def _policy(members: tuple[Item | InnerList, ...] | None, name: str | None) -> Item | None:
    """The policy the current item names; the first one when nothing names one."""
    items = [m for m in members or () if isinstance(m, Item)]
    if name is None:
        return items[0] if items else None
    return next((m for m in items if m.value == name), None)


def _count(value: BareItem | None) -> int | None:
    # bool is an int in Python, and no count.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value >= 0 else None


def _seconds(value: BareItem | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None


def _window(value: BareItem | None) -> float | None:
    seconds = _seconds(value)
    return seconds if seconds else None  # a zero window means nothing
