"""Header names a declaration may use: RFC 9110 tokens, minus those the pipeline sets."""

from __future__ import annotations

import re

# RFC 9110 §5.1: field-name = token; tchar = "!" / "#" / ... / DIGIT / ALPHA. Matched with
# fullmatch: a "$" anchor would let a trailing newline through.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Set by the pipeline or the HTTP stack; neither a request event nor a declaration chooses them.
RESERVED_HEADERS = frozenset(
    {"host", "authorization", "proxy-authorization", "cookie", "content-length", "content-type",
     "transfer-encoding", "connection", "keep-alive", "te", "upgrade", "expect"}
)  # fmt: skip
# Headers a signer may set: credentials go in Authorization (API keys, HMAC schemes).
SIGNER_RESERVED_HEADERS = RESERVED_HEADERS - {"authorization"}


def is_token(name: str) -> bool:
    """Whether ``name`` is a valid header field name (an RFC 9110 token)."""
    return _TOKEN.fullmatch(name) is not None


def check_header_name(name: str, *, reserved: frozenset[str] = frozenset()) -> str:
    """Return ``name`` if it is a token outside ``reserved`` (any case), else raise ValueError.

    Raises:
        ValueError: one line naming the header (names are never secrets).
    """
    if not is_token(name):
        raise ValueError(f"header name {name!r} is not an RFC 9110 token")
    if name.lower() in reserved:
        raise ValueError(f"header {name!r} is set by the pipeline and cannot be declared")
    return name


def check_header_value(name: str, value: str) -> str:
    """Return ``value`` if it holds no CR, LF or NUL (header injection), else raise ValueError."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: value contains CR, LF or NUL")
    return value
