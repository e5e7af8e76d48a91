"""The cache key of a request: what it asks of whom, and whose answer it may read (issue 23).

A key is ``provider \\x1f operation \\x1f scope \\x1f`` followed by a 16-byte BLAKE2b digest of
the request's canonical form. The scope is the tenant, or ``*`` for an operation declared
``shared`` (tenant names cannot contain ``*``, nor provider, operation or tenant names the
``\\x1f`` separator: ``schemas.models`` patterns), so one tenant never reads another's entry.

Why a digest rather than the canonical form itself: a key lives in the L1's dict, in every
RocksDB key of the L2 and in its changelog, and a request may carry 64 parameters of 8 KiB
plus a body. Hashed, every key is at most ~300 bytes whatever the request, and comparing two
is cheap. At 128 bits, the odds of any collision among 10^12 distinct requests stored under
one (provider, operation, scope) are about 10^24 / 2^129 ~ 1.5 x 10^-15: far below the odds
of a bit flip in RAM. BLAKE2b is in ``hashlib`` and faster than SHA-256 on 64-bit CPUs.

The canonical form makes requests that must get the same answer share a key, and only those:

- parameters, names sorted, with the declared default filled in for a missing one (so
  ``?units=metric`` and no ``units`` when its default is ``metric`` are one entry); values of
  ``cache.case_insensitive_params`` case-folded (``str.casefold``, Unicode's caseless match);
- request headers with lower-cased names, sorted: only allow-listed ones reach the provider,
  and those can change the answer (``Accept-Language``);
- the content type actually sent (the operation's first one when a body has none), and the
  body: a JSON body that parses is re-serialized with sorted keys and compact separators
  (``{"b":1, "a":2}`` and ``{"a":2,"b":1}`` are one entry), any other body as its bytes.

Every piece is length-prefixed and every list counted, so the form decodes one way only:
two different requests never share one, whatever characters their values hold.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from providers.declaration import CacheSpec, OperationSpec
from schemas.models import RequestEvent

__all__ = ["DIGEST_BYTES", "SEPARATOR", "SHARED_SCOPE", "cache_key", "key_scope"]

SEPARATOR = "\x1f"  # ASCII unit separator: in no provider, operation or tenant name
SHARED_SCOPE = "*"  # the scope of a shared operation's entries; no tenant is named "*"
DIGEST_BYTES = 16

_NO_BODY = b"-"
_JSON_BODY = b"j"
_RAW_BODY = b"r"


def cache_key(request: RequestEvent, operation: OperationSpec, cache: CacheSpec) -> bytes:
    """The key of ``request``'s answer in the response cache.

    Args:
        request: the request; only its provider, operation, tenant, params, headers, content
            type and body count (not its id, priority or trace).
        operation: the operation's declaration (parameter defaults, body content types).
        cache: the operation's cache declaration (``shared``, ``case_insensitive_params``).

    Returns:
        ``provider\\x1foperation\\x1fscope\\x1f`` then the 16-byte digest of the canonical form.
    """
    scope = SHARED_SCOPE if cache.shared else request.tenant
    content_type = _content_type(request, operation)
    text = _canonical_text(request, operation, cache, content_type)
    digest = hashlib.blake2b(text, digest_size=DIGEST_BYTES)
    body = request.body
    if body is None:
        digest.update(_NO_BODY)
    else:
        canonical = _canonical_json(body) if content_type and _is_json(content_type) else None
        # Body last, so it needs no length: everything before it is self-delimiting.
        digest.update(_RAW_BODY if canonical is None else _JSON_BODY)
        digest.update(body if canonical is None else canonical)
    prefix = f"{request.provider}{SEPARATOR}{request.operation}{SEPARATOR}{scope}{SEPARATOR}"
    return prefix.encode() + digest.digest()


def key_scope(key: bytes) -> tuple[str, str, str]:
    """The (provider, operation, scope) a key names; scope is a tenant or ``*`` (shared).

    Raises:
        ValueError: ``key`` is not one ``cache_key`` makes.
    """
    parts = key.split(SEPARATOR.encode(), 3)
    if len(parts) != 4 or len(parts[3]) != DIGEST_BYTES:
        raise ValueError(f"not a cache key: {key!r}")
    provider, operation, scope = (part.decode() for part in parts[:3])
    return provider, operation, scope


def _canonical_text(
    request: RequestEvent, operation: OperationSpec, cache: CacheSpec, content_type: str | None
) -> bytes:
    """Parameters, headers and content type as length-prefixed pieces (netstrings)."""
    params = _params(request.params, operation, cache)
    headers = sorted([(name.lower(), value) for name, value in request.headers.items()])
    pieces = [f"p{len(params)};"]
    _add_pairs(pieces, sorted(params.items()))
    pieces.append(f"h{len(headers)};")
    _add_pairs(pieces, headers)
    pieces.append("c-" if content_type is None else f"c{len(content_type)}:{content_type}")
    # Lengths count characters: decoding the text is unambiguous, and UTF-8 (surrogatepass:
    # every str, lone surrogates included) maps distinct texts to distinct bytes.
    return "".join(pieces).encode("utf-8", "surrogatepass")


def _add_pairs(pieces: list[str], pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:  # a loop of f-strings: the fastest form measured (vs repr, join)
        pieces.append(f"{len(name)}:{name}{len(value)}:{value}")


def _params(given: dict[str, str], operation: OperationSpec, cache: CacheSpec) -> dict[str, str]:
    """The parameters the call would send: given ones, plus declared defaults; case-folded.

    Undeclared parameters are kept (the request is refused when built, but the key must not
    merge it with one that lacks them).
    """
    params = given
    for declared in (operation.path_params, operation.query_params):
        for name, spec in declared.items():
            if spec.default is not None and name not in given:
                if params is given:
                    params = dict(given)  # copy only when a default is filled in
                params[name] = spec.default
    for name in cache.case_insensitive_params:
        value = params.get(name)
        if value is not None:
            if params is given:
                params = dict(given)
            params[name] = value.casefold()
    return params


def _content_type(request: RequestEvent, operation: OperationSpec) -> str | None:
    """The Content-Type the call sends: the request's, else its operation's first for a body."""
    if request.content_type is not None or request.body is None or operation.body is None:
        return request.content_type
    return operation.body.content_types[0]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _canonical_json(body: bytes) -> bytes | None:
    """The body re-serialized with sorted keys and no spaces, or None when it is not JSON.

    A body with a repeated object key is left raw: providers disagree on which value wins, so
    merging it with the single-key body could serve the wrong answer. Numbers go through
    Python's float and int, which is how JSON parsers everywhere read them (RFC 8259 6).
    """
    try:
        value = json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, repeated key, too deep
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # pragma: no cover - json.loads output dumps
        return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("repeated key")
    return value
