"""A cached answer: what the provider said, when, and for how long it holds; and its bytes in
the L2 store (issue 23)."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import NamedTuple

from agents.cache.freshness import Lifetime
from providers.response import ProviderReply

__all__ = ["ENTRY_OVERHEAD_BYTES", "FORMAT_VERSION", "CachedResponse", "decode_entry",
           "encode_entry", "from_reply"]  # fmt: skip

# What an entry costs in memory beyond its body and header characters: the tuple, the
# Lifetime, the floats, the headers dict and its str objects (about 50 bytes each). Measured
# with tracemalloc: 497 bytes for an entry with three headers; rounded up.
ENTRY_OVERHEAD_BYTES = 512
# Header fields of a 304 that do not replace the stored ones: the stored body is kept, and
# these describe it (RFC 9111 3.2 lets a cache keep fields its stored content depends on).
_KEPT_ON_REVALIDATION = frozenset({"content-type", "content-length"})


class CachedResponse(NamedTuple):
    """One provider answer as the cache keeps it (a NamedTuple: one is built per answer stored
    or decoded from L2, and a tuple is cheap to make)."""

    status: int
    body: bytes
    # Names lower-cased (the reply's kept headers: content type, validators, caching).
    headers: Mapping[str, str]
    provider: str
    response_type: str
    # Epoch seconds the answer arrived, or was last revalidated (a 304).
    stored_at: float
    life: Lifetime

    def __repr__(self) -> str:
        return (
            f"CachedResponse(status={self.status}, body=<{len(self.body)} bytes>, "
            f"headers={dict(self.headers)!r}, provider={self.provider!r}, "
            f"response_type={self.response_type!r}, stored_at={self.stored_at!r}, "
            f"life={self.life!r})"
        )

    @property
    def size(self) -> int:
        """Approximate bytes it holds in memory: what the L1's byte bound counts."""
        chars = sum(len(name) + len(value) for name, value in self.headers.items())
        return len(self.body) + chars + ENTRY_OVERHEAD_BYTES

    def age_s(self, now: float) -> float:
        """Seconds since the answer arrived or was revalidated (0 for a clock gone back)."""
        return max(0.0, now - self.stored_at)

    def revalidated(
        self, headers_304: Mapping[str, str], life: Lifetime, now: float
    ) -> CachedResponse:
        """This entry refreshed by a ``304 Not Modified`` at ``now`` (RFC 9111 4.3.4).

        The 304's header fields replace the stored ones of the same name (except the content
        type and length, which describe the body kept); the body and status are kept.

        Args:
            headers_304: the 304's headers (names lower-cased here if they were not).
            life: the lifetime computed from the merged headers at ``now``.
            now: epoch seconds the 304 arrived.
        """
        merged = dict(self.headers)
        for name, value in headers_304.items():
            lowered = name.lower()
            if lowered not in _KEPT_ON_REVALIDATION:
                merged[lowered] = value
        return self._replace(headers=merged, stored_at=now, life=life)


def from_reply(reply: ProviderReply, life: Lifetime, now: float) -> CachedResponse:
    """The entry for a provider's answer that arrived at ``now`` (epoch seconds)."""
    return CachedResponse(
        reply.status, reply.body, reply.headers, reply.provider, reply.response_type, now, life
    )


# The L2 format, version 1, little-endian:
#   B version | H status | d stored_at | d fresh_until | d revalidate_until | d if_error_until
#   | H provider length | H response_type length | H header count | I body length
#   | provider | response_type | per header: H name length, I value length, name, value
#   | body (last, one slice; its length tells a truncated or overlong entry)
# Strings are UTF-8 with surrogatepass (every str round-trips). A new layout gets a new
# version; an entry of an unknown one reads as a miss and is replaced by the next answer.
FORMAT_VERSION = 1
_FIXED = struct.Struct("<BHddddHHHI")
_PAIR = struct.Struct("<HI")


class _Unreadable(Exception):
    """The bytes are not an entry this version can read."""


def encode_entry(entry: CachedResponse) -> bytes:
    """The entry's bytes for the L2 store (``decode_entry`` reads them back).

    Raises:
        ValueError: a status, provider, response type or header name over 65535 (bytes or
            count), or a header value or body over 4 GiB: none comes from the HTTP client, whose
            header lines are at most 8 KiB.
    """
    try:
        return _encode(entry)
    except struct.error as error:  # a length or the status out of its field's range
        message = f"entry of {entry.provider!r} does not fit format {FORMAT_VERSION}: {error}"
        raise ValueError(message) from None


def _encode(entry: CachedResponse) -> bytes:
    provider, response_type = _utf8(entry.provider), _utf8(entry.response_type)
    life = entry.life
    parts = [
        _FIXED.pack(
            FORMAT_VERSION, entry.status, entry.stored_at, life.fresh_until,
            life.revalidate_until, life.if_error_until, len(provider), len(response_type),
            len(entry.headers), len(entry.body),
        ),
        provider,
        response_type,
    ]  # fmt: skip
    for name, value in entry.headers.items():
        encoded_name, encoded_value = _utf8(name), _utf8(value)
        parts += (_PAIR.pack(len(encoded_name), len(encoded_value)), encoded_name, encoded_value)
    parts.append(entry.body)
    return b"".join(parts)


def decode_entry(raw: bytes) -> CachedResponse | None:
    """The entry ``encode_entry`` wrote, or None for bytes it cannot read (an unknown version,
    truncated, garbage, numbers that are not finite); never raises."""
    try:
        return _decode(raw)
    except (_Unreadable, struct.error, UnicodeDecodeError):
        return None


def _decode(raw: bytes) -> CachedResponse:
    if not raw or raw[0] != FORMAT_VERSION:
        raise _Unreadable
    (_, status, stored_at, fresh, revalidate, if_error, provider_len, type_len, count,
     body_len) = _FIXED.unpack_from(raw)  # fmt: skip
    if not all(map(math.isfinite, (stored_at, fresh, revalidate, if_error))):
        raise _Unreadable
    pos = _FIXED.size
    provider, pos = _text(raw, pos, provider_len)
    response_type, pos = _text(raw, pos, type_len)
    headers: dict[str, str] = {}
    for _ in range(count):
        name_len, value_len = _PAIR.unpack_from(raw, pos)
        name, pos = _text(raw, pos + _PAIR.size, name_len)
        headers[name], pos = _text(raw, pos, value_len)
    if len(raw) - pos != body_len:
        raise _Unreadable
    life = Lifetime(fresh, revalidate, if_error)
    return CachedResponse(status, raw[pos:], headers, provider, response_type, stored_at, life)


def _text(raw: bytes, pos: int, length: int) -> tuple[str, int]:
    end = pos + length
    if end > len(raw):
        raise _Unreadable
    return raw[pos:end].decode("utf-8", "surrogatepass"), end


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
