"""Per-request instructions a test puts in the query (``fake_status=503``) or headers.

- ``fake_status`` / ``X-Fake-Status``: answer this status (or ``timeout``) in the flavor's
  shape instead of running the operation.
- ``fake_delay_ms`` / ``X-Fake-Delay-Ms``: this request's latency (replaces the configured one).
- ``fake_fail_first`` / ``X-Fake-Fail-First``: apply ``fake_status`` to the first N calls of
  this key only (Idempotency-Key, else X-Request-Id, else the request target), then succeed.
- ``fake_retry_after_s`` / ``X-Fake-Retry-After-S``: Retry-After of an injected 429 or 503.
- ``fake_body_bytes``: the body size of an injected 2xx or 3xx (a JSON string), e.g. to answer
  2 MB with ``fake_status=200``.
- ``fake_cache_control``: the ``Cache-Control`` of this item answer (200 or 304), replacing the
  configured one, e.g. ``max-age=5`` or ``no-store`` (lower-case letters, digits, ``=, -``;
  read by the flavor, checked here).
- ``fake_prompt_tokens`` / ``X-Fake-Prompt-Tokens`` (OpenAI flavor): the prompt tokens a chat
  completion counts and spends, whatever its messages (read by the flavor, not the server), so a
  replay of token counts needs no bodies of that size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Outcome = int | Literal["timeout"]

# A safe charset: no quotes, no CR/LF (header injection), room for "max-age=60, public".
_CACHE_CONTROL = re.compile(r"[a-z0-9=, -]{1,100}")


class DirectiveError(ValueError):
    """A directive with an unusable value; the fake answers 400 naming it."""


@dataclass(frozen=True, slots=True)
class Directives:
    status: Outcome | None = None
    delay_s: float | None = None
    fail_first: int | None = None
    retry_after_s: int | None = None
    body_bytes: int | None = None
    cache_control: str | None = None


def read_directives(request: web.Request) -> Directives | None:
    """Return the request's directives, None when it has none (the common, cheap case).

    Raises:
        DirectiveError: a value that does not parse.
    """
    headers = request.headers
    if (
        "fake_" not in request.query_string
        and "X-Fake-Status" not in headers
        and "X-Fake-Delay-Ms" not in headers
    ):
        return None
    query = request.query

    def get(name: str, header: str) -> str | None:
        value = query.get(name)
        return value if value is not None else headers.get(header)

    status_raw = get("fake_status", "X-Fake-Status")
    delay_raw = get("fake_delay_ms", "X-Fake-Delay-Ms")
    fail_raw = get("fake_fail_first", "X-Fake-Fail-First")
    retry_raw = get("fake_retry_after_s", "X-Fake-Retry-After-S")
    body_raw = query.get("fake_body_bytes")
    cache_control = query.get("fake_cache_control")
    return Directives(
        status=_status(status_raw) if status_raw is not None else None,
        delay_s=_number(delay_raw, "fake_delay_ms") / 1000 if delay_raw is not None else None,
        fail_first=int(_number(fail_raw, "fake_fail_first")) if fail_raw is not None else None,
        retry_after_s=int(_number(retry_raw, "fake_retry_after_s"))
        if retry_raw is not None
        else None,
        body_bytes=int(_number(body_raw, "fake_body_bytes")) if body_raw is not None else None,
        cache_control=_cache_control(cache_control) if cache_control is not None else None,
    )


def read_cache_control(request: web.Request) -> str | None:
    """The request's ``fake_cache_control`` directive, None when it has none.

    Raises:
        DirectiveError: a value outside the safe charset.
    """
    if "fake_cache_control" not in request.query_string:
        return None
    raw = request.query.get("fake_cache_control")
    return _cache_control(raw) if raw is not None else None


def read_prompt_tokens(request: web.Request) -> int | None:
    """The request's ``fake_prompt_tokens`` directive, None when it has none.

    Raises:
        DirectiveError: a value that is not a whole number in range.
    """
    raw = request.query.get("fake_prompt_tokens")
    if raw is None:
        raw = request.headers.get("X-Fake-Prompt-Tokens")
    if raw is None:
        return None
    value = _number(raw, "fake_prompt_tokens")
    if value != int(value):
        raise DirectiveError(f"fake_prompt_tokens={raw!r}: expected a whole number")
    return int(value)


def _status(raw: str) -> Outcome:
    if raw == "timeout":
        return "timeout"
    if raw.isascii() and raw.isdigit() and 200 <= int(raw) <= 599:
        return int(raw)
    raise DirectiveError(f"fake_status={raw!r}: expected 200-599 or 'timeout'")


def _cache_control(raw: str) -> str:
    if _CACHE_CONTROL.fullmatch(raw) is None:
        raise DirectiveError(
            f"fake_cache_control={raw!r}: expected 1-100 of a-z, 0-9, '=', ',', ' ', '-'"
        )
    return raw


def _number(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DirectiveError(f"{name}={raw!r}: expected a number") from None
    if not 0 <= value < 3600 * 1000:
        raise DirectiveError(f"{name}={raw!r}: out of range")
    return value
